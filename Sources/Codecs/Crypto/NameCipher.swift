// NameCipher: file names and symlink targets encrypted with AES-SIV, written as base64url.
import COpenSSL
import Glibc
import Wrapfs

/// Deterministic authenticated encryption of names: the same name always gives the same lower
/// name (so lookups need no directory scan), and a lower name this key did not make fails to
/// decode (the layer hides it). Lower name = base64url(tag | ciphertext), no padding; it never
/// contains '.', so it cannot clash with the layer's own files.
final class NameCipher: @unchecked Sendable {
    private let key: SecretBytes
    /// OpenSSL's own AES-256-SIV: the reference, and the cipher in use if the composed one
    /// (`wrapfs_siv_composed`, which copies no SIV context per name; about 3x faster in a C loop here, a guide: docs/NOTES.md, session 28) ever disagrees with it.
    private let cipher: OpaquePointer
    private let composed: Bool
    /// Each thread's keyed contexts (made on first use): a lookup or a listed name then keys nothing.
    private var contexts = pthread_key_t()

    /// `purpose` keeps its key apart from every other (attribute names use their own).
    init(masterKey: SecretBytes, purpose: String = "wrapfs aes-256-siv names") throws {
        key = try Subkeys.derive(from: masterKey, purpose: purpose, count: 64)
        guard let c = wrapfs_siv_cipher() else { throw CodecError("OpenSSL has no AES-256-SIV (OpenSSL 3 needed)") }
        cipher = c
        composed = Self.composedMatchesOpenSSL(key: key, cipher: c)
        if composed {
            pthread_key_create(&contexts) { wrapfs_siv_composed_free($0) }
        } else {
            pthread_key_create(&contexts) { wrapfs_siv_contexts_free($0) }
            // The same names either way; only the speed differs. Said once, where the user sees it.
            fputs("wrapfs: this OpenSSL's AES-256-SIV differs from the layer's composed one: names use OpenSSL's (slower)\n", stderr)
        }
    }

    deinit { EVP_CIPHER_free(cipher) }

    /// Encrypts (`encrypt` 1: `tag` out) or decrypts and authenticates (`tag` in) `n` bytes.
    private func siv(_ encrypt: Int32, _ input: UnsafePointer<UInt8>, _ n: Int, _ out: UnsafeMutablePointer<UInt8>,
                     _ tag: UnsafeMutablePointer<UInt8>) throws -> Bool {
        if let c = pthread_getspecific(contexts) {
            return composed
                ? wrapfs_siv_composed_with(c.assumingMemoryBound(to: wrapfs_siv_composed.self), encrypt, input, Int32(n), out, tag) == 1
                : wrapfs_siv_with(c.assumingMemoryBound(to: wrapfs_siv_contexts.self), encrypt, input, Int32(n), out, tag) == 1
        }
        let made: UnsafeMutableRawPointer? = key.withBytes { k in
            let k = k.baseAddress!.assumingMemoryBound(to: UInt8.self)
            return composed ? UnsafeMutableRawPointer(wrapfs_siv_composed_new(k)) : UnsafeMutableRawPointer(wrapfs_siv_contexts_new(cipher, k))
        }
        guard let made else { throw CodecError("OpenSSL cannot set up AES-SIV") }
        pthread_setspecific(contexts, made)
        return try siv(encrypt, input, n, out, tag)
    }

    func encrypt(_ name: [UInt8]) throws -> [UInt8] {
        guard !name.isEmpty else { throw CodecError("empty name") }
        var out = [UInt8](repeating: 0, count: 16 + name.count)
        let ok = try out.withUnsafeMutableBufferPointer { o in
            try siv(1, name, name.count, o.baseAddress! + 16, o.baseAddress!)
        }
        guard ok else { throw CodecError("AES-SIV encryption failed") }
        return Base64URL.encode(out)
    }

    func decrypt(_ lower: [UInt8]) throws -> [UInt8] {
        // Only the canonical spelling decodes, so no two lower names stand for one name.
        guard var raw = Base64URL.decode(lower), raw.count > 16 else {
            throw CodecError("not an encrypted name")
        }
        var out = [UInt8](repeating: 0, count: raw.count - 16)
        let ok = try out.withUnsafeMutableBufferPointer { o in
            try raw.withUnsafeMutableBufferPointer { r in
                try siv(0, r.baseAddress! + 16, o.count, o.baseAddress!, r.baseAddress!)
            }
        }
        guard ok else { throw CodecError("name fails authentication") }
        return out
    }

    /// Whether the composed AES-SIV gives OpenSSL's bytes for names of every length class under
    /// `key`, and opens what it seals (checked once per mount, on the key in use).
    static func composedMatchesOpenSSL(key: SecretBytes, cipher: OpaquePointer) -> Bool {
        key.withBytes { k in
            let k = k.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard let fast = wrapfs_siv_composed_new(k) else { return false }
            defer { wrapfs_siv_composed_free(fast) }
            guard let reference = wrapfs_siv_contexts_new(cipher, k) else { return false }
            defer { wrapfs_siv_contexts_free(reference) }
            for n in [1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 64, 100, 255] {
                let name = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ n) }
                var a = [UInt8](repeating: 0, count: n + 16), b = a, back = [UInt8](repeating: 0, count: n)
                let sealed = a.withUnsafeMutableBufferPointer { a in
                    b.withUnsafeMutableBufferPointer { b in
                        wrapfs_siv_with(reference, 1, name, Int32(n), a.baseAddress! + 16, a.baseAddress!) == 1
                            && wrapfs_siv_composed_with(fast, 1, name, Int32(n), b.baseAddress! + 16, b.baseAddress!) == 1
                    }
                }
                guard sealed, a == b else { return false }
                let opened = back.withUnsafeMutableBufferPointer { o in
                    a.withUnsafeMutableBufferPointer { a in
                        wrapfs_siv_composed_with(fast, 0, a.baseAddress! + 16, Int32(n), o.baseAddress!, a.baseAddress!) == 1
                    }
                }
                guard opened, back == name else { return false }
                // One flipped bit anywhere fails authentication.
                a[n / 2 + 16] ^= 1
                let forged = back.withUnsafeMutableBufferPointer { o in
                    a.withUnsafeMutableBufferPointer { a in
                        wrapfs_siv_composed_with(fast, 0, a.baseAddress! + 16, Int32(n), o.baseAddress!, a.baseAddress!) == 1
                    }
                }
                guard !forged else { return false }
            }
            return true
        }
    }
}
