// The gzip codec on the fixed-slot layout: disk saving, local rewrites, corrupt slots.
import Foundation
import Glibc
import Testing

@Suite("gzip", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct GzipTests {
    func kib(_ path: String) throws -> Int {
        Int(try sh("du -sk '\(path)' | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines))!
    }

    /// /usr/share/doc holds many files gzipped already (on this machine even `tar | gzip` of it
    /// keeps 53%), so the compressible tree is that documentation with its .gz files expanded.
    @Test("a compressible tree (/usr/share/doc, expanded) takes 40% or less of the raw copy's disk space", .timeLimit(.minutes(5)))
    func diskSaving() throws {
        let s = try Scratch("du")
        defer { s.remove() }
        try sh("cp -r /usr/share/doc '\(s.path)/raw' && find '\(s.path)/raw' -name '*.gz' -type f -exec gunzip -fq {} + || true")
        try withLayers(["gzip"]) { top, lower, _ in
            try sh("cp -r '\(s.path)/raw' '\(top)/doc' && sync")
            try sh("diff -r --no-dereference '\(s.path)/raw' '\(top)/doc'")
            let raw = try kib(s.path + "/raw"), packed = try kib(lower)
            #expect(Double(packed) <= 0.4 * Double(raw), "lower \(packed) KiB vs raw copy \(raw) KiB")
        }
    }

    @Test("a volume remembers its page size and codec; its volume file is hidden")
    func volumeRemembers() throws {
        let s = try Scratch("vol")
        defer { s.remove() }
        let lower = try s.dir("lower"), mnt = try s.dir("mnt")
        var m = try Mounted(lower: lower, point: mnt, codec: "gzip", extra: ["--codec-option", "page-size=16384"])
        try writeFile(mnt + "/a", pattern(100_000))
        #expect(try FileManager.default.contentsOfDirectory(atPath: mnt) == ["a"])
        #expect(open(mnt + "/.wrapfs.json", O_RDONLY) == -1 && errno == ENOENT)
        #expect(open(mnt + "/.wrapfs.json", O_CREAT | O_WRONLY, 0o644) == -1 && errno == EPERM)
        m.unmount()
        var r = try run(Build.mountTool, [lower, mnt, "--codec", "gzip", "--codec-option", "page-size=4096", "-f"], timeout: 30)
        #expect(r.status == 64 && r.output.contains("page-size=16384"), "\(r)")
        r = try run(Build.mountTool, [lower, mnt, "--codec", "rot", "-f"], timeout: 30)
        #expect(r.status == 64 && r.output.contains("gzip volume"), "\(r)")
        m = try Mounted(lower: lower, point: mnt, codec: "gzip")  // no page size given: the volume's
        defer { m.unmount() }
        #expect(try readFile(mnt + "/a") == pattern(100_000))
        let raw = try readFile(lower + "/a")
        #expect(raw.count > 16400 && raw[16400] == 0x57 && raw[16401] == 0x5A, "slot 1 starts at 16384 + 16: the volume's page size")
    }

    @Test("incompressible data costs at most the record header per page")
    func incompressible() throws {
        try withLayers(["gzip"]) { top, lower, _ in
            let data = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255) }
            try writeFile(top + "/random", data)
            #expect(try readFile(top + "/random") == data)
            let size = try statOf(lower + "/random").st_size
            #expect(size == (1 << 20) + 16 * 16, "16 pages of 64 KiB, 16 bytes of header each: \(size)")
        }
    }

    /// With one request thread (`--single-threaded`), CPU time that other threads of the daemon
    /// spend during a big streaming write is page encoding handed to the other core. (CPU over
    /// wall time would say the same on an idle machine, but the test suites run side by side.)
    @Test("large writes compress their pages on both cores", .timeLimit(.minutes(5)),
          .enabled(if: ProcessInfo.processInfo.activeProcessorCount >= 2, "needs two cores"))
    func parallelCompression() throws {
        let s = try Scratch("gzcpu")
        defer { s.remove() }
        let source = s.path + "/text"
        try sh("""
            python3 -c "import sys; f=open(sys.argv[1],'wb'); [f.write(b'%08d the quick brown fox %d jumps over the lazy dog %x\\n' % (i, i*7919 % 100003, i*31)) for i in range(1600000)]" '\(source)'
            """)
        try withLayers(["gzip"], extra: ["--single-threaded"]) { top, _, mounts in
            let pid = mounts[0].daemon.pid
            /// CPU ticks (user + system) per thread of the daemon.
            func ticksByThread() throws -> [Int: Int] {
                var ticks: [Int: Int] = [:]
                for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
                    guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8) else { continue }
                    let fields = text.split(separator: ")").last!.split(separator: " ")
                    ticks[Int(task)!] = Int(fields[11])! + Int(fields[12])!  // utime, stime (fields 14 and 15)
                }
                return ticks
            }
            let before = try ticksByThread()
            try sh("dd if='\(source)' of='\(top)/text' bs=1M status=none")
            let after = try ticksByThread()
            let spent = after.map { ($0.key, $0.value - (before[$0.key] ?? 0)) }
            let total = spent.reduce(0) { $0 + $1.1 }, busiest = spent.map(\.1).max() ?? 0
            #expect(total > 0 && Double(total - busiest) / Double(total) > 0.25,
                    "CPU ticks by thread while writing: \(spent.filter { $0.1 > 0 })")
            try sh("cmp '\(source)' '\(top)/text'")
        }
    }

    @Test("a write in the middle of a 100 MiB file rewrites only the slots it touches", .timeLimit(.minutes(5)))
    func localRewrite() throws {
        try withLayers(["gzip"]) { top, lower, _ in
            try sh("""
                python3 -c "import sys; f=open(sys.argv[1],'wb'); [f.write(b''.join(b'line %d of page %d\\\\n' % (i, p) for i in range(3600))[:65536]) for p in range(1600)]" '\(top)/big'
                """)
            #expect(try statOf(top + "/big").st_size == 104_857_600)
            let slot = 65536 + 16
            let before = try readFile(lower + "/big")
            // Overwrite 10 bytes inside page 700 through the layer.
            let fd = open(top + "/big", O_WRONLY)
            #expect("0123456789".withCString { pwrite(fd, $0, 10, off_t(700 * 65536 + 1000)) } == 10)
            close(fd)
            let after = try readFile(lower + "/big")
            #expect(before.count == after.count)
            var changedSlots = Set<Int>()
            for i in stride(from: 0, to: min(before.count, after.count), by: 1) where before[i] != after[i] { changedSlots.insert(i / slot) }
            #expect(changedSlots == [700], "changed slots: \(changedSlots.sorted().prefix(10))")
        }
    }

    @Test("a corrupt slot reads as EIO with a log line naming file and page; other pages still read")
    func corruptSlot() throws {
        try withLayers(["gzip"], extra: ["--codec-option", "page-size=4096"]) { top, lower, mounts in
            let text = (0..<5000).map { "line \($0) of a compressible file\n" }.joined()
            try Data(text.utf8).write(to: URL(fileURLWithPath: top + "/doc.txt"))
            let slot = 4096 + 16
            for (page, damage) in [(2, "flip"), (5, "length"), (9, "crc")] {
                let fd = open(lower + "/doc.txt", O_RDWR)
                var b: UInt8 = 0
                let at = off_t(page * slot + (damage == "flip" ? 40 : damage == "length" ? 6 : 13))
                pread(fd, &b, 1, at)
                b ^= 0x5A
                pwrite(fd, &b, 1, at)
                close(fd)
            }
            try sh("echo 3 > /proc/sys/vm/drop_caches")
            let fd = open(top + "/doc.txt", O_RDONLY)
            defer { close(fd) }
            var buf = [UInt8](repeating: 0, count: 4096)
            for page in 0..<12 {
                let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4096, off_t(page * 4096)) }
                if [2, 5, 9].contains(page) {
                    #expect(n == -1 && errno == EIO, "page \(page)")
                } else {
                    #expect(n == 4096 && Array(buf) == Array(Array(text.utf8)[(page * 4096)..<((page + 1) * 4096)]), "page \(page)")
                }
            }
            let log = mounts[0].log
            #expect(log.contains("doc.txt, page 2") && log.contains("doc.txt, page 5") && log.contains("doc.txt, page 9"), "\(log)")
        }
    }
}
