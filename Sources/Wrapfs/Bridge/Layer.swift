// Layer: one mounted stackable layer: the lower root, its inodes, its codec and page engine.
import Glibc
import CFuse
import Logging

/// A stackable layer over one lower directory. FUSE requests arrive on the operations in
/// `Operations*.swift`; each resolves inodes here and works on lower files with `*at()` calls.
public final class Layer {
    public let lowerPath: String
    public let codec: Codec
    public let options: LayerOptions
    let log: Logger
    let inodes: InodeView
    let engine: PageEngine
    /// Counts and latencies of this mount's requests, for `wrapfs-mount status`.
    let stats = Statistics()
    /// Open files with who opened them, for `status --graph`.
    let openFiles = OpenFileRegistry()
    /// When the mount was made (seconds since the epoch).
    public let mountedAt = time(nil)
    /// The daemon's mounts (one unless it serves namespaces); this is mount `inodes.mount`.
    let group: MountGroup
    /// This mount's session while it runs, for notifications sent to the kernel.
    var session: OpaquePointer? {
        get { group.session(inodes.mount) }
        set { group.setSession(newValue, mount: inodes.mount) }
    }
    /// The entries of a shim mount's root (nil for a layer over a lower directory).
    let shadows: ShadowFiles?
    /// The kernel read-ahead to set once the mount is up (`LayerOptions.readAheadKiB`).
    let readAhead = ReadAhead()
    /// Runs refresh invalidations off the request threads (see `ioctl`).
    let refreshThread = BackgroundThreads("wrapfs-refresh", maxThreads: 1)
    /// New entries get the caller's ownership when the daemon runs as root for others.
    let runsAsRoot = geteuid() == 0
    /// Set at INIT: the kernel enforces POSIX ACLs (`LayerOptions.posixACLs` granted).
    var kernelEnforcesACLs = false
    /// Set at INIT: the kernel drops other opens' cached pages of a range before a direct write
    /// to it (FUSE 7.39, Linux 6.6, "fuse: invalidate page cache pages before direct write"), so
    /// write-only opens may bypass the page cache (`LayerOptions.directWriteOnlyOpens`).
    var kernelDropsPagesOnDirectWrite = false
    /// Set at INIT: the kernel leaves the caller's umask to the layer (FUSE_CAP_DONT_MASK, asked
    /// for with ACLs: a directory with a default ACL ignores the umask, as on a local file system).
    var appliesUmask = false
    /// The FUSE_HANDLE_KILLPRIV_V2 handshake (`installRequestIO`); `accepted` once the daemon
    /// clears set-ID bits itself.
    let privileges = PrivilegeHandshake()
    /// FUSE over io_uring, once INIT set it up (`LayerOptions.ioUring`). Written once, before
    /// any request comes through it.
    var fuseRing: FuseRing?
    /// The kernel opens directories without asking (`LayerOptions.directoryHandles` off): set
    /// while INIT is served, before any other request.
    var handlelessDirectories = false
    /// Lower directory streams between the requests of handle-less listings.
    let listingStreams = ListingStreams()
    /// Whether a write may be acknowledged before it is stored (identity streaming writes).
    let writeBehind: WriteBehind

    /// Opens the lower directory. Throws `Errno` when it is missing or not a directory.
    public convenience init(lower: String, codec: Codec, options: LayerOptions = LayerOptions(), log: Logger) throws {
        let root = try Self.openRoot(lower)
        let group = MountGroup(table: InodeTable(lowerRoot: root.fd), mounts: 1)
        self.init(root: root, group: group, mount: 0, lowerPath: lower, codec: codec, options: options, shadows: nil, log: log)
    }

