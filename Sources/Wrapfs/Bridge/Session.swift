// Session: mounts a layer with libfuse, runs the request loop, unmounts.
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
        var argv = ["wrapfs-mount"]
        let opts = ["fsname=\(lowerPath.replacingComma())", "subtype=wrapfs"] + fuseOptions
        argv += ["-o", opts.joined(separator: ",")]
        let cargs = argv.map { strdup($0) }
        defer { cargs.forEach { free($0) } }
        var cArray: [UnsafeMutablePointer<CChar>?] = cargs + [nil]
        var ops = Layer.operations()
        let me = Unmanaged.passUnretained(self).toOpaque()
        let se: OpaquePointer? = cArray.withUnsafeMutableBufferPointer { buf in
            var args = fuse_args(argc: Int32(argv.count), argv: buf.baseAddress, allocated: 0)
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, me)
        }
        guard let se else { throw MountError.badOption(fuseOptions.joined(separator: ",")) }
        defer { fuse_session_destroy(se) }
        guard fuse_set_signal_handlers(se) == 0 else { throw MountError.mountFailed("cannot install signal handlers") }
        defer { fuse_remove_signal_handlers(se) }
        guard fuse_session_mount(se, mountpoint) == 0 else { throw MountError.mountFailed("libfuse could not mount \(mountpoint)") }
        defer { fuse_session_unmount(se) }
        session = se
        defer { session = nil }
        onMounted()
        guard fuse_daemonize(foreground ? 1 : 0) == 0 else { throw MountError.mountFailed("cannot detach") }
        SecretBytes.relockAll()  // memory locks do not pass to the detached child
        defer { SecretBytes.wipeAll() }  // keys are zeroed at unmount
        let rc: Int32
        if options.singleThreaded {
            rc = fuse_session_loop(se)
        } else {
            rc = wrapfs_session_loop_mt(se, UInt32(options.threads), 0)
        }
        if rc != 0 && rc != -EINTR && rc != SIGTERM && rc != SIGINT && rc != SIGHUP {
            log.warning("session loop ended with \(rc)")
        }
    }
}

private extension String {
    /// libfuse splits -o on commas; a comma in fsname would end it.
    func replacingComma() -> String { String(map { $0 == "," ? "_" : $0 }) }
}
