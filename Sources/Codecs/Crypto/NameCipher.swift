// NameCipher: file names and symlink targets encrypted with AES-SIV, written as base64url.
import COpenSSL
import Foundation
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
        return Array(Base64URL.encode(out).utf8)
    }

    func decrypt(_ lower: [UInt8]) throws -> [UInt8] {
        // Only the canonical spelling counts, so no two lower names stand for one name.
        guard let raw = Base64URL.decode(lower), raw.count > 16, Array(Base64URL.encode(raw).utf8) == lower else {
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

/// base64url without padding (RFC 4648 section 5).
enum Base64URL {
    static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: [UInt8]) -> [UInt8]? {
        guard text.allSatisfy({ (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x5F }) else { return nil }
        var s = String(decoding: text, as: UTF8.self).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { Array($0) }
    }
}
