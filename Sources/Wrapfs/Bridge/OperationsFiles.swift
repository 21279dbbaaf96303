// Operations on file content: create, open, read, write, flush, release, fsync, fallocate, lseek.
import Glibc
import CFuse

extension Layer {
    /// Lower open flags for an upper open: never O_APPEND (the layer places appends itself),
    /// never O_TRUNC (truncation goes through the page engine), readable for read-modify-write.
    private func lowerFlags(_ flags: Int32) -> (flags: Int32, wantsRead: Bool) {
        var f = flags & ~(O_APPEND | O_TRUNC | O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT)
        let wantsRead = f & O_ACCMODE != O_RDONLY
        if f & O_ACCMODE == O_WRONLY { f = (f & ~O_ACCMODE) | O_RDWR }
        return (f, wantsRead)
    }

    /// Opens the lower file for an upper open with `flags`; says whether it can be read.
    /// `dir`: the directory of a create (see `withDescriptorRoom`).
    private func openLower(flags: Int32, in dir: Inode? = nil, _ opening: (Int32) throws -> FileDescriptor) throws -> (FileDescriptor, readable: Bool) {
        func create(_ f: Int32) throws -> FileDescriptor { try withDescriptorRoom(in: dir) { try opening(f) } }
        let (f, upgraded) = lowerFlags(flags)
        var fd: FileDescriptor
        var readable = true
        do {
            // Every read of a write-only open is the layer's own (read-modify-write): none may
            // change the lower atime (see `FileDescriptor.withoutAccessTimes`).
            fd = try flags & O_ACCMODE == O_WRONLY ? FileDescriptor.openQuietly(f, create) : create(f)
        } catch let e as Errno where e == .EACCES && upgraded && flags & O_ACCMODE == O_WRONLY {
            fd = try create((f & ~O_ACCMODE) | O_WRONLY)  // write-only lower file: no partial-page writes
            readable = false
        } catch let e as Errno where e == .EPERM && flags & O_APPEND != 0 && flags & O_ACCMODE != O_RDONLY && engine.codec.passesBytesThrough {
            // An append-only lower file (chattr +a) opens for writing only with O_APPEND, and then
            // every pwrite lands at its end: where the layer puts an O_APPEND write anyway. A codec
            // that encodes rewrites the last slot, which such a file refuses.
            fd = try create(f | O_APPEND)
        }
        return (fd, readable)
    }

    /// Whether an open with `flags` bypasses the page cache (see `LayerOptions.directWriteOnlyOpens`).
    func bypassesPageCache(_ flags: Int32) -> Bool {
        options.directIO || (options.directWriteOnlyOpens && kernelDropsPagesOnDirectWrite && !options.writebackCache && flags & O_ACCMODE == O_WRONLY)
    }

    /// Sets `file`'s caching mode in `fi`, and whether its writes may be written behind.
    /// Not a direct open of a codec that encodes: with no page-cache copy for the store to overlap
    /// and the encoding already on both cores, acknowledging early gained nothing (1 GiB aes-gcm
    /// `dd`, ad hoc: 0.72-0.98 s with it, 0.74-0.79 s without), while each close of such an open
    /// waited through a FLUSH round trip (every file an untar writes).
    private func configure(_ fi: UnsafeMutablePointer<fuse_file_info>, for file: OpenFile) {
        let direct = bypassesPageCache(file.flags)
        wrapfs_fi_set_direct_io(fi, direct ? 1 : 0)
        wrapfs_fi_set_keep_cache(fi, options.keepCache || options.coherence == .explicit ? 1 : 0)
        file.writesBehind = (engine.codec.passesBytesThrough || !direct) && writeBehind.mayApply(to: file.fd, flags: file.flags)
        // FOPEN_NOFLUSH: close(2) sends FLUSH (a round trip) only where a store may still be running.
        wrapfs_fi_set_noflush(fi, file.writesBehind ? 0 : 1)
    }

