// The differential checker: the same random operations on a mount and on a plain directory, compared result by result.
import Foundation
import Glibc
import CFuse

/// A small, seedable generator, so a failing run can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What one side of an operation produced.
enum Outcome: Equatable, CustomStringConvertible {
    case ok(Int64)
    case failed(Int32)
    case bytes([UInt8])
    case text(String)

    var description: String {
        switch self {
        case .ok(let v): return "ok(\(v))"
        case .failed(let e): return "errno \(e) (\(String(cString: strerror(e))))"
        case .bytes(let b): return "\(b.count) bytes, fnv \(String(Outcome.fnv(b), radix: 16))"
        case .text(let t): return t.count > 300 ? String(t.prefix(300)) + "..." : t
        }
    }

    static func of(_ r: Int) -> Outcome { r < 0 ? .failed(errno) : .ok(Int64(r)) }
    static func of(_ r: Int32) -> Outcome { r < 0 ? .failed(errno) : .ok(Int64(r)) }

    /// Byte results compare with memcmp: the derived `==` compares element by element through
    /// generic witnesses in a debug build, and contents of a few hundred KiB are compared often.
    static func == (a: Outcome, b: Outcome) -> Bool {
        switch (a, b) {
        case (.ok(let x), .ok(let y)): return x == y
        case (.failed(let x), .failed(let y)): return x == y
        case (.text(let x), .text(let y)): return x == y
        case (.bytes(let x), .bytes(let y)):
            return x.count == y.count && x.withUnsafeBytes { p in y.withUnsafeBytes { q in p.isEmpty || memcmp(p.baseAddress!, q.baseAddress!, p.count) == 0 } }
        default: return false
        }
    }

    static func fnv(_ b: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for x in b { h = (h ^ UInt64(x)) &* 0x100_0000_01b3 }
        return h
    }
}

struct DifferenceFound: Error, CustomStringConvertible {
    let description: String
}

/// Runs random operations on `subject` (a mount) and `reference` (a plain directory) and stops
/// at the first result that differs. Operations: writes across page boundaries, appends,
/// truncates up and down, holes, hole punching, mmap writes and reads, renames (plain, NOREPLACE,
/// EXCHANGE), hard links, unnamed files (O_TMPFILE) and linkat of open files, unlink of open
/// files, symlinks, mkdir/rmdir, chmod, utimensat with explicit times, user extended attributes
/// (set with CREATE/REPLACE, get, remove, list), fsync, SEEK_DATA/SEEK_HOLE, and directories
/// read in small pieces.
final class DifferentialChecker {
    let roots: [String]
    var rng: SplitMix64
    let seed: UInt64
    let pageSize = 4096
    private var fds: [(fd: [Int32], path: String, flags: Int32)] = []
    /// The last operations, rendered only when a difference is reported.
    private var history: [(String, Outcome)] = []
    private let dirs = ["", "Alpha", "Alpha/Inner", "beta"]
    /// The last name is too long for an encrypted name to fit NAME_MAX: the encrypting codecs
    /// keep it under a stand-in with a side file (`LongNames`), through every operation.
    private let names = ["f0", "File1", "data.bin", "Zed", "x y", "hello", "Alpha", "beta", "q",
                         "long-" + String(repeating: "n", count: 200)]
    private var bigDirCount = 0
    private(set) var operations = 0
    /// Whether the subject's lower file system has fallocate, and renameat2's flags. The layer
    /// offers what its lower file system offers; where that is less than the reference's (bindfs
    /// over ext4), the checker leaves those operations out.
    var subjectAllocates = true
    var subjectRenamesWithFlags = true
    /// Whether the subject's lower file system counts hard links (sshfs: SFTP has no link count).
    var subjectCountsLinks = true
    /// Whether the subject's lower file system makes unnamed files (O_TMPFILE): ext4 and tmpfs
    /// do, GlusterFS's FUSE client, sshfs and bindfs do not.
    var subjectMakesTemporaryFiles = true
    /// Whether the subject's lower file system keeps extended attributes and nanoseconds of
    /// times (sshfs has neither: SFTP's times are whole seconds).
    var subjectHasXattrs = true
    var subjectKeepsNanoseconds = true
    /// Whether readlink of a target with '/' works on the subject's lower file system (sshfs
    /// 3.7.3 fails it with EPERM, with or without the layer).
    var subjectReadsSlashedLinks = true
    /// Whether a size of a petabyte (1 << 50) is past the largest file of the reference's file
    /// system (ext4, not tmpfs): then some truncates, writes and fallocates go there, fail with
    /// EFBIG on both sides, and must change nothing.
    private let farSizesRefused: Bool
    /// Whether the subject refuses such sizes at the call: not with the writeback cache (the
    /// kernel takes the write), nor over sshfs or GlusterFS (their clients take or shorten it).
    var subjectRefusesFarSizes = true
    /// Whether a hole punch or zeroing that ends past that size, not growing the file, fails with
    /// EFBIG as on ext4: the layer sees its lower file system's limit, unless that is a FUSE one.
    var subjectRefusesFarRanges = true
    static let farSize = 1 << 50
    /// Operations a difference report lists (WRAPFS_CHECKER_HISTORY overrides, for debugging).
    static let historyLength = ProcessInfo.processInfo.environment["WRAPFS_CHECKER_HISTORY"].flatMap { Int($0) } ?? 40

