// Operations on a shim mount's root: lookup, symlink (makes a shadow file), unlink, rename, readdir.
import Glibc
import CFuse

extension Layer {
    /// True when a request on `parent` is about the shim root's entries.
    @inline(__always)
    func isShadowRoot(_ ino: fuse_ino_t) -> Bool { shadows != nil && ino == FUSE_ROOT_ID }

    func shadowLookup(_ req: fuse_req_t, _ name: UnsafePointer<CChar>) {
        serve(req) {
            guard let e = shadows!.entry(Layer.bytes(name)) else { throw Errno.ENOENT }
            reply(req, entry: try shadowEntry(e))
        }
    }

    /// The entry of a shadow file: the backing file's inode, counted as one kernel lookup.
    private func shadowEntry(_ e: ShadowFiles.Entry) throws -> fuse_entry_param {
        let fd = try e.backing.reopen(O_PATH)
        let st: stat
        do { st = try fd.stat() } catch { fd.close(); throw error }
        return try entryParameters(inodes.remember(fd: fd, stat: st), st)
    }

    /// `ln -s /abs/backing MOUNTPOINT/name`. The kernel insists that the reply to a symlink
    /// creation is a symlink, so the reply says so with zero timeouts: the next path walk
    /// looks the name up again and finds the regular file it really is.
    func shadowSymlink(_ req: fuse_req_t, _ target: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>) {
        serve(req) {
            if strlen(name) > Int(NAME_MAX) { throw Errno.ENAMETOOLONG }
            let e = try shadows!.add(Layer.bytes(name), target: Layer.bytes(target)) { log.error("\($0)") }
            var p: fuse_entry_param
            do { p = try shadowEntry(e) } catch { try? shadows!.remove(Layer.bytes(name)); throw error }
            p.attr.st_mode = S_IFLNK | 0o777
            p.attr.st_size = off_t(strlen(target))
            p.attr_timeout = 0
            p.entry_timeout = 0
            fuse_reply_entry(req, &p)
        }
    }

    func shadowUnlink(_ req: fuse_req_t, _ name: UnsafePointer<CChar>, directory: Bool) {
        serve(req) {
            guard shadows!.entry(Layer.bytes(name)) != nil else { throw Errno.ENOENT }
            if directory { throw Errno.ENOTDIR }
            try shadows!.remove(Layer.bytes(name))
            fuse_reply_err(req, 0)
        }
    }

    func shadowRename(_ req: fuse_req_t, _ name: UnsafePointer<CChar>, _ newParent: fuse_ino_t,
                      _ newName: UnsafePointer<CChar>, _ flags: UInt32) {
        serve(req) {
            guard newParent == FUSE_ROOT_ID else { throw Errno.EXDEV }
            if strlen(newName) > Int(NAME_MAX) { throw Errno.ENAMETOOLONG }
            try shadows!.rename(Layer.bytes(name), to: Layer.bytes(newName), flags: flags)
            fuse_reply_err(req, 0)
        }
    }

    /// Anything else that would make an entry in the shim root.
    func shadowRefuse(_ req: fuse_req_t, _ what: String) {
        log.error("shim: \(what) is not possible here; make entries with ln -s /absolute/backing/file \(shadows!.mountpoint)/NAME")
        fuse_reply_err(req, EPERM)
    }

    /// The shim root's listing: "." and "..", then the entries as they were when the listing
    /// began (cookie = position + 1).
    func shadowReaddir(_ req: fuse_req_t, _ size: Int, _ off: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        // Without directory handles each request lists the entries afresh.
        let listing = ShadowListing.from(fi) ?? ShadowListing()
        if off == 0 || fi.pointee.fh == 0 { listing.snapshot = [(Array(".".utf8), 1, S_IFDIR), (Array("..".utf8), 1, S_IFDIR)] + shadows!.list().map { ($0.name, $0.ino, S_IFREG) } }
        let buf = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buf.deallocate() }
        var used = 0
        var index = Int(off)
        while index < listing.snapshot.count {
            let (name, ino, type) = listing.snapshot[index]
            var st = stat()
            st.st_ino = ino
            st.st_mode = type
            let n = Layer.cString(name).withUnsafeBufferPointer { fuse_add_direntry(req, buf + used, size - used, $0.baseAddress, &st, off_t(index + 1)) }
            if n > size - used { break }
            used += n
            index += 1
        }
        fuse_reply_buf(req, buf, used)
    }
}

/// One open of the shim root: the entries when reading began.
final class ShadowListing: FileHandleObject {
    var snapshot: [(name: [UInt8], ino: ino_t, type: mode_t)] = []
}
