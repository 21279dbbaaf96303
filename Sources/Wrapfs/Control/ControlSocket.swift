// ControlSocket: where a mount's control socket lives, and the one-request client `status` uses.
import Foundation
import Glibc
import CFuse

/// Each mount answers on a Unix socket (mode 0600, in a directory only its owner can enter)
/// whose path follows from the mount point and the mounting user, so `wrapfs-mount status
/// MOUNTPOINT` finds it without being told.
public enum ControlSocket {
    /// The directory of user `uid`'s control sockets: /run/wrapfs for root, else
    /// /run/user/UID/wrapfs when that runtime directory exists, else /tmp/wrapfs-UID.
    public static func directory(uid: uid_t) -> String {
        if uid == 0 { return "/run/wrapfs" }
        var st = stat()
        if stat("/run/user/\(uid)", &st) == 0, st.st_uid == uid { return "/run/user/\(uid)/wrapfs" }
        return "/tmp/wrapfs-\(uid)"
    }

    /// The socket of the mount at `mountpoint` (absolute, resolved) made by user `uid`.
    public static func path(mountpoint: String, uid: uid_t) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a: short, stable names
        for b in mountpoint.utf8 { hash = (hash ^ UInt64(b)) &* 0x0100_0000_01b3 }
        let hex = String(hash, radix: 16)
        return directory(uid: uid) + "/" + String(repeating: "0", count: 16 - hex.count) + hex + ".sock"
    }

    /// Sends `request` to the socket at `path` and returns the whole answer.
    public static func ask(_ path: String, _ request: String, timeoutSeconds: Int = 10) throws -> Data {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno.current }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = try address(path)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw Errno.current }
        let line = Array((request + "\n").utf8)
        guard write(fd, line, line.count) == line.count else { throw Errno.current }
        var answer = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 { if errno == EINTR { continue }; throw Errno.current }
            if n == 0 { break }
            answer.append(contentsOf: buf[0..<n])
        }
        return answer
    }

    static func address(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw Errno.ENAMETOOLONG }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return addr
    }
}

/// Serves one mount's control socket on its own thread until stopped.
final class ControlServer: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private unowned let layer: Layer
    private let mountpoint: String

    private init(path: String, fd: Int32, layer: Layer, mountpoint: String) {
        self.path = path
        self.fd = fd
        self.layer = layer
        self.mountpoint = mountpoint
    }

    /// Binds the socket of `layer` mounted at `mountpoint` and starts answering.
    static func start(_ layer: Layer, mountpoint: String) throws -> ControlServer {
        let uid = geteuid()
        let dir = ControlSocket.directory(uid: uid)
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw Errno.current }
        var st = stat()
        // Refuse a directory someone else made or opened up: the socket must be the owner's alone.
        guard lstat(dir, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == uid, st.st_mode & 0o077 == 0 else {
            layer.log.warning("no control socket: \(dir) is not a private directory of uid \(uid)")
            throw Errno.EPERM
        }
        let path = ControlSocket.path(mountpoint: mountpoint, uid: uid)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno.current }
        unlink(path)  // a daemon that died left it
        var addr = try ControlSocket.address(path)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, chmod(path, 0o600) == 0, listen(fd, 8) == 0 else {
            let e = Errno.current
            close(fd)
            layer.log.warning("no control socket at \(path): \(e)")
            throw e
        }
        let server = ControlServer(path: path, fd: fd, layer: layer, mountpoint: mountpoint)
        layer.log.info("control socket: \(path)")
        Thread { server.acceptLoop() }.start()
        return server
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))  // wakes accept
        unlink(path)
    }

    private func acceptLoop() {
        // Stop signals belong to the session's own handling, never to this thread.
        var all = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_BLOCK, &all, nil)
        defer { close(fd) }
        while true {
            let client = wrapfs_accept(fd)
            if client < 0 {
                switch errno {
                case EINTR, ECONNABORTED: continue
                // Out of descriptors for now (open files hold them): the caller waits in the
                // backlog, and the socket must outlive the shortage.
                case EMFILE, ENFILE, ENOBUFS, ENOMEM: usleep(100_000); continue
                default: return  // shut down by `stop`
                }
            }
            answer(client)
            close(client)
        }
    }

    /// One request line ("status" or "graph"), one JSON answer.
    private func answer(_ client: Int32) {
        var peer: uid_t = 0
        // Only the daemon's own user (and root) may look: the graph names other users' processes.
        guard wrapfs_peer_uid(client, &peer) == 0, peer == geteuid() || peer == 0 else { return }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 256)
        var request: [UInt8] = []
        while !request.contains(0x0A) && request.count < 256 {
            let n = read(client, &buf, buf.count)
            if n <= 0 { break }
            request += buf[0..<n]
        }
        let command = String(decoding: request.prefix { $0 != 0x0A }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        let report: [String: Any]
        switch command {
        case "status": report = layer.statusReport(mountpoint: mountpoint)
        case "graph": report = layer.holdingGraph(mountpoint: mountpoint)
        default: report = ["error": "unknown request '\(command)' (status or graph)"]
        }
        guard let data = try? JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else { return }
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(client, raw.baseAddress! + done, raw.count - done)
                if n <= 0 { if errno == EINTR { continue }; return }
                done += n
            }
        }
    }
}
