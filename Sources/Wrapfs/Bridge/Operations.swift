// The low-level operations table: C entry points that hand each request to its Layer method.
import Glibc
import CFuse

extension Layer {
    @inline(__always)
    static func of(_ req: fuse_req_t?) -> Layer {
        Unmanaged<Layer>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            Unmanaged<Layer>.fromOpaque(userdata!).takeUnretainedValue().negotiate(conn!)
        }
        // attributes
        ops.lookup = { req, parent, name in Layer.of(req).timed(.lookup) { $0.lookup(req!, parent, name!) } }
        ops.forget = { req, ino, n in Layer.of(req).timed(.forget) { $0.forget(req!, ino, n) } }
        ops.forget_multi = { req, count, list in Layer.of(req).timed(.forget) { $0.forgetMany(req!, count, list!) } }
        ops.getattr = { req, ino, fi in Layer.of(req).timed(.getattr) { $0.getattr(req!, ino, fi) } }
        ops.setattr = { req, ino, attr, toSet, fi in Layer.of(req).timed(.setattr) { $0.setattr(req!, ino, attr!.pointee, toSet, fi) } }
        ops.access = { req, ino, mask in Layer.of(req).timed(.access) { $0.access(req!, ino, mask) } }
        ops.statfs = { req, ino in Layer.of(req).timed(.statfs) { $0.statfs(req!, ino) } }
        // names
        ops.mknod = { req, parent, name, mode, rdev in Layer.of(req).timed(.mknod) { $0.mknod(req!, parent, name!, mode, rdev) } }
        ops.mkdir = { req, parent, name, mode in Layer.of(req).timed(.mkdir) { $0.mkdir(req!, parent, name!, mode) } }
        ops.symlink = { req, target, parent, name in Layer.of(req).timed(.symlink) { $0.symlink(req!, target!, parent, name!) } }
        ops.readlink = { req, ino in Layer.of(req).timed(.readlink) { $0.readlink(req!, ino) } }
        ops.unlink = { req, parent, name in Layer.of(req).timed(.unlink) { $0.remove(req!, parent, name!, directory: false) } }
        ops.rmdir = { req, parent, name in Layer.of(req).timed(.rmdir) { $0.remove(req!, parent, name!, directory: true) } }
        ops.rename = { req, p, n, np, nn, flags in Layer.of(req).timed(.rename) { $0.rename(req!, p, n!, np, nn!, flags) } }
        ops.link = { req, ino, np, nn in Layer.of(req).timed(.link) { $0.link(req!, ino, np, nn!) } }
        // files
        ops.create = { req, parent, name, mode, fi in Layer.of(req).timed(.create) { $0.create(req!, parent, name!, mode, fi!) } }
        ops.open = { req, ino, fi in Layer.of(req).timed(.open) { $0.open(req!, ino, fi!) } }
        ops.read = { req, ino, size, off, fi in Layer.of(req).timed(.read) { $0.read(req!, ino, size, off, fi!) } }
        ops.write_buf = { req, ino, bufv, off, fi in Layer.of(req).timed(.write) { $0.writeBuf(req!, ino, bufv!, off, fi!) } }
        ops.flush = { req, ino, fi in Layer.of(req).timed(.flush) { $0.flush(req!, ino, fi!) } }
        ops.release = { req, ino, fi in Layer.of(req).timed(.release) { $0.release(req!, ino, fi!) } }
        ops.fsync = { req, ino, datasync, fi in Layer.of(req).timed(.fsync) { $0.fsync(req!, ino, datasync != 0, fi!) } }
        ops.fallocate = { req, ino, mode, off, len, fi in Layer.of(req).timed(.fallocate) { $0.fallocate(req!, ino, mode, off, len, fi!) } }
        ops.lseek = { req, ino, off, whence, fi in Layer.of(req).timed(.lseek) { $0.lseek(req!, ino, off, whence, fi!) } }
        ops.ioctl = { req, ino, cmd, _, _, flags, input, inputSize, outputSize in
            Layer.of(req).timed(.ioctl) { $0.ioctl(req!, ino, cmd, flags, input, inputSize, outputSize) }
        }
        // directories
        ops.opendir = { req, ino, fi in Layer.of(req).timed(.opendir) { $0.opendir(req!, ino, fi!) } }
        ops.readdir = { req, ino, size, off, fi in Layer.of(req).timed(.readdir) { $0.readdir(req!, ino, size, off, fi!, plus: false) } }
        ops.readdirplus = { req, ino, size, off, fi in Layer.of(req).timed(.readdirplus) { $0.readdir(req!, ino, size, off, fi!, plus: true) } }
        ops.releasedir = { req, ino, fi in Layer.of(req).timed(.releasedir) { $0.releasedir(req!, ino, fi!) } }
        ops.fsyncdir = { req, ino, datasync, fi in Layer.of(req).timed(.fsyncdir) { $0.fsyncdir(req!, ino, datasync != 0, fi!) } }
        // extended attributes
        ops.setxattr = { req, ino, name, value, size, flags in Layer.of(req).timed(.setxattr) { $0.setxattr(req!, ino, name!, value, size, flags) } }
        ops.getxattr = { req, ino, name, size in Layer.of(req).timed(.getxattr) { $0.getxattr(req!, ino, name!, size) } }
        ops.listxattr = { req, ino, size in Layer.of(req).timed(.listxattr) { $0.listxattr(req!, ino, size) } }
        ops.removexattr = { req, ino, name in Layer.of(req).timed(.removexattr) { $0.removexattr(req!, ino, name!) } }
        return ops
    }

    /// Runs one request's handler and records its count and latency for `status`.
    @inline(__always)
    func timed(_ op: Operation, _ body: (Layer) -> Void) {
        let start = stats.now()
        readAhead.applyIfPending(log: log)
        Operation.begin(op)
        body(self)
        stats.record(op, since: start)
    }

    /// libfuse splices a request into a pipe of max_write + 4 KiB, and reads every request with
    /// read(2) instead, quietly, when it cannot grow one that far (above fs.pipe-max-size, 1 MiB by
    /// default, without CAP_SYS_RESOURCE). Then a smaller max_write keeps `--splice` working.
    private func spliceableWriteSize(_ maxWrite: Int) -> Int {
        let header = 4096
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return maxWrite }  // closed before any exec: no O_CLOEXEC needed
        defer { close(ends[0]); close(ends[1]) }
        if fcntl(ends[0], wrapfs_F_SETPIPE_SZ, Int32(maxWrite + header)) >= 0 { return maxWrite }
        guard let text = try? String(contentsOfFile: "/proc/sys/fs/pipe-max-size", encoding: .utf8),
              let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return maxWrite }
        // Pipe sizes are a power of two pages: the largest one allowed, less the header.
        var pipeSize = header
        while pipeSize * 2 <= limit { pipeSize *= 2 }
        let fitting = pipeSize - header
        guard fitting >= header, fitting < maxWrite else { return maxWrite }
        log.notice("--splice: pipes here hold at most \(pipeSize) bytes (fs.pipe-max-size, no CAP_SYS_RESOURCE): write requests are limited to \(fitting) bytes so that libfuse can splice them")
        return fitting
    }

    /// Capability negotiation at mount time.
    func negotiate(_ conn: UnsafeMutablePointer<fuse_conn_info>) {
        kernelDropsPagesOnDirectWrite = conn.pointee.proto_major > 7 || (conn.pointee.proto_major == 7 && conn.pointee.proto_minor >= 39)
        // O_TRUNC on open comes as a setattr, so truncation always runs through the page engine.
        conn.pointee.want &= ~UInt32(FUSE_CAP_ATOMIC_O_TRUNC)
        if options.writebackCache && conn.pointee.capable & UInt32(FUSE_CAP_WRITEBACK_CACHE) != 0 {
            conn.pointee.want |= UInt32(FUSE_CAP_WRITEBACK_CACHE)
        }
        conn.pointee.max_write = UInt32(min(options.maxWrite, 1 << 20))
        // With --splice, WRITE data stays in a pipe and goes to the lower file by splice when no byte
        // changes on the way (identity): one copy of every written byte less. libfuse then reads every
        // small request back out of the pipe (a syscall more), so it is opt-in, and never for codecs
        // that must see the bytes.
        if engine.codec.passesBytesThrough && options.splice && conn.pointee.capable & UInt32(FUSE_CAP_SPLICE_READ) != 0 {
            conn.pointee.want |= UInt32(FUSE_CAP_SPLICE_READ)
            conn.pointee.max_write = UInt32(spliceableWriteSize(Int(conn.pointee.max_write)))
        } else {
            conn.pointee.want &= ~UInt32(FUSE_CAP_SPLICE_READ)
        }
        // Answering ENOSYS to the first OPENDIR then stops OPENDIR and RELEASEDIR for good.
        handlelessDirectories = !options.directoryHandles && options.coherence == .open
            && conn.pointee.capable & UInt32(FUSE_CAP_NO_OPENDIR_SUPPORT) != 0
        if options.posixACLs && options.extendedAttributes && conn.pointee.capable & UInt32(FUSE_CAP_POSIX_ACL) != 0 {
            conn.pointee.want |= UInt32(FUSE_CAP_POSIX_ACL)
            kernelEnforcesACLs = true
            if conn.pointee.capable & UInt32(FUSE_CAP_DONT_MASK) != 0 {
                conn.pointee.want |= UInt32(FUSE_CAP_DONT_MASK)
                appliesUmask = true
            }
        }
        // The kernel stops asking for security.capability at every write (see PrivilegeHandshake).
        if options.daemonClearsSetID && privileges.offered {
            privileges.accepted = true
        }
        if !options.readdirPlus {
            conn.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO)
        }
        switch options.coherence {
        case .open:
            if conn.pointee.capable & UInt32(FUSE_CAP_AUTO_INVAL_DATA) != 0 {
                conn.pointee.want |= UInt32(FUSE_CAP_AUTO_INVAL_DATA)
            }
        case .explicit:
            // Pages are dropped only when asked: not on mtime changes, not on size changes.
            conn.pointee.want &= ~UInt32(FUSE_CAP_AUTO_INVAL_DATA)
            if conn.pointee.capable & UInt32(FUSE_CAP_EXPLICIT_INVAL_DATA) != 0 {
                conn.pointee.want |= UInt32(FUSE_CAP_EXPLICIT_INVAL_DATA)
            }
        }
    }
}
