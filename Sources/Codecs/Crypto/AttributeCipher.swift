// AttributeCipher: an encrypted volume's user extended attributes, names by AES-SIV, values by AES-GCM.
import COpenSSL
import Wrapfs

/// What a user attribute becomes in the lower file, as gocryptfs does it:
/// - its name (after "user.") is AES-SIV under a subkey of its own, base64url: deterministic, so
///   a get finds the lower name without listing, and a name this key did not make is hidden;
/// - its value is 16-byte random IV | AES-256-GCM ciphertext | 16-byte tag, with the full plain
///   name as authenticated data: a value altered, or moved to another name, reads as EIO.
/// Each value grows by 32 bytes and each name by about a third plus 22 bytes, so names of more
/// than 171 bytes no longer fit the 255 bytes of an attribute name (ERANGE).
final class AttributeCipher: @unchecked Sendable {
    private let names: NameCipher
    private let sealers: ThreadCiphers
    private let openers: ThreadCiphers
    private let ivs = RandomReserve()

    init(masterKey: SecretBytes) throws {
        names = try NameCipher(masterKey: masterKey, purpose: "wrapfs aes-256-siv attribute names")
        let key = try Subkeys.derive(from: masterKey, purpose: "wrapfs aes-256-gcm attribute values")
        sealers = ThreadCiphers(gcm: true, encrypt: true, key: key)
        openers = ThreadCiphers(gcm: true, encrypt: false, key: key)
    }

    func encryptName(_ name: [UInt8]) throws -> [UInt8] { try names.encrypt(name) }
    func decryptName(_ lower: [UInt8]) throws -> [UInt8] { try names.decrypt(lower) }

    func seal(_ value: [UInt8], name: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: value.count + 32)
        let context = try sealers.context()
        try out.withUnsafeMutableBufferPointer { o in
            let base = o.baseAddress!
            try ivs.fill(UnsafeMutableRawBufferPointer(start: base, count: 16))
            let ok = value.withUnsafeBufferPointer { v in
                name.withUnsafeBufferPointer { a in
                    // An empty value still needs a valid pointer; none of its bytes are read.
                    wrapfs_gcm_seal(context, base, a.baseAddress, Int32(a.count), v.baseAddress ?? UnsafePointer(base), Int32(v.count),
                                    base + 16, base + 16 + v.count)
                }
            }
            guard ok == 1 else { throw CodecError("attribute value encryption failed") }
        }
        return out
    }

    func open(_ lower: [UInt8], name: [UInt8]) throws -> [UInt8] {
        guard lower.count >= 32 else { throw CodecError("attribute value of \(lower.count) bytes is too short to be encrypted") }
        var out = [UInt8](repeating: 0, count: lower.count - 32 + 1)  // one spare byte: never an empty buffer
        let context = try openers.context()
        let ok = lower.withUnsafeBufferPointer { l in
            name.withUnsafeBufferPointer { a in
                out.withUnsafeMutableBufferPointer { o in
                    let n = l.count - 32
                    return wrapfs_gcm_open(context, l.baseAddress!, a.baseAddress, Int32(a.count), l.baseAddress! + 16, Int32(n),
                                           l.baseAddress! + 16 + n, o.baseAddress!)
                }
            }
        }
        guard ok == 1 else { throw CodecError("attribute value fails authentication") }
        out.removeLast()
        return out
    }
}
