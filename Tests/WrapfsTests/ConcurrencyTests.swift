// Concurrent readers and writers: different files in parallel, one file without torn pages, appenders through many descriptors.
import Foundation
import Glibc
import Testing

@Suite("Concurrency", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct ConcurrencyTests {
    @Test("writers on different files run side by side and all data is intact", arguments: ["identity", "rot"])
    func differentFiles(codec: String) throws {
        try withLayers([codec]) { top, _, _ in
            let group = DispatchGroup()
            let failures = Failures()
            for t in 0..<4 {
                DispatchQueue.global().async(group: group) {
                    let data = pattern(3 << 20, seed: UInt8(t))
                    let path = top + "/file\(t)"
                    do {
                        for _ in 0..<3 {
                            try writeFile(path, data)
                            if try readFile(path) != data { failures.add("file\(t) read back wrong") }
                        }
                    } catch { failures.add("\(error)") }
                }
            }
            group.wait()
            #expect(failures.list.isEmpty, "\(failures.list)")
        }
    }

    @Test("readers never see a torn page while writers rewrite one file", arguments: ["identity", "rot"])
    func noTornPages(codec: String) throws {
        // --direct-io sends every read and write to the layer, so its locking is what is tested.
        try withLayers([codec], extra: ["--direct-io"]) { top, _, _ in
            let path = top + "/shared"
            let pages = 64
            try writeFile(path, [UInt8](repeating: 1, count: pages * 4096))
            let failures = Failures()
            let group = DispatchGroup()
            let stop = Date().addingTimeInterval(4)
            for w in 0..<2 {
                DispatchQueue.global().async(group: group) {
                    let fd = open(path, O_WRONLY)
                    defer { close(fd) }
                    var value = UInt8(2 + w * 100)
                    while Date() < stop {
                        // Runs of whole pages, some straddling, each filled with one value.
                        let first = Int.random(in: 0..<pages - 3), count = Int.random(in: 1...3)
                        let buf = [UInt8](repeating: value, count: count * 4096)
                        _ = buf.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(first * 4096)) }
                        value = value == UInt8(99 + w * 100) ? UInt8(2 + w * 100) : value + 1
                    }
                }
            }
            for _ in 0..<2 {
                DispatchQueue.global().async(group: group) {
                    let fd = open(path, O_RDONLY)
                    defer { close(fd) }
                    var buf = [UInt8](repeating: 0, count: pages * 4096)
                    while Date() < stop {
                        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
                        if n != pages * 4096 { failures.add("short read \(n)"); return }
                        for p in 0..<pages {
                            let page = buf[(p * 4096)..<((p + 1) * 4096)]
                            if page.contains(where: { $0 != page.first! }) { failures.add("page \(p) torn"); return }
                        }
                    }
                }
            }
            group.wait()
            #expect(failures.list.isEmpty, "\(failures.list)")
        }
    }

    @Test("appenders through separate descriptors never overwrite each other", arguments: ["identity", "rot"])
    func appenders(codec: String) throws {
        try withLayers([codec]) { top, _, _ in
            let path = top + "/log"
            let group = DispatchGroup()
            let writers = 4, records = 400
            for w in 0..<writers {
                DispatchQueue.global().async(group: group) {
                    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                    defer { close(fd) }
                    for i in 0..<records {
                        let line = "writer \(w) record \(i)".padding(toLength: 99, withPad: ".", startingAt: 0) + "\n"
                        _ = line.withCString { Glibc.write(fd, $0, 100) }
                    }
                }
            }
            group.wait()
            let lines = String(decoding: try readFile(path), as: UTF8.self).split(separator: "\n")
            #expect(lines.count == writers * records)
            #expect(Set(lines).count == writers * records)
            #expect(lines.allSatisfy { $0.count == 99 && $0.hasPrefix("writer ") })
        }
    }

    /// A big append is encoded on every core, but one thread at a time writes the lower file: two
    /// pwrites into one file would contend for its inode lock (the kernel spins the second).
    /// Under strace, pwrite64 calls that overlap show as "<unfinished ...>".
    @Test("a parallel append writes the lower file from one thread at a time, and the data is whole",
          .timeLimit(.minutes(2)), arguments: ["aes-gcm", "gzip"])
    func oneWriterPerAppend(codec: String) throws {
        let s = try Scratch("handoff")
        defer { s.remove() }
        let layer = try LayerSetup(s, codec: codec)
        let m = try layer.mount()
        defer { m.unmount() }
        let tracer = try attachStrace(to: m.daemon.pid, calls: "pwrite64", log: s.path + "/strace.log")
        defer { tracer.stop() }
        let data = pattern(16 << 20, seed: 7)
        let fd = open(layer.point + "/stream", O_CREAT | O_WRONLY, 0o644)
        for k in 0..<16 { #expect(pwrite(fd, Array(data[(k << 20)..<((k + 1) << 20)]), 1 << 20, off_t(k << 20)) == 1 << 20) }
        #expect(fsync(fd) == 0)
        close(fd)
        tracer.stop()
        let log = try String(contentsOfFile: s.path + "/strace.log", encoding: .utf8).split(separator: "\n")
        let writes = log.filter { $0.contains("pwrite64(") }.count
        let overlapping = log.filter { $0.contains("unfinished") }
        #expect(writes >= 16, "pwrite64 calls: \(writes)")
        #expect(overlapping.isEmpty, "overlapping lower writes: \(overlapping.prefix(5))")
        try dropCaches()
        #expect(try readWhole(layer.point + "/stream") == data)
    }
}

/// Failures collected from several threads.
final class Failures: @unchecked Sendable {
    private var items: [String] = []
    private let lock = NSLock()
    func add(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var list: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
