// Fixtures for the reliability tests: a layer that can be killed and remounted, sized tmpfs lowers, raw I/O helpers.
import Foundation
import Glibc
import Testing

/// Every codec (and a chain) the reliability tests run on.
let reliabilityCodecs = ["identity", "rot", "gzip", "aes-gcm", "aes-ctr", "gzip,aes-gcm"]

/// A lower directory and mount point for one codec, mounted as often as a test needs (an
/// encrypting codec gets a volume first).
struct LayerSetup {
    let codec: String
    let lower: String
    let point: String
    /// Mount options given by the test.
    let options: [String]
    /// `--passfile FILE` for an encrypted volume, else nothing.
    let passphrase: [String]

    init(_ scratch: Scratch, codec: String, lower: String? = nil, extra: [String] = []) throws {
        self.codec = codec
        self.lower = try lower ?? scratch.dir("lower")
        try FileManager.default.createDirectory(atPath: self.lower, withIntermediateDirectories: true)
        point = try scratch.dir("mnt")
        options = extra
        if codec.contains("aes-") {
            let volume = try TestVolume(scratch)
            try volume.create(self.lower, codec: codec)
            passphrase = ["--passfile", volume.passfile]
        } else {
            passphrase = []
        }
    }

    func mount() throws -> Mounted { try Mounted(lower: lower, point: point, codec: codec, extra: options + passphrase) }

    /// `wrapfs-mount fsck` on the lower directory (gzip and aes-gcm pages carry a check).
    func fsck() throws -> CommandResult { try run(Build.mountTool, ["fsck", lower] + passphrase) }
    var pagesCarryCheck: Bool { codec.contains("gzip") || codec.contains("aes-gcm") }
    /// Plain bytes per page with the built-in codecs' defaults (a gzip chain takes gzip's).
    var pageSize: Int { codec.contains("gzip") ? 65536 : 4096 }
}

/// Bytes from a seeded generator (the same seed, the same bytes).
func noise(_ n: Int, seed: UInt64) -> [UInt8] {
    var state = seed &+ 0x9E37_79B9_7F4A_7C15
    var out = [UInt8](repeating: 0, count: n)
    var i = 0
    while i < n {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        var word = state ^ (state >> 29)
        for _ in 0..<8 where i < n {
            out[i] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            i += 1
        }
    }
    return out
}

struct SysError: Error, Equatable, CustomStringConvertible {
    let code: Int32
    static var current: SysError { SysError(code: errno) }
    var description: String { "\(String(cString: strerror(code))) (\(code))" }
}

/// Writes `bytes` to a new file, fsyncs it and its directory.
func writeDurably(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw SysError.current }
    defer { close(fd) }
    guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else { throw SysError.current }
    let dir = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY)
    if dir >= 0 { fsync(dir); close(dir) }
}

/// Reads a whole file with read(2); an error (EIO for a page that does not decode) is thrown.
func readWhole(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw SysError.current }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n < 0 { throw SysError.current }
        if n == 0 { return out }
        out += chunk[0..<n]
    }
}

/// Mounts a tmpfs of `megabytes` in a scratch directory for `body`, and always unmounts it.
func withSizedTmpfs<R>(megabytes: Int, _ body: (_ dir: String, _ scratch: Scratch) throws -> R) throws -> R {
    try withSmallFileSystem("tmpfs", megabytes: megabytes, body)
}

/// Makes an ext4 image of `megabytes` at `image` (no blocks reserved for root, so a full disk is
/// full for the daemon too) and mounts it on `dir` by a loop device.
func mountExt4Image(_ image: String, megabytes: Int, on dir: String) throws {
    try sh("truncate -s \(megabytes)M '\(image)' && mkfs.ext4 -q -F -m 0 '\(image)' && mount -o loop '\(image)' '\(dir)'")
}

/// A file system of `kind` (tmpfs, or ext4 on a loop image: `mountExt4Image`) of
/// `megabytes`, mounted in a scratch directory for `body`, and always unmounted.
func withSmallFileSystem<R>(_ kind: String, megabytes: Int, _ body: (_ dir: String, _ scratch: Scratch) throws -> R) throws -> R {
    let s = try Scratch("small")
    defer { s.remove() }
    let dir = try s.dir("fs")
    if kind == "ext4" {
        try mountExt4Image(s.path + "/fs.img", megabytes: megabytes, on: dir)
    } else {
        try sh("mount -t tmpfs -o size=\(megabytes)m tmpfs '\(dir)'")
    }
    defer { _ = try? run("/bin/umount", ["-l", dir]) }
    return try body(dir, s)
}

/// Drops the kernel's page cache (and its dentries and inodes) so reads reach the daemon. No
/// sync first: the pages of a mount without the writeback cache are clean, and a global sync
/// waits for every other test's writes.
func dropCaches() throws { _ = try sh("echo 3 > /proc/sys/vm/drop_caches") }

/// The regular files below `dir` (recursively), largest first, without the volume file.
func lowerFiles(_ dir: String) -> [String] {
    let e = FileManager.default.enumerator(atPath: dir)
    var found: [(String, Int64)] = []
    while let rel = e?.nextObject() as? String {
        let p = dir + "/" + rel
        guard !rel.hasSuffix(".wrapfs.json"), let st = try? statOf(p), st.st_mode & S_IFMT == S_IFREG else { continue }
        found.append((p, Int64(st.st_size)))
    }
    return found.sorted { $0.1 > $1.1 }.map(\.0)
}

/// The daemon's open descriptors and resident memory (KiB), from /proc.
func descriptorCount(_ pid: pid_t) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
}
/// What the daemon's descriptors point at (for failure messages).
func heldLowerFiles(_ pid: pid_t) -> [String] {
    let dir = "/proc/\(pid)/fd"
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + $0) }
}
func residentKiB(_ pid: pid_t) -> Int {
    let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
}

/// strace attached to every thread of `pid`, tracing `calls` and, with `inject`, injecting that
/// fault into them (`error=EIO`, `signal=KILL:when=1`), logging to `log`. Returns once attached.
func attachStrace(to pid: pid_t, calls: String, inject: String? = nil, log: String) throws -> Child {
    var args = ["-f", "-p", "\(pid)", "-e", "trace=\(calls)"]
    if let inject { args += ["-e", "inject=\(calls):\(inject)"] }
    let tracer = try Child("/usr/bin/strace", args, outputPath: log)
    usleep(1_000_000)  // strace attached
    return tracer
}
