// NameCipher: file names and symlink targets encrypted with AES-SIV, written as base64url.
import COpenSSL
import Wrapfs

/// Deterministic authenticated encryption of names: the same name always gives the same lower
/// name (so lookups need no directory scan), and a lower name this key did not make fails to
/// decode (the layer hides it). Lower name = base64url(tag | ciphertext), no padding; it never
/// contains '.', so it cannot clash with the layer's own files.
final class NameCipher: @unchecked Sendable {
    private let key: SecretBytes
    private let cipher: OpaquePointer

    init(masterKey: SecretBytes) throws {
        key = try Subkeys.derive(from: masterKey, purpose: "wrapfs aes-256-siv names", count: 64)
        guard let c = wrapfs_siv_cipher() else { throw CodecError("OpenSSL has no AES-256-SIV (OpenSSL 3 needed)") }
        cipher = c
    }

    deinit { EVP_CIPHER_free(cipher) }

    func encrypt(_ name: [UInt8]) throws -> [UInt8] {
        guard !name.isEmpty else { throw CodecError("empty name") }
        var out = [UInt8](repeating: 0, count: 16 + name.count)
        let ok = out.withUnsafeMutableBufferPointer { o in
            key.withBytes { k in
                wrapfs_siv(cipher, 1, k.baseAddress!.assumingMemoryBound(to: UInt8.self), name, Int32(name.count), o.baseAddress! + 16, o.baseAddress!)
            }
        }
        guard ok == 1 else { throw CodecError("AES-SIV encryption failed") }
        return Base64URL.encode(out)
    }

    func decrypt(_ lower: [UInt8]) throws -> [UInt8] {
        // Only the canonical spelling decodes, so no two lower names stand for one name.
        guard let raw = Base64URL.decode(lower), raw.count > 16 else {
            throw CodecError("not an encrypted name")
        }
        var out = [UInt8](repeating: 0, count: raw.count - 16)
        let ok = out.withUnsafeMutableBufferPointer { o in
            raw.withUnsafeBufferPointer { r in
                key.withBytes { k in
                    wrapfs_siv(cipher, 0, k.baseAddress!.assumingMemoryBound(to: UInt8.self), r.baseAddress! + 16, Int32(o.count), o.baseAddress!,
                               UnsafeMutablePointer(mutating: r.baseAddress!))
                }
            }
        }
        guard ok == 1 else { throw CodecError("name fails authentication") }
        return out
    }
}
