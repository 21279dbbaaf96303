// Statistics: per-operation counts and latency histograms, codec byte counts and errors, for `status`.
import Glibc
import CFuse

/// The FUSE operations the layer serves, as `status` names them.
enum Operation: Int, CaseIterable {
    case lookup, forget, getattr, statx, setattr, access, statfs, mknod, mkdir, symlink, readlink, unlink, rmdir, rename, link
    case create, open, read, write, flush, release, fsync, fallocate, lseek, ioctl
    case opendir, readdir, readdirplus, releasedir, fsyncdir
    case setxattr, getxattr, listxattr, removexattr

    var name: String { "\(self)" }


    /// The operation the calling thread is serving (set by `Layer.timed`), for counting errors.
    /// (A pthread key, not a C `__thread` behind a `static inline` helper: each object file of
    /// a release build got its own copy of that, and errors went uncounted.)
    static var current: Operation? { Operation(rawValue: Int(bitPattern: pthread_getspecific(key)) - 1) }
    static func begin(_ op: Operation) { pthread_setspecific(key, UnsafeRawPointer(bitPattern: op.rawValue + 1)) }
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()
}

/// Lock-free counters (relaxed atomic adds on one block of memory) that every request updates:
/// two clock reads and three adds per request, no allocation.
final class Statistics: @unchecked Sendable {
    /// Latency buckets: four per power of two of nanoseconds, up to 2^48 ns (3 days).
    static let buckets = 48 * 4
    private static let perOperation = 2 + buckets  // count, errors, histogram
    /// Counters beside the per-operation ones: the codec's bytes and failures, and the layer's shortcuts.
    private enum Tally: Int, CaseIterable { case plainEncoded, bytesEncoded, bytesDecoded, plainDecoded, decodeFailures, encodeFailures, listedKnown, wroteBehind, listingSeeks }
    private static let errnoSlots = 160

    private let counters: UnsafeMutablePointer<UInt64>
    private let size: Int
    private let tallyBase: Int
    private let errnoBase: Int
    let started = wrapfs_monotonic_ns()
    let startedWallClock = time(nil)

    init() {
        tallyBase = Operation.allCases.count * Self.perOperation
        errnoBase = tallyBase + Tally.allCases.count
        size = errnoBase + Self.errnoSlots
        counters = .allocate(capacity: size)
        counters.initialize(repeating: 0, count: size)
    }

    deinit { counters.deallocate() }

    @inline(__always) func now() -> UInt64 { wrapfs_monotonic_ns() }

    /// Records one `op` that started at `start` (from `now()`).
    @inline(__always) func record(_ op: Operation, since start: UInt64) {
        let base = op.rawValue * Self.perOperation
        wrapfs_counter_add(counters + base, 1)
        wrapfs_counter_add(counters + base + 2 + Self.bucket(now() &- start), 1)
    }

    /// Records an error reply with `errno` to `op`.
    @inline(__always) func failed(_ op: Operation?, errno: Int32) {
        if let op { wrapfs_counter_add(counters + op.rawValue * Self.perOperation + 1, 1) }
        wrapfs_counter_add(counters + errnoBase + Int(min(max(errno, 0), Int32(Self.errnoSlots - 1))), 1)
    }

    @inline(__always) func encoded(plain: Int, into bytes: Int) {
        wrapfs_counter_add(counters + tallyBase + Tally.plainEncoded.rawValue, UInt64(plain))
        wrapfs_counter_add(counters + tallyBase + Tally.bytesEncoded.rawValue, UInt64(bytes))
    }
    @inline(__always) func decoded(_ bytes: Int, into plain: Int) {
        wrapfs_counter_add(counters + tallyBase + Tally.bytesDecoded.rawValue, UInt64(bytes))
        wrapfs_counter_add(counters + tallyBase + Tally.plainDecoded.rawValue, UInt64(plain))
    }
    func decodeFailed() { wrapfs_counter_add(counters + tallyBase + Tally.decodeFailures.rawValue, 1) }
    func encodeFailed() { wrapfs_counter_add(counters + tallyBase + Tally.encodeFailures.rawValue, 1) }
    /// A readdirplus entry named without attributes because the kernel had them (`Layer.readdir`).
    func listedKnown() { wrapfs_counter_add(counters + tallyBase + Tally.listedKnown.rawValue, 1) }
    /// A handle-less listing resumed by reopening the lower directory at a cookie (`ListingStreams`).
    func listingSought() { wrapfs_counter_add(counters + tallyBase + Tally.listingSeeks.rawValue, 1) }
    /// A write acknowledged before it was stored (`WriteBehind`).
    func wroteBehind() { wrapfs_counter_add(counters + tallyBase + Tally.wroteBehind.rawValue, 1) }

