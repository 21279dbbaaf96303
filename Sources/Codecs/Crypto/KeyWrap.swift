// The master key as a volume stores it: wrapped with AES-256-GCM under a scrypt-derived key.
import COpenSSL
import Foundation
import Wrapfs

/// scrypt's cost: N = 2^logN, block size r, parallelism p. The default (2^16, 8, 1) is
/// gocryptfs's: about 64 MiB and a fraction of a second per unlock.
public struct ScryptCost: Codable, Equatable, Sendable {
    public var logN: Int
    public var r: Int
    public var p: Int
    public init(logN: Int = 16, r: Int = 8, p: Int = 1) {
        self.logN = logN
        self.r = r
        self.p = p
    }
    public static let strong = ScryptCost()
    /// The range accepted: below 2^10 is too cheap to guess against, above 2^22 needs > 4 GiB.
    public var isValid: Bool { (10...22).contains(logN) && (1...32).contains(r) && (1...16).contains(p) }
}

/// A passphrase that does not unwrap the key (or a key section that was altered).
public struct WrongPassphrase: Error, CustomStringConvertible {
    public var description: String { "wrong passphrase (or the volume file's key section is damaged)" }
}

/// The wrapped master key and what unwraps it, as stored in the volume file.
public struct WrappedMasterKey: Codable, Equatable, Sendable {
    public var version = 1
    public var scrypt: ScryptCost
    /// base64 of 32 random bytes.
    public var salt: String
    /// base64 of IV (16) | encrypted key (32) | GCM tag (16).
    public var key: String

    static let aad = Array("wrapfs master key v1".utf8)

    /// A new random 256-bit master key.
    public static func newMasterKey() throws -> SecretBytes {
        let k = try SecretBytes(count: 32)
        try k.withMutableBytes { try randomBytes($0) }
        return k
    }

    /// Wraps `master` under `passphrase` with a fresh salt and IV.
    public init(wrapping master: SecretBytes, passphrase: SecretBytes, cost: ScryptCost) throws {
        var saltBytes = [UInt8](repeating: 0, count: 32)
        try saltBytes.withUnsafeMutableBytes { try randomBytes($0) }
        let kek = try Self.derive(passphrase, salt: saltBytes, cost: cost)
        var blob = [UInt8](repeating: 0, count: 64)
        try blob.withUnsafeMutableBytes { b in
            try randomBytes(UnsafeMutableRawBufferPointer(rebasing: b[0..<16]))
            let p = b.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let ok = kek.withBytes { k in master.withBytes { m in
                Self.withCipher(k, encrypt: true) { c in
                    wrapfs_gcm_seal(c, p, Self.aad, Int32(Self.aad.count), m.baseAddress!.assumingMemoryBound(to: UInt8.self), 32, p + 16, p + 48)
                }
            } }
            guard ok == 1 else { throw CodecError("OpenSSL could not wrap the master key") }
        }
        scrypt = cost
        salt = Data(saltBytes).base64EncodedString()
        key = Data(blob).base64EncodedString()
    }

    /// The master key, if `passphrase` is the one it was wrapped with.
    public func unwrap(passphrase: SecretBytes) throws -> SecretBytes {
        guard version == 1 else { throw CodecError("key section version \(version) is not supported") }
        guard scrypt.isValid, let saltData = Data(base64Encoded: salt), saltData.count == 32,
              let blob = Data(base64Encoded: key), blob.count == 64 else { throw WrongPassphrase() }
        let kek = try Self.derive(passphrase, salt: Array(saltData), cost: scrypt)
        let master = try SecretBytes(count: 32)
        let ok = Array(blob).withUnsafeBytes { b in
            let p = b.baseAddress!.assumingMemoryBound(to: UInt8.self)
            return kek.withBytes { k in master.withMutableBytes { m in
                Self.withCipher(k, encrypt: false) { c in
                    wrapfs_gcm_open(c, p, Self.aad, Int32(Self.aad.count), p + 16, 32, p + 48, m.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            } }
        }
        guard ok == 1 else { throw WrongPassphrase() }
        return master
    }

    private static func derive(_ passphrase: SecretBytes, salt: [UInt8], cost: ScryptCost) throws -> SecretBytes {
        guard cost.isValid else { throw CodecError("scrypt cost out of range (logN 10...22, r 1...32, p 1...16)") }
        let kek = try SecretBytes(count: 32)
        let n = UInt64(1) << UInt64(cost.logN)
        let memory = 128 * n * UInt64(cost.r) * UInt64(cost.p) + (64 << 20)
        let ok = passphrase.withBytes { pw in kek.withMutableBytes { out in
            EVP_PBE_scrypt(pw.baseAddress!.assumingMemoryBound(to: CChar.self), pw.count, salt, salt.count,
                           n, UInt64(cost.r), UInt64(cost.p), memory, out.baseAddress!.assumingMemoryBound(to: UInt8.self), 32)
        } }
        guard ok == 1 else { throw CodecError("scrypt failed (too little memory for this cost?)") }
        return kek
    }

    private static func withCipher(_ key: UnsafeRawBufferPointer, encrypt: Bool, _ body: (OpaquePointer) -> Int32) -> Int32 {
        guard let c = wrapfs_cipher_new(1, encrypt ? 1 : 0, key.baseAddress!.assumingMemoryBound(to: UInt8.self)) else { return 0 }
        defer { wrapfs_cipher_free(UnsafeMutableRawPointer(c)) }
        return body(c)
    }
}
