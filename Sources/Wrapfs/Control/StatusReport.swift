// StatusReport: what `wrapfs-mount status` shows (counts, latencies, bytes, errors, open files)
// and the holding graph (process -> open file -> upper inode -> lower file).
import Foundation
import Glibc
import CFuse

extension Layer {
    /// The mount's state as JSON-ready values.
    func statusReport(mountpoint: String) -> [String: Any] {
        let uptime = Double(stats.now() &- stats.started) / 1e9
        let bytes = stats.codecBytes
        let operations: [[String: Any]] = stats.operations().map {
            ["name": $0.name, "count": $0.count, "errors": $0.errors,
             "p50_us": $0.p50, "p90_us": $0.p90, "p99_us": $0.p99, "max_us": $0.max]
        }
        var errors: [String: Any] = [:]
        for e in stats.errors() { errors[e.name] = e.count }
        let open = openFiles.all.map { file -> [String: Any] in
            ["pid": file.opener.pid, "command": file.opener.command, "uid": file.opener.uid,
             "mode": Self.modeText(file.flags), "inode": inodes.id(of: file.inode),
             "path": upperPath(of: file.inode) ?? "(removed)"]
        }
        return [
            "mountpoint": mountpoint,
            "lower": lowerPath,
            "codec": codec.name,
            "pid": getpid(),
            "mounted_at": mountedAt,
            "uptime_seconds": (uptime * 1000).rounded() / 1000,
            "mounts_in_daemon": group.count,
            "operations": operations,
            "codec_bytes": ["plain_encoded": bytes.plainEncoded, "encoded": bytes.encoded,
                            "decoded": bytes.decoded, "plain_decoded": bytes.plainDecoded],
            "errors": errors,
            "eio_replies": stats.errors().first { $0.errno == EIO }?.count ?? 0,
            "decode_failures": stats.decodeFailures,
            "encode_failures": stats.encodeFailures,
            "listed_without_attributes": stats.listedKnownCount,
            "directory_handles": !handlelessDirectories,
            "listings_resumed_by_seek": stats.listingSeekCount,
            "writes_acknowledged_before_stored": stats.wroteBehindCount,
            "io_uring_queues": fuseRing?.queueCount ?? 0,
            "io_uring_requests": fuseRing?.requestsServed ?? 0,
            "io_uring_replies_in_place": fuseRing?.repliesInPlace ?? 0,
            "io_uring_bulk_reads": fuseRing?.bulkReads ?? 0,
            "open_files": open.sorted { ($0["pid"] as! pid_t, $0["path"] as! String) < ($1["pid"] as! pid_t, $1["path"] as! String) },
        ]
    }

    /// Who holds what: processes hold open files, an open file maps to an upper inode (with
    /// every name it has in this mount: hard links are several names of one inode), and the
    /// inode's pages live in one lower file.
    func holdingGraph(mountpoint: String) -> [String: Any] {
        let open = openFiles.all
        var inodesHeld: [ObjectIdentifier: Inode] = [:]
        for file in open { inodesHeld[ObjectIdentifier(file.inode)] = file.inode }
        let names = namesInMount(of: Set(inodesHeld.values.map(\.key)))
        var processes: [pid_t: String] = [:]
        var edges: [[String: Any]] = []
        var files: [[String: Any]] = []
        for file in open {
            let handle = "fh:" + String(UInt(bitPattern: ObjectIdentifier(file)), radix: 16)
            processes[file.opener.pid] = file.opener.command
            files.append(["id": handle, "pid": file.opener.pid, "mode": Self.modeText(file.flags),
                          "inode": "inode:\(inodes.id(of: file.inode))"])
            edges.append(["from": "pid:\(file.opener.pid)", "to": handle, "label": "holds"])
            edges.append(["from": handle, "to": "inode:\(inodes.id(of: file.inode))", "label": "maps to"])
        }
        var upper: [[String: Any]] = []
        var lower: [[String: Any]] = []
        for inode in inodesHeld.values {
            let id = "inode:\(inodes.id(of: inode))"
            let lowerId = "lower:\(inode.key.dev):\(inode.key.ino)"
            let st = try? inode.fd.stat()
            var shown = names[inode.key] ?? []
            if shown.isEmpty, let p = upperPath(of: inode) { shown = [p] }
            upper.append(["id": id, "node_id": inodes.id(of: inode), "names": shown.sorted(),
                          "nlink": st.map { Int($0.st_nlink) } ?? 0, "size": st.map { Int($0.st_size) } ?? 0])
            lower.append(["id": lowerId, "path": (try? inode.fd.readLinkProc()) ?? "?",
                          "dev": inode.key.dev, "ino": inode.key.ino, "lower_size": st.map { Int($0.st_size) } ?? 0])
            edges.append(["from": id, "to": lowerId, "label": "pages in"])
        }
        return [
            "mountpoint": mountpoint,
            "lower": lowerPath,
            "codec": codec.name,
            "pid": getpid(),
            "processes": processes.map { ["id": "pid:\($0.key)", "pid": $0.key, "command": $0.value] as [String: Any] }
                .sorted { ($0["pid"] as! pid_t) < ($1["pid"] as! pid_t) },
            "open_files": files.sorted { ($0["id"] as! String) < ($1["id"] as! String) },
            "inodes": upper.sorted { ($0["id"] as! String) < ($1["id"] as! String) },
            "lower_files": lower.sorted { ($0["id"] as! String) < ($1["id"] as! String) },
            "edges": edges,
        ]
    }

