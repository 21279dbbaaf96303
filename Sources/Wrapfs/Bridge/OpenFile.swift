// OpenFile and OpenDirectory: the per-open state a FUSE file handle points to.
import Glibc
import CFuse

/// What a FUSE file handle (`fi.fh`) points to: retained from open until release.
protocol FileHandleObject: AnyObject {}

extension FileHandleObject {
    /// Stores this open in `fi.fh` (retained until `detach`).
    func attach(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque()))
    }

    /// The open `fi.fh` holds; nil when it holds none.
    static func from(_ fi: UnsafeMutablePointer<fuse_file_info>) -> Self? {
        guard fi.pointee.fh != 0, let p = UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh)) else { return nil }
        return Unmanaged<Self>.fromOpaque(p).takeUnretainedValue()
    }

    static func detach(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        guard let p = UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh)) else { return }
        Unmanaged<Self>.fromOpaque(p).release()
        fi.pointee.fh = 0
    }
}

/// One open of a regular file: a real lower descriptor (never O_APPEND) and the open's mode.
final class OpenFile: FileHandleObject {
    let fd: FileDescriptor
    let inode: Inode
    /// The lower descriptor can be read (needed for read-modify-write).
    let readable: Bool
    /// The upper open flags and who opened the file, for `status`.
    let flags: Int32
    let opener: Opener
    /// Writes through this open may be acknowledged before they are stored: decided once, at
    /// open, with FOPEN_NOFLUSH (only such opens get the FLUSH at close that waits for them).
    var writesBehind = false

    init(fd: FileDescriptor, inode: Inode, flags: Int32, readable: Bool, opener: Opener) {
        self.fd = fd
        self.inode = inode
        self.readable = readable
        self.flags = flags
        self.opener = opener
    }

    deinit { fd.close() }

    var lower: LowerFile { LowerFile(fd: fd, inode: inode) }
}

/// One entry of an open directory, as the layer shows it.
struct DirectoryEntry {
    /// The name shown through the layer (NUL-terminated).
    let name: [CChar]
    /// The name in the lower directory (NUL-terminated); empty for "." and "..".
    let lowerName: [CChar]
    let ino: ino_t
    let type: UInt8
    /// The cookie that resumes reading after this entry.
    let next: off_t
}

/// One open of a directory (or, without directory handles, one listing: `ListingStreams`): a
/// lower DIR stream and the entries read from it so far, so that the kernel resuming at any
/// cookie it was given costs a lookup, not a re-read.
final class OpenDirectory: FileHandleObject {
    let stream: OpaquePointer
    let lock = Mutex()
    /// Entries read since the stream was last positioned; guarded by `lock`.
    var entries: [DirectoryEntry] = []
    /// Cookie -> index in `entries` of the entry after it.
    var indexAfter: [off_t: Int] = [:]
    var exhausted = false
    /// The layer's root, where its own files are hidden.
    let isRoot: Bool

    /// Opens `inode`'s lower directory for reading.
    init(_ inode: Inode, isRoot: Bool) throws {
        let fd = try inode.fd.reopen(O_RDONLY | O_DIRECTORY)
        guard let stream = fdopendir(fd.rawValue) else {
            let e = Errno.current
            fd.close()
            throw e
        }
        self.stream = stream
        self.isRoot = isRoot
    }
    deinit { closedir(stream) }

    /// Forgets what was read and positions the stream at `cookie` (0: the start, re-read).
    func reposition(_ cookie: off_t) {
        entries.removeAll(keepingCapacity: true)
        indexAfter.removeAll(keepingCapacity: true)
        exhausted = false
        if cookie == 0 { rewinddir(stream) } else { seekdir(stream, Int(cookie)) }
        indexAfter[cookie] = 0
    }
}
