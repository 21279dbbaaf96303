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
        ops.lookup = { req, parent, name in Layer.of(req).lookup(req!, parent, name!) }
        ops.forget = { req, ino, n in Layer.of(req).forget(req!, ino, n) }
        ops.forget_multi = { req, count, list in Layer.of(req).forgetMany(req!, count, list!) }
        ops.getattr = { req, ino, fi in Layer.of(req).getattr(req!, ino, fi) }
        ops.setattr = { req, ino, attr, toSet, fi in Layer.of(req).setattr(req!, ino, attr!.pointee, toSet, fi) }
        ops.statfs = { req, ino in Layer.of(req).statfs(req!, ino) }
        // names
        ops.mknod = { req, parent, name, mode, rdev in Layer.of(req).mknod(req!, parent, name!, mode, rdev) }
        ops.mkdir = { req, parent, name, mode in Layer.of(req).mkdir(req!, parent, name!, mode) }
        ops.symlink = { req, target, parent, name in Layer.of(req).symlink(req!, target!, parent, name!) }
        ops.readlink = { req, ino in Layer.of(req).readlink(req!, ino) }
        ops.unlink = { req, parent, name in Layer.of(req).remove(req!, parent, name!, directory: false) }
        ops.rmdir = { req, parent, name in Layer.of(req).remove(req!, parent, name!, directory: true) }
        ops.rename = { req, p, n, np, nn, flags in Layer.of(req).rename(req!, p, n!, np, nn!, flags) }
        ops.link = { req, ino, np, nn in Layer.of(req).link(req!, ino, np, nn!) }
        // files
        ops.create = { req, parent, name, mode, fi in Layer.of(req).create(req!, parent, name!, mode, fi!) }
        ops.open = { req, ino, fi in Layer.of(req).open(req!, ino, fi!) }
        ops.read = { req, ino, size, off, fi in Layer.of(req).read(req!, ino, size, off, fi!) }
        ops.write = { req, ino, buf, size, off, fi in Layer.of(req).write(req!, ino, buf!, size, off, fi!) }
        // No flush: the layer has nothing to do at close(2) before release, and the kernel,
        // told ENOSYS once, stops sending one request per close (a fifth of a small file's read).
        ops.release = { req, ino, fi in Layer.of(req).release(req!, ino, fi!) }
        ops.fsync = { req, ino, datasync, fi in Layer.of(req).fsync(req!, ino, datasync != 0, fi!) }
        ops.fallocate = { req, ino, mode, off, len, fi in Layer.of(req).fallocate(req!, ino, mode, off, len, fi!) }
        ops.lseek = { req, ino, off, whence, fi in Layer.of(req).lseek(req!, ino, off, whence, fi!) }
        ops.ioctl = { req, ino, cmd, _, _, flags, input, inputSize, _ in
            Layer.of(req).ioctl(req!, ino, cmd, flags, input, inputSize)
        }
        // directories
        ops.opendir = { req, ino, fi in Layer.of(req).opendir(req!, ino, fi!) }
        ops.readdir = { req, ino, size, off, fi in Layer.of(req).readdir(req!, ino, size, off, fi!, plus: false) }
        ops.readdirplus = { req, ino, size, off, fi in Layer.of(req).readdir(req!, ino, size, off, fi!, plus: true) }
        ops.releasedir = { req, ino, fi in Layer.of(req).releasedir(req!, ino, fi!) }
        ops.fsyncdir = { req, ino, datasync, fi in Layer.of(req).fsyncdir(req!, ino, datasync != 0, fi!) }
        // extended attributes
        ops.setxattr = { req, ino, name, value, size, flags in Layer.of(req).setxattr(req!, ino, name!, value, size, flags) }
        ops.getxattr = { req, ino, name, size in Layer.of(req).getxattr(req!, ino, name!, size) }
        ops.listxattr = { req, ino, size in Layer.of(req).listxattr(req!, ino, size) }
        ops.removexattr = { req, ino, name in Layer.of(req).removexattr(req!, ino, name!) }
        return ops
    }

    /// Capability negotiation at mount time.
    func negotiate(_ conn: UnsafeMutablePointer<fuse_conn_info>) {
        // O_TRUNC on open comes as a setattr, so truncation always runs through the page engine.
        conn.pointee.want &= ~UInt32(FUSE_CAP_ATOMIC_O_TRUNC)
        if options.writebackCache && conn.pointee.capable & UInt32(FUSE_CAP_WRITEBACK_CACHE) != 0 {
            conn.pointee.want |= UInt32(FUSE_CAP_WRITEBACK_CACHE)
        }
        conn.pointee.max_write = UInt32(min(options.maxWrite, 1 << 20))
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
