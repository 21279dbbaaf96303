// Operations on names: mknod, mkdir, symlink, readlink, unlink, rmdir, rename, link.
import Glibc
import CFuse

extension Layer {
    /// Makes a new entry with `make`, gives it the caller's ownership and replies with it.
    private func makeEntry(_ req: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>,
                           _ make: (Inode, UnsafePointer<CChar>) throws -> Void) {
        if isShadowRoot(parent) { return shadowRefuse(req, "making anything but a symbolic link") }
        serve(req) {
            let dir = inodes.inode(parent)
            let lname = try lowerNameForNew(name, in: dir)
            try lname.withUnsafeBufferPointer { n in
                try make(dir, n.baseAddress!)
                adoptOwnership(req, parent: dir, lowerName: n.baseAddress!)
                reply(req, entry: named(try entry(parent: dir, lowerName: n.baseAddress!), parent: parent, name))
            }
        }
    }

    func mknod(_ req: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>, _ mode: mode_t, _ rdev: dev_t) {
        makeEntry(req, parent, name) { dir, n in try dir.fd.mknodAt(n, mode: creationMode(req, mode, in: dir), device: rdev) }
    }

    func mkdir(_ req: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>, _ mode: mode_t) {
        makeEntry(req, parent, name) { dir, n in try dir.fd.mkdirAt(n, mode: creationMode(req, mode, in: dir)) }
    }

    func symlink(_ req: fuse_req_t, _ target: UnsafePointer<CChar>, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>) {
        if isShadowRoot(parent) { return shadowSymlink(req, target, name) }
        makeEntry(req, parent, name) { dir, n in
            let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(target).assumingMemoryBound(to: UInt8.self), count: strlen(target)))
            let encoded: [UInt8]
            do { encoded = try codec.encodeLinkTarget(bytes) } catch { throw Errno.EINVAL }
            if encoded.count >= Int(PATH_MAX) { throw Errno.ENAMETOOLONG }
            let cTarget = Layer.cString(encoded)
            try dir.fd.symlinkAt(n, target: cTarget)
        }
    }

    func readlink(_ req: fuse_req_t, _ ino: fuse_ino_t) {
        serve(req) {
            let inode = inodes.inode(ino)
            // Over a path-based lower FUSE file system the name the descriptor came by may be gone
            // (a hard link of this symlink, since replaced) while another still reaches it.
            let lower = try onLiveDescriptor(inode) { try inode.fd.readLink() }
            let target: [UInt8]
            do { target = try codec.decodeLinkTarget(lower) } catch {
                log.error("cannot decode symlink target of \(inodes.inode(ino).lowerPathForLogs): \(error)")
                throw Errno.EIO
            }
            let c = Layer.cString(target)
            fuse_reply_readlink(req, c)
        }
    }

    func remove(_ req: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>, directory: Bool) {
        if isShadowRoot(parent) { return shadowUnlink(req, name, directory: directory) }
        serve(req) {
            let dir = inodes.inode(parent)
            if directory { inodes.closing.wait(milliseconds: 100) }
            let lname = try lowerName(name, in: dir)
            do {
                try dir.fd.unlinkAt(lname, directory: directory)
            } catch let e as Errno where e == .ENOTEMPTY && directory && inodes.verifyHits {
                try onceHiddenFilesGo(from: dir, lname) { try dir.fd.unlinkAt(lname, directory: true) }
            }
            dropLongName(lname, in: dir)
            fuse_reply_err(req, 0)
        }
    }

    /// rmdir, or rename over a directory, on a lower FUSE file system on libfuse's path-based API
    /// (bindfs): it keeps a file unlinked while open there as `.fuse_hidden*` until its RELEASE,
    /// which the kernel sends after close(2) has returned (to the layer, and from the layer to
    /// the lower). Directory `lname` of `dir`, which the layer lists as empty (it hides those
    /// names), then refuses for a moment where a local file system would not. Retries `remove`
    /// every 10 ms while nothing else is left, for two seconds and at least 100 rounds (a RELEASE
    /// takes milliseconds, but a loaded machine may run the lower's daemon late); a file still
    /// open keeps it ENOTEMPTY, as the lower itself does.
    private func onceHiddenFilesGo(from dir: Inode, _ lname: UnsafePointer<CChar>, _ remove: () throws -> Void) throws {
        let hidden = Array(".fuse_hidden".utf8)
        let deadline = wrapfs_monotonic_ns() + 2_000_000_000
        var attempt = 0
        while attempt < 100 || wrapfs_monotonic_ns() < deadline {
            let left = (try? dir.fd.entryNames(of: lname)) ?? []
            if !left.allSatisfy({ $0.starts(with: hidden) }) { throw Errno.ENOTEMPTY }
            if attempt > 0 || !left.isEmpty { usleep(10_000) }
            attempt += 1
            do {
                return try remove()
            } catch let e as Errno where e == .ENOTEMPTY {
                continue
            }
        }
        log.info("\(dir.lowerPathForLogs)/\(String(cString: lname)) is not empty below: it holds files unlinked while still open there (.fuse_hidden*)")
        throw Errno.ENOTEMPTY
    }

    func rename(_ req: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>,
                _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>, _ flags: UInt32) {
        if isShadowRoot(parent) { return shadowRename(req, name, newParent, newName, flags) }
        serve(req) {
            let from = inodes.inode(parent), to = inodes.inode(newParent)
            let oldLower = try lowerName(name, in: from), newLower = try lowerNameForNew(newName, in: to)
            do {
                try from.fd.renameAt(oldLower, to: to.fd, newLower, flags: flags)
            } catch let e as Errno where e == .ENOTEMPTY && inodes.verifyHits {
                try onceHiddenFilesGo(from: to, newLower) { try from.fd.renameAt(oldLower, to: to.fd, newLower, flags: flags) }
            }
            // The old name is gone (unless the two were exchanged or are one and the same).
            if flags & 2 == 0 && !(from === to && oldLower == newLower) { dropLongName(oldLower, in: from) }
            fuse_reply_err(req, 0)
        }
    }

    func link(_ req: fuse_req_t, _ ino: fuse_ino_t, _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>) {
        if isShadowRoot(newParent) { return shadowRefuse(req, "a hard link") }
        serve(req) {
            let dir = inodes.inode(newParent)
            let lname = try lowerNameForNew(newName, in: dir)
            try inodes.inode(ino).fd.linkTo(dir.fd, lname)
            reply(req, entry: named(try entry(parent: dir, lowerName: lname), parent: newParent, newName))
        }
    }
}
