// Shim mode: mmap over lower file systems without it (GlusterFS, sshfs, a --direct-io layer),
// msync and refresh (reverse msync), coherence across two mounts of one volume, shadow files.
import Foundation
import CFuse
import Glibc
import Testing
import Wrapfs

/// A file mapped MAP_SHARED for reading and writing; unmapped and closed by `close()`.
final class SharedMap {
    let fd: Int32
    let base: UnsafeMutableRawPointer
    let length: Int

    init(_ path: String, length: Int) throws {
        fd = open(path, O_RDWR)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let e = errno
            Glibc.close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: e)!)
        }
        base = p
        self.length = length
    }

    subscript(page: Int) -> UInt8 { base.load(fromByteOffset: page * 4096, as: UInt8.self) }
    func fill(page: Int, with byte: UInt8) { memset(base + page * 4096, Int32(byte), 4096) }
    func sync() -> Int32 { msync(base, length, MS_SYNC) }
    func close() { munmap(base, length); Glibc.close(fd) }
}

/// errno of a writable MAP_SHARED mapping of `path`, 0 when it works.
func sharedWritableMapError(_ path: String) -> Int32 {
    let fd = open(path, O_RDWR)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    guard let p = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else { return errno }
    munmap(p, 4096)
    return 0
}

/// The first byte of each 4 KiB page of the file at `path`, read with read(2).
func pageBytes(_ path: String) throws -> [UInt8] {
    let b = try readFile(path)
    return stride(from: 0, to: b.count, by: 4096).map { b[$0] }
}

