// Layers over tmpfs, ext4 and another FUSE file system (bindfs), and a layer stacked on a layer.
import Foundation
import Glibc
import CFuse
import Testing

/// Mounts a lower file system of `kind` in a scratch directory for `body`, and always unmounts it.
/// `body` gets the mount and a directory for references that behave as the file system should:
/// the mount itself, or for bindfs its backing directory (bindfs's own hard links are separate
/// kernel inodes whose cached sizes and pages lag behind each other).
func withLowerFileSystem(_ kind: String, _ body: (String, String) throws -> Void) throws {
    let s = try Scratch("lowerfs")
    defer { s.remove() }
    let dir = try s.dir("fs")
    var referenceHome = dir
    switch kind {
    case "tmpfs":
        try sh("mount -t tmpfs -o size=512m tmpfs '\(dir)'")
    case "ext4":
        try mountExt4Image(s.path + "/ext4.img", megabytes: 256, on: dir)
    case "ramfs":  // no extended attributes at all: ACL lookups fail with EOPNOTSUPP
        try sh("mount -t ramfs ramfs '\(dir)'")
    case "bindfs":
        let backing = try s.dir("backing")
        try sh("bindfs '\(backing)' '\(dir)'")
        referenceHome = try s.dir("reference")
    default:
        throw MountFailure(description: "unknown lower file system \(kind)")
    }
    defer {
        if kind == "bindfs" { _ = try? run("/usr/bin/fusermount3", ["-u", "-z", dir]) } else { _ = try? run("/bin/umount", ["-l", dir]) }
    }
    try body(dir, referenceHome)
}