    /// Bucket of a latency: 4 * floor(log2 ns) + the two bits after the leading one.
    @inline(__always) static func bucket(_ ns: UInt64) -> Int {
        let v = max(ns, 1)
        let log2 = 63 - v.leadingZeroBitCount
        let sub = log2 >= 2 ? Int((v >> UInt64(log2 - 2)) & 3) : 0
        return min(log2 * 4 + sub, buckets - 1)
    }
    /// The largest latency (ns) bucket `b` holds.
    static func upperBound(_ b: Int) -> UInt64 {
        let log2 = b / 4, sub = UInt64(b % 4)
        if log2 < 2 { return UInt64(1) << UInt64(log2 + 1) - 1 }
        return ((4 + sub + 1) << UInt64(log2 - 2)) - 1
    }

    // MARK: reading

    struct OperationSummary {
        let name: String
        let count: UInt64
        let errors: UInt64
        /// Percentiles 50, 90, 99 and the largest bucket seen, in microseconds (bucket upper bounds).
        let p50, p90, p99, max: Double
    }

    func operations() -> [OperationSummary] {
        Operation.allCases.compactMap { op in
            let base = op.rawValue * Self.perOperation
            let count = wrapfs_counter_load(counters + base)
            guard count > 0 else { return nil }
            let hist = (0..<Self.buckets).map { wrapfs_counter_load(counters + base + 2 + $0) }
            let total = hist.reduce(0, +)
            func percentile(_ p: Double) -> Double {
                let goal = UInt64((Double(total) * p).rounded(.up))
                var seen: UInt64 = 0
                for (b, n) in hist.enumerated() {
                    seen += n
                    if seen >= max(goal, 1) { return Double(Self.upperBound(b)) / 1000 }
                }
                return 0
            }
            let top = hist.lastIndex { $0 > 0 }.map { Double(Self.upperBound($0)) / 1000 } ?? 0
            return OperationSummary(name: op.name, count: count, errors: wrapfs_counter_load(counters + base + 1),
                                    p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99), max: top)
        }
    }

    var codecBytes: (plainEncoded: UInt64, encoded: UInt64, decoded: UInt64, plainDecoded: UInt64) {
        (load(.plainEncoded), load(.bytesEncoded), load(.bytesDecoded), load(.plainDecoded))
    }
    var decodeFailures: UInt64 { load(.decodeFailures) }
    var encodeFailures: UInt64 { load(.encodeFailures) }
    var listedKnownCount: UInt64 { load(.listedKnown) }
    var wroteBehindCount: UInt64 { load(.wroteBehind) }
    var listingSeekCount: UInt64 { load(.listingSeeks) }
    private func load(_ c: Tally) -> UInt64 { wrapfs_counter_load(counters + tallyBase + c.rawValue) }

    /// Error replies by errno name (those that happened).
    func errors() -> [(errno: Int32, name: String, count: UInt64)] {
        (0..<Int32(Self.errnoSlots)).compactMap { e in
            let n = wrapfs_counter_load(counters + errnoBase + Int(e))
            return n > 0 ? (e, Self.errnoName(e), n) : nil
        }
    }

    static func errnoName(_ e: Int32) -> String {
        let known: [Int32: String] = [EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", EBADF: "EBADF", EACCES: "EACCES",
                                      EEXIST: "EEXIST", EXDEV: "EXDEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
                                      EINVAL: "EINVAL", EFBIG: "EFBIG", ENOSPC: "ENOSPC", EROFS: "EROFS",
                                      ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS", ENOTEMPTY: "ENOTEMPTY",
                                      ELOOP: "ELOOP", ENODATA: "ENODATA", EOPNOTSUPP: "EOPNOTSUPP", ERANGE: "ERANGE",
                                      ENOTTY: "ENOTTY", ENXIO: "ENXIO", EDQUOT: "EDQUOT", ENOTCONN: "ENOTCONN",
                                      EAGAIN: "EAGAIN", EMLINK: "EMLINK", ESTALE: "ESTALE", E2BIG: "E2BIG"]
        return known[e] ?? "errno \(e)"
    }
}