/// Writes `byte` over page `page` of the file at `path` with pwrite(2).
func writePage(_ path: String, _ page: Int, _ byte: UInt8) throws {
    let fd = open(path, O_WRONLY)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
    defer { close(fd) }
    let b = [UInt8](repeating: byte, count: 4096)
    guard pwrite(fd, b, 4096, off_t(page * 4096)) == 4096, fsync(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
}

/// A file of `pages` 4 KiB pages, each filled with `byte`.
func makePages(_ path: String, _ pages: Int, _ byte: UInt8) throws {
    try writeFile(path, [UInt8](repeating: byte, count: pages * 4096))
}

@Suite("Shim", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct ShimTests {
    // MARK: the layer's own --direct-io mount as a lower without mmap

    @Test("over a lower without shared mmap (a --direct-io layer) the identity layer maps files; msync writes only dirty pages")
    func mmapOverDirectIO() throws {
        let s = try Scratch("dio")
        defer { s.remove() }
        let lower = try s.dir("lower"), bare = try s.dir("direct"), top = try s.dir("top")
        try makePages(lower + "/f", 4, 0x41)
        let direct = try Mounted(lower: lower, point: bare, codec: "identity", extra: ["--direct-io"])
        defer { direct.unmount() }
        let shim = try Mounted(lower: bare, point: top, codec: "identity")
        defer { shim.unmount() }
        #expect(sharedWritableMapError(bare + "/f") == ENODEV)
        let map = try SharedMap(top + "/f", length: 4 * 4096)
        defer { map.close() }
        #expect(map[0] == 0x41 && map[3] == 0x41)
        map.fill(page: 1, with: 0x58)
        // Page 2 changes below the mapping while it is clean there: msync must not write it back.
        try writePage(lower + "/f", 2, 0x4C)
        #expect(map.sync() == 0)
        #expect(try pageBytes(lower + "/f") == [0x41, 0x58, 0x4C, 0x41])
    }

    // MARK: refresh

    @Test("refresh drops the cached pages of a range only: CLI, Swift call and C header; dirty pages are written back first")
    func refreshRange() throws {
        try withLayers(["identity"]) { top, lower, _ in
            try makePages(lower + "/f", 3, 0x41)
            let map = try SharedMap(top + "/f", length: 3 * 4096)
            defer { map.close() }
            #expect([map[0], map[1], map[2]] == [0x41, 0x41, 0x41])
            for page in 0..<3 { try writePage(lower + "/f", page, 0x42) }
            usleep(1_200_000)  // past the attribute timeout: the layer must still keep the pages
            #expect([map[0], map[1], map[2]] == [0x41, 0x41, 0x41])
            // read(2) through another descriptor sees the cached pages too, until the refresh.
            let reader = open(top + "/f", O_RDONLY)
            defer { close(reader) }
            func readByte(_ page: Int) -> UInt8 {
                var b: UInt8 = 0
                return pread(reader, &b, 1, off_t(page * 4096)) == 1 ? b : 0
            }
            #expect(readByte(1) == 0x41)
            let r = try run(Build.mountTool, ["refresh", top + "/f", "--offset", "4096", "--length", "4096"])
            #expect(r.status == 0, "\(r.output)")
            #expect([map[0], map[1], map[2]] == [0x41, 0x42, 0x41])
            #expect([readByte(0), readByte(1), readByte(2)] == [0x41, 0x42, 0x41])
            // The Swift call, whole file; a dirty page in the range reaches the lower file first.
            map.fill(page: 0, with: 0x44)
            try Refresh.range(of: map.fd)
            #expect(try pageBytes(lower + "/f") == [0x44, 0x42, 0x42])
            #expect([map[0], map[1], map[2]] == [0x44, 0x42, 0x42])
            // The C header, as applications use it.
            let s = try Scratch("hdr")
            defer { s.remove() }
            let source = s.path + "/r.c"
            try """
                #include <fcntl.h>
                #include <stdio.h>
                #include "wrapfs.h"
                int main(int argc, char **argv) { int fd = open(argv[1], O_RDONLY); if (wrapfs_refresh(fd, 0, 4096) != 0) { perror("refresh"); return 1; } return 0; }
                """.write(toFile: source, atomically: true, encoding: .utf8)
            try sh("cc -Wall -I '\(Build.packageRoot)/include' '\(source)' -o '\(s.path)/r'")
            try writePage(lower + "/f", 0, 0x43)
            #expect(try run(s.path + "/r", [top + "/f"]).status == 0)
            #expect(map[0] == 0x43 && map[1] == 0x42)
        }
    }

    @Test("refresh on a single-threaded daemon with dirty pages in the range returns (no deadlock)", .timeLimit(.minutes(2)))
    func refreshSingleThreaded() throws {
        try withLayers(["identity"], extra: ["--single-threaded"]) { top, lower, _ in
            try makePages(lower + "/f", 8, 0x41)
            let map = try SharedMap(top + "/f", length: 8 * 4096)
            defer { map.close() }
            for page in 0..<8 { map.fill(page: page, with: 0x5A) }
            let r = try run(Build.mountTool, ["refresh", top + "/f"], timeout: 30)
            #expect(!r.timedOut && r.status == 0, "\(r.output)")
            #expect(try pageBytes(lower + "/f") == [UInt8](repeating: 0x5A, count: 8))
        }
    }

    @Test("refresh refuses what it cannot do: a file outside Wrapfs, a directory, a range past 2^63")
    func refreshErrors() throws {
        let s = try Scratch("rf")
        defer { s.remove() }
        try writeFile(s.path + "/plain", [1])
        let r = try run(Build.mountTool, ["refresh", s.path + "/plain"])
        #expect(r.status == 1 && r.output.contains("not a regular file on a Wrapfs mount"))
        let fd = open(s.path + "/plain", O_RDONLY)
        defer { close(fd) }
        #expect(throws: Errno.ENOTTY) { try Refresh.range(of: fd) }
        #expect(try run(Build.mountTool, ["refresh", s.path + "/missing"]).status == 1)
        #expect(try run(Build.mountTool, ["refresh", s.path + "/plain", "--offset", "9223372036854775807", "--length", "2"]).status == 64)
        try withLayers(["identity"]) { top, _, _ in
            try FileManager.default.createDirectory(atPath: top + "/d", withIntermediateDirectories: false)
            #expect(try run(Build.mountTool, ["refresh", top + "/d"]).status == 1)
        }
    }

    // MARK: GlusterFS

    @Test("GlusterFS direct-io: no shared mmap on the client, mmap and msync through the layer, coherence by refresh across two clients",
          .enabled(if: Tools.present(Tools.gluster), "needs glusterfs-server and glusterfs-client"), .timeLimit(.minutes(5)))
    func glusterCoherence() throws {
        let volume = try GlusterVolume()
        defer { volume.tearDown() }
        let s = try Scratch("glayers")
        defer { s.remove() }
        let (c1, c2) = (volume.mounts[0], volume.mounts[1])
        try makePages(c1 + "/shared", 4, 0x41)
        #expect(sharedWritableMapError(c1 + "/shared") == ENODEV)
        let host1 = try Mounted(lower: c1, point: try s.dir("host1"), codec: "identity")
        defer { host1.unmount() }
        let host2 = try Mounted(lower: c2, point: try s.dir("host2"), codec: "identity")
        defer { host2.unmount() }

        let reader = try SharedMap(host2.point + "/shared", length: 4 * 4096)
        defer { reader.close() }
        #expect([reader[0], reader[1], reader[2], reader[3]] == [0x41, 0x41, 0x41, 0x41])
        let writer = try SharedMap(host1.point + "/shared", length: 4 * 4096)
        defer { writer.close() }
        writer.fill(page: 0, with: 0x57)
        writer.fill(page: 1, with: 0x57)
        #expect(writer.sync() == 0)
        // msync put the bytes in the lower file.
        let seen = try pageBytes(c1 + "/shared")
        #expect(seen == [0x57, 0x57, 0x41, 0x41], "\(seen)")
        usleep(1_200_000)
        #expect([reader[0], reader[1]] == [0x41, 0x41], "the reader keeps its pages until it refreshes")
        let r = try run(Build.mountTool, ["refresh", host2.point + "/shared", "--offset", "0", "--length", "4096"])
        #expect(r.status == 0, "\(r.output)")
        #expect([reader[0], reader[1], reader[2]] == [0x57, 0x41, 0x41], "only the refreshed range is read again")

        // The documented example: two processes coordinating with flock, msync and refresh.
        let example = s.path + "/shared-mmap"
        try sh("cc -O2 -Wall -I '\(Build.packageRoot)/include' '\(Build.packageRoot)/examples/shared-mmap/shared-mmap.c' -o '\(example)'")
        let lock = s.path + "/lock"
        let w = try run(example, ["write", host1.point + "/shared", lock, "8192", "hello from host 1"])
        #expect(w.status == 0, "\(w.output)")
        let rd = try run(example, ["read", host2.point + "/shared", lock, "8192", "17"])
        #expect(rd.status == 0 && rd.output == "hello from host 1", "\(rd.output)")
    }

    @Test("the differential checker (with its mmap writes) on layers over GlusterFS direct-io: identity, gzip, aes-gcm",
          .enabled(if: Tools.present(Tools.gluster), "needs glusterfs-server and glusterfs-client"), .timeLimit(.minutes(8)))
    func glusterChecker() throws {
        let volume = try GlusterVolume(mounts: 1)
        defer { volume.tearDown() }
        let reference = try Scratch("gref")
        defer { reference.remove() }
        for codec in ["identity", "gzip", "aes-gcm"] {
            try withLayers([codec], lowerIn: volume.mounts[0]) { top, _, _ in
                let checker = DifferentialChecker(subject: top, reference: try reference.dir("plain-\(codec)"), seed: 91)
                checker.subjectRenamesWithFlags = false  // GlusterFS's FUSE client has no rename flags,
                checker.subjectMakesTemporaryFiles = false  // nor O_TMPFILE,
                checker.subjectRefusesFarSizes = false  // and it shortens a write past the brick's largest file
                try checker.run(operations: 1500)
            }
        }
    }

    @Test("over GlusterFS: fallocate ZERO_RANGE reads back zeros (its client takes the mode and only allocates); fstat of an open file a rename replaced answers (gzip sizes it through the open); fsync of an unlinked open file with the writeback cache",
          .enabled(if: Tools.present(Tools.gluster), "needs glusterfs-server and glusterfs-client"), .timeLimit(.minutes(5)))
    func glusterZeroRangeAndReplacedOpen() throws {
        let volume = try GlusterVolume(mounts: 1)
        defer { volume.tearDown() }
        for codec in ["identity", "aes-gcm"] {
            try withLayers([codec], lowerIn: volume.mounts[0]) { top, _, _ in
                let fd = open(top + "/z", O_RDWR | O_CREAT, 0o644)
                #expect(fd >= 0)
                defer { close(fd) }
                let written = [UInt8](repeating: 0xAB, count: 6 * 4096)
                #expect(pwrite(fd, written, written.count, 0) == written.count)
                // The tail of page 1, pages 2 and 3 whole, the head of page 4.
                let (from, count) = (4096 + 100, 3 * 4096)
                #expect(wrapfs_fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off_t(from), off_t(count)) == 0, "errno \(errno)")
                var back = [UInt8](repeating: 0, count: written.count)
                #expect(pread(fd, &back, back.count, 0) == back.count)
                let expected = (0..<written.count).map { $0 >= from && $0 < from + count ? UInt8(0) : 0xAB }
                let wrong = (0..<back.count).filter { back[$0] != expected[$0] }
                #expect(wrong.isEmpty, "\(codec): \(wrong.count) bytes wrong, from \(wrong.first ?? -1) to \(wrong.last ?? -1)")
            }
        }
        try withLayers(["gzip"], lowerIn: volume.mounts[0]) { top, _, _ in
            try Data(repeating: 0x61, count: 5000).write(to: URL(fileURLWithPath: top + "/f"))
            try Data(repeating: 0x62, count: 100).write(to: URL(fileURLWithPath: top + "/q"))
            let fd = open(top + "/f", O_RDWR)
            #expect(fd >= 0)
            defer { close(fd) }
            #expect(rename(top + "/q", top + "/f") == 0)
            var st = stat()
            #expect(fstat(fd, &st) == 0, "errno \(errno)")
            #expect(st.st_size == 5000)
        }
        // With the writeback cache the kernel sends an open file's times at fsync, which GlusterFS
        // refuses for a file with no name left.
        try withLayers(["identity"], extra: ["--writeback-cache"], lowerIn: volume.mounts[0]) { top, _, _ in
            try Data(repeating: 0x61, count: 5000).write(to: URL(fileURLWithPath: top + "/u"))
            let fd = open(top + "/u", O_RDWR)
            #expect(fd >= 0)
            defer { close(fd) }
            #expect(unlink(top + "/u") == 0)
            #expect(pwrite(fd, "bbbb", 4, 100) == 4)
            #expect(fsync(fd) == 0, "fsync: errno \(errno)")
        }
    }

    // MARK: sshfs

    @Test("sshfs -o direct_io: no shared mmap on it, the layer maps; the differential checker passes over it",
          .enabled(if: Tools.present(Tools.sshfs), "needs sshfs and openssh-server"), .timeLimit(.minutes(8)))
    func sshfsChecker() throws {
        let remote = try SSHFSMount()
        defer { remote.tearDown() }
        try makePages(remote.point + "/f", 2, 0x41)
        #expect(sharedWritableMapError(remote.point + "/f") == ENODEV)
        let reference = try Scratch("sref")
        defer { reference.remove() }
        try withLayers(["identity"], lowerIn: remote.point) { top, lower, _ in
            try makePages(lower + "/f", 2, 0x41)
            let map = try SharedMap(top + "/f", length: 2 * 4096)
            map.fill(page: 1, with: 0x53)
            #expect(map.sync() == 0)
            map.close()
            #expect(try pageBytes(lower + "/f") == [0x41, 0x53])
            let checker = DifferentialChecker(subject: top, reference: try reference.dir("plain"), seed: 92)
            checker.subjectAllocates = false  // sshfs has no fallocate,
            checker.subjectRenamesWithFlags = false  // nor rename flags,
            checker.subjectCountsLinks = false  // nor link counts (SFTP has none),
            checker.subjectHasXattrs = false  // nor extended attributes,
            checker.subjectKeepsNanoseconds = false  // nor times finer than a second,
            checker.subjectReadsSlashedLinks = false  // nor readlink of "../x" (EPERM from sshfs itself),
            checker.subjectMakesTemporaryFiles = false  // nor O_TMPFILE,
            checker.subjectRefusesFarSizes = false  // and it takes a write past the server's largest file
            try checker.run(operations: 1500)
        }
    }

    // MARK: shadow files

    @Test("shadow files: ln -s makes a regular file that is the backing file: read, write, mmap, stat, rename, rm closes it; with open coherence the root lists without directory handles",
          arguments: ["explicit", "open"])
    func shadowFiles(coherence: String) throws {
        let s = try Scratch("shadow")
        defer { s.remove() }
        let backing = s.path + "/backing.bin"
        try makePages(backing, 2, 0x41)
        let point = try s.dir("shim")
        let shim = try Mounted(point: point, arguments: ["--shim", point, "-f", "--coherence", coherence])
        defer { shim.unmount() }
        #expect(try statusJSON(point)["directory_handles"] as? Bool == (coherence == "explicit"))
        let entry = shim.point + "/data"
        #expect(symlink(backing, entry) == 0)
        var st = try statOf(entry)
        #expect(st.st_mode & S_IFMT == S_IFREG && st.st_size == 8192)
        #expect(try FileManager.default.contentsOfDirectory(atPath: shim.point) == ["data"])
        #expect(try pageBytes(entry) == [0x41, 0x41])
        try writePage(entry, 1, 0x42)
        #expect(try pageBytes(backing) == [0x41, 0x42])
        try appendFile(entry, [7, 7, 7])
        st = try statOf(entry)
        let backingSize = try statOf(backing).st_size
        #expect(st.st_size == 8195 && backingSize == 8195)
        let map = try SharedMap(entry, length: 8192)
        map.fill(page: 0, with: 0x4D)
        #expect(map.sync() == 0)
        map.close()
        #expect(try pageBytes(backing) == [0x4D, 0x42, 7])
        #expect(rename(entry, shim.point + "/renamed") == 0)
        #expect(try pageBytes(shim.point + "/renamed") == [0x4D, 0x42, 7])
        #expect(unlink(shim.point + "/renamed") == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: shim.point).isEmpty)
        #expect(access(backing, F_OK) == 0, "the backing file stays")
        // The daemon lets go of the backing file once the kernel forgets the entry.
        let deadline = Date().addingTimeInterval(5)
        while shim.holdsOpen(backing) && Date() < deadline { usleep(50_000) }
        #expect(!shim.holdsOpen(backing))
    }

    @Test("shadow files refuse bad targets with clear errors: relative, missing, a directory, inside the mount, not a regular file")
    func shadowErrors() throws {
        let s = try Scratch("shadowerr")
        defer { s.remove() }
        try writeFile(s.path + "/file", [1])
        let shim = try Mounted.shim(try s.dir("shim"))
        defer { shim.unmount() }
        func link(_ target: String, _ name: String = "x") -> Int32 { symlink(target, shim.point + "/" + name) == 0 ? 0 : errno }
        #expect(link("file") == EINVAL)
        #expect(link(s.path + "/missing") == ENOENT)
        #expect(link(s.path) == EISDIR)
        #expect(link("/dev/null") == EINVAL)
        #expect(link(shim.point + "/y") == ELOOP)
        #expect(link(s.path + "/file", "ok") == 0)
        #expect(link(shim.point + "/ok") == ELOOP)
        #expect(link(s.path + "/file", "ok") == EEXIST)
        #expect(open(shim.point + "/new", O_CREAT | O_WRONLY, 0o644) == -1 && errno == EPERM)
        #expect(mkdir(shim.point + "/dir", 0o755) == -1 && errno == EPERM)
        #expect(Glibc.link(s.path + "/file", shim.point + "/hard") == -1)
        let log = shim.log
        #expect(log.contains("absolute path") && log.contains("is a directory") && log.contains("inside the shim mount"), "\(log)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: shim.point) == ["ok"])
        // Bad command lines.
        #expect(try run(Build.mountTool, ["--shim", s.path + "/file"]).status == 67)
        #expect(try run(Build.mountTool, ["--shim", s.path, s.path]).status == 64)
        #expect(try run(Build.mountTool, ["--shim", "--codec", "rot", s.path]).status == 64)
    }
}

extension Mounted {
    /// A shim mount (`wrapfs-mount --shim POINT -f`).
    static func shim(_ point: String) throws -> Mounted { try Mounted(point: point, arguments: ["--shim", point, "-f"]) }

    /// Whether the daemon has a descriptor open on `path`.
    func holdsOpen(_ path: String) -> Bool {
        let dir = "/proc/\(daemon.pid)/fd"
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + $0)) == path }
    }
}