    func create(_ req: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>, _ mode: mode_t,
                _ fi: UnsafeMutablePointer<fuse_file_info>) {
        if isShadowRoot(parent) { return shadowRefuse(req, "creating a file") }
        if TemporaryFileRequest.isUnnamed(name) { return createUnnamed(req, parent, mode, fi) }
        serve(req) {
            let dir = inodes.inode(parent)
            let lname = try lowerNameForNew(name, in: dir)
            let mode = creationMode(req, mode, in: dir)
            try lname.withUnsafeBufferPointer { nb in
                let n = nb.baseAddress!
                let exclusive = fi.pointee.flags & O_EXCL
                let (fd, readable) = try openLower(flags: fi.pointee.flags, in: dir) { f in
                    try dir.fd.openAt(n, f | O_CREAT | exclusive | O_NOFOLLOW, mode: mode)
                }
                adoptOwnership(req, parent: dir, lowerName: n)
                let e: fuse_entry_param
                do { e = named(try entry(parent: dir, lowerName: n), parent: parent, name) } catch { fd.close(); throw error }
                let inode = inodes.inode(e.ino)
                if exclusive != 0 { inode.recordLacksCapability() }  // a file just made has no capabilities
                let file = OpenFile(fd: fd, inode: inode, flags: fi.pointee.flags, readable: readable, opener: Opener(req, registry: openFiles))
                if fi.pointee.flags & O_TRUNC != 0 {
                    try inode.content.writing { try engine.truncate(file.lower, to: 0) }
                    contentChanged(inode)
                }
                replyCreated(req, e, file, fi)
            }
        }
    }

