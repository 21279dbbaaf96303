// Requests libfuse 3.14 has no handler for, served on their way in: FUSE_TMPFILE (relabelled CREATE) and FUSE_STATX (answered here).
import Glibc
import CFuse

/// FUSE_TMPFILE (Linux 6.4+, open(2) with O_TMPFILE) has no handler in libfuse 3.14, which would
/// answer ENOSYS and make the kernel refuse O_TMPFILE for the mount's lifetime. Its request is
/// laid out as FUSE_CREATE's (fuse_create_in, then the name, "/" for an unnamed file, which no
/// real name can be) and wants the same reply, so it is handed to libfuse as a CREATE, and
/// `Layer.create` makes an unnamed lower file for the name "/".
enum TemporaryFileRequest {
    static let opcodeTmpfile: UInt32 = 51
    static let opcodeCreate: UInt32 = 35

    /// Turns the request at `request` (/dev/fuse's layout) into a CREATE if it is a TMPFILE.
    static func rewrite(request: UnsafeMutableRawPointer, length: Int) {
        guard length >= 40, request.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == opcodeTmpfile else { return }
        request.storeBytes(of: opcodeCreate, toByteOffset: 4, as: UInt32.self)
    }

    /// Whether a CREATE's name is the one the kernel gives an unnamed file.
    static func isUnnamed(_ name: UnsafePointer<CChar>) -> Bool { name[0] == 0x2F && name[1] == 0 }
}

/// FUSE_STATX (Linux 6.6+): a stat that asks for the birth time (statx with STATX_BTIME, as GNU
/// `stat` does) reaches the daemon as STATX instead of GETATTR once the attributes are stale.
/// libfuse 3.14 would answer ENOSYS, and the kernel would then leave the birth time out for the
/// mount's lifetime, where ext4, xfs, btrfs and tmpfs report it. The layer answers with what
/// GETATTR gives plus the lower file's birth time; the custom I/O writes the reply itself.
enum StatxRequest {
    static let opcode: UInt32 = 52

    /// Whether the request at `request` (/dev/fuse's layout, `length` bytes) is a STATX.
    static func matches(_ request: UnsafeRawPointer, length: Int) -> Bool {
        length >= 40 + MemoryLayout<wrapfs_statx_in>.size && request.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == opcode
    }
}

extension Layer {
    /// Answers the STATX request at `request` into `out`: 0, or the errno to reply with.
    func answerStatx(_ request: UnsafeRawPointer, _ out: UnsafeMutablePointer<wrapfs_statx_out>) -> Int32 {
        timedStatx {
            let node = fuse_ino_t(request.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
            let arguments = request.loadUnaligned(fromByteOffset: 40, as: wrapfs_statx_in.self)
            do {
                let inode = inodes.inode(node)
                var st: stat
                var fi = fuse_file_info()
                fi.fh = arguments.fh
                // As `getattr`: fstat of an open file asks through its handle (FUSE_GETATTR_FH).
                if inode.isRegular, arguments.getattr_flags & 1 != 0, let open = OpenFile.from(&fi) {
                    st = try attributes(inode, try lowerStat(open.fd))
                } else {
                    st = try attributes(inode)
                }
                wrapfs_statx_out_fill(out, &st, options.attributeTimeout, inode.fd.rawValue)
                return 0
            } catch let e as Errno {
                stats.failed(.statx, errno: e.rawValue)
                return e.rawValue
            } catch {
                log.error("statx failed: \(error)")
                return EIO
            }
        }
    }

    private func timedStatx(_ body: () -> Int32) -> Int32 {
        var result: Int32 = 0
        timed(.statx) { _ in result = body() }
        return result
    }

    /// Serves the STATX request at `request`: `send` gets the reply as libfuse would hand it to
    /// writev(2) (the fuse_out_header, then the body).
    func serveStatx(_ request: UnsafeRawPointer, send: (UnsafePointer<iovec>, Int32) -> Void) {
        var out = wrapfs_statx_out()
        let error = answerStatx(request, &out)
        let body = error == 0 ? MemoryLayout<wrapfs_statx_out>.size : 0
        var header = wrapfs_out_header(len: UInt32(16 + body), error: -error, unique: request.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        withUnsafeMutableBytes(of: &header) { h in
            withUnsafeMutableBytes(of: &out) { o in
                let iov = [iovec(iov_base: h.baseAddress, iov_len: 16), iovec(iov_base: o.baseAddress, iov_len: body)]
                send(iov, 2)
            }
        }
    }
}
