// Test fixtures for the file-server view: namespace mounts served by one daemon, status queries.
import Foundation
import Glibc

/// One daemon serving `names` of a fresh lower directory, each on its own mount point; runs
/// `body` and unmounts every mount whatever happens.
func withNamespaces<R>(_ codec: String, names: [String] = ["one", "two"], extra: [String] = [],
                       _ body: (_ points: [String], _ lower: String, _ daemon: Mounted) throws -> R) throws -> R {
    let scratch = try Scratch("ns")
    defer { scratch.remove() }
    let lower = try scratch.dir("lower")
    var args = [lower, "--codec", codec, "-f"] + extra
    if codec.split(separator: ",").contains(where: { ["aes-gcm", "aes-ctr"].contains($0) }) {
        let volume = try TestVolume(scratch)
        try volume.create(lower, codec: codec)
        args += ["--passfile", volume.passfile]
    }
    let points = try names.map { try scratch.dir("mnt-\($0)") }
    for (name, point) in zip(names, points) { args += ["--namespace", "\(name)=\(point)"] }
    let daemon = try Mounted(point: points[0], lower: lower, arguments: args)
    defer {
        // The daemon ends when its last mount goes: the others first, then the one it waits on.
        for point in points.dropFirst() where MountTable.isMounted(point) {
            if (try? run("/usr/bin/fusermount3", ["-u", point], timeout: 20))?.status != 0 {
                _ = try? run("/usr/bin/fusermount3", ["-u", "-z", point], timeout: 20)
            }
        }
        daemon.unmount()
    }
    let deadline = Date().addingTimeInterval(20)
    while !points.allSatisfy(MountTable.isMounted) {
        if Date() > deadline { throw MountFailure(description: "namespaces did not all mount: \(daemon.log)") }
        usleep(20_000)
    }
    do {
        return try body(points, lower, daemon)
    } catch {
        throw MountFailure(description: "\(error)\n--- daemon log (tail):\n\(String(daemon.log.suffix(4000)))")
    }
}

/// `wrapfs-mount status` output parsed (`--json`, or `--graph --format json`).
func statusJSON(_ point: String, graph: Bool = false) throws -> [String: Any] {
    let r = try run(Build.mountTool, ["status", point] + (graph ? ["--graph", "--format", "json"] : ["--json"]), timeout: 30)
    guard r.status == 0, let object = try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any] else {
        throw MountFailure(description: "status of \(point) failed (\(r.status)): \(r.output)")
    }
    return object
}

/// A process that holds `files` open (read for "<", append for ">>") until stopped.
func holder(_ files: [(String, String)]) throws -> Child {
    let opens = files.enumerated().map { i, f in "exec \(i + 3)\(f.1)'\(f.0)'" }.joined(separator: "; ")
    return try Child("/bin/sh", ["-c", opens + "; exec sleep 60"], outputPath: "/dev/null")
}

/// Polls `condition` up to `seconds`.
func eventually(_ seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}