    /// A shim mount at `mountpoint` with no lower directory: its root holds shadow files (see
    /// `ShadowFiles`); the root's own attributes are those of the directory mounted over.
    public convenience init(shimAt mountpoint: String, codec: Codec, options: LayerOptions = LayerOptions(), log: Logger) throws {
        guard codec.preservesSize && codec.headerSize == 0 else { throw Errno.EINVAL }
        var options = options
        options.readdirPlus = false  // the root lists names only
        let root = try Self.openRoot(mountpoint)
        let group = MountGroup(table: InodeTable(lowerRoot: root.fd), mounts: 1)
        self.init(root: root, group: group, mount: 0, lowerPath: "shim", codec: codec, options: options,
                  shadows: ShadowFiles(mountpoint: mountpoint), log: log)
    }

    /// Layers for namespaces `names` of `lower`, to be mounted by one daemon (see `run(_:)`):
    /// namespace NAME shows LOWER/NAME (made if missing) and nothing outside it. A file linked
    /// into two namespaces is one inode to all of them.
    public static func namespaces(lower: String, names: [String], codec: Codec, options: LayerOptions = LayerOptions(),
                                  log: Logger) throws -> [Layer] {
        let base = try FileDescriptor.open(lower, O_PATH | O_DIRECTORY)
        defer { base.close() }
        guard names.count <= 64 else { throw Errno.EINVAL }
        let group = MountGroup(table: InodeTable(lowerRoot: base), mounts: names.count)
        return try names.enumerated().map { i, name in
            guard !name.isEmpty, name != ".", name != "..", !name.contains("/"),
                  !options.hiddenRootNames.contains(name) else { throw Errno.EINVAL }
            do { _ = try sys { mkdirat(base.rawValue, name, 0o755) } } catch let e as Errno where e == .EEXIST {}
            // Relative to LOWER as opened above, never through a symlink: it cannot point outside.
            let root = try rootInode(name.withCString { try base.openAt($0, O_PATH | O_DIRECTORY | O_NOFOLLOW) })
            var options = options
            options.hiddenRootNames = []  // the volume file lives in LOWER, outside every namespace
            return Layer(root: root, group: group, mount: i, lowerPath: lower + "/" + name, codec: codec,
                         options: options, shadows: nil, log: log)
        }
    }

    /// The root directory's inode: an O_PATH descriptor of `path`.
    private static func openRoot(_ path: String) throws -> Inode {
        try rootInode(FileDescriptor.open(path, O_PATH | O_DIRECTORY))
    }

    /// The inode of root directory `fd` (an O_PATH descriptor it takes over; closed if its status fails).
    private static func rootInode(_ fd: FileDescriptor) throws -> Inode {
        do { return Inode(fd: fd, stat: try fd.stat()) } catch { fd.close(); throw error }
    }

    private init(root: Inode, group: MountGroup, mount: Int, lowerPath: String, codec: Codec, options: LayerOptions,
                 shadows: ShadowFiles?, log: Logger) {
        self.lowerPath = lowerPath
        self.codec = codec
        self.options = options
        self.log = log
        self.shadows = shadows
        self.group = group
        inodes = group.table.view(root: root, mount: mount)
        engine = PageEngine(codec: codec, log: log, stats: stats)
        writeBehind = WriteBehind(options: options)
    }

    /// Tells the daemon's other mounts that `inode`'s content changed (see `MountGroup.contentChanged`).
    @inline(__always)
    func contentChanged(_ inode: Inode) {
        if group.count > 1 { group.contentChanged(inode, by: inodes.mount) }
    }

    // MARK: names

    /// The lower name for an upper path component, as a C string.
    func lowerName(_ name: UnsafePointer<CChar>, in parent: Inode) throws -> [CChar] {
        Self.cString(try lowerNameBytes(name, in: parent))
    }

    /// The lower name's bytes: the codec's encoding, or its stand-in when that is too long.
    func lowerNameBytes(_ name: UnsafePointer<CChar>, in parent: Inode) throws -> [UInt8] {
        if strlen(name) > Int(NAME_MAX) { throw Errno.ENAMETOOLONG }
        var encoded: [UInt8]
        do { encoded = try codec.encodeName(Layer.bytes(name)) } catch { throw Errno.EINVAL }
        if encoded.count > Int(NAME_MAX) {
            guard usesLongNames else { throw Errno.ENAMETOOLONG }
            encoded = LongNames.standIn(for: encoded)
        }
        if parent === inodes.root && !options.hiddenRootNames.isEmpty && isHidden(encoded) { throw Errno.EPERM }
        return encoded
    }

