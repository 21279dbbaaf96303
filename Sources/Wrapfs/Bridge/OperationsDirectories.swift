// Operations on directories: opendir, readdir and readdirplus (resuming at kernel cookies), releasedir, fsyncdir.
import Glibc
import CFuse

extension Layer {
    func opendir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        // The kernel takes this as success and opens every directory without asking from now on.
        if handlelessDirectories { fuse_reply_err(req, ENOSYS); return }
        if isShadowRoot(ino) {
            ShadowListing().attach(fi)
            if fuse_reply_open(req, fi) != 0 { ShadowListing.detach(fi) }
            return
        }
        serve(req) {
            let d = try withDescriptorRoom { try OpenDirectory(inodes.inode(ino), isRoot: ino == FUSE_ROOT_ID) }
            d.attach(fi)
            if fuse_reply_open(req, fi) != 0 { OpenDirectory.detach(fi) }
        }
    }

    func releasedir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        if isShadowRoot(ino) { ShadowListing.detach(fi) } else { OpenDirectory.detach(fi) }
        fuse_reply_err(req, 0)
    }

    func fsyncdir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ dataOnly: Bool, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        if isShadowRoot(ino) { fuse_reply_err(req, 0); return }
        serve(req) {
            if let d = OpenDirectory.from(fi) {
                try FileDescriptor(rawValue: dirfd(d.stream)).sync(dataOnly: dataOnly)
            } else {
                let fd = try inodes.inode(ino).fd.reopen(O_RDONLY | O_DIRECTORY)
                defer { fd.close() }
                try fd.sync(dataOnly: dataOnly)
            }
            fuse_reply_err(req, 0)
        }
    }

    /// Fills one reply with entries from cookie `off` on. Each entry carries the lower
    /// stream's own cookie for the entry after it, so a later call resumes exactly there,
    /// whatever length the codec gives names.
    func readdir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ size: Int, _ off: off_t,
                 _ fi: UnsafeMutablePointer<fuse_file_info>, plus: Bool) {
        if isShadowRoot(ino) { return shadowReaddir(req, size, off, fi) }
        let parent = inodes.inode(ino)
        let handle = OpenDirectory.from(fi)
        var open = handle
        if open == nil, off != 0, let resumed = listingStreams.take(parent, resumingAt: off) {
            guard case .stream(let stream) = resumed else {
                fuse_reply_buf(req, nil, 0)  // the listing ended at this cookie
                return
            }
            open = stream
        }
        if open == nil {
            serve(req) {  // replies to a failure
                open = try withDescriptorRoom { try OpenDirectory(parent, isRoot: ino == FUSE_ROOT_ID) }
                if off != 0 { stats.listingSought() }
            }
        }
        guard let d = open else { return }
        var ended = false
        var lastCookie = off
        let buf = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buf.deallocate() }
        var used = 0
        var failure: Int32 = 0
        let now = wrapfs_monotonic_ns() / 1_000_000
        let givenSince = plus ? recentEntriesSince(nowMs: now) : nil
        d.lock.locked {
            var index: Int
            if off != 0, let i = d.indexAfter[off] {
                index = i
            } else {
                d.reposition(off)  // a fresh start (rewinddir re-reads) or a cookie from another open
                index = 0
            }
            while true {
                if index == d.entries.count {
                    if d.exhausted || !readMore(d) {
                        if !d.exhausted { failure = errno }
                        ended = d.exhausted
                        break
                    }
                    continue
                }
                let ent = d.entries[index]
                var st = stat()
                st.st_ino = ent.ino
                st.st_mode = mode_t(ent.type) << 12
                let room = size - used
                let entrySize: Int
                if d.isRoot && !options.hiddenRootNames.isEmpty && !ent.lowerName.isEmpty && isHidden(ent.lowerName.dropLast().map { UInt8(bitPattern: $0) }) {
                    index += 1  // the layer's own file
                    continue
                }
                if plus {
                    var e = fuse_entry_param()
                    e.attr = st
                    // Node ID 0: a name without attributes, which the kernel looks up when it needs
                    // them (so when descriptors run short a listing adds no inodes).
                    if let since = givenSince, st.st_mode != 0, !ent.lowerName.isEmpty,
                       inodes.givenSince(InodeKey(dev: parent.key.dev, ino: UInt64(ent.ino)), type: st.st_mode, ms: since) {
                        // Given moments ago (rm, find and du list each directory twice): the kernel
                        // holds this entry and its attributes still, so the name alone will do.
                        stats.listedKnown()
                    } else if !ent.lowerName.isEmpty && !inodes.descriptorsScarce {
                        do {
                            let found = try ent.lowerName.withUnsafeBufferPointer {
                                try entry(parent: parent, lowerName: $0.baseAddress!, ino: UInt64(ent.ino), type: st.st_mode)
                            }
                            e = ent.name.withUnsafeBufferPointer { named(found, parent: ino, $0.baseAddress!) }
                        } catch let error as Errno where error == .ENOENT {
                            index += 1  // vanished since the stream read it
                            continue
                        } catch {}
                    }
                    entrySize = fuse_add_direntry_plus(req, buf + used, room, ent.name, &e, ent.next)
                    if e.ino != 0 {
                        if entrySize > room { inodes.forget(e.ino, count: 1) } else { inodes.noteEntryGiven(e.ino, atMs: now) }
                    }
                } else {
                    entrySize = fuse_add_direntry(req, buf + used, room, ent.name, &st, ent.next)
                }
                if entrySize > room { break }  // the next call starts with this entry again
                used += entrySize
                lastCookie = ent.next
                index += 1
            }
        }
        // A handle-less listing goes on at the last cookie of this reply; an empty reply ends it.
        if handle == nil && used > 0 { listingStreams.park(d, of: parent, ended: ended ? lastCookie : nil) }
        if failure != 0 && used == 0 {
            fuse_reply_err(req, failure)
        } else {
            fuse_reply_buf(req, buf, used)
        }
    }

    /// Entries given to the kernel with attributes at or after the returned time (monotonic
    /// milliseconds) are still valid there for at least half their timeouts: a listing may name
    /// them without attributes. Nil when the timeouts are zero.
    private func recentEntriesSince(nowMs: UInt64) -> UInt64? {
        let shortest = min(options.attributeTimeout, options.entryTimeout)
        // (An infinite or NaN timeout from a program's own LayerOptions must not trap here.)
        let window = UInt64((shortest.isNaN ? LayerOptions.longestTimeout : max(0, min(shortest, LayerOptions.longestTimeout))) * 500)
        guard window > 0, nowMs > window else { return nil }
        return nowMs - window
    }

    /// Reads one more entry the layer shows into `d`; false at the end (errno 0) or on error.
    private func readMore(_ d: OpenDirectory) -> Bool {
        while true {
            errno = 0
            guard let ent = Glibc.readdir(d.stream) else {
                if errno == 0 { d.exhausted = true }
                return false
            }
            let next = off_t(ent.pointee.d_off)
            let lname = wrapfs_dirent_name(ent)!
            let length = strlen(lname)
            let isDot = lname[0] == 0x2E && (length == 1 || (length == 2 && lname[1] == 0x2E))
            let name: [CChar]
            if isDot {
                name = Array(UnsafeBufferPointer(start: lname, count: length + 1))
            } else if inodes.verifyHits && strncmp(lname, ".fuse_hidden", 12) == 0 {
                // libfuse's path-based API keeps unlinked open files under such names: they
                // are gone for the layer's users, as they would be on a local file system.
                d.indexAfter[next] = d.entries.count
                continue
            } else if let upper = shownName(lname, inDirectory: dirfd(d.stream)) {
                name = upper
            } else {
                // A long name's side file, or not the codec's (it cannot decode the name): hidden,
                // but its cookie still resumes.
                d.indexAfter[next] = d.entries.count
                continue
            }
            let lower = isDot ? [] : Array(UnsafeBufferPointer(start: lname, count: length + 1))
            d.entries.append(DirectoryEntry(name: name, lowerName: lower, ino: ent.pointee.d_ino, type: ent.pointee.d_type, next: next))
            d.indexAfter[next] = d.entries.count
            return true
        }
    }
}
