// Test fixtures: scratch directories, running commands with timeouts, and real mounts that always unmount.
import Foundation
import CFuse
import Glibc
import Testing

/// Where the package's built products are (the test bundle sits beside them).
enum Build {
    static var productsDirectory: URL {
        if let dir = ProcessInfo.processInfo.environment["WRAPFS_PRODUCTS"] { return URL(fileURLWithPath: dir) }
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // Inside a .xctest bundle the binary sits a few levels below the products directory.
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("wrapfs-mount").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir
    }
    static var mountTool: String { productsDirectory.appendingPathComponent("wrapfs-mount").path }
    /// The package's checkout (for include/ and examples/).
    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
    }
}

/// FUSE is usable here. Under CI the tests run regardless, so a missing FUSE fails them.
enum Fuse {
    static var available: Bool {
        let fd = open("/dev/fuse", O_RDWR)
        if fd < 0 { return false }
        close(fd)
        return true
    }
    static var required: Bool { available || ProcessInfo.processInfo.environment["CI"] == "true" }
}

struct CommandResult {
    let status: Int32
    let output: String
    let timedOut: Bool
}

/// A child process started with posix_spawn, its output going to `outputPath`.
final class Child {
    let pid: pid_t
    private(set) var exitStatus: Int32?

    init(_ tool: String, _ args: [String], outputPath: String, environment: [String: String]? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else the test process has open: cases run side by side, and a child inheriting
        // another case's descriptor (a file held open in bindfs, say) would keep it open for
        // its whole life (a mount daemon's: minutes).
        wrapfs_spawn_close_from(&actions, 3)
        let cArgs = ([tool] + args).map { strdup($0) } + [nil]
        let env = ProcessInfo.processInfo.environment.merging(environment ?? [:]) { $1 }
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
        // Children start with no signal blocked and the usual dispositions, whatever the test
        // runner's threads have blocked or ignored (SIGTERM must end a `sleep` or a daemon).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), defaults = sigset_t()
        sigemptyset(&none)
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, tool, &actions, &attributes, cArgs, cEnv)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        self.pid = pid
    }

    var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid || (r < 0 && errno == ECHILD) {
            exitStatus = status
            return false
        }
        return true
    }

    /// Waits up to `timeout` seconds; true when the child has ended.
    @discardableResult
    func wait(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning {
            if Date() > deadline { return false }
            usleep(10_000)
        }
        return true
    }

    func kill(_ signal: Int32 = SIGKILL) {
        if isRunning { Glibc.kill(pid, signal) }
    }

    /// Asks the child to end (SIGTERM), then kills it if it has not within `timeout` seconds.
    func stop(timeout: Double = 10) {
        kill(SIGTERM)
        if !wait(timeout: timeout) { kill(); wait(timeout: 10) }
    }
}

/// Runs a command, killing it after `timeout` seconds. Output is stdout and stderr together.
/// (posix_spawn and waitpid, not Foundation's Process: a daemon that the command leaves behind
/// must not keep us waiting.)
@discardableResult
func run(_ tool: String, _ args: [String], cwd: String? = nil, timeout: Double = 120, environment: [String: String]? = nil) throws -> CommandResult {
    let outPath = "/tmp/wrapfs-cmd-\(UUID().uuidString)"
    defer { unlink(outPath) }
    let script = (cwd.map { "cd '\($0)' && " } ?? "") + "exec \"$0\" \"$@\""
    let child = try Child("/bin/sh", ["-c", script, tool] + args, outputPath: outPath, environment: environment)
    let timedOut = !child.wait(timeout: timeout)
    if timedOut {
        child.kill()
        child.wait(timeout: 10)
    }
    let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let status = child.exitStatus ?? 0
    let exit: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return CommandResult(status: timedOut ? -1 : exit, output: text, timedOut: timedOut)
}

/// setpriv's arguments that run a command as uid and gid 65534 with no supplementary groups.
let asUid65534 = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

/// Runs `command` as uid 65534 (`cwd` is entered before the switch, as root).
@discardableResult
func runAsUid65534(_ command: [String], cwd: String? = nil) throws -> CommandResult {
    try run(asUid65534[0], Array(asUid65534.dropFirst()) + command, cwd: cwd)
}

/// A copy of wrapfs-mount in `dir` (which must be 0755) that uid 65534 can run wherever the
/// checkout lies (/root is 0700). Made by a child: a descriptor open for writing in this process,
/// inherited by another test's fork, would fail the exec with ETXTBSY.
func mountToolCopy(in dir: String) throws -> String {
    let tool = dir + "/wrapfs-mount"
    let r = try run("/usr/bin/install", ["-m", "755", Build.mountTool, tool])
    guard r.status == 0 else { throw MountFailure(description: "cannot copy the tool: \(r.output)") }
    return tool
}

