// FUSE over io_uring (`--io-uring`): the checker through the ring, the fallback to /dev/fuse, a busy CPU.
import Foundation
import CFuse
import Testing

@Suite("FUSE over io_uring", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct RingTests {
    static let parameter = "/sys/module/fuse/parameters/enable_uring"

    /// Runs `body` with the kernel's FUSE io_uring switch set to `on` (root only; restored
    /// after), telling it whether the kernel has the feature at all (Linux 6.14+ built with
    /// CONFIG_FUSE_IO_URING). Without it `--io-uring` must fall back to /dev/fuse.
    static func withKernelRing<R>(_ on: Bool, _ body: (_ available: Bool) throws -> R) throws -> R {
        guard let before = try? String(contentsOfFile: parameter, encoding: .utf8) else { return try body(false) }
        try (on ? "Y" : "N").write(toFile: parameter, atomically: false, encoding: .utf8)
        defer { try? before.trimmingCharacters(in: .whitespacesAndNewlines).write(toFile: parameter, atomically: false, encoding: .utf8) }
        return try body(true)
    }

    static var possibleCPUs: Int {
        let text = (try? String(contentsOfFile: "/sys/devices/system/cpu/possible", encoding: .utf8)) ?? "0"
        return (text.split(whereSeparator: { ",-\n".contains($0) }).compactMap { Int($0) }.max() ?? 0) + 1
    }

    /// Whether the ring serves `top` within 20 s. The kernel turns to the ring only once every
    /// queue has registered, which under load can take a moment after the mount: until then
    /// requests (these lookups of new names) come through /dev/fuse.
    static func ringServes(_ top: String) throws -> Bool {
        for i in 0..<200 {
            _ = access(top + "/ring-probe-\(i)", F_OK)
            if try statusJSON(top)["io_uring_requests"] as? Int ?? 0 > 0 { return true }
            usleep(100_000)
        }
        return false
    }

    @Test("the checker through the ring", .timeLimit(.minutes(10)), arguments: ["identity", "gzip", "aes-gcm"])
    func checker(codec: String) throws {
        try Self.withKernelRing(true) { available in
            try withLayers([codec], extra: ["--io-uring"]) { top, _, _ in
                let scratch = try Scratch("ref")
                defer { scratch.remove() }
                try DifferentialChecker(subject: top, reference: try scratch.dir("plain"), seed: 21).run(operations: 2_500)
                // STATX, which libfuse cannot serve, is answered from the ring's entry too.
                try writeDurably(top + "/born", [1])
                sleep(1)  // past the attribute timeout
                var sec: Int64 = 0, nsec: UInt32 = 0
                #expect(wrapfs_statx_btime(AT_FDCWD, top + "/born", 0, &sec, &nsec) & 0x800 != 0, "no birth time")
                let status = try statusJSON(top)
                let queues = status["io_uring_queues"] as? Int ?? -1
                let served = status["io_uring_requests"] as? Int ?? -1
                if available {
                    #expect(queues == Self.possibleCPUs, "a queue per possible CPU")
                    #expect(served > 2_500, "the requests came through the ring: \(served)")
                } else {
                    #expect(queues == 0 && served == 0, "no ring without the kernel's support")
                }
            }
        }
    }

    /// With the writeback cache an invalidation waits for the writeback the kernel sends first:
    /// a queue's one thread waiting so must get help (it hung without), and replies sent from
    /// threads that then exit must still reach the kernel (ECANCELED without the submitter).
    @Test("the checker through the ring with the writeback cache", .timeLimit(.minutes(10)), arguments: ["identity", "aes-gcm"])
    func writebackCache(codec: String) throws {
        try Self.withKernelRing(true) { available in
            try withLayers([codec], extra: ["--io-uring", "--writeback-cache"]) { top, _, _ in
                let scratch = try Scratch("ref")
                defer { scratch.remove() }
                let checker = DifferentialChecker(subject: top, reference: try scratch.dir("plain"), seed: 6)
                checker.subjectRefusesFarSizes = false  // the kernel takes such writes into its cache
                try checker.run(operations: 3_000)
                if available { #expect(try statusJSON(top)["io_uring_requests"] as? Int ?? 0 > 3_000) }
            }
        }
    }

    /// A read decodes straight into the ring entry's buffer when its reply starts at the first
    /// page it decodes, and big ones are served off the queue threads: the bytes must be those
    /// written, at aligned and unaligned offsets alike.
    @Test("reads decode in place in the ring's buffer, big ones on bulk threads", .timeLimit(.minutes(5)), arguments: ["identity", "aes-gcm"])
    func readsInPlace(codec: String) throws {
        try Self.withKernelRing(true) { available in
            try withLayers([codec], extra: ["--io-uring"]) { top, _, _ in
                let bytes = pattern((3 << 20) + 1234)
                try writeFile(top + "/f", bytes)
                try dropCaches()
                #expect(try readFile(top + "/f") == bytes, "read-ahead's page-aligned reads")
                let fd = open(top + "/f", O_RDONLY | wrapfs_O_DIRECT)
                #expect(fd >= 0)
                defer { close(fd) }
                // Direct reads reach the daemon as asked: unaligned ones start mid-page (copied).
                for (offset, count) in [(4096, 65536), (1, 8191), (12345, 100_000), (bytes.count - 100, 4096)] {
                    var got = [UInt8](repeating: 0, count: count)
                    let n = pread(fd, &got, count, off_t(offset))
                    #expect(n == min(count, bytes.count - offset))
                    #expect(Array(got[0..<max(n, 0)]) == Array(bytes[offset..<offset + max(n, 0)]), "at \(offset)")
                }
                let status = try statusJSON(top)
                let inPlace = status["io_uring_replies_in_place"] as? Int ?? -1
                let bulk = status["io_uring_bulk_reads"] as? Int ?? -1
                if available {
                    #expect(inPlace > 0, "replies decoded in the ring's buffer: \(inPlace)")
                    #expect(bulk > 0, "big reads served by bulk threads: \(bulk)")
                } else {
                    #expect(inPlace == 0 && bulk == 0)
                }
            }
        }
    }

    @Test("where the kernel does not offer it, /dev/fuse serves and the log says why")
    func notOffered() throws {
        try Self.withKernelRing(false) { _ in
            try withLayers(["identity"], extra: ["--io-uring"]) { top, _, mounts in
                try Data("through /dev/fuse\n".utf8).write(to: URL(fileURLWithPath: top + "/f"))
                #expect(try String(contentsOfFile: top + "/f", encoding: .utf8) == "through /dev/fuse\n")
                let status = try statusJSON(top)
                #expect(status["io_uring_queues"] as? Int == 0)
                #expect(mounts[0].log.contains("does not offer FUSE over io_uring"), "\(mounts[0].log)")
            }
        }
    }

    /// The queue threads run as SCHED_IDLE, which a CPU-bound thread beside them would starve:
    /// with a busy loop on every CPU, listing and reading a tree must still go at about the
    /// speed of /dev/fuse (without the watchdog that lifts SCHED_IDLE, the listing below took
    /// over a minute; with it, under a second, as over /dev/fuse).
    @Test("a busy loop on every CPU does not starve the queue threads", .timeLimit(.minutes(5)))
    func busyCPUs() throws {
        try Self.withKernelRing(true) { available in
            try withLayers(["identity"], extra: ["--io-uring"]) { top, _, _ in
                _ = try sh("cd '\(top)' && for i in $(seq 1 20); do mkdir d$i; for j in $(seq 1 100); do echo $i$j > d$i/f$j; done; done")
                let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
                let hogs = try (0..<cpus).map { try Child("/usr/bin/taskset", ["-c", "\($0)", "/bin/sh", "-c", "while :; do :; done"], outputPath: "/dev/null") }
                defer { hogs.forEach { $0.kill() } }
                _ = try sh("echo 3 > /proc/sys/vm/drop_caches")
                let started = Date()
                let listing = try run("/bin/sh", ["-c", "ls -lR '\(top)' | wc -l && cat '\(top)'/d*/f* | wc -l"], timeout: 120)
                let seconds = Date().timeIntervalSince(started)
                #expect(listing.status == 0 && !listing.timedOut)
                #expect(listing.output.contains("2000"), "every file read: \(listing.output)")
                #expect(seconds < 20, "2,000 files listed and read in \(seconds) s beside busy loops")
                if available { #expect(try statusJSON(top)["io_uring_requests"] as? Int ?? 0 > 2_000) }
            }
        }
    }

    /// When the daemon dies, the kernel cancels the ring's commands before it closes the
    /// connection: a request caught in between fails with ECANCELED (a cancelled command) or
    /// ECONNABORTED (a request the ring's abort ended) where /dev/fuse gives
    /// ENOTCONN; every later one gets ENOTCONN, and the dead mount unmounts as without the ring.
    @Test("a killed daemon: ENOTCONN (at first perhaps ECANCELED or ECONNABORTED), and the mount unmounts")
    func deadDaemon() throws {
        try Self.withKernelRing(true) { available in
            try withLayers(["rot"], extra: ["--io-uring"]) { top, _, mounts in
                try writeFile(top + "/held", pattern(10_000))
                let fd = open(top + "/held", O_RDONLY)
                #expect(fd >= 0)
                defer { close(fd) }
                if available { #expect(try Self.ringServes(top), "the mount serves through the ring") }
                kill(mounts[0].daemon.pid, SIGKILL)
                #expect(mounts[0].daemon.wait(timeout: 10))
                var byte: UInt8 = 0
                let first = pread(fd, &byte, 1, 0) == -1 ? errno : 0
                #expect([ENOTCONN, ECANCELED, ECONNABORTED].contains(first), "errno \(first)")
                #expect(pread(fd, &byte, 1, 0) == -1 && errno == ENOTCONN)
                let r = try run(Build.mountTool, ["unmount", top], timeout: 30)
                #expect(r.status == 0 && r.output.contains("daemon was gone"), "\(r.output)")
                #expect(!MountTable.isMounted(top))
            }
        }
    }

    /// Once root turns enable_uring off, the kernel refuses the ring's commits: a request the ring
    /// took can be answered no other way, and its caller would wait unkillable. The daemon ends
    /// the mount instead (the callers get an error), and says why.
    @Test("enable_uring turned off under a ring mount: callers get an error, not a hang, and the log says why",
          .timeLimit(.minutes(2)))
    func turnedOff() throws {
        try Self.withKernelRing(true) { available in
            try withLayers(["identity"], extra: ["--io-uring"]) { top, _, mounts in
                try writeFile(top + "/a", [1, 2, 3])
                guard available else {
                    #expect(try statusJSON(top)["io_uring_queues"] as? Int == 0, "no ring without the kernel's support")
                    return
                }
                try #require(try Self.ringServes(top), "the mount serves through the ring")
                try "N".write(toFile: Self.parameter, atomically: false, encoding: .utf8)
                // A request from each CPU: each queue's armed entry takes one, and its commit is refused.
                let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
                for cpu in 0..<cpus {
                    let r = try run("/usr/bin/taskset", ["-c", "\(cpu)", "/usr/bin/ls", "-l", top + "/"], timeout: 20)
                    #expect(!r.timedOut, "ls on CPU \(cpu) hung")
                }
                #expect(mounts[0].daemon.wait(timeout: 20), "the daemon ended the mount")
                #expect(mounts[0].log.contains("the kernel refused queue"), "\(mounts[0].log)")
                #expect(!MountTable.isMounted(top))
            }
        }
    }

    @Test("--io-uring with --splice is refused")
    func spliceRefused() throws {
        let scratch = try Scratch("r")
        defer { scratch.remove() }
        let r = try run(Build.mountTool, [try scratch.dir("lower"), try scratch.dir("mnt"), "--io-uring", "--splice"])
        #expect(r.status != 0 && r.output.contains("--io-uring and --splice"), "\(r.output)")
    }
}