    /// Works in a subdirectory of each side, so that symlinks to "../Zed" stay inside the
    /// mount and the reference rather than reaching two unrelated outside directories.
    init(subject: String, reference: String, seed: UInt64) {
        roots = [subject + "/work", reference + "/work"]
        for r in roots { mkdir(r, 0o755) }
        let probe = roots[1] + "/.far-size-probe"
        let fd = open(probe, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        farSizesRefused = fd >= 0 && ftruncate(fd, off_t(DifferentialChecker.farSize)) != 0 && errno == EFBIG
        if fd >= 0 { close(fd) }
        unlink(probe)
        self.seed = seed
        rng = SplitMix64(seed: seed)
    }

    deinit { for f in fds { f.fd.forEach { close($0) } } }

    // MARK: choices

    private func pick<T>(_ xs: [T]) -> T { xs[Int.random(in: 0..<xs.count, using: &rng)] }
    private func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
    private func randomPath() -> String {
        let d = pick(dirs), n = pick(names)
        return d.isEmpty ? n : d + "/" + n
    }
    /// Offsets cluster around page boundaries, where the page engine has its edge cases.
    private func randomOffset(limit: Int = 600_000) -> Int {
        if chance(0.15) { return Int.random(in: 0..<limit, using: &rng) }
        let page = Int.random(in: 0..<(limit / pageSize), using: &rng)
        return max(0, page * pageSize + Int.random(in: -70...70, using: &rng))
    }
    private func randomLength() -> Int {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return Int.random(in: 1...8, using: &rng)
        case 1...5: return Int.random(in: 1...(2 * pageSize + 100), using: &rng)
        case 6...8: return pageSize * Int.random(in: 1...4, using: &rng) + Int.random(in: -1...1, using: &rng)
        default: return Int.random(in: 1...200_000, using: &rng)
        }
    }
    private func randomData(_ n: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: n)
        let mode = Int.random(in: 0..<4, using: &rng)
        if mode == 0 { return b }  // zeros: must not turn into holes of the wrong kind
        var x = rng.next() | 1
        b.withUnsafeMutableBytes { raw in
            let words = raw.count / 8
            let w = raw.baseAddress!
            for i in 0..<words {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17  // xorshift: cheap even in debug builds
                w.storeBytes(of: mode == 1 ? UInt64(i) &* 0x0101_0101_0101_0101 : x, toByteOffset: i * 8, as: UInt64.self)
            }
            for j in (words * 8)..<raw.count { raw[j] = UInt8(truncatingIfNeeded: x >> (j % 8)) }
        }
        return b
    }

    // MARK: running

    func run(operations count: Int) throws {
        for _ in 0..<count {
            try step()
            // Sizes seen through every open descriptor must agree after each operation.
            for f in fds {
                try compare("size of open \(f.path)") { side in
                    var st = stat()
                    return fstat(f.fd[side], &st) < 0 ? .failed(errno) : .ok(Int64(st.st_size))
                }
            }
            operations += 1
        }
        // Finally every file must read back the same.
        for d in dirs { for n in names { try compareContent(d.isEmpty ? n : d + "/" + n) } }
    }

    private func compare(_ what: String, _ body: (Int) -> Outcome) throws {
        let a = body(0), b = body(1)
        history.append((what, b))
        if history.count > DifferentialChecker.historyLength { history.removeFirst() }
        if a != b {
            throw DifferenceFound(description: """
                seed \(seed), operation \(operations): \(what)
                  mount: \(a)
                  plain: \(b)
                recent operations:
                \(history.map { "\($0.0) -> \($0.1)" }.joined(separator: "\n"))
                """)
        }
    }

    private func step() throws {
        let r = Int.random(in: 0..<100, using: &rng)
        switch r {
        case 0..<10: try openFile()
        case 10..<14: closeFile()
        case 14..<32: try writeAt()
        case 32..<38: try writeAtPosition()
        case 38..<46: try readAt()
        case 46..<50: try truncateFile()
        case 50..<56: try statPath()
        case 56..<62: try compareContent(randomPath())
        case 62..<65: try mmapWrite()
        case 65..<67: try mmapRead()
        case 67..<71: try renamePath()
        case 71..<73: try linkPath()
        case 73..<76: try unlinkPath()
        case 76..<79: try makeOrRemoveDirectory()
        case 79..<81: try symlinkPath()
        case 81..<85: try listDirectory()
        case 85..<87: try chmodPath()
        case 87..<89: try fsyncFile()
        case 89..<92: try punchHole()
        case 92..<95: try seekDataHole()
        case 95..<97: try seekEnd()
        default: try bigDirectoryInPieces()
        }
    }

    private func randomOpen() -> Int? { fds.isEmpty ? nil : Int.random(in: 0..<fds.count, using: &rng) }

    private func openFile() throws {
        if fds.count >= 10 { closeFile() }
        if subjectMakesTemporaryFiles && chance(0.1) { return try openTemporaryFile() }
        let path = randomPath()
        let flags = pick([O_RDWR, O_RDWR | O_CREAT, O_WRONLY | O_CREAT | O_APPEND, O_RDWR | O_APPEND | O_CREAT, O_RDONLY,
                          O_RDWR | O_CREAT | O_EXCL, O_RDWR | O_TRUNC, O_WRONLY | O_CREAT | O_TRUNC, O_WRONLY | O_CREAT])
        try openOnBothSides(path, flags, mode: 0o644, as: path)
    }

    /// An unnamed file (O_TMPFILE) in a random directory, written and read like the others until
    /// `linkPath` may name it.
    private func openTemporaryFile() throws {
        let d = pick(dirs)
        let flags = pick([O_RDWR, O_WRONLY, O_RDWR | O_EXCL])
        try openOnBothSides(d, wrapfs_o_tmpfile | flags, mode: 0o640, as: "(unnamed in '\(d)')")
    }

    /// Opens `path` with `flags` on both sides, and keeps the two descriptors (as `name`) when both opened.
    private func openOnBothSides(_ path: String, _ flags: Int32, mode: mode_t, as name: String) throws {
        var opened: [Int32] = []
        try compare("open \(name) flags \(String(flags, radix: 8))") { side in
            let fd = wrapfs_open(roots[side] + "/" + path, flags, mode)
            if fd >= 0 { opened.append(fd) }
            return .of(fd >= 0 ? 0 : fd)
        }
        if opened.count == 2 { fds.append((opened, name, flags)) } else { opened.forEach { close($0) } }
    }

    private func closeFile() {
        guard let i = randomOpen() else { return }
        fds[i].fd.forEach { close($0) }
        fds.remove(at: i)
    }

    private func writeAt() throws {
        guard let i = randomOpen() else { return try openFile() }
        let off = farSizesRefused && subjectRefusesFarSizes && chance(0.02) ? DifferentialChecker.farSize - Int.random(in: 1...70_000, using: &rng) : randomOffset()
        let data = randomData(randomLength())
        try compare("pwrite \(fds[i].path) at \(off) len \(data.count)") { side in
            .of(data.withUnsafeBytes { pwrite(fds[i].fd[side], $0.baseAddress, $0.count, off_t(off)) })
        }
    }

    private func writeAtPosition() throws {
        guard let i = randomOpen() else { return try openFile() }
        let data = randomData(randomLength())
        try compare("write \(fds[i].path) len \(data.count)") { side in
            .of(data.withUnsafeBytes { Glibc.write(fds[i].fd[side], $0.baseAddress, $0.count) })
        }
        try compare("position of \(fds[i].path)") { side in .of(Int(lseek(fds[i].fd[side], 0, SEEK_CUR))) }
    }

    private func readAt() throws {
        guard let i = randomOpen() else { return try openFile() }
        let off = randomOffset(limit: 700_000), n = randomLength()
        try compare("pread \(fds[i].path) at \(off) len \(n)") { side in
            var b = [UInt8](repeating: 0, count: n)
            let r = b.withUnsafeMutableBytes { pread(fds[i].fd[side], $0.baseAddress, n, off_t(off)) }
            return r < 0 ? .failed(errno) : .bytes(Array(b[0..<r]))
        }
    }

    private func truncateFile() throws {
        let size: Int
        switch Int.random(in: 0..<(farSizesRefused && subjectRefusesFarSizes ? 7 : 6), using: &rng) {
        case 6: size = DifferentialChecker.farSize + Int.random(in: 0...70, using: &rng)
        case 0: size = 0
        case 1: size = pageSize * Int.random(in: 0...100, using: &rng)
        case 2: size = Int.random(in: 0...pageSize * 2, using: &rng)
        default: size = randomOffset(limit: 900_000)
        }
        if let i = randomOpen(), chance(0.6) {
            try compare("ftruncate \(fds[i].path) to \(size)") { side in .of(ftruncate(fds[i].fd[side], off_t(size))) }
        } else {
            let path = randomPath()
            try compare("truncate \(path) to \(size)") { side in .of(truncate(roots[side] + "/" + path, off_t(size))) }
        }
    }

    private func describe(_ st: stat) -> String {
        "type \(String(st.st_mode & S_IFMT, radix: 8)) mode \(String(st.st_mode & 0o7777, radix: 8)) nlink \(subjectCountsLinks ? Int(st.st_nlink) : -1) size \((st.st_mode & S_IFMT) == S_IFDIR ? -1 : Int(st.st_size))"
    }

    private func statPath() throws {
        if let i = randomOpen(), chance(0.4) {
            try compare("fstat \(fds[i].path)") { side in
                var st = stat()
                return fstat(fds[i].fd[side], &st) < 0 ? .failed(errno) : .text(describe(st))
            }
            return
        }
        let path = randomPath()
        try compare("lstat \(path)") { side in
            var st = stat()
            return lstat(roots[side] + "/" + path, &st) < 0 ? .failed(errno) : .text(describe(st))
        }
    }

    /// Reads the whole file through a fresh descriptor.
    func compareContent(_ path: String) throws {
        try compare("read all of \(path)") { side in
            let fd = wrapfs_open(roots[side] + "/" + path, O_RDONLY, 0)
            if fd < 0 { return .failed(errno) }
            defer { close(fd) }
            var all = [UInt8](), chunk = [UInt8](repeating: 0, count: 65536 + 17)
            while true {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 { return .failed(errno) }
                if n == 0 { break }
                all += chunk[0..<n]
            }
            if let dump = ProcessInfo.processInfo.environment["WRAPFS_CHECKER_DUMP"] {
                _ = FileManager.default.createFile(atPath: "\(dump)-\(side)", contents: Data(all))
            }
            return .bytes(all)
        }
    }

    private func mmapWrite() throws {
        guard let i = randomOpen() else { return try openFile() }
        var st = stat()
        guard fstat(fds[i].fd[1], &st) == 0, st.st_size > 0 else { return }
        let size = Int(st.st_size)
        let start = Int.random(in: 0...(size - 1) / pageSize, using: &rng) * pageSize
        let length = min(size - start, Int.random(in: 1...(3 * pageSize), using: &rng))
        let at = Int.random(in: 0..<length, using: &rng)
        let data = randomData(Int.random(in: 1...(length - at), using: &rng))
        try compare("mmap write \(fds[i].path) map \(start)+\(length) at \(at) len \(data.count)") { side in
            guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i].fd[side], off_t(start)),
                  p != MAP_FAILED else { return .failed(errno) }
            data.withUnsafeBytes { (p + at).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let r = msync(p, length, MS_SYNC)
            munmap(p, length)
            return .of(r)
        }
    }

    /// Reads through a shared mapping, at most to the end of the page that holds the end of
    /// file: the bytes past the end in that page read as zeros (POSIX; fsx checks the same).
    private func mmapRead() throws {
        guard let i = randomOpen() else { return try openFile() }
        var st = stat()
        guard fstat(fds[i].fd[1], &st) == 0, st.st_size > 0 else { return }
        let size = Int(st.st_size)
        let mapped = (size + pageSize - 1) / pageSize * pageSize
        let start = Int.random(in: 0...(size - 1) / pageSize, using: &rng) * pageSize
        let length = min(mapped - start, Int.random(in: 1...(3 * pageSize), using: &rng))
        try compare("mmap read \(fds[i].path) map \(start)+\(length) (size \(size))") { side in
            guard let p = mmap(nil, length, PROT_READ, MAP_SHARED, fds[i].fd[side], off_t(start)),
                  p != MAP_FAILED else { return .failed(errno) }
            defer { munmap(p, length) }
            return .bytes(Array(UnsafeRawBufferPointer(start: p, count: length)))
        }
    }

    private func renamePath() throws {
        let a = randomPath(), b = randomPath()
        let flags: UInt32 = pick([0, 0, 1, 2])  // RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2
        if flags != 0 && !subjectRenamesWithFlags { return }
        try compare("rename \(a) -> \(b) flags \(flags)") { side in
            .of(wrapfs_renameat2(AT_FDCWD, roots[side] + "/" + a, AT_FDCWD, roots[side] + "/" + b, flags))
        }
    }

    private func linkPath() throws {
        if !subjectCountsLinks { return }
        let a = randomPath(), b = randomPath()
        if chance(0.3), let i = randomOpen() {
            // A name for an open file: an unnamed one (unless opened O_EXCL), or one whose names
            // are all gone (ENOENT), or another hard link.
            try compare("linkat open \(fds[i].path) -> \(b)") { side in
                .of(linkat(AT_FDCWD, "/proc/self/fd/\(fds[i].fd[side])", AT_FDCWD, roots[side] + "/" + b, AT_SYMLINK_FOLLOW))
            }
            return
        }
        try compare("link \(a) -> \(b)") { side in .of(link(roots[side] + "/" + a, roots[side] + "/" + b)) }
    }

    private func unlinkPath() throws {
        let a = randomPath()
        try compare("unlink \(a)") { side in .of(unlink(roots[side] + "/" + a)) }
    }

    private func makeOrRemoveDirectory() throws {
        let d = pick(Array(dirs.dropFirst()))
        if chance(0.5) {
            try compare("mkdir \(d)") { side in .of(mkdir(roots[side] + "/" + d, 0o755)) }
        } else {
            try compare("rmdir \(d)") { side in .of(rmdir(roots[side] + "/" + d)) }
        }
    }

    private func symlinkPath() throws {
        let target = subjectReadsSlashedLinks ? pick(["f0", "../Zed", "Alpha/Inner/q", "/nonexistent/x", "hello world"]) : pick(["f0", "Zed", "hello world"])
        let p = randomPath()
        try compare("symlink \(p) -> \(target)") { side in .of(symlink(target, roots[side] + "/" + p)) }
        try compare("readlink \(p)") { side in
            var buf = [CChar](repeating: 0, count: 4096)
            let n = readlink(roots[side] + "/" + p, &buf, buf.count)
            return n < 0 ? .failed(errno) : .text(String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    private func listDirectory() throws {
        let d = pick(dirs)
        try compare("list \(d.isEmpty ? "." : d)") { side in listing(roots[side] + "/" + d, pieceSize: 32768) }
    }

    /// Names in `dir`, read with getdents64 in buffers of `pieceSize` bytes, sorted. With
    /// `hashed`, the sorted 64-bit FNV-1a hashes of the names instead: a debug build sorts those
    /// many times faster than 1,500 strings, and `bigDirectoryInPieces` lists the names only to
    /// report a difference.
    func listing(_ dir: String, pieceSize: Int, hashed: Bool = false) -> Outcome {
        let fd = wrapfs_open(dir, O_RDONLY | O_DIRECTORY, 0)
        if fd < 0 { return .failed(errno) }
        defer { close(fd) }
        var names: [String] = []
        var hashes: [UInt64] = []
        var buf = [UInt8](repeating: 0, count: pieceSize)
        while true {
            let n = buf.withUnsafeMutableBytes { wrapfs_getdents64(fd, $0.baseAddress, $0.count) }
            if n < 0 { return .failed(errno) }
            if n == 0 { break }
            buf.withUnsafeBufferPointer { b in
                var at = 0
                while at < n {
                    let reclen = Int(b[at + 16]) | Int(b[at + 17]) << 8
                    let name = UnsafeBufferPointer(rebasing: b[(at + 19)..<(at + reclen)])
                    let length = strnlen(UnsafeRawPointer(name.baseAddress!).assumingMemoryBound(to: CChar.self), name.count)
                    if hashed {
                        var h: UInt64 = 0xcbf2_9ce4_8422_2325
                        for i in 0..<length { h = (h ^ UInt64(name[i])) &* 0x100_0000_01b3 }
                        hashes.append(h)
                    } else {
                        names.append(String(decoding: UnsafeBufferPointer(rebasing: name[0..<length]), as: UTF8.self))
                    }
                    at += reclen
                }
            }
        }
        if hashed {
            // libc's qsort: the generic sort() is the slow part of a debug build here.
            hashes.withUnsafeMutableBufferPointer { h in
                if let base = h.baseAddress { qsort(base, h.count, 8) { a, b in
                    let x = a!.load(as: UInt64.self), y = b!.load(as: UInt64.self)
                    return x < y ? -1 : x > y ? 1 : 0
                } }
            }
            return .bytes(hashes.withUnsafeBytes { Array($0) })
        }
        return .text(names.sorted().joined(separator: "|"))
    }

    /// A change of attributes on a random path: its mode, its times, or a user extended attribute.
    private func chmodPath() throws {
        switch Int.random(in: 0..<3, using: &rng) {
        case 0:
            let p = randomPath(), mode = pick([0o600, 0o644, 0o755, 0o400, 0o700]) as Int
            try compare("chmod \(p) \(String(mode, radix: 8))") { side in .of(chmod(roots[side] + "/" + p, mode_t(mode))) }
        case 1: try setTimes()
        default: try extendedAttribute()
        }
    }

    /// utimensat with explicit times (of the path itself, symlinks too), then the times stat shows.
    private func setTimes() throws {
        let p = randomPath()
        let atime = Int.random(in: 1_000_000_000...1_900_000_000, using: &rng)
        let mtime = Int.random(in: 1_000_000_000...1_900_000_000, using: &rng)
        let nsec = subjectKeepsNanoseconds ? pick([0, 1, 123_456_789, 999_999_999]) : 0
        try compare("utimensat \(p) atime \(atime) mtime \(mtime).\(nsec)") { side in
            var times = [timespec(tv_sec: atime, tv_nsec: nsec), timespec(tv_sec: mtime, tv_nsec: nsec)]
            if utimensat(AT_FDCWD, roots[side] + "/" + p, &times, AT_SYMLINK_NOFOLLOW) < 0 { return .failed(errno) }
            var st = stat()
            if lstat(roots[side] + "/" + p, &st) < 0 { return .failed(errno) }
            return .text("atime \(st.st_atim.tv_sec).\(st.st_atim.tv_nsec) mtime \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)")
        }
    }

    /// Sets, reads, removes or lists a user extended attribute of a path itself (symlinks too).
    private func extendedAttribute() throws {
        guard subjectHasXattrs else { return }
        let p = randomPath(), name = pick(["user.a", "user.colour", "user.x"])
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:
            let value = randomData(pick([0, 1, 17, 300]))
            let flags = pick([0, 1, 2])  // XATTR_CREATE, XATTR_REPLACE
            try compare("lsetxattr \(p) \(name) \(value.count) bytes flags \(flags)") { side in
                .of(value.withUnsafeBytes { lsetxattr(roots[side] + "/" + p, name, $0.baseAddress, $0.count, Int32(flags)) })
            }
        case 1:
            try compare("lgetxattr \(p) \(name)") { side in
                var buffer = [UInt8](repeating: 0, count: 1024)
                let n = lgetxattr(roots[side] + "/" + p, name, &buffer, buffer.count)
                return n < 0 ? .failed(errno) : .bytes(Array(buffer[0..<n]))
            }
        case 2:
            try compare("lremovexattr \(p) \(name)") { side in .of(lremovexattr(roots[side] + "/" + p, name)) }
        default:
            try compare("llistxattr \(p)") { side in
                var buffer = [CChar](repeating: 0, count: 4096)
                let n = llistxattr(roots[side] + "/" + p, &buffer, buffer.count)
                if n < 0 { return .failed(errno) }
                // The user namespace only, sorted: a lower may keep its own (trusted.*, security.*).
                let names = buffer[0..<n].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
                return .text(names.filter { $0.hasPrefix("user.") }.sorted().joined(separator: ","))
            }
        }
    }

    private func fsyncFile() throws {
        guard let i = randomOpen() else { return }
        try compare("fsync \(fds[i].path)") { side in .of(fsync(fds[i].fd[side])) }
    }

    private func punchHole() throws {
        guard let i = randomOpen() else { return }
        let off = randomOffset()
        let far = farSizesRefused && subjectRefusesFarSizes && chance(0.05)
        let len = far ? DifferentialChecker.farSize - off : randomLength()
        // Far, a punch or zeroing within the size is refused only where the layer sees the limit.
        let mode = far && !subjectRefusesFarRanges ? pick([FALLOC_FL_ZERO_RANGE, 0, FALLOC_FL_KEEP_SIZE])
            : pick([FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, FALLOC_FL_KEEP_SIZE])
        if !subjectAllocates { return }
        try compare("fallocate \(fds[i].path) mode \(mode) at \(off) len \(len)") { side in
            .of(wrapfs_fallocate(fds[i].fd[side], mode, off_t(off), off_t(len)))
        }
    }

    private func isDirectory(_ fd: Int32) -> Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR
    }

    /// SEEK_DATA/SEEK_HOLE may answer at any granularity (POSIX lets a file system report a
    /// hole as data), so each side's answer is checked for validity against its own content:
    /// SEEK_DATA skips only zeros, SEEK_HOLE lands on zeros or at the end, ENXIO only past
    /// the data. Seeking in directories gives file-system-specific cookies: not compared.
    private func seekDataHole() throws {
        guard let i = randomOpen(), !isDirectory(fds[i].fd[1]), fds[i].flags & O_ACCMODE != O_WRONLY else { return }
        let off = randomOffset(limit: 800_000), whence = pick([SEEK_DATA, SEEK_HOLE])
        try compare("lseek \(fds[i].path) \(off) \(whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE")") { side in
            let fd = fds[i].fd[side]
            var st = stat()
            guard fstat(fd, &st) == 0 else { return .failed(errno) }
            let size = Int(st.st_size)
            // The answers may differ, so the descriptors' positions are put back.
            let position = lseek(fd, 0, SEEK_CUR)
            defer { lseek(fd, position, SEEK_SET) }
            let r = Int(lseek(fd, off_t(off), whence))
            if r < 0 {
                let e = errno
                if e == ENXIO && whence == SEEK_DATA && off < size && !isZero(fd, off, size) {
                    return .text("ENXIO but data follows \(off)")
                }
                return e == ENXIO && off < size && whence == SEEK_DATA ? .text("valid") : .failed(e)
            }
            guard r >= off, r <= size else { return .text("answer \(r) outside \(off)...\(size)") }
            if whence == SEEK_DATA {
                return r < size && isZero(fd, off, r) ? .text("valid") : .text("SEEK_DATA \(r) skips data or hits the end")
            }
            return r == size || isZero(fd, r, min(r + 1, size)) ? .text("valid") : .text("SEEK_HOLE \(r) is not a hole")
        }
    }

    private func isZero(_ fd: Int32, _ from: Int, _ to: Int) -> Bool {
        guard to > from else { return true }
        var b = [UInt8](repeating: 0, count: to - from)
        let n = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(from)) }
        let zeros = [UInt8](repeating: 0, count: to - from)
        return n == to - from && memcmp(b, zeros, b.count) == 0
    }

    private func seekEnd() throws {
        guard let i = randomOpen(), !isDirectory(fds[i].fd[1]) else { return }
        try compare("lseek \(fds[i].path) SEEK_END") { side in .of(Int(lseek(fds[i].fd[side], 0, SEEK_END))) }
    }

    /// Grows a big directory and reads it back in small getdents pieces.
    private func bigDirectoryInPieces() throws {
        let add = bigDirCount < 1500 ? Int.random(in: 50...300, using: &rng) : 0
        try compare("grow big directory by \(add)") { side in
            let dir = roots[side] + "/big"
            mkdir(dir, 0o755)
            for k in bigDirCount..<(bigDirCount + add) {
                let fd = wrapfs_open(dir + "/entry-\(k)-Name", O_CREAT | O_WRONLY, 0o644)
                if fd < 0 { return .failed(errno) }
                close(fd)
            }
            return .ok(0)
        }
        bigDirCount += add
        let piece = pick([200, 512, 1024, 4096, 32768])
        do {
            try compare("list big directory in pieces of \(piece)") { side in listing(roots[side] + "/big", pieceSize: piece, hashed: true) }
        } catch let found as DifferenceFound {
            // The hashes say only that the listings differ: name what each side lists that the other does not.
            let sides = (0..<2).map { side -> [Substring] in
                guard case .text(let t) = listing(roots[side] + "/big", pieceSize: piece) else { return [] }
                return t.split(separator: "|")
            }
            let sets = sides.map { Set($0) }
            throw DifferenceFound(description: found.description + """

                \(sides[0].count) names on the mount (\(sets[0].count) distinct), \(sides[1].count) on the plain directory (\(sets[1].count) distinct)
                only on the mount: \(sets[0].subtracting(sets[1]).sorted().prefix(20))
                only on the plain directory: \(sets[1].subtracting(sets[0]).sorted().prefix(20))
                """)
        }
    }
}
