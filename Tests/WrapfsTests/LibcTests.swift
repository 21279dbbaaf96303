// The libc compatibility table (docs/LIBC.md): every call group, on every codec, against a plain directory.
import CFuse
import Foundation
import Glibc
import Testing

@Suite("libc compatibility", .serialized, .enabled(if: Fuse.required, "needs /dev/fuse"))
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

    @Test("calls the layer cannot serve fail with their documented errno: O_TMPFILE EOPNOTSUPP, other ioctls ENOTTY",
          .timeLimit(.minutes(1)), arguments: ["identity", "aes-gcm"])
    func unsupported(codec: String) throws {
        try withLayers([codec]) { top, lower, _ in
            let fd = open(top, wrapfs_o_tmpfile | O_RDWR, 0o600)
            #expect(fd == -1 && errno == EOPNOTSUPP, "O_TMPFILE gave fd \(fd), errno \(errno)")
            if fd >= 0 { close(fd) }
            #expect(lowerFiles(lower).isEmpty, "O_TMPFILE left a lower file")
            try writeDurably(top + "/f", [1, 2, 3])
            let f = open(top + "/f", O_RDONLY)
            defer { close(f) }
            var flags: Int32 = 0
            #expect(ioctl(f, wrapfs_fs_ioc_getflags, &flags) == -1 && errno == ENOTTY)
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
