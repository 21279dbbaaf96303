// The differential checker on every codec and on stacked layers: 20,000 operations per configuration.
import Foundation
import Testing

@Suite("Differential checker", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct DifferentialTests {
    /// The checker's seeds: 1-4, or those WRAPFS_SEEDS lists ("301,302,303") to try other
    /// random sequences without editing the suite.
    static let seeds: [UInt64] = {
        let listed = (ProcessInfo.processInfo.environment["WRAPFS_SEEDS"] ?? "").split(separator: ",").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
        return listed.isEmpty ? [1, 2, 3, 4] : listed
    }()
    static let operationsPerSeed = 5_000

    static func check(_ codecs: [String], seed: UInt64, operations: Int = operationsPerSeed, extra: [String] = []) throws {
        try withLayers(codecs, extra: extra) { top, _, _ in
            let scratch = try Scratch("ref")
            defer { scratch.remove() }
            let checker = DifferentialChecker(subject: top, reference: try scratch.dir("plain"), seed: seed)
            // Requests libfuse reads by splice miss the relabelling that serves O_TMPFILE (docs/LIBC.md).
            checker.subjectMakesTemporaryFiles = !extra.contains("--splice")
            checker.subjectRefusesFarSizes = !extra.contains("--writeback-cache")  // the kernel takes such writes
            checker.subjectRefusesFarRanges = codecs.count == 1  // a stacked layer's lower is a FUSE mount
            try checker.run(operations: operations)
        }
    }

    @Test("identity", .timeLimit(.minutes(10)), arguments: seeds)
    func identity(seed: UInt64) throws { try Self.check(["identity"], seed: seed) }

    /// Written data taken by splice (libfuse reads every request out of a pipe).
    @Test("identity with --splice", .timeLimit(.minutes(10)), arguments: seeds.prefix(2))
    func identitySpliced(seed: UInt64) throws { try Self.check(["identity"], seed: seed, extra: ["--splice"]) }

    @Test("gzip with 4 KiB pages", .timeLimit(.minutes(10)), arguments: seeds.prefix(1))
    func gzipSmallPages(seed: UInt64) throws { try Self.check(["gzip"], seed: seed, extra: ["--codec-option", "page-size=4096"]) }

    @Test("the chain gzip,rot in one layer", .timeLimit(.minutes(10)), arguments: seeds.prefix(1))
    func gzipRotChain(seed: UInt64) throws { try Self.check(["gzip,rot"], seed: seed) }
}

/// rot, gzip and their stacks: a suite of its own so that it runs beside the one above (each
/// suite runs its tests one at a time, and suites run side by side).
@Suite("Differential checker, rot and gzip", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct DifferentialRotGzipTests {
    typealias Checker = DifferentialTests

    @Test("rot", .timeLimit(.minutes(10)), arguments: Checker.seeds)
    func rot(seed: UInt64) throws { try Checker.check(["rot"], seed: seed) }

    @Test("rot stacked on rot", .timeLimit(.minutes(10)), arguments: Checker.seeds)
    func rotOnRot(seed: UInt64) throws { try Checker.check(["rot", "rot"], seed: seed) }

    @Test("gzip", .timeLimit(.minutes(10)), arguments: Checker.seeds)
    func gzip(seed: UInt64) throws { try Checker.check(["gzip"], seed: seed) }

    @Test("gzip stacked under rot", .timeLimit(.minutes(10)), arguments: Checker.seeds)
    func gzipUnderRot(seed: UInt64) throws { try Checker.check(["gzip", "rot"], seed: seed) }
}

/// A suite of its own so that it runs beside the long checker suite rather than after it.
@Suite("Differential checker, writeback cache", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct WritebackCacheTests {
    @Test("with the FUSE writeback cache (--writeback-cache)", .timeLimit(.minutes(10)), arguments: ["identity", "gzip", "aes-gcm"])
    func writebackCache(codec: String) throws {
        try DifferentialTests.check([codec], seed: 6, operations: 3_000, extra: ["--writeback-cache"])
    }
}