/// A scratch directory removed at the end.
final class Scratch {
    let path: String
    init(_ tag: String = "t") throws {
        var template = Array("/tmp/wrapfs-\(tag)-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
        path = String(cString: p)
    }
    func dir(_ name: String) throws -> String {
        let p = path + "/" + name
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
    func remove() {
        _ = try? run("/bin/rm", ["-rf", path], timeout: 120)
    }
}

enum MountTable {
    static func isMounted(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first.map(String.init) == path }
    }
}

struct MountFailure: Error, CustomStringConvertible {
    let description: String
}

/// A layer mounted by the real wrapfs-mount, in the foreground as a child process.
final class Mounted {
    let lower: String
    let point: String
    let daemon: Child
    let logPath: String
    private var unmounted = false

    /// Mounts `lower` on `point` with `codec` and waits until the mount is there.
    convenience init(lower: String, point: String, codec: String, extra: [String] = []) throws {
        try self.init(point: point, lower: lower, arguments: [lower, point, "--codec", codec, "-f"] + extra)
    }

    /// Runs `tool` with `arguments` (a daemon that stays in the foreground and mounts `point`)
    /// and waits until the mount is there.
    init(point: String, lower: String = "", tool: String = Build.mountTool, arguments: [String]) throws {
        self.lower = lower
        self.point = point
        logPath = point + ".log"
        daemon = try Child(tool, arguments, outputPath: logPath)
        let deadline = Date().addingTimeInterval(20)
        while !MountTable.isMounted(point) {
            if !daemon.isRunning || Date() > deadline {
                unmount()
                throw MountFailure(description: "\(tool) \(arguments.joined(separator: " ")) did not mount \(point): \(log)")
            }
            usleep(20_000)
        }
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Unmounts, lazily if it must, and reaps the daemon; safe to call twice.
    func unmount() {
        if unmounted { return }
        unmounted = true
        if MountTable.isMounted(point) {
            let r = try? run("/usr/bin/fusermount3", ["-u", point], timeout: 20)
            if r?.status != 0 { _ = try? run("/usr/bin/fusermount3", ["-u", "-z", point], timeout: 20) }
        }
        if !daemon.wait(timeout: 10) {
            daemon.kill()
            if MountTable.isMounted(point) { _ = try? run("/usr/bin/fusermount3", ["-u", "-z", point], timeout: 20) }
            daemon.wait(timeout: 10)
        }
    }

    deinit { unmount() }
}

/// Mounts a stack of layers over a fresh lower directory, runs `body` with the top mount point
/// and the lower directory, and unmounts everything whatever happens.
func withLayers<R>(_ codecs: [String], extra: [String] = [], lowerIn base: String? = nil,
                   prepareLower: ((String) throws -> Void)? = nil,
                   _ body: (_ top: String, _ lower: String, _ mounts: [Mounted]) throws -> R) throws -> R {
    let scratch = try Scratch("m")
    defer { scratch.remove() }
    let lower = try base.map { b -> String in
        let p = b + "/lower-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    } ?? scratch.dir("lower")
    defer { if base != nil { _ = try? run("/bin/rm", ["-rf", lower]) } }
    try prepareLower?(lower)
    var mounts: [Mounted] = []
    defer { for m in mounts.reversed() { m.unmount() } }
    var below = lower
    for (i, codec) in codecs.enumerated() {
        let point = try scratch.dir("mnt\(i)")
        var layerExtra = extra
        if codec.split(separator: ",").contains(where: { ["aes-gcm", "aes-ctr"].contains($0) }) && !extra.contains("--passfile") {
            // An encrypting layer needs a volume: made here, unlocked by a passphrase file.
            let volume = try TestVolume(scratch)
            try volume.create(below, codec: codec)
            layerExtra += ["--passfile", volume.passfile]
        }
        mounts.append(try Mounted(lower: below, point: point, codec: codec, extra: layerExtra))
        below = point
    }
    do {
        return try body(below, lower, mounts)
    } catch {
        // The daemons' own words help most when something differs: their logs, and their status
        // (which operation answered an error, which files are open).
        let statuses = mounts.map { m in "--- \(m.point) status:\n" + ((try? run(Build.mountTool, ["status", m.point], timeout: 10))?.output ?? "none") }
        let logs = (statuses + mounts.map { "--- \($0.point) log (tail):\n" + String($0.log.suffix(4000)) }).joined(separator: "\n")
        throw MountFailure(description: "\(error)\n\(logs)")
    }
}
