// MountInfo: the mounts of this system, read from /proc/self/mountinfo (no request to any mount).
import Glibc
import CFuse

/// One line of /proc/self/mountinfo.
public struct MountInfo {
    public let point: String
    public let device: dev_t
    /// The file-system type ("fuse.wrapfs" for a layer).
    public let type: String
    /// For FUSE mounts, the user who mounted (the `user_id=` super option).
    public let fuseOwner: uid_t?

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
            // After the optional fields and "-": type, source, super options.
            let rest = fields.drop { $0 != "-" }.dropFirst()
            let type = rest.first.map(String.init) ?? ""
            let superOptions = rest.dropFirst(2).first?.split(separator: ",") ?? []
            let owner = superOptions.first { $0.hasPrefix("user_id=") }.flatMap { uid_t($0.dropFirst(8)) }
            result.append(MountInfo(point: unescape(fields[4]), device: wrapfs_makedev(major, minor), type: type, fuseOwner: owner))
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