    /// The layer's own files in the lower root (see `LayerOptions.hiddenRootNames`).
    func isHidden(_ lowerName: [UInt8]) -> Bool {
        options.hiddenRootNames.contains(String(decoding: lowerName, as: UTF8.self))
    }

    /// The upper name for a lower directory entry, or nil when the codec does not own it.
    func upperName(_ lower: UnsafePointer<CChar>) -> [CChar]? {
        Self.upperName(of: Self.bytes(lower), codec).map(Self.cString)
    }

    /// What `codec` makes of lower name `lower`, or nil when the mount hides it: the codec did
    /// not make it, or it decodes to no valid name (fsck names such entries).
    public static func upperName(of lower: [UInt8], _ codec: Codec) -> [UInt8]? {
        guard let decoded = try? codec.decodeName(lower), !decoded.isEmpty, !decoded.contains(0x2F), !decoded.contains(0) else { return nil }
        return decoded
    }

    static func bytes(_ s: UnsafePointer<CChar>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: s, count: strlen(s)))
    }

    static func cString(_ bytes: [UInt8]) -> [CChar] {
        [CChar](unsafeUninitializedCapacity: bytes.count + 1) { buf, n in
            bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(buf).copyMemory(from: $0) }
            buf[bytes.count] = 0
            n = bytes.count + 1
        }
    }

    // MARK: lookup and attributes

    /// Looks up the lower entry `lowerName` in `parent`, counting one kernel lookup.
    func entry(parent: Inode, lowerName: UnsafePointer<CChar>) throws -> fuse_entry_param {
        try entry(opened: try openForEntry(parent, lowerName))
    }

    /// The entry for the lower file `fd` (O_PATH) holds, counting one kernel lookup; the inode
    /// takes `fd` (closed if it cannot).
    func entry(opened fd: FileDescriptor) throws -> fuse_entry_param {
        let st: stat
        do { st = try lowerStat(fd) } catch { fd.close(); throw error }
        return try entryParameters(inodes.remember(fd: fd, stat: st), st)
    }

    /// Opens `lowerName` in `parent` (O_PATH) for a new entry.
    private func openForEntry(_ parent: Inode, _ lowerName: UnsafePointer<CChar>) throws -> FileDescriptor {
        try withDescriptorRoom(in: parent) { try parent.fd.openAt(lowerName, O_PATH | O_NOFOLLOW) }
    }

    /// Runs `open`, which takes a descriptor. Out of descriptors while the kernel holds more
    /// entries than shedding keeps (`InodeTable.excess`, less the files held open, which it cannot
    /// drop), it has the kernel drop old ones and retries as their forgets close descriptors, for
    /// up to two seconds: a lookup or open at full speed (diff -r of a big tree, readers side by
    /// side) may outrun those forgets. EMFILE at once when open files hold the descriptors.
    /// `dir`: the directory whose lock the kernel holds through this request (a lookup or a
    /// create in it), where nothing is dropped meanwhile (see `InodeTable.sheddable`). EMFILE
    /// comes before open(2) creates anything, so a retried O_CREAT is safe.
    func withDescriptorRoom<R>(in dir: Inode? = nil, _ open: () throws -> R) throws -> R {
        func mayShed() -> Bool { inodes.excess > openFiles.count }
        do {
            return try open()
        } catch let e as Errno where e == .EMFILE && mayShed() {
            let deadline = wrapfs_monotonic_ns() + 2_000_000_000
            func retry() throws -> R {
                while true {
                    inodes.shedEntries()
                    usleep(10_000)
                    do {
                        return try open()
                    } catch let e as Errno where e == .EMFILE && mayShed() && wrapfs_monotonic_ns() < deadline {
                        continue
                    }
                }
            }
            guard let dir else { return try retry() }
            return try inodes.waiting(in: dir) { try retry() }
        }
    }

    /// The entry for `lowerName` in `parent` when the stream said it is inode `ino` of type
    /// `type`: a file the kernel knows already is answered from its descriptor, without
    /// opening the name again (rm -rf and ls read each directory twice).
    func entry(parent: Inode, lowerName: UnsafePointer<CChar>, ino: UInt64, type: mode_t) throws -> fuse_entry_param {
        guard type != 0, let known = inodes.rememberKnown(InodeKey(dev: parent.key.dev, ino: ino), type: type) else {
            return try entry(parent: parent, lowerName: lowerName)
        }
        return try entryParameters(known)
    }

    /// The reply to a lookup of `inode`, whose one lookup was just counted (and is given back
    /// if its attributes cannot be had).
    func entryParameters(_ inode: Inode, _ lower: stat? = nil) throws -> fuse_entry_param {
        var e = fuse_entry_param()
        e.ino = inodes.id(of: inode)
        do {
            e.attr = try attributes(inode, lower)
        } catch {
            inodes.forget(e.ino, count: 1)
            throw error
        }
        e.attr_timeout = options.attributeTimeout
        // When descriptors run short the kernel must not keep entries nothing uses (see
        // `InodeTable.descriptorHighWater`): with a zero timeout it drops them at their last use.
        e.entry_timeout = inodes.descriptorsScarce ? 0 : options.entryTimeout
        return e
    }

    /// The lower status of `fd`; fresh from a lower FUSE file system (see `InodeTable.verifyHits`).
    func lowerStat(_ fd: FileDescriptor) throws -> stat {
        inodes.verifyHits ? try fd.freshStat() : try fd.stat()
    }

    /// The attributes the layer shows for `inode`: the lower ones, with logical sizes.
    func attributes(_ inode: Inode, _ lower: stat? = nil) throws -> stat {
        if lower == nil { return try onLiveDescriptor(inode) { try currentAttributes(inode, nil) } }
        return try currentAttributes(inode, lower)
    }

    /// Runs `body`, which uses `inode.fd`, again once on a descriptor of another of the file's
    /// names when a path-based lower FUSE file system no longer knows the current one's
    /// (`Inode.reviveFromRetired`): after `link a b; unlink b`, `a` must still answer.
    func onLiveDescriptor<R>(_ inode: Inode, _ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let error as Errno where error == .ENOENT && inodes.verifyHits && inode.reviveFromRetired() {
            return try body()
        }
    }

    private func currentAttributes(_ inode: Inode, _ lower: stat?) throws -> stat {
        if inode.isRegular && inode.writtenBehind {
            // A write acknowledged before it was stored holds the content lock until it is: a size
            // taken before then would shrink the file in the kernel.
            return try inode.content.reading { try storedAttributes(inode, nil) }
        }
        return try storedAttributes(inode, lower)
    }

    /// `attributes` once no acknowledged write is still being stored.
    private func storedAttributes(_ inode: Inode, _ lower: stat?) throws -> stat {
        if inode.isRegular && !codec.preservesSize && codec.fixedOverhead == nil {
            // The size comes from the last slot's record: the lower size is taken under the content
            // lock with it (a size taken before may end inside a slot a concurrent write just moved).
            var own: FileDescriptor?, opened: OpenFile?
            do {
                own = try inode.fd.reopenQuietly(O_RDONLY)
            } catch let e as Errno where e == .ESTALE || e == .ENOENT {
                // A path-based lower FUSE file system (GlusterFS's client) cannot reopen a file
                // whose name is gone (replaced by a rename, unlinked); an open of it still reads
                // it, and holding that open keeps its descriptor.
                guard let open = openFiles.readable(of: inode) else { throw e }
                opened = open
            }
            defer { own?.close() }
            let fd = own ?? opened!.fd
            let file = LowerFile(fd: fd, inode: inode)
            return try withExtendedLifetime(opened) {  // its descriptor closes with it
                try inode.content.reading {
                    var st = try lowerStat(fd)
                    st.st_size = off_t(try engine.logicalSize(file, lowerSize: Int64(st.st_size)))
                    return st
                }
            }
        }
        var st = try lower ?? lowerStat(inode.fd)
        if inode.isRegular && !codec.preservesSize {
            // Fixed overhead: arithmetic on the lower size is enough; no need to open the file.
            let file = LowerFile(fd: inode.fd, inode: inode)
            st.st_size = off_t(try engine.logicalSize(file, lowerSize: Int64(st.st_size)))
        } else if inode.isSymlink && !codec.preservesNameLength {
            if let known = inode.linkLength {
                st.st_size = off_t(known)
            } else {
                let length = try codec.decodeLinkTarget(try inode.fd.readLink()).count
                inode.linkLength = length
                st.st_size = off_t(length)
            }
        }
        return st
    }

    /// Gives a new entry the caller's ownership when the daemon serves others as root.
    func adoptOwnership(_ req: fuse_req_t, parent: Inode, lowerName: UnsafePointer<CChar>) {
        guard let (uid, gid) = callerOwnership(req, parent: parent) else { return }
        _ = fchownat(parent.fd.rawValue, lowerName, uid, gid, AT_SYMLINK_NOFOLLOW)
    }

    /// `adoptOwnership` for a new file that has no name (O_TMPFILE).
    func adoptOwnership(_ req: fuse_req_t, parent: Inode, file: FileDescriptor) {
        guard let (uid, gid) = callerOwnership(req, parent: parent) else { return }
        try? file.chown(uid: uid, gid: gid)
    }

    /// The owner and group a new entry in `parent` takes from the caller (the group stays the
    /// directory's under set-group-ID), or nil when the daemon leaves them as they are.
    private func callerOwnership(_ req: fuse_req_t, parent: Inode) -> (uid_t, gid_t)? {
        guard runsAsRoot, let ctx = fuse_req_ctx(req)?.pointee, ctx.uid != 0 || ctx.gid != 0 else { return nil }
        let parentStat = try? parent.fd.stat()
        let gid = (parentStat.map { $0.st_mode & S_ISGID != 0 } ?? false) ? gid_t.max : ctx.gid
        return (ctx.uid, gid)
    }

    /// Notes that the kernel will know `e`'s file as `name` in directory `parent` (its node ID in
    /// this mount), so its entry can be dropped by name when descriptors run short.
    func named(_ e: fuse_entry_param, parent: fuse_ino_t, _ name: UnsafePointer<CChar>) -> fuse_entry_param {
        if e.ino != FUSE_ROOT_ID {
            let bytes = UnsafeRawBufferPointer(start: name, count: strlen(name))
            inodes.inode(e.ino).upperName = (inodes.mount, UInt64(parent), [UInt8](bytes))
        }
        return e
    }

    func reply(_ req: fuse_req_t, entry e: fuse_entry_param) {
        var e = e
        if e.ino != 0 && e.ino != FUSE_ROOT_ID { inodes.noteEntryGiven(e.ino, atMs: wrapfs_monotonic_ns() / 1_000_000) }
        fuse_reply_entry(req, &e)
    }

    func reply(_ req: fuse_req_t, attributes st: stat) {
        var st = st
        fuse_reply_attr(req, &st, options.attributeTimeout)
    }

    /// Runs a request body; an error becomes the errno reply. The body replies on success.
    @inline(__always)
    func serve(_ req: fuse_req_t, function: StaticString = #function, _ body: () throws -> Void) {
        do {
            try body()
        } catch let e as Errno {
            if log.logLevel <= .debug { log.debug("\(function): \(e)") }
            stats.failed(Operation.current, errno: e.rawValue)
            fuse_reply_err(req, e.rawValue)
        } catch {
            log.error("request failed: \(error)")
            stats.failed(Operation.current, errno: EIO)
            fuse_reply_err(req, EIO)
        }
    }
}
