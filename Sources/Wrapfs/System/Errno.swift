// Errno: the error every syscall wrapper throws, carried back to the kernel as-is.
import Glibc
import CFuse

/// A POSIX error number. The file-system logic throws these; the FUSE bridge replies with them.
public struct Errno: Error, Equatable, Hashable, CustomStringConvertible, Sendable {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's errno.
    public static var current: Errno { Errno(wrapfs_errno()) }

    public var description: String { String(cString: strerror(rawValue)) + " (errno \(rawValue))" }

    public static let EIO = Errno(Glibc.EIO)
    public static let ENOENT = Errno(Glibc.ENOENT)
    public static let EINVAL = Errno(Glibc.EINVAL)
    public static let ENOSYS = Errno(Glibc.ENOSYS)
    public static let EOPNOTSUPP = Errno(Glibc.EOPNOTSUPP)
    public static let EPERM = Errno(Glibc.EPERM)
    public static let EACCES = Errno(Glibc.EACCES)
    public static let ENXIO = Errno(Glibc.ENXIO)
    public static let EFBIG = Errno(Glibc.EFBIG)
    public static let ENAMETOOLONG = Errno(Glibc.ENAMETOOLONG)
    public static let ENOTDIR = Errno(Glibc.ENOTDIR)
    public static let EISDIR = Errno(Glibc.EISDIR)
    public static let EBADF = Errno(Glibc.EBADF)
    public static let ERANGE = Errno(Glibc.ERANGE)
    public static let ENOTTY = Errno(Glibc.ENOTTY)
    public static let ENODATA = Errno(Glibc.ENODATA)
    public static let EMFILE = Errno(Glibc.EMFILE)
    public static let EEXIST = Errno(Glibc.EEXIST)
    public static let ELOOP = Errno(Glibc.ELOOP)
    public static let EXDEV = Errno(Glibc.EXDEV)
    public static let ESTALE = Errno(Glibc.ESTALE)
    public static let ENOTEMPTY = Errno(Glibc.ENOTEMPTY)
    public static let ENOSPC = Errno(Glibc.ENOSPC)
}

/// Runs a syscall that returns -1 on failure, retrying on EINTR, and throws its errno.
@inline(__always)
func sys<T: BinaryInteger>(_ call: () -> T) throws -> T {
    while true {
        let r = call()
        if r != -1 { return r }
        let e = Errno.current
        if e.rawValue != EINTR { throw e }
    }
}
