// ExtendedAttributes: a file's attribute list and values by path, read whole however they grow meanwhile.
import Glibc
import CFuse

public enum ExtendedAttributes {
    /// The attribute names of `path` (followed), each ending in NUL, as listxattr(2) gives them.
    public static func list(_ path: String) throws -> [UInt8] {
        try readGrowing { buf, size in try sys { wrapfs_listxattr(path, buf?.assumingMemoryBound(to: CChar.self), size) } }
    }

    /// The value of attribute `name` of `path` (followed).
    public static func value(_ path: String, _ name: UnsafePointer<CChar>) throws -> [UInt8] {
        try readGrowing { buf, size in try sys { wrapfs_getxattr(path, name, buf, size) } }
    }

    /// Reads what `call` gives (asked for its size first), again while it grows in between (ERANGE).
    private static func readGrowing(_ call: (UnsafeMutableRawPointer?, Int) throws -> Int) throws -> [UInt8] {
        while true {
            let size = try call(nil, 0)
            var buf = [UInt8](repeating: 0, count: max(size, 1))
            do {
                let n = try buf.withUnsafeMutableBytes { try call($0.baseAddress, size) }
                return Array(buf[0..<n])
            } catch let e as Errno where e == .ERANGE {
                continue
            }
        }
    }
}
