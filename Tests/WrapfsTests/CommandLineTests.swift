// wrapfs-mount as a user meets it: exit codes and messages for bad input, detaching, unmounting.
import Foundation
import Glibc
import Testing

@Suite("Command line", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct CommandLineTests {
    func mountTool(_ args: [String]) throws -> CommandResult { try run(Build.mountTool, args, timeout: 30) }

    @Test("bad input gets its own exit code and a clear message")
    func exitCodes() throws {
        let s = try Scratch("cli")
        defer { s.remove() }
        let lower = try s.dir("lower"), mnt = try s.dir("mnt")
        _ = FileManager.default.createFile(atPath: s.path + "/file", contents: Data("x".utf8))

        var r = try mountTool([s.path + "/missing", mnt, "-f"])
        #expect(r.status == 66 && r.output.contains("lower directory"), "\(r)")
        r = try mountTool([s.path + "/file", mnt, "-f"])
        #expect(r.status == 66 && r.output.contains("not a directory"), "\(r)")
        r = try mountTool([lower, s.path + "/nowhere", "-f"])
        #expect(r.status == 67 && r.output.contains("mount point"), "\(r)")
        r = try mountTool([lower, s.path + "/file", "-f"])
        #expect(r.status == 67 && r.output.contains("not a directory"), "\(r)")
        r = try mountTool([lower, mnt, "--codec", "nosuch", "-f"])
        #expect(r.status == 65 && r.output.contains("unknown codec 'nosuch'"), "\(r)")
        r = try mountTool([lower, mnt, "-o", "no_such_option", "-f"])
        #expect(r.status == 64 && r.output.contains("bad FUSE option"), "\(r)")
        r = try mountTool([lower, mnt, "--threads", "0", "-f"])
        #expect(r.status == 64, "\(r)")
        r = try mountTool([lower, mnt, "--codec", "rot", "--codec-option", "shift=999", "-f"])
        #expect(r.status == 64 && r.output.contains("shift"), "\(r)")
        // An infinite timeout was taken, and the daemon trapped at its first directory listing.
        for timeout in ["--attr-timeout=inf", "--entry-timeout=nan", "--negative-timeout=1e300", "--attr-timeout=-1"] {
            r = try mountTool([lower, mnt, timeout, "-f"])
            #expect(r.status == 64 && r.output.contains("seconds between 0 and"), "\(timeout): \(r)")
        }
        #expect(!MountTable.isMounted(mnt))

        let m = try Mounted(lower: lower, point: mnt, codec: "identity")
        defer { m.unmount() }
        r = try mountTool([lower, mnt, "-f"])
        #expect(r.status == 68 && r.output.contains("already mounted"), "\(r)")
    }

    @Test("a missing /dev/fuse is reported as such")
    func noFuseDevice() throws {
        let s = try Scratch("cli")
        defer { s.remove() }
        let lower = try s.dir("lower"), mnt = try s.dir("mnt")
        // In a private mount namespace, /dev/fuse is hidden behind an empty file.
        let r = try run("unshare", ["-m", "sh", "-c", "touch \(s.path)/nofuse && mount --bind \(s.path)/nofuse /dev/fuse && exec \(Build.mountTool) \(lower) \(mnt) -f"], timeout: 30)
        #expect(r.status == 69 && r.output.contains("/dev/fuse"), "\(r)")
    }

    @Test("mounts detached by default; unmount and fusermount3 -u both end it")
    func daemonizes() throws {
        let s = try Scratch("cli")
        defer { s.remove() }
        let lower = try s.dir("lower"), mnt = try s.dir("mnt")
        defer { if MountTable.isMounted(mnt) { _ = try? run("/usr/bin/fusermount3", ["-u", "-z", mnt]) } }
        var r = try mountTool([lower, mnt, "--codec", "rot"])
        #expect(r.status == 0, "\(r)")
        #expect(MountTable.isMounted(mnt))
        try Data("detached".utf8).write(to: URL(fileURLWithPath: mnt + "/a"))
        #expect(try String(contentsOfFile: mnt + "/a", encoding: .utf8) == "detached")
        r = try mountTool(["unmount", mnt])
        #expect(r.status == 0, "\(r)")
        #expect(!MountTable.isMounted(mnt))

        r = try mountTool([lower, mnt, "--codec", "rot", "--threads", "4", "-o", "default_permissions"])
        #expect(r.status == 0, "\(r)")
        #expect(try String(contentsOfFile: mnt + "/a", encoding: .utf8) == "detached")
        r = try run("/usr/bin/fusermount3", ["-u", mnt])
        #expect(r.status == 0 && !MountTable.isMounted(mnt), "\(r)")
    }

    @Test("the detached daemon holds none of its starter's descriptors, so $(wrapfs-mount ...) returns")
    func closesInheritedDescriptors() throws {
        let s = try Scratch("cli")
        defer { s.remove() }
        let lower = try s.dir("lower"), mnt = try s.dir("mnt")
        defer { if MountTable.isMounted(mnt) { _ = try? run("/usr/bin/fusermount3", ["-u", "-z", mnt]) } }
        // Command substitution waits for every holder of the pipe. Detaching points 0-2 at /dev/null,
        // so the pipe is also handed over as descriptor 5: a daemon that kept it would hang here.
        let r = try run("/bin/bash", ["-c", "out=$(\(Build.mountTool) \(lower) \(mnt) 5>&1); echo returned"], timeout: 10)
        #expect(!r.timedOut && r.output.contains("returned"), "\(r)")
        #expect(MountTable.isMounted(mnt))
        #expect(try run("/usr/bin/fusermount3", ["-u", mnt]).status == 0)
    }

    @Test("the daemon raises its open-file limit to the hard limit (one descriptor per known inode)")
    func raisesOpenFileLimit() throws {
        try withLayers(["identity"]) { _, _, mounts in
            let limits = try String(contentsOfFile: "/proc/\(mounts[0].daemon.pid)/limits", encoding: .utf8)
            let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }!
            let fields = line.split(separator: " ").suffix(3)  // soft hard unit
            #expect(fields.first == fields.dropFirst().first, "\(line)")
        }
    }

    @Test("-o ro makes a read-only mount")
    func readOnly() throws {
        try withLayers(["rot"], extra: ["-o", "ro"]) { top, lower, _ in
            let fd = open(top + "/new", O_CREAT | O_WRONLY, 0o644)
            #expect(fd < 0 && errno == EROFS)
            if fd >= 0 { close(fd) }
        }
    }

    @Test("codecs lists the built-in codecs")
    func codecsList() throws {
        let r = try mountTool(["codecs"])
        #expect(r.status == 0)
        #expect(r.output.contains("identity") && r.output.contains("rot") && r.output.contains("4096"), "\(r.output)")
    }
}
