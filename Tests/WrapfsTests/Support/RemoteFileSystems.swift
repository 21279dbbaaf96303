// Fixtures for lower file systems without shared writable mmap: GlusterFS (two client mounts of
// one volume, as two hosts would have) and sshfs over an OpenSSH server on 127.0.0.1.
import Foundation
import Glibc
import Testing

/// Tools a test needs. Outside CI a missing tool skips the test; under CI (CI=true) the test
/// runs and its fixture fails with the missing tool's name.
enum Tools {
    static func present(_ paths: [String]) -> Bool {
        ProcessInfo.processInfo.environment["CI"] == "true" || paths.allSatisfy { access($0, X_OK) == 0 }
    }
    static func require(_ paths: [String], package: String) throws {
        for p in paths where access(p, X_OK) != 0 {
            throw MountFailure(description: "\(p) is missing: install \(package) (apt-get install -y \(package))")
        }
    }
    static let gluster = ["/usr/sbin/glusterd", "/usr/sbin/gluster", "/sbin/mount.glusterfs"]
    static let sshfs = ["/usr/bin/sshfs", "/usr/sbin/sshd", "/usr/bin/ssh-keygen"]
}

/// A one-brick GlusterFS volume on this machine, mounted twice with direct-io-mode=enable.
/// Starts glusterd unless one runs already; `tearDown` undoes everything it did (unmounts,
/// stops and deletes the volume, stops the glusterd it started, by its pid).
final class GlusterVolume {
    let scratch: Scratch
    let name = "wrapfs\(UInt32.random(in: 0...UInt32.max))"
    private(set) var mounts: [String] = []
    private var glusterd: Child?
    private var created = false

    init(mounts count: Int = 2) throws {
        try Tools.require(Tools.gluster, package: "glusterfs-server glusterfs-client")
        scratch = try Scratch("gluster")
        do {
            try start(count)
        } catch {
            tearDown()
            throw error
        }
    }

    private func start(_ count: Int) throws {
        if try run("/usr/bin/pgrep", ["-x", "glusterd"]).status != 0 {
            glusterd = try Child("/usr/sbin/glusterd", ["--no-daemon"], outputPath: scratch.path + "/glusterd.log")
        }
        // glusterd answers once its management port is up.
        let deadline = Date().addingTimeInterval(60)
        while try gluster(["volume", "list"], timeout: 20).status != 0 {
            if Date() > deadline || glusterd?.isRunning == false {
                throw MountFailure(description: "glusterd did not come up: \((try? String(contentsOfFile: scratch.path + "/glusterd.log", encoding: .utf8)) ?? "")")
            }
            usleep(200_000)
        }
        let host = ProcessInfo.processInfo.hostName
        let brick = try scratch.dir("brick")
        try check(gluster(["volume", "create", name, "\(host):\(brick)", "force"]), "volume create")
        created = true
        try check(gluster(["volume", "start", name]), "volume start")
        for i in 0..<count {
            let point = try scratch.dir("client\(i)")
            try check(run("/bin/mount", ["-t", "glusterfs", "-o", "direct-io-mode=enable", "\(host):/\(name)", point], timeout: 60), "mount")
            mounts.append(point)
        }
    }

    private func gluster(_ args: [String], timeout: Double = 120) throws -> CommandResult {
        try run("/usr/sbin/gluster", ["--mode=script"] + args, timeout: timeout)
    }

    private func check(_ r: CommandResult, _ what: String) throws {
        if r.status != 0 { throw MountFailure(description: "gluster \(what) failed (\(r.status)): \(r.output)") }
    }

    func tearDown() {
        for m in mounts.reversed() where MountTable.isMounted(m) {
            if (try? run("/bin/umount", [m], timeout: 30))?.status != 0 { _ = try? run("/bin/umount", ["-l", m], timeout: 30) }
        }
        mounts = []
        if created {
            _ = try? gluster(["volume", "stop", name, "force"])
            _ = try? gluster(["volume", "delete", name])
            created = false
        }
        glusterd?.stop(timeout: 20)
        glusterd = nil
        scratch.remove()
    }

    deinit { tearDown() }
}

/// sshfs with `-o direct_io` over an OpenSSH server this fixture starts on 127.0.0.1 (its own
/// host key, port and authorized key); `tearDown` unmounts and stops that server.
final class SSHFSMount {
    let scratch: Scratch
    let remote: String
    let point: String
    private var sshd: Child?

    init() throws {
        try Tools.require(Tools.sshfs, package: "sshfs openssh-server")
        scratch = try Scratch("sshfs")
        remote = try scratch.dir("remote")
        point = try scratch.dir("mnt")
        do {
            try start()
        } catch {
            tearDown()
            throw error
        }
    }

    private func start() throws {
        let s = scratch.path
        try sh("ssh-keygen -q -t ed25519 -N '' -f '\(s)/host_key' && ssh-keygen -q -t ed25519 -N '' -f '\(s)/client_key' && cp '\(s)/client_key.pub' '\(s)/authorized_keys' && mkdir -p /run/sshd")
        let port = try Self.freePort()
        let config = """
            Port \(port)
            ListenAddress 127.0.0.1
            HostKey \(s)/host_key
            AuthorizedKeysFile \(s)/authorized_keys
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            StrictModes no
            UsePAM no
            PidFile none
            Subsystem sftp internal-sftp
            """
        try config.write(toFile: s + "/sshd_config", atomically: true, encoding: .utf8)
        sshd = try Child("/usr/sbin/sshd", ["-D", "-e", "-f", s + "/sshd_config"], outputPath: s + "/sshd.log")
        let user = String(cString: getpwuid(geteuid())!.pointee.pw_name)
        let deadline = Date().addingTimeInterval(30)
        while true {
            let r = try run("/usr/bin/sshfs", ["-p", "\(port)", "-o",
                "IdentityFile=\(s)/client_key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,direct_io",
                "\(user)@127.0.0.1:\(remote)", point], timeout: 30)
            if r.status == 0 { break }
            if Date() > deadline || sshd?.isRunning == false {
                throw MountFailure(description: "sshfs did not mount: \(r.output)\n\((try? String(contentsOfFile: s + "/sshd.log", encoding: .utf8)) ?? "")")
            }
            usleep(200_000)
        }
    }

    /// A TCP port nobody listens on now.
    private static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return UInt16(bigEndian: addr.sin_port)
    }

    func tearDown() {
        if MountTable.isMounted(point) {
            if (try? run("/usr/bin/fusermount3", ["-u", point], timeout: 20))?.status != 0 {
                _ = try? run("/usr/bin/fusermount3", ["-u", "-z", point], timeout: 20)
            }
        }
        sshd?.stop()
        sshd = nil
        scratch.remove()
    }

    deinit { tearDown() }
}
