// `wrapfs-mount status MOUNTPOINT`: asks a mount's daemon for its state and its holding graph.
import ArgumentParser
import Foundation
import Glibc
import Wrapfs

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a mount's codec, uptime, operation counts and latencies, codec bytes, errors and open files.",
        discussion: """
        The daemon answers on its control socket (mode 0600; /run/wrapfs for root, else \
        /run/user/UID/wrapfs or /tmp/wrapfs-UID), found from the mount point. --graph writes who \
        holds what (process -> open file -> inode -> lower file) as JSON and Graphviz dot. \
        Exit codes: 0 ok, 64 bad option, 67 not a wrapfs mount, 1 the daemon did not answer.
        """)

    @Argument(help: "A wrapfs mount point.") var mountpoint: String
    @Flag(help: "Print the status as JSON.") var json = false
    @Flag(help: "The holding graph instead of the status.") var graph = false
    @Option(help: ArgumentHelp("With --graph: where to write PREFIX.json and PREFIX.dot.", valueName: "PREFIX"))
    var output = "wrapfs-graph"
    @Option(help: ArgumentHelp("With --graph: print one form on standard output instead of writing files.", valueName: "json|dot"))
    var format: String?

    func validate() throws {
        if let format, format != "json" && format != "dot" { throw ValidationError("--format takes json or dot, got '\(format)'") }
        if format != nil && !graph { throw ValidationError("--format goes with --graph") }
    }

    func run() throws { try Failure.reported(status) }

    private func status() throws {
        guard let real = realpath(mountpoint, nil) else {
            throw Failure("\(mountpoint): \(String(cString: strerror(errno)))", Exit.badMountpoint)
        }
        let point = String(cString: real)
        free(real)
        guard let mount = MountInfo.all().last(where: { $0.point == point }), mount.type == "fuse.wrapfs" else {
            throw Failure("\(point) is not a wrapfs mount", Exit.badMountpoint)
        }
        let socket = ControlSocket.path(mountpoint: point, uid: mount.fuseOwner ?? geteuid())
        let answer: Data
        do {
            answer = try ControlSocket.ask(socket, graph ? "graph" : "status")
        } catch {
            throw Failure("the daemon of \(point) does not answer on \(socket): \(error)", Exit.failure)
        }
        guard !answer.isEmpty, let report = try JSONSerialization.jsonObject(with: answer) as? [String: Any] else {
            throw Failure("the daemon of \(point) refused the request (only its user and root may ask)", Exit.failure)
        }
        if let error = report["error"] as? String { throw Failure("the daemon said: \(error)", Exit.failure) }
        if graph {
            let dot = Self.dot(report)
            switch format {
            case "json": print(String(decoding: answer, as: UTF8.self))
            case "dot": print(dot, terminator: "")
            default:
                try answer.write(to: URL(fileURLWithPath: output + ".json"))
                try Data(dot.utf8).write(to: URL(fileURLWithPath: output + ".dot"))
                print("wrote \(output).json and \(output).dot")
            }
        } else if json {
            print(String(decoding: answer, as: UTF8.self))
        } else {
            print(Self.text(report), terminator: "")
        }
    }

    /// The status for people.
    static func text(_ r: [String: Any]) -> String {
        var out = ""
        func line(_ s: String) { out += s + "\n" }
        line("mount point: \(r["mountpoint"] ?? "?")")
        line("lower:       \(r["lower"] ?? "?")")
        line("codec:       \(r["codec"] ?? "?")")
        line("daemon:      pid \(r["pid"] ?? "?"), up \(r["uptime_seconds"] ?? "?") s, serving \(r["mounts_in_daemon"] ?? 1) mount(s)")
        if let b = r["codec_bytes"] as? [String: Any] {
            line("codec bytes: encoded \(b["plain_encoded"] ?? 0) plain -> \(b["encoded"] ?? 0); decoded \(b["decoded"] ?? 0) -> \(b["plain_decoded"] ?? 0) plain")
        }
        line("errors:      EIO replies \(r["eio_replies"] ?? 0), decode failures \(r["decode_failures"] ?? 0), encode failures \(r["encode_failures"] ?? 0)")
        if let errors = r["errors"] as? [String: Any], !errors.isEmpty {
            line("             " + errors.keys.sorted().map { "\($0) \(errors[$0]!)" }.joined(separator: ", "))
        }
        line("listings:    \(r["listed_without_attributes"] ?? 0) names the kernel held given without attributes")
        if let handles = r["directory_handles"] as? Bool {
            line(handles ? "directories: opened with a handle each (OPENDIR, RELEASEDIR)"
                 : "directories: opened by the kernel without asking; \(r["listings_resumed_by_seek"] ?? 0) listing requests reopened the lower directory at a cookie")
        }
        line("writes:      \(r["writes_acknowledged_before_stored"] ?? 0) acknowledged before they were stored")
        if let queues = r["io_uring_queues"] as? Int, queues > 0 {
            line("io_uring:    \(queues) queues, \(r["io_uring_requests"] ?? 0) requests served through them, \(r["io_uring_replies_in_place"] ?? 0) replies decoded in place, \(r["io_uring_bulk_reads"] ?? 0) big reads on bulk threads")
        } else {
            line("io_uring:    off (requests come through /dev/fuse)")
        }
        line("")
        line("operation        count   errors    p50 us    p90 us    p99 us    max us")
        for op in r["operations"] as? [[String: Any]] ?? [] {
            func num(_ k: String) -> String { "\(op[k] ?? "")" }
            line(num("name").padding(toLength: 14, withPad: " ", startingAt: 0)
                 + [num("count"), num("errors"), num("p50_us"), num("p90_us"), num("p99_us"), num("max_us")]
                    .map { String(repeating: " ", count: max(0, 10 - $0.count)) + $0 }.joined())
        }
        let open = r["open_files"] as? [[String: Any]] ?? []
        line("")
        line("open files: \(open.count)")
        for f in open {
            line("  pid \(f["pid"] ?? "?") (\(f["command"] ?? "?")) \(f["mode"] ?? "") \(f["path"] ?? "?")")
        }
        return out
    }

    /// The holding graph in Graphviz dot.
    static func dot(_ g: [String: Any]) -> String {
        func q(_ s: Any?) -> String {
            "\"" + "\(s ?? "")".replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n") + "\""
        }
        var out = "digraph wrapfs {\n  rankdir=LR;\n  label=\(q("wrapfs \(g["mountpoint"] ?? "") (\(g["codec"] ?? "")) over \(g["lower"] ?? "")"));\n"
        for p in g["processes"] as? [[String: Any]] ?? [] {
            out += "  \(q(p["id"])) [shape=box, label=\(q("pid \(p["pid"] ?? "")\n\(p["command"] ?? "")"))];\n"
        }
        for f in g["open_files"] as? [[String: Any]] ?? [] {
            out += "  \(q(f["id"])) [shape=note, label=\(q("open (\(f["mode"] ?? ""))"))];\n"
        }
        for i in g["inodes"] as? [[String: Any]] ?? [] {
            let names = (i["names"] as? [String] ?? []).joined(separator: "\n")
            out += "  \(q(i["id"])) [shape=ellipse, label=\(q("inode \(i["node_id"] ?? "")\n\(names)"))];\n"
        }
        for l in g["lower_files"] as? [[String: Any]] ?? [] {
            out += "  \(q(l["id"])) [shape=cylinder, label=\(q("\(l["path"] ?? "")\ndev \(l["dev"] ?? "") ino \(l["ino"] ?? "")"))];\n"
        }
        for e in g["edges"] as? [[String: Any]] ?? [] {
            out += "  \(q(e["from"])) -> \(q(e["to"])) [label=\(q(e["label"]))];\n"
        }
        return out + "}\n"
    }
}
