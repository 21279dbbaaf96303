// Symlink targets under AES-SIV: one too long for the lower once encrypted is deflated first.
import CZlib
import Wrapfs

extension NameCipher {
    /// The longest symlink target Linux file systems take (PATH_MAX less the NUL).
    static let longestLowerTarget = 4095
    /// Marks a deflated target: outside base64url, so no target of the plain form starts with it
    /// (volumes written before it read as they did).
    private static let deflatedMark = UInt8(ascii: "~")

    /// The target as the lower symlink holds it: AES-SIV in base64url, as names are. Encryption
    /// adds a third, so a target past ~3,000 bytes would not fit the lower; such a target is
    /// deflated before it is encrypted (long targets are paths: hex names shrink about 2:1).
    /// One that does not fit either way goes as it is, and the lower answers ENAMETOOLONG.
    func encryptLinkTarget(_ target: [UInt8]) throws -> [UInt8] {
        let plain = try encrypt(target)
        guard plain.count > Self.longestLowerTarget else { return plain }
        var packed = [UInt8](repeating: 0, count: target.count + 64)
        var length = UInt(packed.count)
        let z = try ZlibStreams.current()
        guard wrapfs_deflate(z, &packed, &length, target, UInt(target.count), 9) == Z_OK, Int(length) < target.count else {
            return plain
        }
        let marked = [Self.deflatedMark] + (try encrypt(Array(packed[0..<Int(length)])))
        return marked.count <= Self.longestLowerTarget ? marked : plain
    }

    /// Inverse of `encryptLinkTarget`; throws for a target this cipher did not make, and for
    /// one that would inflate past the longest target (no unbounded output from a lower file).
    func decryptLinkTarget(_ lower: [UInt8]) throws -> [UInt8] {
        guard lower.first == Self.deflatedMark else { return try decrypt(lower) }
        let packed = try decrypt(Array(lower.dropFirst()))
        var out = [UInt8](repeating: 0, count: Self.longestLowerTarget)
        var length = UInt(out.count)
        let z = try ZlibStreams.current()
        guard wrapfs_inflate(z, &out, &length, packed, UInt(packed.count)) == Z_OK, length > 0 else {
            throw CodecError("a deflated link target that does not inflate")
        }
        return Array(out[0..<Int(length)])
    }
}
