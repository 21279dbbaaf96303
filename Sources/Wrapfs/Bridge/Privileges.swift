// The custom /dev/fuse I/O: INIT's extra flags (FUSE_HANDLE_KILLPRIV_V2, FUSE over io_uring), replies routed to ring entries, requests libfuse lacks (UnservedRequests.swift), and the set-ID clearing rules.
import Glibc
import CFuse

/// FUSE_HANDLE_KILLPRIV_V2 moves the clearing of set-user-ID and set-group-ID bits on write,
/// truncate and chown from the kernel to the daemon, and in exchange the kernel marks the mount
/// SB_NOSEC: it stops asking for `security.capability` before every write(2) (one GETXATTR
/// round trip per write otherwise; a file's capability is still removed, by the kernel on its
/// first write and by the lower file system on every write). libfuse 3.14 knows
/// no such flag, so the layer reads the kernel's offer from the INIT request and adds the flag to
/// libfuse's INIT reply on the way out (a custom I/O that otherwise reads and writes /dev/fuse as
/// libfuse would).
final class PrivilegeHandshake {
    /// Until the INIT reply is written. Written once, on the thread that serves INIT, before the
    /// kernel sends any other request (the other threads only read it after that).
    fileprivate var awaitingInit = true
    fileprivate var initUnique: UInt64?
    /// The kernel offered FUSE_HANDLE_KILLPRIV_V2.
    fileprivate(set) var offered = false
    /// `negotiate` took it: the INIT reply gets the flag.
    var accepted = false
    /// The kernel offered FUSE over io_uring (`FuseRing`).
    fileprivate(set) var ringOffered = false

    static let opcodeInit: UInt32 = 26
    static let opcodeWrite: UInt32 = 16
    static let handleKillprivV2: UInt32 = 1 << 28
    /// fuse_write_in.write_flags: the writer lacks CAP_FSETID, the daemon clears set-ID bits.
    static let writeKillSuidgid: UInt32 = 1 << 2
}

/// Whether the WRITE request this thread read last carried FUSE_WRITE_KILL_SUIDGID (libfuse 3.14
/// does not pass write flags on). A worker serves each request it reads before it reads the next.
/// A request received by splice (`--splice`) is not seen on its way in: `unknown`.
enum WriteKillsSetID {
    case yes, no, unknown
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()
    /// Notes what the request at `request` (`length` bytes, /dev/fuse's layout) says, if it is
    /// a WRITE: fuse_write_in follows the 40-byte header (fh, offset, size, then write_flags).
    static func note(request: UnsafeRawPointer, length: Int) {
        guard length >= 64, request.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == PrivilegeHandshake.opcodeWrite else { return }
        note(request.loadUnaligned(fromByteOffset: 60, as: UInt32.self) & PrivilegeHandshake.writeKillSuidgid != 0 ? .yes : .no)
    }
    static func note(_ kills: WriteKillsSetID) {
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: kills == .yes ? 1 : kills == .no ? 2 : 3))
    }
    static var current: WriteKillsSetID {
        switch Int(bitPattern: pthread_getspecific(key)) {
        case 1: .yes
        case 2: .no
        default: .unknown
        }
    }
}

