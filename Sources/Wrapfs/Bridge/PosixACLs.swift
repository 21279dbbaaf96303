// POSIX ACLs when the kernel enforces them: the umask of new entries, and ACL lookups on lower file systems without ACLs.
import Glibc
import CFuse

extension Layer {
    /// The mode to create a lower entry with. With FUSE_CAP_DONT_MASK the kernel sends the mode
    /// unmasked, with the caller's umask beside it: as on a local file system, a parent with a
    /// default ACL ignores the umask (the lower applies that ACL, the daemon's own umask being 0),
    /// any other parent applies it.
    func creationMode(_ req: fuse_req_t, _ mode: mode_t, in dir: Inode) -> mode_t {
        guard appliesUmask, let context = fuse_req_ctx(req) else { return mode }
        if wrapfs_getxattr(dir.fd.procPath, "system.posix_acl_default", nil, 0) > 0 { return mode }
        return mode & ~(context.pointee.umask & 0o777)
    }

    /// Whether `name` is one of the two ACL attributes the kernel reads for its permission checks.
    static func isACL(_ name: UnsafePointer<CChar>) -> Bool {
        strcmp(name, "system.posix_acl_access") == 0 || strcmp(name, "system.posix_acl_default") == 0
    }
}
