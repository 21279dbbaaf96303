// Session: mounts layers with libfuse, runs their request loops, unmounts.
import Foundation
import Glibc
import CFuse

/// Why a mount did not happen; each has its own exit code in wrapfs-mount.
public enum MountError: Error, CustomStringConvertible {
    case badOption(String)
    case mountFailed(String)

    public var description: String {
        switch self {
        case .badOption(let s): return "bad FUSE option: \(s)"
        case .mountFailed(let s): return "mount failed: \(s)"
        }
    }
}

extension Layer {
    /// Mounts this layer on `mountpoint` and serves requests until it is unmounted.
    /// - Parameters:
    ///   - fuseOptions: `-o` options, each `key` or `key=value`.
    ///   - foreground: false to detach from the terminal after a successful mount.
    ///   - onMounted: called once the mount is up (before detaching).
    public func run(mountpoint: String, fuseOptions: [String], foreground: Bool, onMounted: () -> Void = {}) throws {
        let se = try newSession(fuseOptions)
        defer { fuse_session_destroy(se) }
        unblockStopSignals()  // a mask inherited from whoever started us must not keep SIGTERM out
        guard fuse_set_signal_handlers(se) == 0 else { throw MountError.mountFailed("cannot install signal handlers") }
        defer { fuse_remove_signal_handlers(se) }
        guard fuse_session_mount(se, mountpoint) == 0 else { throw MountError.mountFailed("libfuse could not mount \(mountpoint)") }
        defer { fuse_session_unmount(se) }
        installRequestIO(se)
        session = se
        defer { session = nil }
        onMounted()
        readAhead.arm(mountpoint: mountpoint, kib: options.readAheadKiB)
        guard fuse_daemonize(foreground ? 1 : 0) == 0 else { throw MountError.mountFailed("cannot detach") }
        SecretBytes.relockAll()  // memory locks do not pass to the detached child
        defer { SecretBytes.wipeAll() }  // keys are zeroed at unmount
        let control = try? ControlServer.start(self, mountpoint: mountpoint)
        defer { control?.stop() }
        serve(se)
    }

    /// Mounts each layer (namespaces from `Layer.namespaces`) on its mount point and serves them
    /// all from this process until every one is unmounted. SIGTERM, SIGINT and SIGHUP unmount
    /// them all (lazily: files still open keep working until closed).
    public static func run(_ mounts: [(layer: Layer, mountpoint: String)], fuseOptions: [String], foreground: Bool,
                           onMounted: () -> Void = {}) throws {
        if mounts.count == 1 {
            return try mounts[0].layer.run(mountpoint: mounts[0].mountpoint, fuseOptions: fuseOptions,
                                           foreground: foreground, onMounted: onMounted)
        }
        var sessions: [OpaquePointer] = []
        defer {
            for (i, _) in sessions.enumerated() { mounts[i].layer.session = nil }
            mounts[0].layer.group.quiesce()
            for se in sessions.reversed() {
                fuse_session_unmount(se)
                fuse_session_destroy(se)
            }
        }
        for (layer, point) in mounts {
            let se = try layer.newSession(fuseOptions)
            guard fuse_session_mount(se, point) == 0 else {
                fuse_session_destroy(se)
                throw MountError.mountFailed("libfuse could not mount \(point)")
            }
            sessions.append(se)
            layer.installRequestIO(se)
            layer.session = se
            layer.readAhead.arm(mountpoint: point, kib: layer.options.readAheadKiB)
        }
        onMounted()
        guard fuse_daemonize(foreground ? 1 : 0) == 0 else { throw MountError.mountFailed("cannot detach") }
        SecretBytes.relockAll()
        defer { SecretBytes.wipeAll() }
        // libfuse's signal handlers serve one session: here one thread takes the signals (blocked
        // everywhere else; threads started from now on inherit the mask) and unmounts every mount,
        // which ends each loop as `fusermount3 -u` would.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let controls = mounts.compactMap { try? ControlServer.start($0.layer, mountpoint: $0.mountpoint) }
        defer { controls.forEach { $0.stop() } }
        let points = mounts.map(\.mountpoint)
        let mask = signals
        Thread {
            var set = mask
            var sig: Int32 = 0
            sigwait(&set, &sig)
            for point in points { detachMount(point) }
        }.start()

        let loops = Pending()
        for (i, se) in sessions.enumerated() {
            let layer = mounts[i].layer
            let bits = UInt(bitPattern: se)
            loops.enter()
            Thread {
                layer.serve(OpaquePointer(bitPattern: bits)!)
                layer.session = nil  // unmounted: the other mounts stop notifying it
                loops.leave()
            }.start()
        }
        loops.wait()
    }

    /// A libfuse session for this layer, not yet mounted.
    func newSession(_ fuseOptions: [String]) throws -> OpaquePointer {
        var argv = ["wrapfs-mount"]
        let opts = ["fsname=\(lowerPath.replacingComma())", "subtype=wrapfs"] + fuseOptions
        argv += ["-o", opts.joined(separator: ",")]
        let cargs = argv.map { strdup($0) }
        defer { cargs.forEach { free($0) } }
        var cArray: [UnsafeMutablePointer<CChar>?] = cargs + [nil]
        var ops = Layer.operations()
        if !options.extendedAttributes {  // libfuse answers ENOSYS for a missing handler
            ops.setxattr = nil; ops.getxattr = nil; ops.listxattr = nil; ops.removexattr = nil
        }
        let me = Unmanaged.passUnretained(self).toOpaque()
        let se: OpaquePointer? = cArray.withUnsafeMutableBufferPointer { buf in
            var args = fuse_args(argc: Int32(argv.count), argv: buf.baseAddress, allocated: 0)
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, me)
        }
        guard let se else { throw MountError.badOption(fuseOptions.joined(separator: ",")) }
        return se
    }

    /// Serves `se`'s requests until it is unmounted or told to exit.
    private func serve(_ se: OpaquePointer) {
        let rc: Int32
        if options.singleThreaded {
            rc = fuse_session_loop(se)
        } else {
            rc = wrapfs_session_loop_mt(se, UInt32(options.threads), 0)
        }
        fuseRing?.stop()
        if rc != 0 && rc != -EINTR && rc != SIGTERM && rc != SIGINT && rc != SIGHUP {
            log.warning("session loop ended with \(rc)")
        }
    }
}

/// Unblocks SIGTERM, SIGINT and SIGHUP in the calling thread.
private func unblockStopSignals() {
    var signals = sigset_t()
    sigemptyset(&signals)
    for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
    pthread_sigmask(SIG_UNBLOCK, &signals, nil)
}

/// Unmounts `point` lazily: directly as root, else through fusermount3 (setuid).
private func detachMount(_ point: String) {
    if geteuid() == 0 {
        _ = umount2(point, Int32(MNT_DETACH))
        return
    }
    var pid: pid_t = 0
    let args: [UnsafeMutablePointer<CChar>?] = ["fusermount3", "-u", "-z", point].map { s in s.withCString { strdup($0) } }
    defer { args.forEach { free($0) } }
    var argv: [UnsafeMutablePointer<CChar>?] = args + [nil]
    if posix_spawnp(&pid, "fusermount3", nil, nil, &argv, Glibc.environ) == 0 {
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

private extension String {
    /// libfuse splits -o on commas; a comma in fsname would end it.
    func replacingComma() -> String { String(map { $0 == "," ? "_" : $0 }) }
}
