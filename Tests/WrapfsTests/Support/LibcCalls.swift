// The libc compatibility table's probes: each runs a group of calls in a directory and records
// every result and errno, so one run on a mount and one on a plain directory can be compared.
import CFuse
import Foundation
import Glibc

/// What a probe saw: one line per call, "label=result" (fds and times left out, values kept).
final class CallLog {
    private(set) var lines: [String] = []

    /// A call returning -1 and errno on failure: records "ok" or the errno's name.
    @discardableResult
    func call<T: BinaryInteger>(_ label: String, _ result: @autoclosure () -> T) -> T {
        record(label, result(), showingValue: false)
    }

    /// A call whose non-negative result matters (a byte count, a size, an offset).
    @discardableResult
    func value<T: BinaryInteger>(_ label: String, _ result: @autoclosure () -> T) -> T {
        record(label, result(), showingValue: true)
    }

    private func record<T: BinaryInteger>(_ label: String, _ result: @autoclosure () -> T, showingValue: Bool) -> T {
        errno = 0
        let r = result()
        lines.append("\(label)=" + (r < 0 ? "-1 \(errnoName(errno))" : showingValue ? "\(r)" : "ok"))
        return r
    }

    func note(_ label: String, _ value: CustomStringConvertible) { lines.append("\(label)=\(value)") }
}

func errnoName(_ e: Int32) -> String {
    let names: [Int32: String] = [EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", EBADF: "EBADF", EAGAIN: "EAGAIN",
                                  EACCES: "EACCES", EEXIST: "EEXIST", EXDEV: "EXDEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
                                  EINVAL: "EINVAL", EFBIG: "EFBIG", ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", EROFS: "EROFS",
                                  EMLINK: "EMLINK", ERANGE: "ERANGE", ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS",
                                  ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", ENODATA: "ENODATA", EOPNOTSUPP: "EOPNOTSUPP",
                                  ENXIO: "ENXIO", ENOTTY: "ENOTTY", ETXTBSY: "ETXTBSY"]
    return names[e] ?? "errno \(e)"
}

/// One row of the table: the calls it covers and the probe that exercises them.
struct LibcCall: CustomStringConvertible, Sendable {
    let name: String
    let calls: String
    let probe: @Sendable (_ dir: String, _ log: CallLog) -> Void
    var description: String { name }
}

private func bytes(_ n: Int, _ seed: UInt64) -> [UInt8] { noise(n, seed: seed) }
private func digest(_ b: [UInt8]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for x in b { h = (h ^ UInt64(x)) &* 0x0100_0000_01b3 }
    return "\(b.count):" + String(h, radix: 16)
}
private func readAll(_ fd: Int32) -> [UInt8] {
    var st = stat()
    fstat(fd, &st)
    var buf = [UInt8](repeating: 0, count: Int(st.st_size))
    let n = pread(fd, &buf, buf.count, 0)
    return n < 0 ? [] : Array(buf.prefix(n))
}