extension Layer {
    /// Reads and writes `se`'s /dev/fuse descriptor through the handshake above. libfuse keeps
    /// splicing (its splice calls are passed on unchanged). With `--io-uring` the INIT reply also
    /// asks for FUSE over io_uring and starts the rings (`FuseRing`), and a reply to a request
    /// that came through a ring goes back through its entry instead of /dev/fuse.
    func installRequestIO(_ se: OpaquePointer) {
        var io = fuse_custom_io()
        io.read = { fd, buf, size, userdata in
            while true {
                let n = Glibc.read(fd, buf, size)
                // fuse_in_header (40 bytes), then fuse_init_in: major, minor, max_readahead, flags.
                guard n >= 56, let buf, let userdata else { return n }
                let layer = Unmanaged<Layer>.fromOpaque(userdata).takeUnretainedValue()
                // Answered here (libfuse has no handler); then on to the next request.
                if StatxRequest.matches(buf, length: n) {
                    // ENOENT from writev: the request was interrupted and is gone.
                    layer.serveStatx(buf) { iov, count in _ = Glibc.writev(fd, iov, count) }
                    continue
                }
                let handshake = layer.privileges
                let opcode = buf.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                WriteKillsSetID.note(request: buf, length: n)
                TemporaryFileRequest.rewrite(request: buf, length: n)
                if handshake.awaitingInit && opcode == PrivilegeHandshake.opcodeInit {
                    handshake.initUnique = buf.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    handshake.offered = buf.loadUnaligned(fromByteOffset: 52, as: UInt32.self) & PrivilegeHandshake.handleKillprivV2 != 0
                    // flags2 follows flags (FUSE 7.36).
                    handshake.ringOffered = n >= 60 && buf.loadUnaligned(fromByteOffset: 56, as: UInt32.self) & WRAPFS_FUSE_OVER_IO_URING_FLAGS2 != 0
                }
                return n
            }
        }
        io.writev = { fd, iov, count, userdata in
            guard let iov, let userdata, count >= 1, let header = iov[0].iov_base, iov[0].iov_len >= 16 else {
                return Glibc.writev(fd, iov, count)
            }
            let layer = Unmanaged<Layer>.fromOpaque(userdata).takeUnretainedValue()
            // fuse_out_header: len, error, unique.
            let unique = header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            if let ring = layer.fuseRing, let entry = ring.entry(serving: unique) {
                return ring.reply(entry, iov, Int(count))
            }
            let handshake = layer.privileges
            var startRing: (maxWrite: Int, maxPages: Int)?
            // fuse_init_out: major, minor, max_readahead, flags, max_background,
            // congestion_threshold, max_write, time_gran, max_pages, map_alignment, flags2.
            if handshake.awaitingInit, count >= 2, unique == handshake.initUnique {
                handshake.awaitingInit = false
                if header.loadUnaligned(fromByteOffset: 4, as: Int32.self) == 0, let reply = iov[1].iov_base, iov[1].iov_len >= 16 {
                    var flags = reply.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
                    if handshake.accepted { flags |= PrivilegeHandshake.handleKillprivV2 }
                    if layer.options.ioUring, handshake.ringOffered, iov[1].iov_len >= 40 {
                        flags |= WRAPFS_FUSE_INIT_EXT
                        let flags2 = reply.loadUnaligned(fromByteOffset: 36, as: UInt32.self)
                        reply.storeBytes(of: flags2 | WRAPFS_FUSE_OVER_IO_URING_FLAGS2, toByteOffset: 36, as: UInt32.self)
                        startRing = (Int(reply.loadUnaligned(fromByteOffset: 20, as: UInt32.self)),
                                     Int(reply.loadUnaligned(fromByteOffset: 28, as: UInt16.self)))
                    } else if layer.options.ioUring {
                        layer.log.notice("--io-uring: the kernel does not offer FUSE over io_uring (root enables it: echo Y > /sys/module/fuse/parameters/enable_uring); requests use /dev/fuse")
                    }
                    reply.storeBytes(of: flags, toByteOffset: 12, as: UInt32.self)
                }
            }
            let written = Glibc.writev(fd, iov, count)
            // The kernel took the INIT reply: the ring's commands are accepted from now on.
            if written >= 0, let sizes = startRing, let se = layer.session {
                let ring = FuseRing(fuseFD: fd, maxWrite: sizes.maxWrite, maxPages: sizes.maxPages, log: layer.log)
                ring.serveStatx = { [unowned layer] request, send in layer.serveStatx(request, send: send) }
                if ring.prepare() {
                    layer.fuseRing = ring  // before any reply can come from a ring entry
                    ring.start(se)
                }
            }
            return written
        }
        io.splice_receive = { fdIn, offIn, fdOut, offOut, len, flags, _ in
            WriteKillsSetID.note(.unknown)  // a spliced request's header is not seen here
            return wrapfs_splice_flags(fdIn, offIn, fdOut, offOut, len, flags)
        }
        io.splice_send = { fdIn, offIn, fdOut, offOut, len, flags, _ in
            wrapfs_splice_flags(fdIn, offIn, fdOut, offOut, len, flags)
        }
        if fuse_session_custom_io(se, &io, fuse_session_fd(se)) != 0 {
            log.warning("cannot install the INIT handshake: the kernel keeps clearing set-ID bits itself")
        }
    }
}

extension Layer {
    /// The mode `st` keeps after `req`'s caller changed the file (write, truncate, chown), by the
    /// rules of the kernel's VFS (should_remove_suid, setattr_should_drop_sgid): set-user-ID goes;
    /// set-group-ID goes with group execute, and without it (a mandatory-locking mark) when the
    /// caller is not root and not in the file's group. The kernel's own FUSE fallback clears the
    /// second only with group execute, so the layer answers these itself either way.
    func modeWithoutSetID(_ req: fuse_req_t, _ st: stat) -> mode_t {
        var mode = st.st_mode & 0o7777 & ~S_ISUID
        if mode & S_ISGID != 0 {
            if mode & S_IXGRP != 0 || !callerMayKeepSetGID(req, fileGroup: st.st_gid) { mode &= ~S_ISGID }
        }
        return mode
    }

    /// in_group_or_capable: root, or a member of `fileGroup`.
    private func callerMayKeepSetGID(_ req: fuse_req_t, fileGroup: gid_t) -> Bool {
        guard let ctx = fuse_req_ctx(req)?.pointee else { return true }
        return ctx.uid == 0 || ctx.gid == fileGroup || Self.groups(of: req).contains(fileGroup)
    }

    /// A direct-I/O WRITE's FUSE_WRITE_KILL_SUIDGID (the caller lacks CAP_FSETID). Unseen when the
    /// request came by splice: then every caller but root counts as lacking it.
    func writeKillsSetID(_ req: fuse_req_t) -> Bool {
        switch WriteKillsSetID.current {
        case .yes: return true
        case .no: return false
        case .unknown: return fuse_req_ctx(req)?.pointee.uid != 0
        }
    }

    /// Clears the set-ID bits of a file that is not a directory (nor a symlink, which has none)
    /// whose status was `st` (before the change, for a chown) as `modeWithoutSetID` says, if any
    /// go. True when a bit went.
    @discardableResult
    func clearSetID(_ req: fuse_req_t, _ inode: Inode, _ st: stat) throws -> Bool {
        guard losesSetIDOnChange(inode), st.st_mode & (S_ISUID | S_ISGID) != 0 else { return false }
        let mode = modeWithoutSetID(req, st)
        guard mode != st.st_mode & 0o7777 else { return false }
        _ = try sys { fchmodat(AT_FDCWD, inode.fd.procPath, mode, 0) }
        return true
    }

    /// The kernel's chown drops set-ID bits of every file but a directory (chown_common), and
    /// write and truncate those of regular files; the layer does it for the kernel (KILLPRIV_V2).
    func losesSetIDOnChange(_ inode: Inode) -> Bool { !inode.isDirectory && !inode.isSymlink }
}
