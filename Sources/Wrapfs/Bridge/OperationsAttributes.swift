// Operations on inodes and their attributes: lookup, forget, getattr, setattr, statfs.
import Glibc
import CFuse

extension Layer {
    func lookup(_ req: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>) {
        if isShadowRoot(parent) { return shadowLookup(req, name) }
        serve(req) {
            let dir = inodes.inode(parent)
            // The kernel resolves "." and ".." itself; should either come here, ".." at the root
            // stays at the root (a namespace never reaches the rest of LOWER).
            if strcmp(name, ".") == 0 || (strcmp(name, "..") == 0 && dir === inodes.root) {
                return reply(req, entry: try entryParameters(inodes.remember(fd: try dir.fd.openAt(".", O_PATH | O_DIRECTORY), stat: try dir.fd.stat())))
            }
            let lname: [CChar]
            do { lname = try lowerName(name, in: dir) } catch let e as Errno where e == .EPERM { throw Errno.ENOENT }
            do {
                reply(req, entry: named(try entry(parent: dir, lowerName: lname), parent: parent, name))
            } catch let e as Errno where e == .ENOENT && options.negativeTimeout > 0 {
                var neg = fuse_entry_param()
                neg.entry_timeout = options.negativeTimeout
                fuse_reply_entry(req, &neg)
            }
        }
    }

    func forget(_ req: fuse_req_t, _ ino: fuse_ino_t, _ count: UInt64) {
        inodes.forget(ino, count: count)
        fuse_reply_none(req)
    }

    func forgetMany(_ req: fuse_req_t, _ count: Int, _ list: UnsafeMutablePointer<fuse_forget_data>) {
        for i in 0..<count { inodes.forget(fuse_ino_t(list[i].ino), count: list[i].nlookup) }
        fuse_reply_none(req)
    }

    /// access(2) and faccessat(2) without `default_permissions` (with it, the kernel decides
    /// alone): the mode bits of the lower file against the caller, as a local file system
    /// checks them (ACLs aside). Root may read and write anything, and execute what has an x bit.
    func access(_ req: fuse_req_t, _ ino: fuse_ino_t, _ mask: Int32) {
        serve(req) {
            let st = try lowerStat(inodes.inode(ino).fd)
            let want = mode_t(mask & (R_OK | W_OK | X_OK))
            guard want != 0, let ctx = fuse_req_ctx(req)?.pointee else { fuse_reply_err(req, 0); return }
            let mode = st.st_mode
            if ctx.uid == 0 {
                let executable = mode & S_IFMT == S_IFDIR || mode & (S_IXUSR | S_IXGRP | S_IXOTH) != 0
                if want & mode_t(X_OK) != 0 && !executable { throw Errno.EACCES }
            } else {
                let bits: mode_t
                if ctx.uid == st.st_uid {
                    bits = (mode >> 6) & 7
                } else if ctx.gid == st.st_gid || Self.groups(of: req).contains(st.st_gid) {
                    bits = (mode >> 3) & 7
                } else {
                    bits = mode & 7
                }
                if want & ~bits != 0 { throw Errno.EACCES }
            }
            fuse_reply_err(req, 0)
        }
    }

    /// The caller's supplementary groups (libfuse reads them from /proc).
    static func groups(of req: fuse_req_t) -> [gid_t] {
        var list = [gid_t](repeating: 0, count: 64)
        let n = fuse_req_getgroups(req, Int32(list.count), &list)
        if n > list.count {
            list = [gid_t](repeating: 0, count: Int(n))
            return Array(list.prefix(Int(max(0, fuse_req_getgroups(req, Int32(list.count), &list)))))
        }
        return Array(list.prefix(Int(max(0, n))))
    }

    func getattr(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        serve(req) {
            let inode = inodes.inode(ino)
            // fstat of an open file asks through its handle: the open descriptor still reaches
            // a file whose name is gone, where a path-based lower FUSE file system's O_PATH one may not.
            if inode.isRegular, let fi, let open = OpenFile.from(fi) {
                reply(req, attributes: try attributes(inode, try lowerStat(open.fd)))
            } else {
                reply(req, attributes: try attributes(inode))
            }
        }
    }

