// Operations on directories: opendir, readdir and readdirplus (resuming at kernel cookies), releasedir.
import Glibc
import CFuse

extension Layer {
    func opendir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            let fd = try inodes.inode(ino).fd.reopen(O_RDONLY | O_DIRECTORY)
            guard let stream = fdopendir(fd.rawValue) else {
                let e = Errno.current
                fd.close()
                throw e
            }
            OpenDirectory(stream: stream).attach(fi)
            if fuse_reply_open(req, fi) != 0 { OpenDirectory.detach(fi) }
        }
    }

    func releasedir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        OpenDirectory.detach(fi)
        fuse_reply_err(req, 0)
    }

    func fsyncdir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ dataOnly: Bool, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        serve(req) {
            let d = OpenDirectory.from(fi)
            try FileDescriptor(rawValue: dirfd(d.stream)).sync(dataOnly: dataOnly)
            fuse_reply_err(req, 0)
        }
    }

    /// Fills one reply with entries from cookie `off` on. Each entry carries the lower
    /// stream's own cookie for the entry after it, so a later call resumes exactly there,
    /// whatever length the codec gives names.
    func readdir(_ req: fuse_req_t, _ ino: fuse_ino_t, _ size: Int, _ off: off_t,
                 _ fi: UnsafeMutablePointer<fuse_file_info>, plus: Bool) {
        let d = OpenDirectory.from(fi)
        let parent = inodes.inode(ino)
        let buf = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buf.deallocate() }
        var used = 0
        var failure: Int32 = 0
        d.lock.locked {
            if Int64(off) != d.position {
                seekdir(d.stream, Int(off))
                d.position = Int64(off)
            }
            while true {
                errno = 0
                guard let ent = Glibc.readdir(d.stream) else {
                    if errno != 0 && used == 0 { failure = errno }
                    break
                }
                let next = off_t(ent.pointee.d_off)
                let lname = wrapfs_dirent_name(ent)!
                let isDot = strcmp(lname, ".") == 0 || strcmp(lname, "..") == 0
                let name: [CChar]
                if isDot {
                    name = Array(UnsafeBufferPointer(start: lname, count: strlen(lname) + 1))
                } else if let upper = upperName(lname) {
                    name = upper
                } else {
                    d.position = Int64(next)  // not ours (codec cannot decode it): hidden
                    continue
                }
                var st = stat()
                st.st_ino = ent.pointee.d_ino
                st.st_mode = mode_t(ent.pointee.d_type) << 12
                let room = size - used
                var entrySize: Int
                if plus {
                    var e = fuse_entry_param()
                    e.attr = st
                    if !isDot {
                        guard let found = try? entry(parent: parent, lowerName: lname) else {
                            d.position = Int64(next)  // vanished since the stream read it
                            continue
                        }
                        e = found
                    }
                    entrySize = fuse_add_direntry_plus(req, buf + used, room, name, &e, next)
                    if entrySize > room && e.ino != 0 { inodes.forget(e.ino, count: 1) }
                } else {
                    entrySize = fuse_add_direntry(req, buf + used, room, name, &st, next)
                }
                if entrySize > room {
                    // Does not fit: the next call starts with this entry again.
                    seekdir(d.stream, Int(d.position))
                    break
                }
                used += entrySize
                d.position = Int64(next)
            }
        }
        if failure != 0 {
            fuse_reply_err(req, failure)
        } else {
            fuse_reply_buf(req, buf, used)
        }
    }
}
