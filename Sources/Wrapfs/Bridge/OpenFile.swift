// OpenFile and OpenDirectory: the per-open state a FUSE file handle points to.
import Glibc
import CFuse

/// One open of a regular file: a real lower descriptor (never O_APPEND) and the open's mode.
final class OpenFile {
    let fd: FileDescriptor
    let inode: Inode
    /// Writes go to the logical end of file, found under the inode lock.
    let append: Bool
    /// The lower descriptor can be read (needed for read-modify-write).
    let readable: Bool

    init(fd: FileDescriptor, inode: Inode, append: Bool, readable: Bool) {
        self.fd = fd
        self.inode = inode
        self.append = append
        self.readable = readable
    }

    deinit { fd.close() }

    var lower: LowerFile { LowerFile(fd: fd, inode: inode) }

    /// Stores this open in `fi.fh` (retained until `release`).
    func attach(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque()))
    }

    static func from(_ fi: UnsafeMutablePointer<fuse_file_info>) -> OpenFile? {
        guard fi.pointee.fh != 0, let p = UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh)) else { return nil }
        return Unmanaged<OpenFile>.fromOpaque(p).takeUnretainedValue()
    }

    static func detach(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        guard let p = UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh)) else { return }
        Unmanaged<OpenFile>.fromOpaque(p).release()
        fi.pointee.fh = 0
    }
}

/// One open of a directory: a lower DIR stream and where the kernel last left it.
final class OpenDirectory {
    let stream: OpaquePointer
    /// The cookie of the next entry `stream` will return; guarded by `lock`.
    var position: Int64 = 0
    let lock = Mutex()

    init(stream: OpaquePointer) { self.stream = stream }
    deinit { closedir(stream) }

    func attach(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque()))
    }

    static func from(_ fi: UnsafeMutablePointer<fuse_file_info>) -> OpenDirectory {
        Unmanaged<OpenDirectory>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!).takeUnretainedValue()
    }

    static func detach(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        guard let p = UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh)) else { return }
        Unmanaged<OpenDirectory>.fromOpaque(p).release()
        fi.pointee.fh = 0
    }
}
