// MountInfo: the mounts of this system, read from /proc/self/mountinfo (no request to any mount).
import Glibc
import CFuse

/// One line of /proc/self/mountinfo.
public struct MountInfo {
    public let point: String
    public let device: dev_t

    /// Every mount, in mount order (a later one on the same point covers the earlier).
    public static func all() -> [MountInfo] {
        guard let f = fopen("/proc/self/mountinfo", "r") else { return [] }
        defer { fclose(f) }
        var result: [MountInfo] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, f) > 0, let line {
            let fields = String(cString: line).split(separator: " ")
            guard fields.count > 4 else { continue }
            let mm = fields[2].split(separator: ":")
            guard mm.count == 2, let major = UInt32(mm[0]), let minor = UInt32(mm[1]) else { continue }
            result.append(MountInfo(point: unescape(fields[4]), device: wrapfs_makedev(major, minor)))
        }
        return result
    }

    public static func isMountPoint(_ path: String) -> Bool { all().contains { $0.point == path } }

    /// mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    static func unescape(_ s: Substring) -> String {
        var out = [UInt8](), bytes = Array(s.utf8), i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
               let v = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
