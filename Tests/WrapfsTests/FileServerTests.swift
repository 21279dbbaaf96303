// The file-server view: status and its holding graph, the control socket, namespaces served by one daemon.
import Foundation
import Glibc
import Testing

@Suite("File server", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct FileServerTests {
    @Test("status: codec, lower, uptime, counts and latencies per operation, codec bytes, errors, open files",
          .timeLimit(.minutes(3)), arguments: ["rot", "gzip", "aes-gcm"])
    func status(codec: String) throws {
        try withLayers([codec]) { top, lower, _ in
            let data = noise(300_000, seed: 3)
            try writeDurably(top + "/x", data)
            #expect(try readWhole(top + "/x") == data)
            try FileManager.default.createDirectory(atPath: top + "/d/e", withIntermediateDirectories: true)
            #expect(rmdir(top + "/d") == -1 && errno == ENOTEMPTY)
            let child = try holder([(top + "/x", "<"), (top + "/y", ">>")])
            defer { child.stop() }
            var report: [String: Any] = [:]
            let held = try eventually {
                report = try statusJSON(top)
                return (report["open_files"] as? [[String: Any]] ?? []).filter { ($0["pid"] as? Int) == Int(child.pid) }.count == 2
            }
            #expect(held, "\(report)")
            #expect(report["codec"] as? String == codec)
            #expect(report["lower"] as? String == lower)
            #expect((report["uptime_seconds"] as? Double ?? -1) >= 0)
            let ops = Dictionary(uniqueKeysWithValues: (report["operations"] as? [[String: Any]] ?? []).map { ($0["name"] as! String, $0) })
            for name in ["lookup", "create", "write", "read", "open", "release", "rmdir"] {
                #expect((ops[name]?["count"] as? Int ?? 0) > 0, "no \(name) counted: \(ops.keys.sorted())")
                #expect((ops[name]?["p50_us"] as? Double ?? 0) > 0)
                #expect((ops[name]?["p99_us"] as? Double ?? 0) >= (ops[name]?["p50_us"] as? Double ?? 0))
            }
            #expect((ops["rmdir"]?["errors"] as? Int ?? 0) >= 1, "the ENOTEMPTY rmdir is counted against rmdir")
            #expect(((report["errors"] as? [String: Any])?["ENOTEMPTY"] as? Int ?? 0) >= 1)
            let bytes = report["codec_bytes"] as? [String: Any] ?? [:]
            #expect((bytes["plain_encoded"] as? Int ?? 0) >= data.count)
            #expect((bytes["plain_decoded"] as? Int ?? 0) >= data.count)
            let open = (report["open_files"] as? [[String: Any]] ?? []).filter { ($0["pid"] as? Int) == Int(child.pid) }
            let byPath = Dictionary(uniqueKeysWithValues: open.map { ($0["path"] as? String ?? "?", $0) })
            #expect(byPath["/x"]?["mode"] as? String == "r")
            #expect(byPath["/y"]?["mode"] as? String == "wa")
            #expect(byPath["/x"]?["command"] as? String == "sh" || byPath["/x"]?["command"] as? String == "sleep")
            child.stop()
            #expect(try eventually { (try statusJSON(top)["open_files"] as? [[String: Any]] ?? []).isEmpty })
            // The text form for people.
            let text = try run(Build.mountTool, ["status", top])
            #expect(text.status == 0 && text.output.contains("codec:       \(codec)") && text.output.contains("open files: 0"), "\(text.output)")
        }
    }

    @Test("status counts EIO replies and decode failures (a damaged aes-gcm page)", .timeLimit(.minutes(2)))
    func statusCountsDamage() throws {
        try withLayers(["aes-gcm"]) { top, lower, _ in
            try writeDurably(top + "/f", noise(20_000, seed: 4))
            let fd = open(lowerFiles(lower)[0], O_RDWR)
            var byte: UInt8 = 0
            pread(fd, &byte, 1, 100)
            byte ^= 0x40
            pwrite(fd, &byte, 1, 100)
            close(fd)
            try dropCaches()
            #expect(throws: (any Error).self) { try readWhole(top + "/f") }
            let report = try statusJSON(top)
            #expect((report["eio_replies"] as? Int ?? 0) >= 1, "\(report)")
            #expect((report["decode_failures"] as? Int ?? 0) >= 1)
        }
    }

    @Test("status --graph: process -> open file -> inode (every hard-link name) -> lower file, as JSON and dot",
          .timeLimit(.minutes(2)), arguments: ["rot", "aes-gcm"])
    func graph(codec: String) throws {
        try withLayers([codec]) { top, lower, _ in
            try FileManager.default.createDirectory(atPath: top + "/dir", withIntermediateDirectories: true)
            try writeDurably(top + "/dir/a", Array("shared".utf8))
            #expect(link(top + "/dir/a", top + "/b") == 0)
            try writeDurably(top + "/c", Array("alone".utf8))
            let child = try holder([(top + "/b", "<"), (top + "/c", ">>")])
            defer { child.stop() }
            var g: [String: Any] = [:]
            #expect(try eventually { g = try statusJSON(top, graph: true); return (g["open_files"] as? [Any])?.count == 2 })
            let processes = g["processes"] as? [[String: Any]] ?? []
            #expect(processes.contains { $0["pid"] as? Int == Int(child.pid) })
            let inodes = g["inodes"] as? [[String: Any]] ?? []
            let names = inodes.map { $0["names"] as? [String] ?? [] }.sorted { $0.count > $1.count }
            #expect(names == [["/b", "/dir/a"], ["/c"]], "\(inodes)")
            #expect(inodes.first { ($0["names"] as? [String])?.count == 2 }?["nlink"] as? Int == 2)
            let lowerFilesShown = g["lower_files"] as? [[String: Any]] ?? []
            #expect(lowerFilesShown.count == 2)
            #expect(lowerFilesShown.allSatisfy { ($0["path"] as? String ?? "").hasPrefix(lower + "/") }, "\(lowerFilesShown)")
            let edges = g["edges"] as? [[String: Any]] ?? []
            for label in ["holds", "maps to", "pages in"] {
                #expect(edges.filter { $0["label"] as? String == label }.count == 2, "\(label): \(edges)")
            }
            // Every edge joins nodes the graph lists.
            let ids = Set((processes + (g["open_files"] as? [[String: Any]] ?? []) + inodes + lowerFilesShown).compactMap { $0["id"] as? String })
            #expect(edges.allSatisfy { ids.contains($0["from"] as? String ?? "") && ids.contains($0["to"] as? String ?? "") })
            // Files: PREFIX.json and PREFIX.dot.
            let scratch = try Scratch("graph")
            defer { scratch.remove() }
            let r = try run(Build.mountTool, ["status", "--graph", top, "--output", scratch.path + "/g"])
            #expect(r.status == 0, "\(r.output)")
            let dot = try String(contentsOfFile: scratch.path + "/g.dot", encoding: .utf8)
            #expect(dot.hasPrefix("digraph wrapfs {") && dot.contains("-> ") && dot.contains("/dir/a"))
            #expect(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch.path + "/g.json"))) is [String: Any])
            if FileManager.default.isExecutableFile(atPath: "/usr/bin/dot") {
                let check = try run("/bin/sh", ["-c", "/usr/bin/dot -Tsvg '\(scratch.path)/g.dot' > /dev/null"])
                #expect(check.status == 0, "\(check.output)")
            }
        }
    }

    @Test("the control socket is 0600 in a private directory, gone after unmount; status refuses what is not a wrapfs mount",
          .timeLimit(.minutes(2)))
    func controlSocket() throws {
        var socketPath = ""
        // allow_other and a reachable mount point: another user gets as far as the socket.
        try withLayers(["identity"], extra: ["-o", "allow_other"]) { top, _, mounts in
            // The daemon prints the line just after the mount appears: wait for it.
            #expect(eventually { mounts[0].log.contains("control socket of \(top): ") }, "\(mounts[0].log)")
            let mountLog = mounts[0].log
            guard let line = mountLog.split(separator: "\n").first(where: { $0.contains("control socket of \(top): ") }) else { return }
            socketPath = String(line.split(separator: " ").last!)
            var st = stat()
            #expect(eventually { stat(socketPath, &st) == 0 })
            #expect(st.st_mode & S_IFMT == S_IFSOCK && st.st_mode & 0o777 == 0o600)
            var dir = stat()
            #expect(stat((socketPath as NSString).deletingLastPathComponent, &dir) == 0 && dir.st_mode & 0o077 == 0)
            // Another user cannot reach it (the directory and the socket are the daemon user's).
            #expect(chmod((top as NSString).deletingLastPathComponent, 0o755) == 0)
            let bin = try Scratch("tool")
            defer { bin.remove() }
            #expect(chmod(bin.path, 0o755) == 0)
            let other = try runAsUid65534([try mountToolCopy(in: bin.path), "status", top])
            #expect(other.status != 0 && (other.output.contains("does not answer on") || other.output.contains("refused the request")),
                    "\(other.status): \(other.output)")
        }
        var st = stat()
        #expect(stat(socketPath, &st) == -1 && errno == ENOENT, "the socket outlived the mount")
        let scratch = try Scratch("plain")
        defer { scratch.remove() }
        let r = try run(Build.mountTool, ["status", scratch.path])
        #expect(r.status == 67 && r.output.contains("not a wrapfs mount"), "\(r.status): \(r.output)")
    }

    // MARK: namespaces

    @Test("namespaces are disjoint: '..' at a root stays outside the layer, rename and link across fail with EXDEV, symlinks are not followed",
          .timeLimit(.minutes(2)), arguments: ["identity", "aes-gcm"])
    func namespacesIsolated(codec: String) throws {
        try withNamespaces(codec) { points, lower, _ in
            let (a, b) = (points[0], points[1])
            try writeDurably(a + "/secret", Array("one's".utf8))
            try writeDurably(b + "/other", Array("two's".utf8))
            #expect(try FileManager.default.contentsOfDirectory(atPath: a) == ["secret"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: b) == ["other"])
            #expect(lowerFiles(lower + "/one").count == 1 && lowerFiles(lower + "/two").count == 1)
            // '..' of a namespace root is the directory the mount point is in, never LOWER.
            var up = stat(), parent = stat()
            #expect(stat(a + "/..", &up) == 0 && stat((a as NSString).deletingLastPathComponent, &parent) == 0)
            #expect(up.st_ino == parent.st_ino && up.st_dev == parent.st_dev)
            #expect(access(a + "/../two", F_OK) == -1)
            // Across namespaces: EXDEV, as between any two mounts.
            #expect(rename(a + "/secret", b + "/secret") == -1 && errno == EXDEV)
            #expect(link(a + "/secret", b + "/secret") == -1 && errno == EXDEV)
            // A symlink is stored and read back as written; the daemon never follows it.
            #expect(symlink("../two/other", a + "/escape") == 0)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: a + "/escape") == "../two/other")
            #expect(open(a + "/escape", O_RDONLY) == -1 && errno == ENOENT)
            #expect(open(a + "/escape", O_RDONLY | O_NOFOLLOW) == -1 && errno == ELOOP)
            // The volume file is outside every namespace.
            #expect(!FileManager.default.fileExists(atPath: a + "/.wrapfs.json"))
        }
    }

    @Test("a namespace directory that is a symlink is refused; names that are not one component are refused", .timeLimit(.minutes(1)))
    func namespaceRefusals() throws {
        let scratch = try Scratch("nsbad")
        defer { scratch.remove() }
        let lower = try scratch.dir("lower"), point = try scratch.dir("mnt")
        #expect(symlink("/etc", lower + "/evil") == 0)
        let r = try run(Build.mountTool, [lower, "--namespace", "evil=\(point)"], timeout: 30)
        #expect(r.status == 66, "\(r.status): \(r.output)")
        #expect(!MountTable.isMounted(point))
        for bad in ["../x", "a/b", "..", ""] {
            let r = try run(Build.mountTool, [lower, "--namespace", "\(bad)=\(point)"], timeout: 30)
            #expect(r.status == 64, "\(bad): \(r.status): \(r.output)")
        }
        let twice = try run(Build.mountTool, [lower, "--namespace", "a=\(point)", "--namespace", "b=\(point)"], timeout: 30)
        #expect(twice.status == 67, "\(twice.output)")
    }

    @Test("a file hard-linked into two namespaces is one file: writes through either are seen at once through the other, by read and by mmap",
          .timeLimit(.minutes(3)), arguments: ["identity", "rot", "gzip", "aes-gcm"])
    func crossNamespaceLink(codec: String) throws {
        try withNamespaces(codec) { points, lower, daemon in
            let (a, b) = (points[0], points[1])
            let page = 4096
            var content = noise(5 * page + 123, seed: 11)
            try writeDurably(a + "/shared", content)
            let stored = lowerFiles(lower + "/one")
            #expect(stored.count == 1)
            #expect(link(stored[0], lower + "/two/" + (stored[0] as NSString).lastPathComponent) == 0)
            var sa = stat(), sb = stat()
            #expect(stat(a + "/shared", &sa) == 0 && stat(b + "/shared", &sb) == 0)
            #expect(sa.st_ino == sb.st_ino && sa.st_nlink == 2 && sb.st_size == content.count)

            let fa = open(a + "/shared", O_RDWR), fb = open(b + "/shared", O_RDWR)
            defer { close(fa); close(fb) }
            let length = 8 * page
            guard let ma = mmap(nil, length, PROT_READ, MAP_SHARED, fa, 0), ma != MAP_FAILED,
                  let mb = mmap(nil, length, PROT_READ, MAP_SHARED, fb, 0), mb != MAP_FAILED else {
                Issue.record("mmap failed: \(SysError.current)")
                return
            }
            defer { munmap(ma, length); munmap(mb, length) }
            func mapped(_ m: UnsafeMutableRawPointer, _ n: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: m, count: n)) }
            #expect(mapped(ma, content.count) == content && mapped(mb, content.count) == content)

            for round in 0..<6 {
                let (writer, name) = round % 2 == 0 ? (fb, "b") : (fa, "a")
                let at = (round * 2_777) % (content.count - 3000)
                let chunk = noise(3000, seed: UInt64(100 + round))
                #expect(pwrite(writer, chunk, chunk.count, off_t(at)) == chunk.count)
                content.replaceSubrange(at..<at + chunk.count, with: chunk)
                #expect(mapped(ma, content.count) == content, "round \(round): mmap through a after a write through \(name)")
                #expect(mapped(mb, content.count) == content, "round \(round): mmap through b after a write through \(name)")
                var buf = [UInt8](repeating: 0, count: content.count)
                #expect(pread(round % 2 == 0 ? fa : fb, &buf, buf.count, 0) == content.count && buf == content, "round \(round): read")
            }
            // A size change through one is seen through the other at once.
            let grown = noise(2 * page, seed: 77)
            #expect(pwrite(fa, grown, grown.count, off_t(content.count)) == grown.count)
            content += grown
            #expect(fstat(fb, &sb) == 0 && sb.st_size == content.count)
            #expect(try readWhole(b + "/shared") == content)
            #expect(ftruncate(fb, 1000) == 0)
            #expect(fstat(fa, &sa) == 0 && sa.st_size == 1000)
            #expect(try readWhole(a + "/shared") == Array(content.prefix(1000)))

            // Both mounts writing the same pages at once: no deadlock, and both end up showing the same bytes.
            let region = 16 * page
            #expect(ftruncate(fa, off_t(region)) == 0)
            DispatchQueue.concurrentPerform(iterations: 2) { k in
                let fd = k == 0 ? fa : fb
                var rng = SplitMix64(seed: UInt64(k + 5))
                for _ in 0..<150 {
                    let chunk = noise(page, seed: rng.next())
                    _ = pwrite(fd, chunk, page, off_t(Int(rng.next() % UInt64(region / page)) * page))
                }
            }
            #expect(try eventually(5) { try readWhole(a + "/shared") == readWhole(b + "/shared") })
            #expect(daemon.daemon.isRunning)
        }
    }

    @Test("the differential checker on a namespace mount, with a second namespace busy beside it", .timeLimit(.minutes(5)),
          arguments: ["rot", "aes-gcm"])
    func checkerOnNamespace(codec: String) throws {
        try withNamespaces(codec) { points, _, _ in
            let scratch = try Scratch("ref")
            defer { scratch.remove() }
            let busy = try Child("/bin/sh", ["-c", "while :; do cp -r /etc/ssl '\(points[1])/x' 2>/dev/null; rm -rf '\(points[1])/x'; done"],
                                 outputPath: "/dev/null")
            defer { busy.stop() }
            let checker = DifferentialChecker(subject: points[0], reference: try scratch.dir("plain"), seed: 9)
            try checker.run(operations: 3_000)
        }
    }

    @Test("SIGTERM to a daemon unmounts all its mounts and ends it (namespaces, and a single mount)", .timeLimit(.minutes(1)))
    func namespacesStop() throws {
        try withNamespaces("rot", names: ["a", "b", "c"]) { points, _, daemon in
            try writeDurably(points[2] + "/f", [1, 2, 3])
            daemon.daemon.kill(SIGTERM)
            #expect(daemon.daemon.wait(timeout: 20), "the daemon did not end")
            #expect(points.allSatisfy { !MountTable.isMounted($0) }, "mounts left")
        }
        // The same for a daemon serving one mount (libfuse's own signal handling).
        try withLayers(["rot"]) { top, _, mounts in
            try writeDurably(top + "/f", [1, 2, 3])
            mounts[0].daemon.kill(SIGTERM)
            #expect(mounts[0].daemon.wait(timeout: 20), "the daemon did not end")
            #expect(!MountTable.isMounted(top))
        }
        // ... even when whoever started it had SIGTERM blocked (the mask is inherited across exec).
        let scratch = try Scratch("sigmask")
        defer { scratch.remove() }
        let lower = try scratch.dir("lower"), point = try scratch.dir("mnt")
        let blockThenExec = "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); os.execv(sys.argv[1], sys.argv[1:])"
        let daemon = try Mounted(point: point, lower: lower, tool: "/usr/bin/python3",
                                 arguments: ["-c", blockThenExec, Build.mountTool, lower, point, "--codec", "rot", "-f"])
        defer { daemon.unmount() }
        daemon.daemon.kill(SIGTERM)
        #expect(daemon.daemon.wait(timeout: 20), "a daemon started with SIGTERM blocked did not end on it")
        #expect(!MountTable.isMounted(point))
    }
}