    /// open(2) with O_TMPFILE: an unnamed lower file in the lower directory (as ext4 or tmpfs
    /// makes it, so a lower file system without O_TMPFILE refuses it with its own errno), which
    /// linkat(2) may name later through `link`, and which goes away at its last close otherwise.
    private func createUnnamed(_ req: fuse_req_t, _ parent: fuse_ino_t, _ mode: mode_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            let dir = inodes.inode(parent)
            let mode = creationMode(req, mode, in: dir)
            // O_EXCL: never to be linked; the lower file system enforces it too.
            let (fd, readable) = try openLower(flags: fi.pointee.flags) { f in
                try dir.fd.openAt(".", (f & ~O_NOFOLLOW) | wrapfs_o_tmpfile | (fi.pointee.flags & O_EXCL), mode: mode)
            }
            let e: fuse_entry_param
            do {
                adoptOwnership(req, parent: dir, file: fd)
                // The inode's own descriptor, as every inode's: O_PATH, and linkable through /proc.
                e = try entry(opened: try fd.reopen(O_PATH))
            } catch { fd.close(); throw error }
            let inode = inodes.inode(e.ino)
            inode.recordLacksCapability()  // a file just made has no capabilities
            replyCreated(req, e, OpenFile(fd: fd, inode: inode, flags: fi.pointee.flags, readable: readable, opener: Opener(req, registry: openFiles)), fi)
        }
    }

    /// The reply to a CREATE (named or not): `file` becomes the open's handle.
    private func replyCreated(_ req: fuse_req_t, _ e: fuse_entry_param, _ file: OpenFile, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        hold(file, fi)
        var entry = e
        if fuse_reply_create(req, &entry, fi) != 0 { letGo(fi) }
    }

    func open(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            let inode = inodes.inode(ino)
            let (fd, readable) = try openLower(flags: fi.pointee.flags) { f in try onLiveDescriptor(inode) { try inode.fd.reopen(f) } }
            let file = OpenFile(fd: fd, inode: inode, flags: fi.pointee.flags, readable: readable, opener: Opener(req, registry: openFiles))
            if fi.pointee.flags & O_TRUNC != 0 {
                try inode.content.writing { try engine.truncate(file.lower, to: 0) }
                contentChanged(inode)
            }
            hold(file, fi)
            if fuse_reply_open(req, fi) != 0 { letGo(fi) }
        }
    }

    /// close(2) of an open that write-behind may serve (the others are opened FOPEN_NOFLUSH): it
    /// returns once every store is done, with the error of one that failed (reported once).
    func flush(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            // Without write-behind (or with the writeback cache, which ignores FOPEN_NOFLUSH) there
            // is nothing to wait for: ENOSYS once, and the kernel stops sending FLUSH for this mount.
            guard writeBehind.enabled else { throw Errno.ENOSYS }
            guard let file = OpenFile.from(fi) else { throw Errno.EBADF }
            try file.inode.finishStores()
            fuse_reply_err(req, 0)
        }
    }

    func release(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        letGo(fi)
        fuse_reply_err(req, 0)
    }

    /// Makes `file` the handle of this open (with its caching mode) and lists it for `status`.
    private func hold(_ file: OpenFile, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        file.attach(fi)
        configure(fi, for: file)
        openFiles.add(file)
    }

    /// Ends what `hold` began: at release, or when the open's reply could not be sent.
    private func letGo(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        if let file = OpenFile.from(fi) { openFiles.remove(file) }
        OpenFile.detach(fi)
    }

    func read(_ req: fuse_req_t, _ ino: fuse_ino_t, _ size: Int, _ off: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            guard let file = OpenFile.from(fi) else { throw Errno.EBADF }
            guard file.readable else { throw Errno.EBADF }
            try file.inode.content.reading {
                try engine.read(file.lower, offset: Int64(off), count: size) { bytes in
                    fuse_reply_buf(req, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
                }
            }
        }
    }

    /// WRITE with the data in libfuse's buffer, or (identity, FUSE_CAP_SPLICE_READ) still in the pipe
    /// it was spliced into, so the kernel can move it to the lower file without a copy through us.
    func writeBuf(_ req: fuse_req_t, _ ino: fuse_ino_t, _ bufv: UnsafeMutablePointer<fuse_bufvec>, _ off: off_t,
                  _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let size = fuse_buf_size(bufv)
        if let mem = wrapfs_buf_mem(bufv) {
            write(req, ino, .memory(UnsafeRawBufferPointer(start: mem, count: size)), off, fi)
        } else {
            write(req, ino, .pipe(bufv, count: size), off, fi)
        }
    }

    func write(_ req: fuse_req_t, _ ino: fuse_ino_t, _ data: WriteSource, _ off: off_t,
               _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            guard let file = OpenFile.from(fi) else { throw Errno.EBADF }
            let size = data.count
            var placedElsewhere = false
            var acknowledged = false
            var written = size
            try file.inode.content.writing {
                if let e = file.inode.pendingWriteError() { throw e }  // an acknowledged write failed
                if bypassesPageCache(file.flags) && writeKillsSetID(req) {
                    // Direct I/O skips the kernel's file_remove_privs (the empty SETATTR that
                    // clears set-ID bits on cached writes): the write's own flag asks for it.
                    // The WRITE reply updates no mode in the kernel, so its cached one goes.
                    if try clearSetID(req, file.inode, try lowerStat(file.fd)) { invalidateKernelAttributes(ino) }
                }
                var offset = Int64(off)
                // O_APPEND as the file is now: fcntl(F_SETFL) may have set or cleared it since open.
                if fi.pointee.flags & O_APPEND != 0 && wrapfs_fi_writepage(fi) == 0 {
                    // Appends land at the logical end of file as it is now, whatever the kernel thought.
                    // (Page-cache writeback may pick an O_APPEND handle: those writes keep their offset.)
                    let end = try engine.sizes(file.lower).logical
                    placedElsewhere = end != offset
                    offset = end
                }
                // A codec that changes no byte stores any range without reading the pages around it.
                if !file.readable && !engine.codec.passesBytesThrough { try requireWholePages(file, offset: offset, count: size) }
                if file.writesBehind,
                   writeBehind.reserve(size, writingTo: file.fd, reaching: try engine.lowerEnd(ofLogicalEnd: offset.rangeEnd(Int64(size))),
                                       flags: fi.pointee.flags) {
                    // The writer goes on while this thread stores the data, still holding the lock.
                    file.inode.markWrittenBehind()
                    acknowledged = true
                    stats.wroteBehind()
                    fuse_reply_write(req, size)
                }
                defer { if acknowledged { writeBehind.stored(size) } }
                do {
                    // Not acknowledged yet, it may store less, as write(2) at a full disk or at
                    // the largest file size does (the kernel then returns that much). Not page-cache
                    // writeback (the writeback cache): the kernel takes no short count there, and
                    // only an error reaches fsync and close.
                    written = try engine.write(file.lower, offset: offset, source: data,
                                               mayStop: !acknowledged && wrapfs_fi_writepage(fi) == 0)
                } catch where acknowledged {
                    let e = error as? Errno ?? .EIO
                    file.inode.deferWriteError(e)
                    stats.failed(.write, errno: e.rawValue)
                    log.error("write of \(size) bytes at \(offset) to \(file.inode.lowerPathForLogs) failed after it was acknowledged: \(e); the next write or fsync reports it")
                }
            }
            contentChanged(file.inode)
            if acknowledged { return }
            fuse_reply_write(req, written)
            // Off the request's thread: from inside it the kernel may hold the pages we would wait for.
            if placedElsewhere { invalidateKernelPages(ino) }
        }
    }

    /// Without a readable lower descriptor only page-aligned writes can be stored.
    private func requireWholePages(_ file: OpenFile, offset: Int64, count: Int) throws {
        let p = engine.pageSize
        let size = try engine.sizes(file.lower).logical
        let end = offset + Int64(count)
        guard offset % p == 0, end % p == 0 || end >= size, (size % p == 0 || size <= offset) else { throw Errno.EACCES }
    }

    func fsync(_ req: fuse_req_t, _ ino: fuse_ino_t, _ dataOnly: Bool, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            guard let file = OpenFile.from(fi) else { throw Errno.EBADF }
            try file.inode.finishStores()  // after any write still being stored, and with its error
            try file.fd.sync(dataOnly: dataOnly)
            fuse_reply_err(req, 0)
        }
    }

    func fallocate(_ req: fuse_req_t, _ ino: fuse_ino_t, _ mode: Int32, _ off: off_t, _ len: off_t,
                   _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            guard let file = OpenFile.from(fi) else { throw Errno.EBADF }
            guard off >= 0, len > 0 else { throw Errno.EINVAL }
            let keep = mode & FALLOC_FL_KEEP_SIZE != 0
            try file.inode.content.writing {
                switch mode & ~FALLOC_FL_KEEP_SIZE {
                case 0:
                    try engine.allocate(file.lower, offset: Int64(off), length: Int64(len), keepSize: keep)
                case FALLOC_FL_PUNCH_HOLE where keep:
                    try engine.zeroRange(file.lower, offset: Int64(off), length: Int64(len), lowerMode: mode)
                case FALLOC_FL_ZERO_RANGE:
                    // Growing first: a size the lower file system refuses (EFBIG, even where the
                    // lseek check cannot see its limit: a FUSE lower) then changes no byte. A
                    // refused zeroing shrinks the file back.
                    let size = try engine.sizes(file.lower).logical, end = Int64(off).rangeEnd(Int64(len))
                    let grows = !keep && (end < 0 || end > size)
                    if grows { try engine.truncate(file.lower, to: end) }
                    do {
                        try engine.zeroRange(file.lower, offset: Int64(off), length: Int64(len), lowerMode: FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)
                    } catch {
                        if grows { try? engine.truncate(file.lower, to: size) }
                        throw error
                    }
                default:
                    throw Errno.EOPNOTSUPP
                }
            }
            contentChanged(file.inode)
            fuse_reply_err(req, 0)
        }
    }

    func lseek(_ req: fuse_req_t, _ ino: fuse_ino_t, _ off: off_t, _ whence: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            guard let file = OpenFile.from(fi) else { throw Errno.EBADF }
            guard whence == SEEK_DATA || whence == SEEK_HOLE else { throw Errno.EINVAL }
            if options.writebackCache { try flushKernelPages(ino) }
            let r = try file.inode.content.reading { try engine.seek(file.lower, offset: Int64(off), whence: whence) }
            fuse_reply_lseek(req, off_t(r))
        }
    }

    /// With the writeback cache, written pages may still sit dirty in the kernel, unseen by the
    /// lower file (a hole found there could be data). An invalidation makes the kernel write them
    /// back first (as write requests, which other worker threads serve) and is awaited here. With
    /// one thread that would deadlock: ENOSYS then lets the kernel answer lseek itself for this
    /// mount (all data, the hole at the end): valid, if coarse.
    private func flushKernelPages(_ ino: fuse_ino_t) throws {
        guard !options.singleThreaded else { throw Errno.ENOSYS }
        let done = Pending()
        done.enter()
        guard invalidateKernelPages(ino, then: { done.leave() }) else { throw Errno.ENOSYS }
        done.wait()
    }
}
