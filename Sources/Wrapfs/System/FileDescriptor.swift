// FileDescriptor: a thin typed wrapper over the descriptor syscalls the layer uses.
import Glibc
import CFuse

/// A lower-file-system descriptor. Every method is one syscall (retried on EINTR) that throws `Errno`.
public struct FileDescriptor: Hashable, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let cwd = FileDescriptor(rawValue: AT_FDCWD)

    /// The /proc path that reopens this descriptor (O_PATH descriptors cannot be read or written).
    public var procPath: String { "/proc/self/fd/\(rawValue)" }

    // MARK: opening

    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws -> FileDescriptor {
        FileDescriptor(rawValue: try sys { wrapfs_open(path, flags | O_CLOEXEC, mode) })
    }

    public func openAt(_ name: UnsafePointer<CChar>, _ flags: Int32, mode: mode_t = 0) throws -> FileDescriptor {
        FileDescriptor(rawValue: try sys { wrapfs_openat(rawValue, name, flags | O_CLOEXEC, mode) })
    }

    /// Opens the file this (O_PATH) descriptor names, with real access flags.
    public func reopen(_ flags: Int32) throws -> FileDescriptor {
        try FileDescriptor.open(procPath, flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW))
    }

    /// `reopen` for the layer's own reads (see `openQuietly`).
    public func reopenQuietly(_ flags: Int32) throws -> FileDescriptor {
        try FileDescriptor.openQuietly(flags, reopen)
    }

    /// `open(flags)` with O_NOATIME where the daemon may set it (it owns the file or has
    /// CAP_FOWNER), without where it may not: reads through the result are the layer's own, and
    /// only a caller's reads should change the lower atime.
    public static func openQuietly(_ flags: Int32, _ open: (Int32) throws -> FileDescriptor) throws -> FileDescriptor {
        do {
            return try open(flags | wrapfs_O_NOATIME)
        } catch let e as Errno where e == .EPERM {
            return try open(flags)
        }
    }

    /// Runs `body` with O_NOATIME set on this open, then restores its flags: a read the layer
    /// makes for itself (the page a partial write merges into, a last slot for a size) leaves
    /// the lower atime as a local file system's write or stat would. Best effort, as above.
    /// A caller's read through the same open meanwhile (both under the shared content lock) may
    /// miss its atime update; nothing else about the open changes.
    public func withoutAccessTimes<R>(_ body: () throws -> R) rethrows -> R {
        let flags = fcntl(rawValue, F_GETFL)
        guard flags >= 0, flags & wrapfs_O_NOATIME == 0, fcntl(rawValue, F_SETFL, flags | wrapfs_O_NOATIME) == 0 else {
            return try body()
        }
        defer { _ = fcntl(rawValue, F_SETFL, flags) }
        return try body()
    }

    public func close() { _ = Glibc.close(rawValue) }

    // MARK: content

    /// Reads until `buffer` is full or end of file; returns the bytes read.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try sys { pread(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done)) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes all of `buffer` at `offset`.
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws {
        if let error = writeUntilRefused(buffer, at: offset).error { throw error }
    }

    /// Writes `buffer` at `offset` as far as the file system takes it: the bytes written, and the
    /// error that stopped it short (a full disk, the largest file size), nil when all went.
    public func writeUntilRefused(_ buffer: UnsafeRawBufferPointer, at offset: Int64) -> (written: Int, error: Errno?) {
        var done = 0
        while done < buffer.count {
            do {
                let n = try sys { pwrite(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done)) }
                if n == 0 { return (done, .EIO) }  // no progress and no error: never loop on it
                done += n
            } catch {
                return (done, error as? Errno ?? .EIO)
            }
        }
        return (done, nil)
    }

    public func truncate(to size: Int64) throws { _ = try sys { ftruncate(rawValue, off_t(size)) } }
    public func sync(dataOnly: Bool) throws { _ = try sys { dataOnly ? fdatasync(rawValue) : fsync(rawValue) } }
    public func allocate(mode: Int32, offset: Int64, length: Int64) throws {
        _ = try sys { wrapfs_fallocate(rawValue, mode, off_t(offset), off_t(length)) }
    }
    /// Whether the file system takes a file of `size` bytes: lseek(SEEK_SET) answers EINVAL past
    /// its largest file size (ext4, xfs, btrfs, f2fs, tmpfs; ext4 per file: files without extents
    /// stop earlier). The layer reads and writes lower files at explicit offsets only, so moving
    /// the position changes nothing.
    public func takesSize(_ size: Int64) -> Bool { (try? seek(size, whence: SEEK_SET)) != nil }

    public func seek(_ offset: Int64, whence: Int32) throws -> Int64 {
        Int64(try sys { lseek(rawValue, off_t(offset), whence) })
    }

    // MARK: metadata

    public func stat() throws -> stat {
        var st = Glibc.stat()
        _ = try sys { fstatat(rawValue, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
        return st
    }

    /// The status asked of the file system itself, not the kernel's attribute cache.
    public func freshStat() throws -> stat {
        var st = Glibc.stat()
        _ = try sys { wrapfs_fstat_fresh(rawValue, &st) }
        return st
    }

    public func statfs() throws -> statvfs {
        var sv = statvfs()
        _ = try sys { fstatvfs(rawValue, &sv) }
        return sv
    }

    public func chmod(_ mode: mode_t) throws { _ = try sys { fchmod(rawValue, mode) } }
    public func chown(uid: uid_t, gid: gid_t) throws {
        _ = try sys { fchownat(rawValue, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
    }
    public func setTimes(_ times: [timespec]) throws {
        _ = try times.withUnsafeBufferPointer { t in try sys { futimens(rawValue, t.baseAddress) } }
    }
    /// `setTimes` for the file this O_PATH descriptor holds (a symlink's own times): through the
    /// descriptor, since a /proc path to a symlink names the name it came by, which ends in
    /// " (deleted)" once that hard link is unlinked while another keeps the file. Kernels before
    /// 5.8 refuse AT_EMPTY_PATH here (EINVAL): those go by that path.
    public func setTimesOfHeld(_ times: [timespec], isSymlink: Bool) throws {
        try times.withUnsafeBufferPointer { t in
            do {
                _ = try sys { utimensat(rawValue, "", t.baseAddress, AT_EMPTY_PATH) }
                return
            } catch let e as Errno where e == .EINVAL {}
            if isSymlink {
                let path = try readLinkProc()
                _ = try sys { utimensat(AT_FDCWD, path, t.baseAddress, AT_SYMLINK_NOFOLLOW) }
            } else {
                _ = try sys { utimensat(AT_FDCWD, procPath, t.baseAddress, 0) }
            }
        }
    }

    // MARK: directory entries

    public func mkdirAt(_ name: UnsafePointer<CChar>, mode: mode_t) throws { _ = try sys { mkdirat(rawValue, name, mode) } }
    public func mknodAt(_ name: UnsafePointer<CChar>, mode: mode_t, device: dev_t) throws {
        _ = try sys { mknodat(rawValue, name, mode, device) }
    }
    public func symlinkAt(_ name: UnsafePointer<CChar>, target: UnsafePointer<CChar>) throws {
        _ = try sys { symlinkat(target, rawValue, name) }
    }
    public func unlinkAt(_ name: UnsafePointer<CChar>, directory: Bool) throws {
        _ = try sys { unlinkat(rawValue, name, directory ? AT_REMOVEDIR : 0) }
    }
    public func renameAt(_ name: UnsafePointer<CChar>, to newDir: FileDescriptor, _ newName: UnsafePointer<CChar>, flags: UInt32) throws {
        _ = try sys { wrapfs_renameat2(rawValue, name, newDir.rawValue, newName, flags) }
    }
    /// Makes a new name for the file this O_PATH descriptor holds.
    public func linkTo(_ newDir: FileDescriptor, _ newName: UnsafePointer<CChar>) throws {
        _ = try sys { linkat(AT_FDCWD, procPath, newDir.rawValue, newName, AT_SYMLINK_FOLLOW) }
    }
    /// The names in subdirectory `name` of this directory, "." and ".." left out.
    public func entryNames(of name: UnsafePointer<CChar>) throws -> [[UInt8]] {
        let dir = try openAt(name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        guard let stream = fdopendir(dir.rawValue) else { let e = Errno.current; dir.close(); throw e }
        defer { closedir(stream) }
        var names: [[UInt8]] = []
        while true {
            errno = 0
            guard let ent = Glibc.readdir(stream) else {
                if errno != 0 { throw Errno.current }
                return names
            }
            let n = wrapfs_dirent_name(ent)!
            let bytes = Array(UnsafeRawBufferPointer(start: n, count: strlen(n)))
            if bytes != [0x2E] && bytes != [0x2E, 0x2E] { names.append(bytes) }
        }
    }
    /// The target of the symlink this O_PATH descriptor holds, as raw bytes.
    public func readLink() throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try buf.withUnsafeMutableBufferPointer { b in
            try sys { readlinkat(rawValue, "", UnsafeMutableRawPointer(b.baseAddress!).assumingMemoryBound(to: CChar.self), b.count) }
        }
        if n >= buf.count { throw Errno.ENAMETOOLONG }
        return Array(buf[0..<n])
    }
}

// GNU open/at flags, from the C shim.
let O_PATH = wrapfs_O_PATH
let O_DIRECT = wrapfs_O_DIRECT
let AT_EMPTY_PATH = wrapfs_AT_EMPTY_PATH