enum LibcCalls {
    static let all: [LibcCall] = [
        LibcCall(name: "open", calls: "open, creat, O_CREAT|O_EXCL, O_TRUNC, O_DIRECTORY, O_NOFOLLOW, close") { d, log in
            let f = d + "/f"
            let fd = log.call("create excl", open(f, O_CREAT | O_EXCL | O_WRONLY, 0o640))
            log.value("write", write(fd, "hello", 5))
            close(fd)
            log.call("again excl", open(f, O_CREAT | O_EXCL | O_WRONLY, 0o640))
            log.call("missing", open(d + "/nope", O_RDONLY))
            log.call("dir for writing", open(d, O_WRONLY))
            log.call("file as directory", open(f, O_RDONLY | O_DIRECTORY))
            log.call("below a file", open(f + "/x", O_RDONLY))
            symlink("f", d + "/l")
            log.call("nofollow symlink", open(d + "/l", O_RDONLY | O_NOFOLLOW))
            let t = log.call("creat truncates", creat(f, 0o600))
            var st = stat()
            fstat(t, &st)
            log.note("size after creat", st.st_size)
            log.note("mode kept", String(st.st_mode & 0o7777, radix: 8))
            close(t)
            let tr = open(f, O_RDWR | O_TRUNC)
            log.value("O_TRUNC size", lseek(tr, 0, SEEK_END))
            close(tr)
        },
        LibcCall(name: "openat", calls: "openat, O_PATH, AT_FDCWD-relative and directory-relative opens") { d, log in
            mkdir(d + "/sub", 0o755)
            let dfd = log.call("open dir", open(d + "/sub", O_RDONLY | O_DIRECTORY))
            let fd = log.call("openat create", wrapfs_openat(dfd, "g", O_CREAT | O_RDWR, 0o644))
            log.value("pwrite", pwrite(fd, "abc", 3, 0))
            close(fd)
            let p = log.call("O_PATH", wrapfs_openat(dfd, "g", wrapfs_O_PATH, 0))
            var st = stat()
            log.call("fstat O_PATH", fstat(p, &st))
            log.note("size", st.st_size)
            log.call("read O_PATH", read(p, &st, 1))
            close(p)
            log.call("openat missing", wrapfs_openat(dfd, "nope", O_RDONLY, 0))
            log.call("openat dotdot", wrapfs_openat(dfd, "../sub/g", O_RDONLY, 0))
            close(dfd)
        },
        LibcCall(name: "stat", calls: "stat, lstat, fstat, fstatat (AT_SYMLINK_NOFOLLOW, wrapfs_AT_EMPTY_PATH)") { d, log in
            let f = d + "/f"
            let fd = open(f, O_CREAT | O_RDWR, 0o604)
            _ = pwrite(fd, bytes(10_000, 1), 10_000, 0)
            mkdir(d + "/dir", 0o711)
            symlink("f", d + "/link")
            var st = stat()
            for (label, path) in [("file", f), ("dir", d + "/dir"), ("link", d + "/link")] {
                log.call("stat \(label)", stat(path, &st))
                log.note("\(label) type/mode/nlink", "\(String(st.st_mode, radix: 8)) \(st.st_nlink)")
                if label != "dir" { log.note("\(label) size", st.st_size) }
                log.call("lstat \(label)", lstat(path, &st))
                log.note("\(label) lstat type/mode", String(st.st_mode, radix: 8))
                if label == "link" { log.note("link size", st.st_size) }
            }
            log.call("fstatat nofollow", fstatat(AT_FDCWD, d + "/link", &st, AT_SYMLINK_NOFOLLOW))
            log.note("type", String(st.st_mode & S_IFMT, radix: 8))
            log.call("fstatat empty path", fstatat(fd, "", &st, wrapfs_AT_EMPTY_PATH))
            log.note("size", st.st_size)
            log.call("stat missing", stat(d + "/nope", &st))
            close(fd)
        },
        LibcCall(name: "statx", calls: "statx with STATX_BTIME (birth time) of a file, a directory, a symlink, an open file") { d, log in
            var before = timespec()
            clock_gettime(CLOCK_REALTIME, &before)
            let fd = open(d + "/f", O_CREAT | O_RDWR, 0o644)
            _ = write(fd, "data", 4)
            mkdir(d + "/dir", 0o755)
            symlink("f", d + "/sym")
            sleep(1)  // past the attribute timeout: the kernel asks the file system
            for (name, flags) in [("f", 0), ("dir", 0), ("sym", Int32(AT_SYMLINK_NOFOLLOW)), ("", 0)] {
                var sec: Int64 = 0, nsec: UInt32 = 0
                let mask = wrapfs_statx_btime(AT_FDCWD, name.isEmpty ? d : d + "/" + name, flags, &sec, &nsec)
                log.call("statx \(name)", mask)
                // `d` itself ("") was made before `before`: on a loaded machine, seconds before.
                let earliest = name.isEmpty ? before.tv_sec - 600 : before.tv_sec - 1
                log.note("birth time of \(name)", mask & 0x800 == 0 ? "none" : sec >= earliest && sec <= Int64(time(nil)) ? "recent" : "wrong: \(sec)")
            }
            var sec: Int64 = 0, nsec: UInt32 = 0
            let mask = wrapfs_statx_btime(fd, "", wrapfs_AT_EMPTY_PATH, &sec, &nsec)
            log.note("open file's birth time", mask & 0x800 == 0 ? "none" : "present")
            close(fd)
        },
        LibcCall(name: "unlinkat", calls: "unlink, unlinkat (AT_REMOVEDIR), rmdir") { d, log in
            close(open(d + "/f", O_CREAT | O_WRONLY, 0o644))
            mkdir(d + "/e", 0o755)
            mkdir(d + "/full", 0o755)
            close(open(d + "/full/x", O_CREAT | O_WRONLY, 0o644))
            let dfd = open(d, O_RDONLY | O_DIRECTORY)
            log.call("unlink a directory", unlinkat(dfd, "e", 0))
            log.call("rmdir a file", unlinkat(dfd, "f", AT_REMOVEDIR))
            log.call("rmdir not empty", unlinkat(dfd, "full", AT_REMOVEDIR))
            log.call("unlink file", unlinkat(dfd, "f", 0))
            log.call("unlink again", unlinkat(dfd, "f", 0))
            log.call("rmdir empty", unlinkat(dfd, "e", AT_REMOVEDIR))
            log.call("rmdir path", rmdir(d + "/full"))
            log.call("unlink path", unlink(d + "/full/x"))
            log.call("rmdir now", rmdir(d + "/full"))
            close(dfd)
        },
        LibcCall(name: "faccessat", calls: "access, faccessat (F_OK, R_OK, W_OK, X_OK, AT_EACCESS)") { d, log in
            close(open(d + "/plain", O_CREAT | O_WRONLY, 0o644))
            close(open(d + "/exec", O_CREAT | O_WRONLY, 0o755))
            close(open(d + "/none", O_CREAT | O_WRONLY, 0o000))
            for name in ["plain", "exec", "none", "nope"] {
                for (label, mode) in [("F", F_OK), ("R", R_OK), ("W", W_OK), ("X", X_OK)] {
                    log.call("\(name) \(label)", faccessat(AT_FDCWD, d + "/" + name, mode, 0))
                }
                log.call("\(name) X eaccess", faccessat(AT_FDCWD, d + "/" + name, X_OK, AT_EACCESS))
            }
            log.call("access dir X", access(d, X_OK))
        },
        LibcCall(name: "fcntl locks", calls: "fcntl F_SETLK, F_SETLKW, F_GETLK, F_OFD_SETLK, F_OFD_GETLK") { d, log in
            let f = d + "/locked"
            let a = open(f, O_CREAT | O_RDWR, 0o644), b = open(f, O_RDWR)
            var lock = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 100, l_pid: 0)
            log.call("ofd write lock", fcntl(a, wrapfs_f_ofd_setlk, &lock))
            var other = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 50, l_len: 10, l_pid: 0)
            log.call("ofd conflicting", fcntl(b, wrapfs_f_ofd_setlk, &other))
            var probe = flock(l_type: Int16(F_RDLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 10, l_pid: 0)
            log.call("ofd getlk", fcntl(b, wrapfs_f_ofd_getlk, &probe))
            log.note("holder type/start/len", "\(probe.l_type) \(probe.l_start) \(probe.l_len)")
            var beyond = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 200, l_len: 10, l_pid: 0)
            log.call("ofd disjoint", fcntl(b, wrapfs_f_ofd_setlk, &beyond))
            var unlock = flock(l_type: Int16(F_UNLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
            log.call("ofd unlock", fcntl(a, wrapfs_f_ofd_setlk, &unlock))
            log.call("ofd now free", fcntl(b, wrapfs_f_ofd_setlk, &other))
            // POSIX locks (per process) and OFD locks conflict: release b's first.
            log.call("ofd unlock b", fcntl(b, wrapfs_f_ofd_setlk, &unlock))
            log.call("ofd unlock b disjoint", fcntl(b, wrapfs_f_ofd_setlk, &unlock))
            var posix = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
            log.call("posix setlk", fcntl(a, F_SETLK, &posix))
            log.call("posix setlk same process", fcntl(b, F_SETLK, &posix))
            var get = flock(l_type: Int16(F_WRLCK), l_whence: Int16(SEEK_SET), l_start: 0, l_len: 0, l_pid: 0)
            log.call("posix getlk", fcntl(a, F_GETLK, &get))
            log.note("getlk own lock", get.l_type == Int16(F_UNLCK) ? "none" : "held")
            close(a)
            close(b)
        },
        LibcCall(name: "flock", calls: "flock (LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN)") { d, log in
            let f = d + "/f"
            let a = open(f, O_CREAT | O_RDWR, 0o644), b = open(f, O_RDONLY)
            log.call("ex", flock(a, LOCK_EX))
            log.call("ex nb other", flock(b, LOCK_EX | LOCK_NB))
            log.call("sh nb other", flock(b, LOCK_SH | LOCK_NB))
            log.call("un", flock(a, LOCK_UN))
            log.call("sh a", flock(a, LOCK_SH | LOCK_NB))
            log.call("sh b", flock(b, LOCK_SH | LOCK_NB))
            log.call("ex nb upgrade", flock(b, LOCK_EX | LOCK_NB))
            close(a)
            close(b)
        },
        LibcCall(name: "pread/pwrite", calls: "read, write, pread, pwrite, lseek (SEEK_SET, SEEK_CUR, SEEK_END)") { d, log in
            let fd = open(d + "/f", O_CREAT | O_RDWR, 0o644)
            log.value("write", write(fd, bytes(10_000, 2), 10_000))
            log.value("pwrite across pages", pwrite(fd, bytes(20, 3), 20, 4090))
            log.value("pwrite past end (hole)", pwrite(fd, bytes(100, 4), 100, 70_000))
            log.value("size", lseek(fd, 0, SEEK_END))
            var buf = [UInt8](repeating: 1, count: 80_000)
            log.value("pread all", pread(fd, &buf, buf.count, 0))
            log.note("content", digest(Array(buf.prefix(70_100))))
            log.value("pread at end", pread(fd, &buf, 10, 70_100))
            log.value("pread beyond", pread(fd, &buf, 10, 1 << 30))
            log.value("lseek set", lseek(fd, 5, SEEK_SET))
            log.value("read", read(fd, &buf, 7))
            log.value("lseek cur", lseek(fd, 3, SEEK_CUR))
            log.value("lseek negative", lseek(fd, -1, SEEK_SET))
            log.call("pwrite negative", pwrite(fd, buf, 1, -5))
            let ro = open(d + "/f", O_RDONLY)
            log.call("write on O_RDONLY", write(ro, buf, 1))
            close(ro)
            let wo = open(d + "/f", O_WRONLY)
            log.call("read on O_WRONLY", read(wo, &buf, 1))
            log.value("pwrite on O_WRONLY", pwrite(wo, bytes(33, 5), 33, 100))
            close(wo)
            log.note("after", digest(readAll(fd)))
            close(fd)
        },
        LibcCall(name: "O_APPEND", calls: "open O_APPEND, write at end from two descriptors, fcntl F_GETFL/F_SETFL") { d, log in
            let f = d + "/log"
            let a = open(f, O_CREAT | O_WRONLY | O_APPEND, 0o644), b = open(f, O_WRONLY | O_APPEND)
            for i in 0..<20 {
                let line = Array("line \(i) \(String(repeating: "x", count: i * 37))\n".utf8)
                log.value("append \(i)", write(i % 2 == 0 ? a : b, line, line.count))
            }
            log.value("pwrite with O_APPEND", pwrite(a, "@@", 2, 0))
            let flags = fcntl(a, F_GETFL)
            log.note("F_GETFL append", flags & O_APPEND != 0)
            log.call("F_SETFL off", fcntl(a, F_SETFL, flags & ~O_APPEND))
            log.value("lseek start", lseek(a, 0, SEEK_SET))
            log.value("write at 0", write(a, "##", 2))
            let r = open(f, O_RDONLY)
            log.note("content", digest(readAll(r)))
            close(r)
            close(a)
            close(b)
        },
        LibcCall(name: "readv/writev", calls: "readv, writev, preadv, pwritev") { d, log in
            let fd = open(d + "/f", O_CREAT | O_RDWR, 0o644)
            var parts = [bytes(100, 6), bytes(5000, 7), bytes(3, 8)]
            let total = parts.map(\.count).reduce(0, +)
            parts.withUnsafeMutableBufferPointer { p in
                var iov = p.indices.map { iovec(iov_base: p[$0].withUnsafeMutableBytes { $0.baseAddress }, iov_len: p[$0].count) }
                log.value("writev", writev(fd, &iov, Int32(iov.count)))
                log.value("pwritev", pwritev(fd, &iov, Int32(iov.count), 9000))
            }
            var a = [UInt8](repeating: 0, count: 4000), b = [UInt8](repeating: 0, count: 20_000)
            a.withUnsafeMutableBytes { ra in
                b.withUnsafeMutableBytes { rb in
                    var iov = [iovec(iov_base: ra.baseAddress, iov_len: ra.count), iovec(iov_base: rb.baseAddress, iov_len: rb.count)]
                    log.value("preadv", preadv(fd, &iov, 2, 0))
                    log.value("lseek", lseek(fd, 50, SEEK_SET))
                    log.value("readv", readv(fd, &iov, 2))
                }
            }
            log.note("read back", digest(a + b))
            log.note("total", total)
            close(fd)
        },
        LibcCall(name: "fsync", calls: "fsync, fdatasync, sync_file_range-free durability (sync, syncfs)") { d, log in
            let fd = open(d + "/f", O_CREAT | O_RDWR, 0o644)
            _ = write(fd, bytes(50_000, 9), 50_000)
            log.call("fsync", fsync(fd))
            log.call("fdatasync", fdatasync(fd))
            let ro = open(d + "/f", O_RDONLY)
            log.call("fsync read-only", fsync(ro))
            log.call("syncfs", wrapfs_syncfs(ro))
            close(ro)
            let dfd = open(d, O_RDONLY | O_DIRECTORY)
            log.call("fsync directory", fsync(dfd))
            close(dfd)
            close(fd)
        },
        LibcCall(name: "truncate", calls: "ftruncate, truncate (grow, shrink inside a page, to zero)") { d, log in
            let f = d + "/f"
            let fd = open(f, O_CREAT | O_RDWR, 0o644)
            _ = write(fd, bytes(30_000, 10), 30_000)
            log.call("shrink mid-page", ftruncate(fd, 5_000))
            log.call("grow", ftruncate(fd, 100_000))
            log.note("content", digest(readAll(fd)))
            log.call("truncate path", truncate(f, 12_345))
            log.note("content 2", digest(readAll(fd)))
            log.call("negative", ftruncate(fd, -1))
            let ro = open(f, O_RDONLY)
            log.call("read-only descriptor", ftruncate(ro, 0))
            close(ro)
            log.call("truncate a directory", truncate(d, 0))
            log.call("to zero", ftruncate(fd, 0))
            log.value("size", lseek(fd, 0, SEEK_END))
            close(fd)
        },
        LibcCall(name: "mmap", calls: "mmap (MAP_SHARED read/write, MAP_PRIVATE), msync, munmap") { d, log in
            let f = d + "/f"
            let fd = open(f, O_CREAT | O_RDWR, 0o644)
            _ = pwrite(fd, bytes(3 * 4096 + 10, 11), 3 * 4096 + 10, 0)
            let n = 4 * 4096
            if let m = mmap(nil, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), m != MAP_FAILED {
                log.note("mapped", digest(Array(UnsafeRawBufferPointer(start: m, count: 3 * 4096 + 10))))
                for i in stride(from: 7, to: 3 * 4096, by: 1001) { m.storeBytes(of: UInt8(i & 0xFF), toByteOffset: i, as: UInt8.self) }
                log.call("msync", msync(m, n, MS_SYNC))
                log.note("after msync", digest(readAll(fd)))
                _ = pwrite(fd, "WRITE", 5, 100)
                log.note("write seen by map", String(decoding: UnsafeRawBufferPointer(start: m + 100, count: 5), as: UTF8.self))
                munmap(m, n)
            } else { log.note("mmap shared", errnoName(errno)) }
            if let p = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), p != MAP_FAILED {
                p.storeBytes(of: 0xAB, toByteOffset: 0, as: UInt8.self)
                munmap(p, 4096)
                var first: UInt8 = 0
                _ = pread(fd, &first, 1, 0)
                log.note("private write stays private", first != 0xAB)
            } else { log.note("mmap private", errnoName(errno)) }
            let ro = open(f, O_RDONLY)
            let w = mmap(nil, 4096, PROT_WRITE, MAP_SHARED, ro, 0)
            log.note("shared writable on O_RDONLY", w == MAP_FAILED ? errnoName(errno) : "mapped")
            if w != MAP_FAILED { munmap(w, 4096) }
            close(ro)
            close(fd)
        },
        LibcCall(name: "getdents", calls: "opendir, readdir (getdents64), telldir, seekdir, rewinddir, closedir") { d, log in
            mkdir(d + "/many", 0o755)
            for i in 0..<300 { close(open(d + "/many/entry-\(i)-\(String(repeating: "n", count: i % 50))", O_CREAT | O_WRONLY, 0o644)) }
            mkdir(d + "/many/sub", 0o755)
            guard let dir = opendir(d + "/many") else { log.note("opendir", errnoName(errno)); return }
            var names: [String] = []
            var types: [String: UInt8] = [:]
            var marks: [(Int, Int)] = []
            while let e = readdir(dir) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                names.append(name)
                types[name] = e.pointee.d_type
                if names.count % 97 == 0 { marks.append((telldir(dir), names.count)) }
            }
            log.note("entries", names.count)
            log.note("names", digest(Array(names.sorted().joined(separator: "/").utf8)))
            log.note("types", "\(types["sub"] ?? 0) \(types["entry-1-n"] ?? 0) \(types["."] ?? 0)")
            var resumed = true
            for (cookie, index) in marks {
                seekdir(dir, cookie)
                let e = readdir(dir)
                let name = e.map { e in withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) } }
                if index < names.count && name != names[index] { resumed = false }
            }
            log.note("seekdir resumes", resumed)
            rewinddir(dir)
            var again = 0
            while readdir(dir) != nil { again += 1 }
            log.note("after rewinddir", again)
            log.call("closedir", closedir(dir))
        },
        LibcCall(name: "rename", calls: "rename, renameat, renameat2 (RENAME_NOREPLACE, RENAME_EXCHANGE)") { d, log in
            func make(_ name: String, _ text: String) { let fd = open(d + "/" + name, O_CREAT | O_WRONLY | O_TRUNC, 0o644); _ = write(fd, text, text.utf8.count); close(fd) }
            func content(_ name: String) -> String { let fd = open(d + "/" + name, O_RDONLY); defer { close(fd) }; return fd < 0 ? errnoName(errno) : String(decoding: readAll(fd), as: UTF8.self) }
            make("a", "alpha"); make("b", "beta")
            mkdir(d + "/d1", 0o755); mkdir(d + "/d2", 0o755); mkdir(d + "/full", 0o755); make("full/x", "x")
            log.call("overwrite", rename(d + "/a", d + "/b"))
            log.note("b", content("b")); log.note("a", content("a"))
            log.call("dir over empty dir", rename(d + "/d1", d + "/d2"))
            log.call("dir over non-empty", rename(d + "/d2", d + "/full"))
            log.call("file over dir", rename(d + "/b", d + "/full"))
            log.call("dir over file", rename(d + "/d2", d + "/b"))
            log.call("dir into itself", rename(d + "/d2", d + "/d2/in"))
            log.call("missing", rename(d + "/nope", d + "/x"))
            make("c", "gamma")
            log.call("noreplace", wrapfs_renameat2(AT_FDCWD, d + "/c", AT_FDCWD, d + "/b", 1))
            log.call("noreplace free", wrapfs_renameat2(AT_FDCWD, d + "/c", AT_FDCWD, d + "/c2", 1))
            log.call("exchange", wrapfs_renameat2(AT_FDCWD, d + "/c2", AT_FDCWD, d + "/b", 2))
            log.note("b/c2", content("b") + "/" + content("c2"))
            log.call("exchange missing", wrapfs_renameat2(AT_FDCWD, d + "/c2", AT_FDCWD, d + "/nope", 2))
            let dfd = open(d, O_RDONLY | O_DIRECTORY)
            log.call("renameat", renameat(dfd, "b", dfd, "full/y"))
            log.note("full/y", content("full/y"))
            log.call("same name", rename(d + "/c2", d + "/c2"))
            close(dfd)
        },
        LibcCall(name: "link", calls: "link, linkat, nlink counts") { d, log in
            let fd = open(d + "/f", O_CREAT | O_WRONLY, 0o644)
            _ = write(fd, "data", 4)
            close(fd)
            log.call("link", link(d + "/f", d + "/g"))
            var st = stat()
            stat(d + "/f", &st)
            log.note("nlink", st.st_nlink)
            log.call("link existing", link(d + "/f", d + "/g"))
            mkdir(d + "/dir", 0o755)
            log.call("link a directory", link(d + "/dir", d + "/dir2"))
            log.call("linkat", linkat(AT_FDCWD, d + "/g", AT_FDCWD, d + "/dir/h", 0))
            stat(d + "/dir/h", &st)
            log.note("nlink 3", st.st_nlink)
            unlink(d + "/f")
            stat(d + "/g", &st)
            log.note("nlink after unlink", st.st_nlink)
            let r = open(d + "/dir/h", O_RDONLY)
            log.note("content through link", String(decoding: readAll(r), as: UTF8.self))
            close(r)
            symlink("g", d + "/sym")
            log.call("linkat symlink itself", linkat(AT_FDCWD, d + "/sym", AT_FDCWD, d + "/sym2", 0))
            lstat(d + "/sym2", &st)
            log.note("linked symlink type", String(st.st_mode & S_IFMT, radix: 8))
            log.call("linkat follow", linkat(AT_FDCWD, d + "/sym", AT_FDCWD, d + "/followed", AT_SYMLINK_FOLLOW))
            lstat(d + "/followed", &st)
            log.note("followed type", String(st.st_mode & S_IFMT, radix: 8))
        },
        LibcCall(name: "O_TMPFILE", calls: "open O_TMPFILE (O_RDWR, O_WRONLY, O_EXCL), linkat by /proc/self/fd and AT_EMPTY_PATH") { d, log in
            let fd = log.call("open", open(d, wrapfs_o_tmpfile | O_RDWR, 0o640))
            guard fd >= 0 else { return }
            let data = bytes(10_000, 20)
            log.value("write", write(fd, data, data.count))
            var st = stat()
            fstat(fd, &st)
            log.note("unnamed", "nlink \(st.st_nlink) size \(st.st_size) mode \(String(st.st_mode, radix: 8))")
            var back = [UInt8](repeating: 0, count: 4000)
            log.value("pread", pread(fd, &back, 4000, 3000))
            log.note("read back", back == Array(data[3000..<7000]))
            log.call("ftruncate", ftruncate(fd, 12_345))
            if let m = mmap(nil, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), m != MAP_FAILED {
                memset(m + 100, 0x41, 5000)
                log.call("msync", msync(m, 8192, MS_SYNC))
                munmap(m, 8192)
            }
            log.note("listing before link", (try? FileManager.default.contentsOfDirectory(atPath: d).sorted()) ?? [])
            log.call("linkat /proc/self/fd", linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, d + "/named", AT_SYMLINK_FOLLOW))
            log.call("linkat AT_EMPTY_PATH", linkat(fd, "", AT_FDCWD, d + "/again", wrapfs_AT_EMPTY_PATH))
            log.call("linkat onto an existing name", linkat(fd, "", AT_FDCWD, d + "/named", wrapfs_AT_EMPTY_PATH))
            fstat(fd, &st)
            log.note("linked", "nlink \(st.st_nlink) size \(st.st_size)")
            close(fd)
            let r = open(d + "/again", O_RDONLY)
            log.note("content by name", digest(readAll(r)))
            close(r)
            let w = log.call("open write-only", open(d, wrapfs_o_tmpfile | O_WRONLY, 0o600))
            if w >= 0 {
                log.value("write", write(w, data, 300))
                log.call("linkat write-only", linkat(w, "", AT_FDCWD, d + "/wo", wrapfs_AT_EMPTY_PATH))
                close(w)
                let r = open(d + "/wo", O_RDONLY)
                log.note("write-only content", digest(readAll(r)))
                close(r)
            }
            let x = log.call("open O_EXCL", open(d, wrapfs_o_tmpfile | O_RDWR | O_EXCL, 0o600))
            if x >= 0 {
                log.call("linkat O_EXCL", linkat(x, "", AT_FDCWD, d + "/never", wrapfs_AT_EMPTY_PATH))
                log.call("linkat O_EXCL by /proc", linkat(AT_FDCWD, "/proc/self/fd/\(x)", AT_FDCWD, d + "/never", AT_SYMLINK_FOLLOW))
                close(x)
            }
            let unlinked = open(d, wrapfs_o_tmpfile | O_RDWR, 0o600)
            _ = write(unlinked, data, data.count)
            close(unlinked)
            log.call("read-only", open(d, wrapfs_o_tmpfile | O_RDONLY, 0o600))
            log.call("in a file", open(d + "/named", wrapfs_o_tmpfile | O_RDWR, 0o600))
            log.call("in a missing directory", open(d + "/missing", wrapfs_o_tmpfile | O_RDWR, 0o600))
            mkdir(d + "/sub", 0o755)
            let s = log.call("in a subdirectory", open(d + "/sub", wrapfs_o_tmpfile | O_RDWR, 0o600))
            if s >= 0 {
                log.call("linkat into another directory", linkat(s, "", AT_FDCWD, d + "/moved", wrapfs_AT_EMPTY_PATH))
                close(s)
            }
            log.note("listing", (try? FileManager.default.contentsOfDirectory(atPath: d).sorted()) ?? [])
        },
        LibcCall(name: "symlink", calls: "symlink, symlinkat, readlink, readlinkat") { d, log in
            let long = String(repeating: "t/", count: 500) + "end"
            for (i, target) in ["plain", "../up/../x", "/absolute/path", long, "with space", "ünïcödé"].enumerated() {
                log.call("symlink \(i)", symlink(target, d + "/l\(i)"))
                var buf = [CChar](repeating: 0, count: 4096)
                let n = log.value("readlink \(i)", readlink(d + "/l\(i)", &buf, buf.count))
                log.note("target \(i) kept", n >= 0 && String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == target)
            }
            var small = [CChar](repeating: 0, count: 4)
            log.value("readlink short buffer", readlink(d + "/l0", &small, small.count))
            close(open(d + "/file", O_CREAT | O_WRONLY, 0o644))
            var buf = [CChar](repeating: 0, count: 64)
            log.call("readlink a file", readlink(d + "/file", &buf, buf.count))
            log.call("symlink existing", symlink("x", d + "/file"))
            let dfd = open(d, O_RDONLY | O_DIRECTORY)
            log.call("symlinkat", symlinkat("file", dfd, "at"))
            log.value("readlinkat", readlinkat(dfd, "at", &buf, buf.count))
            close(dfd)
            log.call("open through", open(d + "/at", O_RDONLY) >= 0 ? 0 : -1)
            log.call("dangling", open(d + "/l0", O_RDONLY))
        },
        LibcCall(name: "mkdir", calls: "mkdir, mkdirat, rmdir, umask-applied modes") { d, log in
            log.call("mkdir", mkdir(d + "/a", 0o750))
            log.call("again", mkdir(d + "/a", 0o750))
            log.call("missing parent", mkdir(d + "/no/a", 0o750))
            let dfd = open(d + "/a", O_RDONLY | O_DIRECTORY)
            log.call("mkdirat", mkdirat(dfd, "b", 0o1777))
            var st = stat()
            stat(d + "/a", &st); log.note("mode a", String(st.st_mode & 0o7777, radix: 8))
            stat(d + "/a/b", &st); log.note("mode b", String(st.st_mode & 0o7777, radix: 8))
            stat(d + "/a", &st); log.note("nlink a", st.st_nlink)
            close(dfd)
            log.call("rmdir", rmdir(d + "/a/b"))
        },
        LibcCall(name: "chmod/chown", calls: "chmod, fchmod, fchmodat, chown, fchown, lchown") { d, log in
            let f = d + "/f"
            let fd = open(f, O_CREAT | O_RDWR, 0o644)
            var st = stat()
            log.call("chmod", chmod(f, 0o4751)); stat(f, &st); log.note("mode", String(st.st_mode & 0o7777, radix: 8))
            log.call("fchmod", fchmod(fd, 0o600)); fstat(fd, &st); log.note("mode 2", String(st.st_mode & 0o7777, radix: 8))
            log.call("fchmodat", fchmodat(AT_FDCWD, f, 0o640, 0)); stat(f, &st); log.note("mode 3", String(st.st_mode & 0o7777, radix: 8))
            log.call("chown", chown(f, 65534, 65534)); stat(f, &st); log.note("owner", "\(st.st_uid):\(st.st_gid)")
            log.call("fchown gid only", fchown(fd, uid_t.max, 0)); fstat(fd, &st); log.note("owner 2", "\(st.st_uid):\(st.st_gid)")
            symlink("f", d + "/l")
            log.call("lchown", lchown(d + "/l", 65534, 65534)); lstat(d + "/l", &st); log.note("link owner", "\(st.st_uid):\(st.st_gid)")
            stat(f, &st); log.note("target owner", "\(st.st_uid):\(st.st_gid)")
            log.call("chmod missing", chmod(d + "/nope", 0o600))
            close(fd)
        },
        LibcCall(name: "utimensat", calls: "utimensat, futimens (explicit times, UTIME_OMIT, AT_SYMLINK_NOFOLLOW)") { d, log in
            let f = d + "/f"
            let fd = open(f, O_CREAT | O_RDWR, 0o644)
            var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_500_000_000, tv_nsec: 5)]
            log.call("utimensat", utimensat(AT_FDCWD, f, &times, 0))
            var st = stat()
            stat(f, &st); log.note("times", "\(st.st_atim.tv_sec).\(st.st_atim.tv_nsec) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)")
            times = [timespec(tv_sec: 0, tv_nsec: Int(wrapfs_utime_omit)), timespec(tv_sec: 1_600_000_000, tv_nsec: 0)]
            log.call("futimens omit atime", futimens(fd, &times))
            fstat(fd, &st); log.note("times 2", "\(st.st_atim.tv_sec) \(st.st_mtim.tv_sec)")
            symlink("f", d + "/l")
            times = [timespec(tv_sec: 1_200_000_000, tv_nsec: 0), timespec(tv_sec: 1_200_000_000, tv_nsec: 0)]
            log.call("nofollow", utimensat(AT_FDCWD, d + "/l", &times, AT_SYMLINK_NOFOLLOW))
            lstat(d + "/l", &st); log.note("link mtime", st.st_mtim.tv_sec)
            stat(f, &st); log.note("target mtime", st.st_mtim.tv_sec)
            close(fd)
        },
        LibcCall(name: "fallocate", calls: "fallocate (0, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE), posix_fallocate") { d, log in
            let fd = open(d + "/f", O_CREAT | O_RDWR, 0o644)
            _ = write(fd, bytes(40_000, 12), 40_000)
            log.call("allocate grows", fallocate(fd, 0, 0, 50_000))
            log.value("size", lseek(fd, 0, SEEK_END))
            log.call("keep size", fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 90_000))
            log.value("size 2", lseek(fd, 0, SEEK_END))
            log.call("punch", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5_000, 20_000))
            log.call("punch without keep", fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 10))
            log.call("zero range", fallocate(fd, FALLOC_FL_ZERO_RANGE, 30_000, 30_000))
            log.value("size 3", lseek(fd, 0, SEEK_END))
            log.note("content", digest(readAll(fd)))
            log.value("posix_fallocate", posix_fallocate(fd, 0, 70_000))
            log.value("size 4", lseek(fd, 0, SEEK_END))
            log.call("bad length", fallocate(fd, 0, 0, 0))
            close(fd)
        },
        LibcCall(name: "SEEK_DATA/SEEK_HOLE", calls: "lseek SEEK_DATA, SEEK_HOLE over holes") { d, log in
            let fd = open(d + "/f", O_CREAT | O_RDWR, 0o644)
            // Data in runs of whole 256 KiB: the layer finds holes by page, and no codec's page is larger.
            let run = 256 << 10
            _ = pwrite(fd, bytes(run, 13), run, 1 << 20)
            _ = pwrite(fd, bytes(run, 14), run, 4 << 20)
            log.call("truncate", ftruncate(fd, 6 << 20))
            for off in [0, 1 << 20, (1 << 20) + run, 3 << 20, (4 << 20) + 100, (4 << 20) + run] {
                log.value("data from \(off)", lseek(fd, off_t(off), SEEK_DATA))
                log.value("hole from \(off)", lseek(fd, off_t(off), SEEK_HOLE))
            }
            log.value("data past end", lseek(fd, 7 << 20, SEEK_DATA))
            close(fd)
        },
        LibcCall(name: "copy_file_range/sendfile/splice", calls: "copy_file_range, sendfile, splice") { d, log in
            let src = open(d + "/src", O_CREAT | O_RDWR, 0o644)
            _ = write(src, bytes(100_000, 15), 100_000)
            let dst = open(d + "/dst", O_CREAT | O_RDWR, 0o644)
            var inOff: Int64 = 1000, outOff: Int64 = 500
            log.value("copy_file_range", wrapfs_copy_file_range(src, &inOff, dst, &outOff, 50_000))
            log.note("offsets", "\(inOff) \(outOff)")
            var off: off_t = 60_000
            log.value("lseek", lseek(dst, 0, SEEK_END))
            log.value("sendfile", wrapfs_sendfile(dst, src, &off, 30_000))
            var fds: [Int32] = [0, 0]
            pipe(&fds)
            var pin: Int64 = 10
            log.value("splice in", wrapfs_splice(src, &pin, fds[1], nil, 4000))
            var pout: Int64 = 200_000
            log.value("splice out", wrapfs_splice(fds[0], nil, dst, &pout, 4000))
            close(fds[0]); close(fds[1])
            log.note("dst", digest(readAll(dst)))
            close(src); close(dst)
        },
        LibcCall(name: "xattr", calls: "setxattr, getxattr, listxattr, removexattr (user.*; XATTR_CREATE, XATTR_REPLACE)") { d, log in
            let f = d + "/f"
            close(open(f, O_CREAT | O_WRONLY, 0o644))
            log.call("set", setxattr(f, "user.a", "value-a", 7, 0))
            log.call("create existing", setxattr(f, "user.a", "x", 1, Int32(XATTR_CREATE)))
            log.call("replace missing", setxattr(f, "user.b", "x", 1, Int32(XATTR_REPLACE)))
            log.call("set b", setxattr(f, "user.b", [UInt8](repeating: 7, count: 3000), 3000, 0))
            var buf = [UInt8](repeating: 0, count: 4096)
            log.value("get", getxattr(f, "user.a", &buf, buf.count))
            log.note("value", String(decoding: buf.prefix(7), as: UTF8.self))
            log.value("get size", getxattr(f, "user.b", nil, 0))
            log.call("get small buffer", getxattr(f, "user.a", &buf, 2))
            log.call("get missing", getxattr(f, "user.zzz", &buf, buf.count))
            var names = [CChar](repeating: 0, count: 4096)
            let n = listxattr(f, &names, names.count)
            let list = n > 0 ? String(decoding: names[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: "\0").filter { $0.hasPrefix("user.") }.sorted() : []
            log.note("list", list.joined(separator: ","))
            log.call("remove", removexattr(f, "user.a"))
            log.call("remove missing", removexattr(f, "user.a"))
            log.call("bad namespace", setxattr(f, "nonsense.a", "x", 1, 0))
        },
        LibcCall(name: "mknod", calls: "mkfifo, mknod (FIFO), open of a FIFO") { d, log in
            log.call("mkfifo", mkfifo(d + "/fifo", 0o640))
            var st = stat()
            stat(d + "/fifo", &st)
            log.note("type/mode", String(st.st_mode, radix: 8))
            log.call("mknod fifo", mknod(d + "/fifo2", S_IFIFO | 0o600, 0))
            let r = log.call("open fifo nonblock", open(d + "/fifo", O_RDONLY | O_NONBLOCK))
            close(r)
            log.call("mkfifo existing", mkfifo(d + "/fifo", 0o640))
        },
        LibcCall(name: "statfs", calls: "statfs, fstatfs, statvfs") { d, log in
            var s = statfs()
            log.call("statfs", statfs(d, &s))
            log.note("block size set", s.f_bsize > 0)
            var v = statvfs()
            log.call("statvfs", statvfs(d, &v))
            log.note("name max", v.f_namemax >= 255)
            let fd = open(d, O_RDONLY | O_DIRECTORY)
            log.call("fstatfs", fstatfs(fd, &s))
            close(fd)
        },
        LibcCall(name: "O_DIRECT", calls: "open O_DIRECT, aligned pread/pwrite") { d, log in
            let fd = log.call("open", open(d + "/f", O_CREAT | O_RDWR | wrapfs_O_DIRECT, 0o644))
            guard fd >= 0 else { return }
            var raw: UnsafeMutableRawPointer?
            posix_memalign(&raw, 4096, 16_384)
            defer { free(raw) }
            let data = bytes(16_384, 16)
            data.withUnsafeBytes { raw!.copyMemory(from: $0.baseAddress!, byteCount: 16_384) }
            log.value("pwrite", pwrite(fd, raw, 16_384, 8192))
            memset(raw!, 0, 16_384)
            log.value("pread", pread(fd, raw, 16_384, 8192))
            log.note("same", Array(UnsafeRawBufferPointer(start: raw, count: 16_384)) == data)
            close(fd)
        },
        LibcCall(name: "advice", calls: "posix_fadvise, madvise, readahead-free hints") { d, log in
            let fd = open(d + "/f", O_CREAT | O_RDWR, 0o644)
            _ = write(fd, bytes(20_000, 17), 20_000)
            log.value("fadvise sequential", posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL))
            log.value("fadvise dontneed", posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
            if let m = mmap(nil, 20_000, PROT_READ, MAP_SHARED, fd, 0), m != MAP_FAILED {
                log.call("madvise willneed", madvise(m, 20_000, MADV_WILLNEED))
                munmap(m, 20_000)
            }
            log.note("content", digest(readAll(fd)))
            close(fd)
        },
    ]
}
