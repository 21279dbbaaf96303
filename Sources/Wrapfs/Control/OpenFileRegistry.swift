// OpenFileRegistry: the open files of one mount and who opened them, for `status` and its graph.
import Glibc
import CFuse

/// Who opened a file: the process from the request's context, read at open.
struct Opener {
    let pid: pid_t
    let uid: uid_t
    /// The process's command name (/proc/PID/comm) at open; "?" if it was already gone.
    let command: String

    init(_ req: fuse_req_t, registry: OpenFileRegistry) {
        let ctx = fuse_req_ctx(req)?.pointee
        pid = ctx?.pid ?? 0
        uid = ctx?.uid ?? 0
        command = registry.command(of: pid)
    }

    static func command(of pid: pid_t) -> String {
        let fd = open("/proc/\(pid)/comm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "?" }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return "?" }
        return String(decoding: buf[0..<n], as: UTF8.self).trimmingSuffix("\n")
    }
}

/// Open files (FUSE file handles) of one mount. Taken briefly at open and release only.
final class OpenFileRegistry {
    private var files: [ObjectIdentifier: OpenFile] = [:]
    private let lock = Mutex()

    func add(_ file: OpenFile) { lock.locked { files[ObjectIdentifier(file)] = file } }
    func remove(_ file: OpenFile) { _ = lock.locked { files.removeValue(forKey: ObjectIdentifier(file)) } }
    var count: Int { lock.locked { files.count } }
    var all: [OpenFile] { lock.locked { Array(files.values) } }
    /// An open of `inode` whose lower descriptor can be read.
    func readable(of inode: Inode) -> OpenFile? { lock.locked { files.values.first { $0.inode === inode && $0.readable } } }

    /// The command of `pid`; the last process's is remembered (tar opens thousands of files).
    func command(of pid: pid_t) -> String {
        if let last = lock.locked({ lastCommand }), last.pid == pid { return last.command }
        let command = Opener.command(of: pid)
        lock.locked { lastCommand = (pid, command) }
        return command
    }
    private var lastCommand: (pid: pid_t, command: String)?
}

private extension String {
    func trimmingSuffix(_ s: String) -> String { hasSuffix(s) ? String(dropLast(s.count)) : self }
}
