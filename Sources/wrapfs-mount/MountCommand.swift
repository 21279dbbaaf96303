// `wrapfs-mount LOWER MOUNTPOINT`: checks everything it can, then mounts and serves the layer.
import ArgumentParser
import Foundation
import Glibc
import Logging
import Wrapfs
import Codecs
import CFuse

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a layer over LOWER at MOUNTPOINT.",
        discussion: """
        Every page of file content passes through the codec. The daemon detaches once mounted \
        unless -f is given. Unmount with `wrapfs-mount unmount MOUNTPOINT` or `fusermount3 -u MOUNTPOINT`.
        Exit codes: 0 ok, 1 other error, 64 bad option, 65 unknown codec, 66 LOWER missing or not \
        a directory, 67 MOUNTPOINT missing or not a directory, 68 MOUNTPOINT already mounted, \
        69 /dev/fuse unavailable, 70 mount failed, 71 wrong passphrase.
        """)

    @Argument(help: "The lower directory whose tree the layer shows (with --shim: the mount point).") var lower: String
    @Argument(help: "Where to mount the layer.") var mountpoint: String?
    @Option(help: "Codec, or a comma-separated chain of codecs (default: the volume's, else identity).") var codec: String?
    @Flag(help: "Mount a shim with no lower directory at the one path given: `ln -s /absolute/file MOUNTPOINT/NAME` makes NAME that file, mappable; `rm` closes it.")
    var shim = false
    @Option(name: .customLong("namespace"), help: ArgumentHelp("Serve LOWER/NAME at MOUNTPOINT (repeatable; instead of one MOUNTPOINT): one daemon, disjoint trees, a file linked into two namespaces is one file.", valueName: "NAME=MOUNTPOINT"))
    var namespaces: [String] = []
    @Option(name: .customLong("codec-option"), help: "A codec option, key=value (repeatable).") var codecOptions: [String] = []
    @Option(name: .customLong("codec-plugin"), help: ArgumentHelp("Load a codec plugin built against include/wrapfs_codec.h (repeatable).", valueName: "PATH.so"))
    var codecPlugins: [String] = []
    @Option(name: .customShort("o"), help: "FUSE mount options, comma-separated (allow_other, default_permissions, ro, ...).")
    var fuseOptions: [String] = []
    @Flag(name: [.customShort("f"), .long], help: "Stay in the foreground.") var foreground = false
    @Option(help: "Worker threads (default: libfuse's).") var threads: Int?
    @Flag(help: "Serve requests on one thread.") var singleThreaded = false
    @Flag(help: "Bypass the page cache (no mmap).") var directIo = false
    @Flag(help: "Pass the writes of write-only opens through the page cache (by default they bypass it: a write-only descriptor cannot be mapped, and one copy of the data is saved).")
    var cacheWriteOnlyOpens = false
    @Flag(help: "Keep cached pages across opens.") var keepCache = false
    @Option(help: ArgumentHelp("When cached pages are dropped: open (at every open and change, as NFS) or explicit (only by refresh or a write through this layer; for files shared across machines).", discussion: "Default: explicit for the identity shim, open for every other codec.", valueName: "open|explicit"))
    var coherence: String?
    @Flag(help: "Let the kernel gather writes (FUSE writeback cache): faster small writes, but errors such as ENOSPC come at fsync or close, not at write, and the kernel keeps file sizes itself.")
    var writebackCache = false
    @Option(help: "Seconds the kernel caches attributes.") var attrTimeout: Double = 1
    @Option(help: "Seconds the kernel caches names.") var entryTimeout: Double = 1
    @Option(help: "Seconds the kernel caches missing names.") var negativeTimeout: Double = 1
    @Option(help: "Largest write request in bytes (4096...1048576).") var maxWrite = 1 << 20
    @Option(help: ArgumentHelp("Kernel read-ahead of the mount in KiB (0: the kernel's 128 KiB), set in /sys/class/bdi when the daemon may write there.", valueName: "KiB"))
    var readAhead = 4096
    @Flag(help: "Do not offer readdirplus to the kernel.") var noReaddirplus = false
    @Flag(help: "Answer the kernel's opendir and releasedir with a lower directory stream per open (by default, with --coherence open, the kernel opens directories without asking and keeps listings until the directory's mtime changes; each listing resumes the lower directory at the kernel's cookie).")
    var directoryHandles = false
    @Option(help: ArgumentHelp("Most descriptors the daemon may hold (default: as many as the system allows). Near the limit (a reserve of a quarter, at most 2,048, is kept for open files) the kernel is asked to forget files nothing uses.", valueName: "N"))
    var maxDescriptors: Int?
    @Flag(help: "Store every write before acknowledging it (by default a write of 64 KiB or more is acknowledged first while the lower file system has 64 MiB more free, so the writer's next copy overlaps the store; a store that fails later fails every write to the file until fsync or close reports it).")
    var noWriteBehind = false
    @Flag(help: "identity: splice written data from /dev/fuse to the lower file (big writes faster, small requests slower; where fs.pipe-max-size caps pipes, write requests shrink to fit one).")
    var splice = false
    @Flag(help: "Take requests through FUSE over io_uring, a queue per CPU (Linux 6.14+, where root enabled it: /sys/module/fuse/parameters/enable_uring; otherwise /dev/fuse as without it): small requests cost less.")
    var ioUring = false
    @Flag(help: "No extended attributes (EOPNOTSUPP, as bare FUSE and bindfs --xattr-none): saves a request per file written or chowned and two per file `ls -l` lists.")
    var noXattr = false
    @Flag(help: "Leave set-ID clearing on write to the kernel (no FUSE_HANDLE_KILLPRIV_V2): a security.capability request per write(2), and set-group-ID without group execute survives.")
    var kernelClearsSetid = false
    @Flag(name: [.customShort("v"), .long], help: "Log debug lines.") var verbose = false
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        if shim {
            if mountpoint != nil { throw ValidationError("--shim takes only the mount point (no lower directory)") }
            if let codec, codec != "identity" { throw ValidationError("--shim serves files as they are: its codec is identity, not \(codec)") }
        } else if !namespaces.isEmpty {
            if mountpoint != nil { throw ValidationError("with --namespace, give only the lower directory (each namespace names its mount point)") }
            var names = Set<String>()
            for n in namespaces {
                let parts = n.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[1].isEmpty else { throw ValidationError("--namespace takes NAME=MOUNTPOINT, got '\(n)'") }
                guard !parts[0].isEmpty, parts[0] != ".", parts[0] != "..", !parts[0].contains("/"), parts[0] != VolumeFile.name else {
                    throw ValidationError("namespace name '\(parts[0])' must be one path component (not '.', '..' or the volume file)")
                }
                guard names.insert(parts[0]).inserted else { throw ValidationError("namespace '\(parts[0])' given twice") }
            }
            if namespaces.count > 64 { throw ValidationError("at most 64 namespaces") }
        } else if mountpoint == nil {
            throw ValidationError("give the lower directory and the mount point (or --shim MOUNTPOINT, or --namespace NAME=MOUNTPOINT)")
        }
        if writebackCache && !namespaces.isEmpty {
            throw ValidationError("--writeback-cache cannot serve namespaces: the kernel would keep each mount's file sizes apart")
        }
        if ioUring && splice { throw ValidationError("--io-uring and --splice exclude each other: ring requests arrive in memory") }
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024") }
        if maxWrite < 4096 || maxWrite > 1 << 20 { throw ValidationError("--max-write must be between 4096 and 1048576") }
        if let maxDescriptors, maxDescriptors < 64 { throw ValidationError("--max-descriptors must be at least 64") }
        if readAhead < 0 || readAhead > 1 << 20 { throw ValidationError("--read-ahead must be between 0 and 1048576 KiB") }
        for (name, seconds) in [("--attr-timeout", attrTimeout), ("--entry-timeout", entryTimeout), ("--negative-timeout", negativeTimeout)]
            where !(0...LayerOptions.longestTimeout).contains(seconds) {
            throw ValidationError("\(name) must be a number of seconds between 0 and \(Int(LayerOptions.longestTimeout)), got \(seconds)")
        }
        if let coherence, Coherence(rawValue: coherence) == nil { throw ValidationError("--coherence takes open or explicit, got '\(coherence)'") }
        for o in codecOptions where !o.contains("=") { throw ValidationError("--codec-option takes key=value, got '\(o)'") }
    }

    func run() throws { try Failure.reported(mount) }

    private func mount() throws {
        wrapfs_close_inherited()
        _ = wrapfs_raise_nofile(maxDescriptors ?? 0)
        BuiltinCodecs.register()
        try PluginLoading.load(codecPlugins)
        let lowerPath = shim ? "" : try checkDirectory(lower, what: "lower directory", code: Exit.badLower)
        _ = try makeCodec(lower: nil)  // unknown codec or bad option: found before anything is touched
        let spaces = namespaces.map { $0.split(separator: "=", maxSplits: 1).map(String.init) }
        let mountPaths = try (spaces.isEmpty ? [mountpoint ?? lower] : spaces.map { $0[1] }).map { point in
            let path = try checkDirectory(point, what: "mount point", code: Exit.badMountpoint)
            if MountInfo.isMountPoint(path) {
                throw Failure("mount point \(path) is already mounted (unmount it first: wrapfs-mount unmount \(path))", Exit.alreadyMounted)
            }
            return path
        }
        if Set(mountPaths).count != mountPaths.count { throw Failure("two namespaces cannot share a mount point", Exit.badMountpoint) }
        let mountPath = mountPaths[0]
        var device = stat()
        if stat("/dev/fuse", &device) != 0 || device.st_mode & S_IFMT != S_IFCHR {
            throw Failure("/dev/fuse is unavailable (missing or not a character device): load the fuse module and install fuse3", Exit.noFuseDevice)
        }
        let (codec, isVolume) = shim ? (IdentityCodec(pageSize: 4096), false) : try makeCodec(lower: lowerPath)
        let fuseDevice = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        if fuseDevice < 0 {
            throw Failure("/dev/fuse is unavailable (\(String(cString: strerror(errno)))): load the fuse module and install fuse3", Exit.noFuseDevice)
        }
        close(fuseDevice)
        var fuse = fuseOptions.flatMap { $0.split(separator: ",").map(String.init) }.filter { !$0.isEmpty }
        // Other users reach the mount only under the kernel's permission checks.
        if fuse.contains("allow_other") && !fuse.contains("default_permissions") { fuse.append("default_permissions") }

        Logs.bootstrap(detached: !foreground, verbose: verbose)
        let log = Logger(label: "wrapfs")
        var options = LayerOptions()
        options.threads = threads ?? 0
        options.singleThreaded = singleThreaded
        options.directIO = directIo
        options.keepCache = keepCache
        options.directWriteOnlyOpens = !cacheWriteOnlyOpens
        // The identity shim serves applications that keep shared files coherent themselves.
        options.coherence = coherence.flatMap(Coherence.init(rawValue:)) ?? (codec.name == "identity" ? .explicit : .open)
        options.extendedAttributes = !noXattr
        // Where the kernel checks permissions, it checks ACLs too, as the lower file system does.
        options.posixACLs = fuse.contains("default_permissions")
        // Off by default although it wins the benchmark (docs/BENCHMARK.md): with it a full lower
        // disk fails fsync and close instead of the write, after the data was accepted.
        options.writebackCache = writebackCache
        options.attributeTimeout = attrTimeout
        options.entryTimeout = entryTimeout
        options.negativeTimeout = negativeTimeout
        options.maxWrite = maxWrite
        options.readAheadKiB = readAhead
        options.readdirPlus = !noReaddirplus
        options.splice = splice
        options.ioUring = ioUring
        options.writeBehind = !noWriteBehind
        options.daemonClearsSetID = !kernelClearsSetid
        // Without handles nothing checks read permission at opendir but the kernel (under
        // default_permissions) or root's own privileges.
        options.directoryHandles = directoryHandles || !(geteuid() == 0 || fuse.contains("default_permissions"))
        if isVolume { options.hiddenRootNames = [VolumeFile.name] }
        umask(0)  // modes come from the kernel with the caller's umask applied
        let layers: [Layer]
        do {
            if shim {
                layers = [try Layer(shimAt: mountPath, codec: codec, options: options, log: log)]
            } else if !spaces.isEmpty {
                layers = try Layer.namespaces(lower: lowerPath, names: spaces.map { $0[0] }, codec: codec, options: options, log: log)
            } else {
                layers = [try Layer(lower: lowerPath, codec: codec, options: options, log: log)]
            }
        } catch {
            throw Failure("cannot open lower directory \(lowerPath) (or a namespace directory in it): \(error)", Exit.badLower)
        }
        do {
            try Layer.run(Array(zip(layers, mountPaths)), fuseOptions: fuse, foreground: foreground) {
                for (layer, point) in zip(layers, mountPaths) {
                    if foreground { log.info(shim ? "shim mounted on \(point)" : "mounted \(layer.lowerPath) on \(point) with codec \(codec.name)") }
                    // Where `status` will find the mount's daemon (the socket opens once serving starts).
                    let socket = "control socket of \(point): \(ControlSocket.path(mountpoint: point, uid: geteuid()))"
                    if foreground { log.info("\(socket)") } else { print(socket) }
                }
                fflush(stdout)
            }
        } catch MountError.badOption(let o) {
            throw Failure("bad FUSE option in '-o \(o)' (see mount.fuse3(8))", Exit.badOption)
        } catch let e as MountError {
            throw Failure("\(e)", Exit.mountFailed)
        }
    }

    /// Makes the codec; a size-changing codec's options come from (and go to) the volume file.
    private func makeCodec(lower: String?) throws -> (Codec, volume: Bool) {
        var values: [String: String] = [:]
        for o in codecOptions {
            let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
            values[kv[0]] = kv.count > 1 ? kv[1] : ""
        }
        let volume = try lower.flatMap { try VolumeFile.load(from: $0) }
        let names = (codec ?? volume?.codec ?? "identity").split(separator: ",").map(String.init)
        let chainName = names.joined(separator: ",")
        /// The codec, or the chain: each codec after the first encodes what the one before made.
        func make(_ values: [String: String], _ masterKey: SecretBytes? = nil) throws -> Codec {
            try Failure.makingCodec(chainName, CodecOptions(values, masterKey: masterKey))
        }
        if let lower, let volume, let wrapped = volume.key {
            return (try unlock(volume, wrapped, lower: lower, asked: values, make: make), true)
        }
        if names.contains(where: BuiltinCodecs.encrypting.contains) {
            // Made for real once the volume is unlocked; the early check only needs the names.
            for name in names where CodecRegistry.shared.descriptor(named: name) == nil {
                throw Failure("\(UnknownCodec(name: name, known: CodecRegistry.shared.all.map(\.name)))", Exit.unknownCodec)
            }
            if lower == nil { return (IdentityCodec(pageSize: 4096), false) }
            throw Failure("\(lower!) is not an encrypted volume: create it with `wrapfs-mount init \(lower!) --codec \(chainName)`", Exit.badLower)
        }
        let first = try make(values)
        guard let lower else { return (first, false) }
        if first.preservesSize, try VolumeFile.load(from: lower) == nil { return (first, false) }
        let merged = try VolumeFile.reconcile(lower: lower, codec: chainName, asked: values, pageSize: first.pageSize)
        let codec = try make(merged)
        var stored = merged
        stored["page-size"] = String(codec.pageSize)
        stored["level"] = nil
        if try VolumeFile.load(from: lower) == nil {
            try VolumeFile(codec: chainName, options: stored).save(in: lower)
        }
        return (codec, true)
    }

    /// An encrypted volume's codec, with its master key unwrapped by the user's passphrase.
    private func unlock(_ volume: VolumeFile, _ wrapped: WrappedMasterKey, lower: String, asked: [String: String],
                        make: ([String: String], SecretBytes?) throws -> Codec) throws -> Codec {
        guard codec.map({ $0.split(separator: ",").joined(separator: ",") }) ?? volume.codec == volume.codec else {
            throw Failure("\(lower) is an \(volume.codec) volume; mount it with --codec \(volume.codec)", Exit.badOption)
        }
        for (key, value) in asked where volume.options[key] != value {
            throw Failure("\(lower) was created with \(key)=\(volume.options[key] ?? "(default)"); it cannot be mounted with \(key)=\(value)", Exit.badOption)
        }
        _ = wrapfs_forbid_dumps()  // before the key is in memory
        let master: SecretBytes
        do {
            master = try passphrase.unlock(wrapped, of: lower, prompt: "Passphrase for \(lower): ")
        } catch let f as Failure where f.code == Exit.wrongPassphrase {
            throw Failure("\(f.message); nothing mounted", f.code)
        }
        return try make(volume.options, master)
    }

    private func checkDirectory(_ path: String, what: String, code: ExitCode) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw Failure("\(what) \(path): \(String(cString: strerror(errno)))", code)
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw Failure("\(what) \(path) is not a directory", code) }
        guard let real = realpath(path, nil) else { throw Failure("\(what) \(path): \(String(cString: strerror(errno)))", code) }
        defer { free(real) }
        return String(cString: real)
    }
}
