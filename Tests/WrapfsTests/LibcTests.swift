// The libc compatibility table (docs/LIBC.md): every call group, on every codec, against a plain directory.
import CFuse
import Foundation
import Glibc
import Testing

@Suite("libc compatibility", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct LibcTests {
    static let codecs = ["identity", "rot", "gzip", "aes-ctr", "aes-gcm"]

    @Test("every call in the table does on the mount what it does on a plain directory (results, errnos, bytes)",
          .timeLimit(.minutes(5)), arguments: codecs)
    func table(codec: String) throws {
        try withLayers([codec]) { top, _, _ in
            let scratch = try Scratch("libc")
            defer { scratch.remove() }
            let plain = try scratch.dir("plain")
            for (i, call) in LibcCalls.all.enumerated() {
                let (m, p) = (top + "/\(i)", plain + "/\(i)")
                mkdir(m, 0o755)
                mkdir(p, 0o755)
                let onMount = CallLog(), onPlain = CallLog()
                call.probe(m, onMount)
                call.probe(p, onPlain)
                let differing = zip(onMount.lines, onPlain.lines).filter { $0 != $1 }.map { "mount \($0) / plain \($1)" }
                #expect(differing.isEmpty && onMount.lines.count == onPlain.lines.count,
                        "\(call.name) on \(codec): \(differing.prefix(5).joined(separator: "; "))")
                #expect(!onMount.lines.isEmpty, "\(call.name) recorded nothing")
            }
        }
    }

    @Test("an O_TMPFILE file is unnamed below too: nothing in the lower directory until linkat names it (encrypted like any name), nothing after its last close",
          .timeLimit(.minutes(1)), arguments: ["identity", "aes-gcm"])
    func temporaryFiles(codec: String) throws {
        try withLayers([codec]) { top, lower, mounts in
            let daemon = mounts[0].daemon.pid
            // Descriptors of files below the lower directory (the daemon opens its control socket
            // after the mount appears: counting all its descriptors raced with that once).
            func heldBelow() -> [String] { heldLowerFiles(daemon).filter { $0.hasPrefix(lower + "/") } }
            #expect(heldBelow().isEmpty, "\(heldBelow())")
            let fd = open(top, wrapfs_o_tmpfile | O_RDWR | O_CLOEXEC, 0o600)
            #expect(fd >= 0, "O_TMPFILE: errno \(errno)")
            guard fd >= 0 else { return }
            let secret = [UInt8](repeating: 0x53, count: 8192)
            #expect(write(fd, secret, secret.count) == secret.count)
            #expect(lowerFiles(lower).isEmpty, "an unnamed file has a lower name: \(lowerFiles(lower))")
            #expect(linkat(fd, "", AT_FDCWD, top + "/kept", wrapfs_AT_EMPTY_PATH) == 0, "linkat: errno \(errno)")
            close(fd)
            let below = lowerFiles(lower)
            #expect(below.count == 1, "lower files after linkat: \(below)")
            if codec == "aes-gcm", let name = below.first {
                #expect(!name.hasSuffix("kept"), "the name is stored in the clear: \(name)")
                let stored = try [UInt8](Data(contentsOf: URL(fileURLWithPath: name)))
                #expect(stored.count > secret.count && !stored.indices.dropLast(63).contains { i in stored[i..<(i + 64)].allSatisfy { $0 == 0x53 } },
                        "the content is stored in the clear")
            }
            let r = open(top + "/kept", O_RDONLY)
            var back = [UInt8](repeating: 0, count: secret.count)
            #expect(read(r, &back, back.count) == secret.count && back == secret)
            close(r)
            // Never named: gone with its last close, as on ext4.
            let gone = open(top, wrapfs_o_tmpfile | O_RDWR | O_CLOEXEC, 0o600)
            #expect(write(gone, secret, secret.count) == secret.count)
            close(gone)
            #expect(lowerFiles(lower).count == 1, "an unnamed file outlived its close: \(lowerFiles(lower))")
            // Nor does the daemon keep them: once the kernel forgets them, their descriptors close.
            // (O_CLOEXEC above: a child another test starts meanwhile must not keep one open.)
            for _ in 0..<100 {
                let f = open(top, wrapfs_o_tmpfile | O_RDWR | O_CLOEXEC, 0o600)
                _ = write(f, secret, secret.count)
                close(f)
            }
            // One: the named file, which the kernel still knows.
            #expect(eventually { heldBelow().count <= 1 }, "\(heldBelow())")
        }
    }

    @Test("statx's birth time is the lower file's (FUSE_STATX, which libfuse 3.14 cannot serve)",
          .timeLimit(.minutes(1)), arguments: ["identity", "aes-gcm"])
    func birthTimes(codec: String) throws {
        try withLayers([codec]) { top, lower, _ in
            try writeDurably(top + "/f", [1, 2, 3])
            sleep(1)  // past the attribute timeout, so the kernel asks the layer
            var sec: Int64 = 0, nsec: UInt32 = 0
            let mask = wrapfs_statx_btime(AT_FDCWD, top + "/f", 0, &sec, &nsec)
            #expect(mask >= 0 && mask & 0x800 != 0, "no birth time through the mount: mask \(mask)")
            let below = lowerFiles(lower)
            #expect(below.count == 1)
            if let file = below.first {
                var lowerSec: Int64 = 0, lowerNsec: UInt32 = 0
                #expect(wrapfs_statx_btime(AT_FDCWD, file, 0, &lowerSec, &lowerNsec) & 0x800 != 0)
                #expect(sec == lowerSec && nsec == lowerNsec, "birth time \(sec).\(nsec) through the mount, \(lowerSec).\(lowerNsec) below")
            }
            // A stat that asks for no birth time still gets GETATTR's answer, sizes included.
            var st = stat()
            #expect(stat(top + "/f", &st) == 0 && st.st_size == 3)
        }
    }

    @Test("calls the layer cannot serve fail with their documented errno: ioctls other than its own ENOTTY",
          .timeLimit(.minutes(1)), arguments: ["identity", "aes-gcm"])
    func unsupported(codec: String) throws {
        try withLayers([codec]) { top, _, _ in
            try writeDurably(top + "/f", [1, 2, 3])
            let f = open(top + "/f", O_RDONLY)
            defer { close(f) }
            var termios = [UInt8](repeating: 0, count: 64)
            #expect(wrapfs_ioctl_buffer(f, 0x5401 /* TCGETS */, &termios) == -1 && errno == ENOTTY)
        }
    }

    /// lsattr and chattr reach the lower file's flags (they failed with ENOTTY): read and set as in
    /// a plain ext4 directory, and an immutable file or directory refuses what it refuses there.
    @Test("inode flags (lsattr, chattr, FS_IOC_FSGETXATTR) are the lower file's, and immutable and append-only files behave as on ext4",
          .timeLimit(.minutes(1)), arguments: ["identity", "rot", "aes-gcm"])
    func inodeFlags(codec: String) throws {
        let plain = try Scratch("flags")
        defer { _ = try? sh("chattr -R -i -a '\(plain.path)' 2>/dev/null || true"); plain.remove() }
        try withLayers([codec]) { top, _, _ in
            func outcome(_ dir: String) throws -> [String] {
                defer { _ = try? sh("chattr -R -i -a '\(dir)' 2>/dev/null || true") }
                var lines: [String] = []
                // A descriptor a call returns is closed (its number is not compared).
                func check(_ what: String, _ r: Int) {
                    lines.append("\(what): " + (r < 0 ? "errno \(errno)" : "ok"))
                    if r > 2 && (what.contains("open") || what.hasPrefix("create")) { close(Int32(r)) }
                }
                try writeFile(dir + "/f", [1, 2, 3])
                #expect(mkdir(dir + "/d", 0o755) == 0)
                func flags(_ path: String) -> Int32 {
                    let fd = open(path, O_RDONLY | O_NONBLOCK)
                    defer { close(fd) }
                    var value: Int32 = -1
                    check("get flags of \(path.split(separator: "/").last!)", Int(wrapfs_ioctl_buffer(fd, wrapfs_fs_ioc_getflags, &value)))
                    return value
                }
                func setFlags(_ path: String, _ value: Int32) {
                    let fd = open(path, O_RDONLY | O_NONBLOCK)
                    defer { close(fd) }
                    var v = value
                    check("set flags \(String(value, radix: 16)) of \(path.split(separator: "/").last!)", Int(wrapfs_ioctl_buffer(fd, wrapfs_fs_ioc_setflags, &v)))
                }
                let base = flags(dir + "/f")
                lines.append("flags \(String(base, radix: 16))")
                let before = try statOf(dir + "/f").st_ctim
                usleep(20_000)
                setFlags(dir + "/f", base | 0x10)  // FS_IMMUTABLE_FL
                lines.append("immutable: \(flags(dir + "/f") & 0x10 != 0), ctime moved: \(try statOf(dir + "/f").st_ctim.tv_nsec != before.tv_nsec)")
                check("open for writing", Int(open(dir + "/f", O_WRONLY)))
                check("unlink", Int(unlink(dir + "/f")))
                check("rename", Int(rename(dir + "/f", dir + "/g")))
                check("chmod", Int(chmod(dir + "/f", 0o600)))
                check("truncate", Int(truncate(dir + "/f", 0)))
                check("link", Int(link(dir + "/f", dir + "/h")))
                lines.append("reads: \(try readFile(dir + "/f"))")
                setFlags(dir + "/f", base)
                check("write after clearing", (try? appendFile(dir + "/f", [4])) == nil ? -1 : 0)
                // The xfs form: FS_XFLAG_IMMUTABLE (8) on a directory keeps new names out.
                var xattr = [UInt8](repeating: 0, count: Int(wrapfs_fsxattr_size))
                let d = open(dir + "/d", O_RDONLY | O_DIRECTORY)
                check("get xflags of d", Int(wrapfs_ioctl_buffer(d, wrapfs_fs_ioc_fsgetxattr, &xattr)))
                xattr[0] |= 8
                check("set xflags of d", Int(wrapfs_ioctl_buffer(d, wrapfs_fs_ioc_fssetxattr, &xattr)))
                check("create in d", Int(open(dir + "/d/new", O_CREAT | O_WRONLY, 0o644)))
                xattr[0] &= ~8
                check("clear xflags of d", Int(wrapfs_ioctl_buffer(d, wrapfs_fs_ioc_fssetxattr, &xattr)))
                close(d)
                check("create in d after", Int(open(dir + "/d/new", O_CREAT | O_WRONLY, 0o644)))
                // Append-only (FS_APPEND_FL): appends land, a truncating open is refused.
                setFlags(dir + "/f", base | 0x20)
                check("truncating open of an append-only file", Int(open(dir + "/f", O_WRONLY | O_TRUNC)))
                // A size-changing codec cannot append there: it opens the lower file for reading and
                // writing, and rewrites the last slot (docs/LIBC.md).
                if codec == "identity" {
                    check("append to an append-only file", (try? appendFile(dir + "/f", [5])) == nil ? -1 : 0)
                }
                setFlags(dir + "/f", base)
                lines.append("reads: \(try readFile(dir + "/f"))")
                return lines
            }
            let expected = try outcome(plain.path)
            #expect(expected.contains("immutable: true, ctime moved: true") && expected.contains("open for writing: errno \(EPERM)"),
                    "the plain directory: \(expected)")
            let got = try outcome(top)
            for (layer, lower) in zip(got, expected) where layer != lower { Issue.record("layer: \(layer); plain directory: \(lower)") }
            #expect(got.count == expected.count)
        }
    }

    @Test("docs/LIBC.md has a row for every call group the suite runs", .timeLimit(.minutes(1)))
    func documented() throws {
        let doc = try String(contentsOfFile: Build.packageRoot + "/docs/LIBC.md", encoding: .utf8)
        for call in LibcCalls.all {
            #expect(doc.contains("| `\(call.name)` |"), "docs/LIBC.md lacks a row for \(call.name)")
        }
    }
}