    static func modeText(_ flags: Int32) -> String {
        var s: String
        switch flags & O_ACCMODE {
        case O_RDONLY: s = "r"
        case O_WRONLY: s = "w"
        default: s = "rw"
        }
        if flags & O_APPEND != 0 { s += "a" }
        return s
    }

    /// The path of `inode` in this mount, from its lower path (nil once removed or outside).
    func upperPath(of inode: Inode) -> String? {
        if inode === inodes.root { return "/" }
        guard let full = try? inode.fd.readLinkProc(), let rootPath = try? inodes.root.fd.readLinkProc() else { return nil }
        let prefix = rootPath == "/" ? "/" : rootPath + "/"
        guard full.hasPrefix(prefix), !full.hasSuffix(" (deleted)") else { return nil }
        var dir = inodes.root.fd
        var opened: [FileDescriptor] = []
        defer { opened.forEach { $0.close() } }
        var shown: [String] = []
        let parts = full.dropFirst(prefix.count).split(separator: "/")
        for (i, part) in parts.enumerated() {
            let upper = String(part).withCString { shownName($0, inDirectory: dir.rawValue) }
            guard let upper else { return nil }
            shown.append(String(cString: upper))
            if i < parts.count - 1 {
                guard let next = try? String(part).withCString({ try dir.openAt($0, O_PATH | O_NOFOLLOW | O_DIRECTORY) }) else { return nil }
                opened.append(next)
                dir = next
            }
        }
        return "/" + shown.joined(separator: "/")
    }

    /// Every name in this mount of the files `keys`, by a walk of the mount's tree (at most
    /// 200,000 entries: an operator's request, not a request path).
    func namesInMount(of keys: Set<InodeKey>) -> [InodeKey: [String]] {
        var found: [InodeKey: [String]] = [:]
        guard !keys.isEmpty else { return found }
        var budget = 200_000
        func walk(_ dirFd: FileDescriptor, _ path: String, isRoot: Bool) {
            let fd = wrapfs_openat(dirFd.rawValue, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
            guard fd >= 0, let stream = fdopendir(fd) else { if fd >= 0 { close(fd) }; return }
            defer { closedir(stream) }
            while budget > 0, let ent = Glibc.readdir(stream) {
                budget -= 1
                let lname = wrapfs_dirent_name(ent)!
                if strcmp(lname, ".") == 0 || strcmp(lname, "..") == 0 { continue }
                if isRoot && isHidden(Layer.bytes(lname)) { continue }
                guard let upper = shownName(lname, inDirectory: fd) else { continue }
                let name = path + "/" + String(cString: upper)
                let key = InodeKey(dev: dirFd.key.dev, ino: UInt64(ent.pointee.d_ino))
                if keys.contains(key) { found[key, default: []].append(name) }
                if ent.pointee.d_type == UInt8(DT_DIR), let sub = try? FileDescriptor(rawValue: fd).openAt(lname, O_PATH | O_NOFOLLOW | O_DIRECTORY) {
                    walk(sub, name, isRoot: false)
                    sub.close()
                }
            }
        }
        walk(inodes.root.fd, "", isRoot: true)
        return found
    }
}

private extension FileDescriptor {
    var key: InodeKey { (try? stat()).map(InodeKey.init) ?? InodeKey(dev: 0, ino: 0) }
}