/// The checker over other lower file systems: a suite of its own so that it runs beside the
/// rest (each suite runs its tests one at a time, and suites run side by side).
@Suite("Lower file systems: differential checker", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct LowerFileSystemsCheckerTests {
    @Test("the differential checker over tmpfs, ext4 and bindfs", .timeLimit(.minutes(5)),
          arguments: ["tmpfs", "ext4", "bindfs"], [["identity"], ["rot"], ["gzip"], ["aes-gcm"]])
    func checker(kind: String, codecs: [String]) throws {
        try withLowerFileSystem(kind) { base, referenceHome in
            try withLayers(codecs, lowerIn: base) { top, _, _ in
                // The reference lives on the same kind of file system, so answers can agree.
                let reference = referenceHome + "/reference"
                try FileManager.default.createDirectory(atPath: reference, withIntermediateDirectories: true)
                let checker = DifferentialChecker(subject: top, reference: reference, seed: 77)
                checker.subjectAllocates = kind != "bindfs"  // bindfs has no fallocate,
                checker.subjectRenamesWithFlags = kind != "bindfs"  // nor rename flags,
                checker.subjectMakesTemporaryFiles = kind != "bindfs"  // nor O_TMPFILE
                try checker.run(operations: 2000)
            }
        }
    }
}

@Suite("Lower file systems", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct LowerFileSystemsTests {
    /// bindfs is built on libfuse's path-based API and sets "now" for UTIME_OMIT: names, modes,
    /// times, content and mmap must still come through.
    @Test("tar round trip over another FUSE file system (bindfs)", .timeLimit(.minutes(5)), arguments: [["identity"], ["rot"]])
    func overBindfs(codecs: [String]) throws {
        let s = try Scratch("tar")
        defer { s.remove() }
        try makeTree(s.path + "/src")
        try sh("tar -C '\(s.path)/src' -cf '\(s.path)/src.tar' . && mkdir '\(s.path)/plain' && tar -C '\(s.path)/plain' -xpf '\(s.path)/src.tar'")
        try withLowerFileSystem("bindfs") { base, _ in
            try withLayers(codecs, lowerIn: base) { top, _, _ in
                try sh("mkdir '\(top)/x' && tar -C '\(top)/x' -xpf '\(s.path)/src.tar'")
                try expectSameTree(top + "/x", s.path + "/plain")
                let fd = open(top + "/x/big.bin", O_RDWR)
                defer { close(fd) }
                let p = mmap(nil, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
                memset(p + 100, 0x5A, 5000)
                #expect(msync(p, 8192, MS_SYNC) == 0)
                munmap(p, 8192)
                let back = try readFile(top + "/x/big.bin")
                #expect(back[100..<5100].allSatisfy { $0 == 0x5A } && back.count == 3_145_728)
            }
        }
    }

    /// bindfs reaches a file by the name the layer's descriptor came by: with that name unlinked,
    /// the file must still answer by the others (pjdfstest link/00.t: stat said ENOENT).
    @Test("over bindfs, a hard-linked file unlinked by its newest names still answers by the name left",
          .timeLimit(.minutes(2)), arguments: [["identity"], ["aes-gcm"]])
    func hardLinksOverBindfs(codecs: [String]) throws {
        try withLowerFileSystem("bindfs") { base, _ in
            try withLayers(codecs, lowerIn: base) { top, _, _ in
                // Made by mknod, not open: a file just closed may still be open in bindfs (the
                // kernel sends RELEASE after close returns, to the layer and from it to bindfs), and
                // bindfs, like any high-level libfuse file system, renames an open file it is asked
                // to unlink to .fuse_hidden*, which keeps the link count up until that release.
                #expect(mknod(top + "/a", S_IFREG | 0o644, 0) == 0)
                #expect(link(top + "/a", top + "/b") == 0)
                #expect(link(top + "/b", top + "/c") == 0)
                #expect(unlink(top + "/a") == 0)
                #expect(unlink(top + "/c") == 0)
                // At once, while the kernel still holds the entry of b (its attributes are stale).
                #expect(try statOf(top + "/b").st_nlink == 1)
                #expect(try readFile(top + "/b") == [])
                #expect(chmod(top + "/b", 0o600) == 0)
                try appendFile(top + "/b", [1, 2, 3, 4])
                #expect(try readFile(top + "/b") == [1, 2, 3, 4])
                #expect(try statOf(top + "/b").st_mode & 0o777 == 0o600)
            }
        }
    }

    /// bindfs keeps a file unlinked while open there as `.fuse_hidden*` until its RELEASE, which
    /// comes after close(2) returns; the layer lists the directory as empty meanwhile, and its
    /// rmdir must then succeed as on a local file system (it failed at once with ENOTEMPTY: the
    /// checker met it once in CI, seed 77), and so must a rename over it. Here the file is held
    /// open in bindfs from outside the layer and closed 300 ms into the call; held open for good,
    /// rmdir still answers ENOTEMPTY.
    @Test("over bindfs, rmdir waits for files unlinked while open there (.fuse_hidden*) to go",
          .timeLimit(.minutes(2)), arguments: [["identity"], ["aes-gcm"]])
    func rmdirAfterHiddenFilesOverBindfs(codecs: [String]) throws {
        try withLowerFileSystem("bindfs") { base, _ in
            try withLayers(codecs, lowerIn: base) { top, lower, mounts in
                let fm = FileManager.default
                // A directory made through the layer and its one file, by their lower paths.
                func makeDirectoryWithFile(_ name: String) throws -> (dir: String, file: String) {
                    let before = Set(try fm.contentsOfDirectory(atPath: lower))
                    #expect(mkdir(top + "/" + name, 0o755) == 0)
                    try writeFile(top + "/" + name + "/f", [1, 2, 3])
                    let dir = lower + "/" + Set(try fm.contentsOfDirectory(atPath: lower)).subtracting(before).first!
                    let files = try fm.contentsOfDirectory(atPath: dir)
                    #expect(files.count == 1)
                    return (dir, dir + "/" + files[0])
                }
                let d = try makeDirectoryWithFile("d")
                let held = open(d.file, O_RDONLY)  // open in bindfs, not in the layer
                #expect(held >= 0)
                #expect(unlink(top + "/d/f") == 0)
                #expect(try fm.contentsOfDirectory(atPath: top + "/d") == [])
                #expect(try fm.contentsOfDirectory(atPath: d.dir).allSatisfy { $0.hasPrefix(".fuse_hidden") })
                let closer = Thread { usleep(300_000); close(held) }
                closer.start()
                let started = Date()
                #expect(rmdir(top + "/d") == 0, "rmdir: errno \(errno)")
                #expect(Date().timeIntervalSince(started) > 0.2)
                #expect(access(d.dir, F_OK) != 0)

                // The same for a directory renamed over such a directory.
                let g = try makeDirectoryWithFile("g")
                let heldToo = open(g.file, O_RDONLY)
                #expect(unlink(top + "/g/f") == 0)
                #expect(mkdir(top + "/h", 0o755) == 0)
                let renaming = Date()
                nonisolated(unsafe) var closedAfter = -1.0  // written once by the closer, read after the rename
                let closerToo = Thread { usleep(300_000); close(heldToo); closedAfter = Date().timeIntervalSince(renaming) }
                closerToo.start()
                let renamed = rename(top + "/h", top + "/g"), renameErrno = errno
                #expect(renamed == 0, "rename: errno \(renameErrno) after \(Date().timeIntervalSince(renaming)) s; the file closed after \(closedAfter) s; left below: \((try? fm.contentsOfDirectory(atPath: g.dir)) ?? [])")
                #expect(access(top + "/h", F_OK) != 0 && access(top + "/g", F_OK) == 0)

                // A file still open in bindfs keeps its directory there, and so here.
                let e = try makeDirectoryWithFile("e")
                let kept = open(e.file, O_RDONLY)
                defer { close(kept) }
                #expect(unlink(top + "/e/f") == 0)
                let refusing = Date()
                #expect(rmdir(top + "/e") == -1 && errno == ENOTEMPTY)
                // It waited its two seconds first (a loaded machine may run bindfs's RELEASE late).
                #expect(Date().timeIntervalSince(refusing) >= 2, "\(Date().timeIntervalSince(refusing)) s")
                #expect(mounts[0].log.contains("holds files unlinked while still open there"), "\(mounts[0].log)")
                #expect(try FileManager.default.contentsOfDirectory(atPath: top + "/e") == [])
            }
        }
    }

    /// After `link a b; unlink a` the name the layer's descriptor came by is gone in bindfs: every
    /// call by b must still reach the file, with nothing (a stat) to revive the descriptor first.
    @Test("over bindfs, chmod, xattrs, truncate and utimes by the name left after link and unlink",
          .timeLimit(.minutes(2)), arguments: [["identity"], ["aes-gcm"]])
    func callsByTheNameLeftOverBindfs(codecs: [String]) throws {
        try withLowerFileSystem("bindfs") { base, _ in
            try withLayers(codecs, lowerIn: base) { top, _, _ in
                let (a, b) = (top + "/a", top + "/b")
                #expect(mknod(a, S_IFREG | 0o644, 0) == 0)
                #expect(link(a, b) == 0)
                #expect(unlink(a) == 0)
                #expect(chmod(b, 0o600) == 0, "chmod: errno \(errno)")
                #expect(setxattr(b, "user.k", "v", 1, 0) == 0, "setxattr: errno \(errno)")
                var value = [CChar](repeating: 0, count: 8)
                #expect(getxattr(b, "user.k", &value, 8) == 1, "getxattr: errno \(errno)")
                #expect(listxattr(b, &value, 8) == 7, "listxattr: errno \(errno)")
                #expect(removexattr(b, "user.k") == 0, "removexattr: errno \(errno)")
                #expect(truncate(b, 10) == 0, "truncate: errno \(errno)")
                var times = [timespec(tv_sec: 1, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
                #expect(utimensat(AT_FDCWD, b, &times, 0) == 0, "utimensat: errno \(errno)")
                let st = try statOf(b)
                #expect(st.st_mode & 0o777 == 0o600 && st.st_size == 10 && st.st_mtim.tv_sec == 1)
            }
        }
    }

    /// bindfs makes each name of a hard-linked file a kernel inode of its own, with its own page
    /// cache: lower opens by two names do not see each other's writes, and a read-modify-write
    /// by one name lost what the other wrote. The layer opens by one name while it lives.
    @Test("over bindfs, writes through two names of a hard-linked file all land (aes-gcm, gzip: read-modify-write)",
          .timeLimit(.minutes(2)), arguments: [["aes-gcm"], ["gzip"]])
    func writesThroughTwoNamesOverBindfs(codecs: [String]) throws {
        try withLowerFileSystem("bindfs") { base, _ in
            try withLayers(codecs, lowerIn: base) { top, _, _ in
                try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: top + "/f"))
                // O_DIRECT: every write reaches the layer as it is, which reads the page it changes.
                // One open before the second name exists, one after.
                let byF = open(top + "/f", O_RDWR | wrapfs_O_DIRECT)
                #expect(link(top + "/f", top + "/g") == 0)
                let byG = open(top + "/g", O_RDWR | wrapfs_O_DIRECT)
                #expect(byF >= 0 && byG >= 0)
                defer { close(byF); close(byG) }
                let page = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
                defer { page.deallocate() }
                for (fd, byte) in [(byG, UInt8(0x42)), (byF, 0x43), (byG, 0x44), (byF, 0x45)] {
                    #expect(pread(fd, page, 4096, 0) == 4096)
                    page.storeBytes(of: byte, toByteOffset: Int(byte - 0x41) * 100, as: UInt8.self)
                    #expect(pwrite(fd, page, 4096, 0) == 4096, "errno \(errno)")
                }
                var expected = [UInt8](repeating: 0x41, count: 4096)
                for byte in [UInt8(0x42), 0x43, 0x44, 0x45] { expected[Int(byte - 0x41) * 100] = byte }
                for fd in [byF, byG] {
                    #expect(pread(fd, page, 4096, 0) == 4096)
                    #expect(Array(UnsafeRawBufferPointer(start: page, count: 4096)) == expected)
                }
            }
        }
    }

    /// With the name the layer's descriptor of a symlink came by replaced, the kernel still
    /// follows the symlink by its other name (it asks the layer for the target).
    @Test("over bindfs, a hard-linked symlink whose first name was replaced is still followed by the other",
          .timeLimit(.minutes(2)))
    func symlinkByItsOtherNameOverBindfs() throws {
        try withLowerFileSystem("bindfs") { base, _ in
            try withLayers(["identity"], lowerIn: base) { top, _, _ in
                #expect(mknod(top + "/t", S_IFREG | 0o644, 0) == 0)
                #expect(symlink("t", top + "/s") == 0)
                #expect(linkat(AT_FDCWD, top + "/s", AT_FDCWD, top + "/s2", 0) == 0)  // a second name of the symlink itself
                let st = try statOf(top + "/s2")
                #expect(st.st_mode & S_IFMT == S_IFLNK && st.st_nlink == 2)
                #expect(mknod(top + "/o", S_IFREG | 0o644, 0) == 0)
                #expect(rename(top + "/o", top + "/s") == 0)
                var target = [CChar](repeating: 0, count: 64)
                #expect(readlink(top + "/s2", &target, 63) == 1, "errno \(errno)")
                #expect(access(top + "/s2", F_OK) == 0, "errno \(errno)")
            }
        }
    }

    @Test("a petabyte-sized hole over tmpfs takes no space")
    func petabyteOnTmpfs() throws {
        try withLowerFileSystem("tmpfs") { base, _ in
            try withLayers(["rot"], lowerIn: base) { top, lower, _ in
                let fd = open(top + "/huge", O_CREAT | O_RDWR, 0o644)
                defer { close(fd) }
                #expect(ftruncate(fd, 1 << 50) == 0)
                #expect("end".withCString { pwrite(fd, $0, 3, (1 << 50) - 3) } == 3)
                #expect(try statOf(top + "/huge").st_size == 1 << 50)
                var b = [UInt8](repeating: 9, count: 4096)
                #expect(b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4096, 1 << 40) } == 4096 && b.allSatisfy { $0 == 0 })
                #expect(b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 3, (1 << 50) - 3) } == 3 && Array(b[0..<3]) == Array("end".utf8))
                let lowerFile = lower + "/" + (try FileManager.default.contentsOfDirectory(atPath: lower)[0])
                #expect(try statOf(lowerFile).st_blocks <= 16)
            }
        }
    }

    @Test("over tmpfs, files grow as far as on tmpfs itself or fail with EFBIG, and lower files of off_t's largest size made behind the layer's back are served",
          arguments: ["identity", "rot", "gzip", "aes-gcm", "aes-ctr"])
    func largestSizesOnTmpfs(codec: String) throws {
        try withLowerFileSystem("tmpfs") { base, _ in
            try checkSizeLimits(codec: codec, lowerIn: base)
            try withLayers([codec], extra: ["--attr-timeout", "0"], lowerIn: base) { top, lower, _ in
                try writeFile(top + "/small", pattern(5))
                try writeFile(top + "/nine", pattern(9000))
                // Such a size overflowed the slot arithmetic: the daemon trapped at the next stat.
                for name in try FileManager.default.contentsOfDirectory(atPath: lower) where !name.hasPrefix(".wrapfs") {
                    #expect(truncate(lower + "/" + name, .max) == 0)
                }
                for name in ["small", "nine"] {
                    let fd = open(top + "/" + name, O_RDWR | O_CLOEXEC)
                    #expect(fd >= 0, "\(SysError.current)")
                    var st = stat()
                    #expect(fstat(fd, &st) == 0 && st.st_size > 1 << 62)
                    var b = [UInt8](repeating: 0, count: 100)
                    _ = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 100, 0) }
                    _ = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 100, st.st_size - 5000) }
                    _ = lseek(fd, st.st_size - 5000, SEEK_DATA)
                    _ = lseek(fd, st.st_size - 5000, SEEK_HOLE)
                    _ = pwrite(fd, "abc", 3, st.st_size - 3)
                    _ = wrapfs_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size - 9000, 9000)
                    #expect(ftruncate(fd, 5000) == 0 || errno == EIO, "\(SysError.current)")
                    close(fd)
                }
                // The daemon is still there.
                try writeFile(top + "/after", pattern(3000))
                #expect(try readFile(top + "/after") == pattern(3000))
            }
        }
    }

    @Test("a layer over another layer's mount point (stacking) shows the same tree")
    func stacking() throws {
        try withLayers(["rot", "identity", "rot"]) { top, lower, mounts in
            try writeFile(top + "/Deep File", pattern(100_000))
            #expect(try readFile(top + "/Deep File") == pattern(100_000))
            // Each rot layer ROT13s names once: the middle (identity) layer shows the top one's lower tree.
            #expect(try FileManager.default.contentsOfDirectory(atPath: mounts[1].point) == ["Qrrc Svyr"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: mounts[0].point) == ["Qrrc Svyr"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: lower) == ["Deep File"])
            let middle = try readFile(mounts[1].point + "/Qrrc Svyr")
            #expect(middle != pattern(100_000) && middle.count == 100_000)
            #expect(try readFile(mounts[0].point + "/Qrrc Svyr") == middle, "identity passes pages unchanged")
            #expect(try readFile(lower + "/Deep File") != middle)
        }
    }
}
