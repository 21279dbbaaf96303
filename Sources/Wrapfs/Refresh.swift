// Refresh ("reverse msync"): the library call applications make on a file of a Wrapfs mount.
import Glibc
import CFuse

/// Drops the cached pages of a byte range of an open file on a Wrapfs mount, so the next read
/// or touch of a mapped page reads the lower file again (see include/wrapfs.h for the C call).
public enum Refresh {
    /// Refreshes `length` bytes at `offset` of the file open as `fd` (length 0: to the end).
    /// Throws `Errno.ENOTTY` when `fd` is not a file of a Wrapfs mount.
    public static func range(of fd: Int32, offset: UInt64 = 0, length: UInt64 = 0) throws {
        var range = wrapfs_refresh_range(offset: offset, length: length)
        if Glibc.ioctl(fd, UInt(wrapfs_ioc_refresh), &range) != 0 { throw Errno.current }
    }
}