    func setattr(_ req: fuse_req_t, _ ino: fuse_ino_t, _ attr: stat, _ toSet: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        if isShadowRoot(ino) { return shadowRefuse(req, "changing the shim root's attributes") }
        serve(req) {
            let inode = inodes.inode(ino)
            inode.waitForStores()
            // Only regular files have OpenFile handles (a directory's handle is an OpenDirectory).
            let open = inode.isRegular ? fi.flatMap { OpenFile.from($0) } : nil
            // Over a path-based lower FUSE file system the name the descriptor came by may be gone
            // (`link a b; unlink a`): ENOENT from it takes another name and tries again.
            try onLiveDescriptor(inode) {
                if toSet & FUSE_SET_ATTR_MODE != 0 {
                    if inode.isSymlink { throw Errno.EOPNOTSUPP }
                    if let open { try open.fd.chmod(attr.st_mode) } else { _ = try sys { fchmodat(AT_FDCWD, inode.fd.procPath, attr.st_mode, 0) } }
                }
                if toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
                    // The rule asks about the group the file had; a local lower's chown (by the daemon,
                    // as root) may already have dropped some of the bits, the rest go after it.
                    let before = losesSetIDOnChange(inode) ? try lowerStat(inode.fd) : nil
                    try inode.fd.chown(uid: toSet & FUSE_SET_ATTR_UID != 0 ? attr.st_uid : uid_t.max,
                                       gid: toSet & FUSE_SET_ATTR_GID != 0 ? attr.st_gid : gid_t.max)
                    if let before { try clearSetID(req, inode, before) }
                }
                if toSet & FUSE_SET_ATTR_SIZE != 0 {
                    guard inode.isRegular else { throw inode.isDirectory ? Errno.EISDIR : Errno.EINVAL }
                    try withWritable(inode, open) { file in
                        try inode.content.writing { try engine.truncate(file, to: Int64(attr.st_size)) }
                    }
                    contentChanged(inode)
                }
                if toSet & FUSE_SET_ATTR_KILL_SUID != 0 {
                    // FATTR_KILL_SUIDGID (FUSE_HANDLE_KILLPRIV_V2): a caller without CAP_FSETID truncated.
                    try clearSetID(req, inode, try lowerStat(inode.fd))
                } else if toSet & ~FUSE_SET_ATTR_CTIME == 0 && losesSetIDOnChange(inode) {
                    // Nothing to set (a ctime only with the writeback cache): the kernel passes on a
                    // loss of privileges it left to the layer,
                    // from chown(file, -1, -1) (a fifo, socket or device node too, as on ext4) or
                    // from a write, fallocate or truncate of a regular file (file_remove_privs). The
                    // latter comes for root only when the file had a capability, which the kernel
                    // has just removed: root keeps the set-ID bits there.
                    let ctx = fuse_req_ctx(req)?.pointee
                    let remover = inode.takeCapabilityRemover()
                    if !(ctx?.uid == 0 && remover != 0 && remover == ctx?.pid) {
                        try clearSetID(req, inode, try lowerStat(inode.fd))
                    }
                }
                if toSet & ~FUSE_SET_ATTR_CTIME == 0 { touchChangeTime(inode) }
                if toSet & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME) != 0 {
                    let omit = timespec(tv_sec: 0, tv_nsec: wrapfs_utime_omit), now = timespec(tv_sec: 0, tv_nsec: wrapfs_utime_now)
                    var times = [omit, omit]
                    if toSet & FUSE_SET_ATTR_ATIME != 0 { times[0] = toSet & FUSE_SET_ATTR_ATIME_NOW != 0 ? now : attr.st_atim }
                    if toSet & FUSE_SET_ATTR_MTIME != 0 { times[1] = toSet & FUSE_SET_ATTR_MTIME_NOW != 0 ? now : attr.st_mtim }
                    if inodes.verifyHits && (times[0].tv_nsec == wrapfs_utime_omit || times[1].tv_nsec == wrapfs_utime_omit) {
                        // Some lower FUSE file systems (bindfs 1.14) set "now" for UTIME_OMIT: pass the current time.
                        let current = try lowerStat(inode.fd)
                        if times[0].tv_nsec == wrapfs_utime_omit { times[0] = current.st_atim }
                        if times[1].tv_nsec == wrapfs_utime_omit { times[1] = current.st_mtim }
                    }
                    do {
                        if let open {
                            try open.fd.setTimes(times)
                        } else {
                            try inode.fd.setTimesOfHeld(times, isSymlink: inode.isSymlink)
                        }
                    } catch let e as Errno where e == .ESTALE && (try? lowerStat(open?.fd ?? inode.fd))?.st_nlink == 0 {
                        // GlusterFS gives a file with no name left no new times (ESTALE). No one can
                        // see them, and with the writeback cache the kernel, which sends them at
                        // fsync, keeps its own: that fsync must not fail on them.
                    }
                }
            }
            reply(req, attributes: try attributes(inode))
        }
    }

    /// chown(path, -1, -1) changes nothing but the ctime, and a local lower (ext4, tmpfs) does
    /// change it: the layer passes it on. Not with the lower's own chown(-1, -1), which would drop
    /// S_ISUID the set-ID rule above may keep, but with a chmod to the mode the file has (a
    /// symlink has no mode to set and no set-ID bits to lose). Best effort: a daemon that may not
    /// chmod the file leaves the ctime as it is.
    private func touchChangeTime(_ inode: Inode) {
        if inode.isSymlink {
            try? inode.fd.chown(uid: uid_t.max, gid: gid_t.max)
        } else if let st = try? lowerStat(inode.fd) {
            _ = fchmodat(AT_FDCWD, inode.fd.procPath, st.st_mode & 0o7777, 0)
        }
    }

    /// Runs `body` on a descriptor of `inode` that can be read and written.
    func withWritable<R>(_ inode: Inode, _ open: OpenFile?, _ body: (LowerFile) throws -> R) throws -> R {
        if let open, open.readable { return try body(LowerFile(fd: open.fd, inode: inode)) }
        let fd = try inode.fd.reopenQuietly(O_RDWR)
        defer { fd.close() }
        return try body(LowerFile(fd: fd, inode: inode))
    }

    func statfs(_ req: fuse_req_t, _ ino: fuse_ino_t) {
        serve(req) {
            var sv = try inodes.inode(ino).fd.statfs()
            fuse_reply_statfs(req, &sv)
        }
    }
}
