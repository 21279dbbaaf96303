// Operations on extended attributes, passed to the lower file through its /proc path.
import Glibc
import CFuse

extension Layer {
    /// Symlinks have no race-free xattr path through an O_PATH descriptor: they show none
    /// and take none (as ext4 refuses user.* attributes on symlinks).
    private func xattrPath(_ ino: fuse_ino_t, symlinkError: Errno) throws -> String {
        let inode = inodes.inode(ino)
        if inode.isSymlink { throw symlinkError }
        return inode.fd.procPath
    }

    /// `body` on the file's /proc path, again on another of its names when the one the descriptor
    /// came by is gone (a path-based lower FUSE file system, see `onLiveDescriptor`).
    private func onLivePath<R>(_ ino: fuse_ino_t, symlinkError: Errno, _ body: (String) throws -> R) throws -> R {
        try onLiveDescriptor(inodes.inode(ino)) { try body(try xattrPath(ino, symlinkError: symlinkError)) }
    }

    func setxattr(_ req: fuse_req_t, _ ino: fuse_ino_t, _ name: UnsafePointer<CChar>, _ value: UnsafePointer<CChar>?,
                  _ size: Int, _ flags: Int32) {
        if isShadowRoot(ino) { return shadowRefuse(req, "an extended attribute on the shim root") }
        serve(req) {
            defer { inodes.inode(ino).xattrsChanged() }
            if encodesAttribute(name) {
                try onLivePath(ino, symlinkError: .EPERM) { path in
                    try setEncodedAttribute(path, name, UnsafeRawBufferPointer(start: value, count: size), flags: flags)
                }
            } else {
                _ = try onLivePath(ino, symlinkError: .EPERM) { path in try sys { wrapfs_setxattr(path, name, value, size, flags) } }
            }
            fuse_reply_err(req, 0)
        }
    }

    func getxattr(_ req: fuse_req_t, _ ino: fuse_ino_t, _ name: UnsafePointer<CChar>, _ size: Int) {
        serve(req) {
            let inode = inodes.inode(ino)
            let isCapability = strcmp(name, "security.capability") == 0
            let capability = inode.knownToLackCapability()
            if isCapability && capability.known { throw Errno.ENODATA }
            if encodesAttribute(name) {
                let value = try onLivePath(ino, symlinkError: .ENODATA) { path in try encodedAttribute(path, name, of: inode) }
                return try replyAttributeBytes(req, value, size: size)
            }
            do {
                if size == 0 {
                    fuse_reply_xattr(req, try onLivePath(ino, symlinkError: .ENODATA) { path in try sys { wrapfs_getxattr(path, name, nil, 0) } })
                    return
                }
                let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
                defer { buf.deallocate() }
                let n = try onLivePath(ino, symlinkError: .ENODATA) { path in try sys { wrapfs_getxattr(path, name, buf, size) } }
                fuse_reply_buf(req, buf.assumingMemoryBound(to: CChar.self), n)
            } catch let error as Errno where error == .ENODATA && isCapability {
                inode.recordLacksCapability(generation: capability.generation)
                throw error
            } catch let error as Errno where error == .EOPNOTSUPP && kernelEnforcesACLs && Layer.isACL(name) {
                // A lower without ACLs has none; EOPNOTSUPP would fail the kernel's permission checks.
                throw Errno.ENODATA
            }
        }
    }

    func listxattr(_ req: fuse_req_t, _ ino: fuse_ino_t, _ size: Int) {
        serve(req) {
            if inodes.inode(ino).isSymlink {
                // An empty list: its size when asked for the size, else no bytes (an xattr-size
                // reply to a sized request would reach the caller as a malformed list: EIO).
                if size == 0 { fuse_reply_xattr(req, 0) } else { fuse_reply_buf(req, nil, 0) }
                return
            }
            if !codec.keepsAttributes {
                return try replyAttributeBytes(req, try onLivePath(ino, symlinkError: .ENODATA) { path in try encodedAttributeList(path) }, size: size)
            }
            if size == 0 {
                fuse_reply_xattr(req, try onLivePath(ino, symlinkError: .ENODATA) { path in try sys { wrapfs_listxattr(path, nil, 0) } })
                return
            }
            let buf = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buf.deallocate() }
            let n = try onLivePath(ino, symlinkError: .ENODATA) { path in try sys { wrapfs_listxattr(path, buf, size) } }
            fuse_reply_buf(req, buf, n)
        }
    }

    func removexattr(_ req: fuse_req_t, _ ino: fuse_ino_t, _ name: UnsafePointer<CChar>) {
        if isShadowRoot(ino) { return shadowRefuse(req, "an extended attribute on the shim root") }
        serve(req) {
            defer { inodes.inode(ino).xattrsChanged() }
            func remove(_ lower: UnsafePointer<CChar>) throws {
                _ = try onLivePath(ino, symlinkError: .ENODATA) { path in try sys { wrapfs_removexattr(path, lower) } }
            }
            if encodesAttribute(name) { try remove(try lowerAttributeName(name)) } else { try remove(name) }
            if strcmp(name, "security.capability") == 0, let ctx = fuse_req_ctx(req)?.pointee {
                inodes.inode(ino).capabilityRemoved(by: ctx.pid)
            }
            fuse_reply_err(req, 0)
        }
    }
}
