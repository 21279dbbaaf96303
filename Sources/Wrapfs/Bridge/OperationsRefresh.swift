// The refresh ioctl ("reverse msync"), and the invalidation of kernel pages it and others use.
import Glibc
import CFuse

extension Layer {
    /// `WRAPFS_IOC_REFRESH` (include/wrapfs.h). The kernel's invalidation may first write back
    /// dirty pages of the range, which are requests this daemon must serve: so it runs on the
    /// refresh queue, and the ioctl is answered from there once the pages are gone. The
    /// worker thread that took the ioctl is free meanwhile, even with a single worker.
    func refresh(_ req: fuse_req_t, _ ino: fuse_ino_t, _ flags: UInt32, _ input: UnsafeRawPointer?, _ inputSize: Int) {
        guard flags & UInt32(FUSE_IOCTL_DIR) == 0, inodes.inode(ino).isRegular else { fuse_reply_err(req, ENOTTY); return }
        guard let input, inputSize >= 16 else { fuse_reply_err(req, EINVAL); return }
        let offset = input.loadUnaligned(as: UInt64.self), length = input.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) - offset else { fuse_reply_err(req, EINVAL); return }
        // What the layer itself remembers of the lower file may be stale too.
        let inode = inodes.inode(ino)
        inode.lastRecord = nil
        let requestBits = UInt(bitPattern: req)
        let queued = invalidateKernelPages(ino, offset: Int64(offset), length: Int64(length)) {
            fuse_reply_ioctl(OpaquePointer(bitPattern: requestBits), 0, nil, 0)
        }
        if !queued { fuse_reply_ioctl(req, 0, nil, 0) }
    }

    /// Has the kernel drop its cached pages of `ino` from `offset` for `length` bytes (0, 0: all),
    /// writing dirty ones back first (as write requests, which the worker threads serve): on the
    /// refresh queue, never on a request's thread, then runs `then` there. ENOENT (the kernel
    /// holds nothing of the inode) counts as done. False, and nothing run, without a session.
    @discardableResult
    func invalidateKernelPages(_ ino: fuse_ino_t, offset: Int64 = 0, length: Int64 = 0,
                               then: @escaping () -> Void = {}) -> Bool {
        guard let se = session else { return false }
        let sessionBits = UInt(bitPattern: se)
        refreshThread.async {
            _ = fuse_lowlevel_notify_inval_inode(OpaquePointer(bitPattern: sessionBits), ino, off_t(offset), off_t(length))
            then()
        }
        return true
    }

    /// Has the kernel forget its cached attributes of `ino` (not its pages, so no request comes
    /// back: safe on a request's thread).
    func invalidateKernelAttributes(_ ino: fuse_ino_t) {
        guard let se = session else { return }
        _ = fuse_lowlevel_notify_inval_inode(se, ino, -1, 0)
    }
}
