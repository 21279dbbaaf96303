// Long names: an encoded name longer than NAME_MAX lives under a hash, with the full name beside it.
import CFuse
import COpenSSL
import Glibc

/// A codec that lengthens names (encryption) can make a lower name longer than the lower file
/// system allows. Such an entry is stored as `wrapfs.long.<base64url(SHA-256(encoded))>`, and a
/// side file `<that>.name` holds the full encoded name, as gocryptfs does. Encoded names of the
/// codecs that use this never contain '.', so neither form can clash with a user's name.
public enum LongNames {
    static let prefix = Array("wrapfs.long.".utf8)
    /// The side file of stand-in `x` is `x` + this; it holds the full encoded name.
    public static let suffix = Array(".name".utf8)

    static func standIn(for encoded: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        _ = encoded.withUnsafeBufferPointer { wrapfs_sha256($0.baseAddress, $0.count, &digest) }
        return prefix + Base64URL.encode(digest)
    }

    public static func isStandIn(_ lower: [UInt8]) -> Bool { lower.starts(with: prefix) && !lower.ends(with: suffix) }
    public static func isSideFile(_ lower: [UInt8]) -> Bool { lower.starts(with: prefix) && lower.ends(with: suffix) }
    static func sideFile(of standIn: [UInt8]) -> [CChar] { Layer.cString(standIn + suffix) }
}

extension Array where Element == UInt8 {
    func ends(with tail: [UInt8]) -> Bool { count >= tail.count && self[(count - tail.count)...].elementsEqual(tail) }
}

extension Layer {
    /// Whether names can grow past NAME_MAX, so long names need stand-ins.
    var usesLongNames: Bool { !codec.preservesNameLength }

    /// The lower name for a new entry `name` in `dir`; for a stand-in, its side file is written
    /// first (a failed creation leaves a side file that a retry rewrites with the same bytes).
    func lowerNameForNew(_ name: UnsafePointer<CChar>, in dir: Inode) throws -> [CChar] {
        let lower = try lowerNameBytes(name, in: dir)
        if usesLongNames && LongNames.isStandIn(lower) {
            let encoded: [UInt8]
            do { encoded = try codec.encodeName(Layer.bytes(name)) } catch { throw Errno.EINVAL }
            let side = try dir.fd.openAt(LongNames.sideFile(of: lower), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: 0o600)
            defer { side.close() }
            try encoded.withUnsafeBytes { try side.write($0, at: 0) }
            try side.truncate(to: Int64(encoded.count))
        }
        return Layer.cString(lower)
    }

    /// Removes the side file of `lower` in `dir` once its entry is gone.
    func dropLongName(_ lower: [CChar], in dir: Inode) {
        let bytes = lower.dropLast().map { UInt8(bitPattern: $0) }
        guard usesLongNames && LongNames.isStandIn(bytes) else { return }
        _ = try? dir.fd.unlinkAt(LongNames.sideFile(of: bytes), directory: false)
    }

    /// The name the layer shows for lower entry `lname` of the directory open as `dirFd`; nil for
    /// a long name's side file and for names the codec cannot decode (not the layer's).
    func shownName(_ lname: UnsafePointer<CChar>, inDirectory dirFd: Int32) -> [CChar]? {
        if usesLongNames {
            let bytes = Layer.bytes(lname)
            if LongNames.isSideFile(bytes) { return nil }
            if LongNames.isStandIn(bytes) {
                if let upper = longName(lname, inDirectory: dirFd).flatMap({ upperName(Layer.cString($0)) }) { return upper }
            }
        }
        return upperName(lname)
    }

    /// The encoded name a stand-in in the directory open as `dirFd` stands for.
    func longName(_ standIn: UnsafePointer<CChar>, inDirectory dirFd: Int32) -> [UInt8]? {
        let side = LongNames.sideFile(of: Layer.bytes(standIn))
        let fd = wrapfs_openat(dirFd, side, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.read(fd, &buf, buf.count)
        return n > 0 ? Array(buf[0..<n]) : nil
    }
}
