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
    private let cipher: OpaquePointer
    /// Each thread's keyed contexts (made on first use): keying an SIV context costs three times
    /// what copying a keyed one does, and every lookup and listed name takes one.
    private var contexts = pthread_key_t()

    init(masterKey: SecretBytes) throws {
        key = try Subkeys.derive(from: masterKey, purpose: "wrapfs aes-256-siv names", count: 64)
        guard let c = wrapfs_siv_cipher() else { throw CodecError("OpenSSL has no AES-256-SIV (OpenSSL 3 needed)") }
        cipher = c
        pthread_key_create(&contexts) { wrapfs_siv_contexts_free($0) }
    }

    deinit { EVP_CIPHER_free(cipher) }

    private func threadContexts() throws -> UnsafeMutablePointer<wrapfs_siv_contexts> {
        if let c = pthread_getspecific(contexts) { return c.assumingMemoryBound(to: wrapfs_siv_contexts.self) }
        guard let c = key.withBytes({ wrapfs_siv_contexts_new(cipher, $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }) else {
            throw CodecError("OpenSSL cannot set up AES-SIV")
        }
        pthread_setspecific(contexts, c)
        return c
    }

    func encrypt(_ name: [UInt8]) throws -> [UInt8] {
        guard !name.isEmpty else { throw CodecError("empty name") }
        let c = try threadContexts()
        var out = [UInt8](repeating: 0, count: 16 + name.count)
        let ok = out.withUnsafeMutableBufferPointer { o in
            wrapfs_siv_with(c, 1, name, Int32(name.count), o.baseAddress! + 16, o.baseAddress!)
        }
        guard ok == 1 else { throw CodecError("AES-SIV encryption failed") }
        return Base64URL.encode(out)
    }

    func decrypt(_ lower: [UInt8]) throws -> [UInt8] {
        // Only the canonical spelling decodes, so no two lower names stand for one name.
        guard let raw = Base64URL.decode(lower), raw.count > 16 else {
            throw CodecError("not an encrypted name")
        }
        let c = try threadContexts()
        var out = [UInt8](repeating: 0, count: raw.count - 16)
        let ok = out.withUnsafeMutableBufferPointer { o in
            raw.withUnsafeBufferPointer { r in
                wrapfs_siv_with(c, 0, r.baseAddress! + 16, Int32(o.count), o.baseAddress!, UnsafeMutablePointer(mutating: r.baseAddress!))
            }
        }
        guard ok == 1 else { throw CodecError("name fails authentication") }
        return out
    }
}
