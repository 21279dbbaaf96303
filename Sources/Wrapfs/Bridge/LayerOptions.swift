// LayerOptions: the tunables of one mounted layer (timeouts, caching, request sizes, threads).

/// How a layer talks to the kernel. Defaults favour correctness over a lower file system that
/// may change behind the layer's back; the benchmark measures the rest.
public struct LayerOptions {
    /// Seconds the kernel may cache attributes and names (0 ... `longestTimeout`).
    public var attributeTimeout: Double = 1.0
    public var entryTimeout: Double = 1.0
    /// Seconds the kernel may remember that a name does not exist (0: never).
    public var negativeTimeout: Double = 1.0
    /// The longest timeout taken (about 31 years); the layer treats a longer, infinite or NaN one as this.
    public static let longestTimeout: Double = 1e9
    /// Bypass the page cache: no mmap, every read and write reaches the layer.
    public var directIO = false
    /// Write-only opens bypass the page cache (FOPEN_DIRECT_IO) unless the writeback cache is on
    /// or the kernel is older than 6.6 (FUSE 7.39: it would keep other opens' stale pages).
    /// A write-only descriptor can never be mapped, so nothing is lost; the writer's data goes
    /// from its buffer to the daemon in one copy instead of two, and no page is allocated for it
    /// (the kernel drops the pages of the written range that other opens cached, so they stay
    /// coherent). A guide, interleaved A/B on tmpfs: 1 GiB `dd` to aes-gcm 0.8-1.1 s against
    /// 0.9-2.3 s, untar ~10% faster.
    public var directWriteOnlyOpens = true
    /// Keep cached pages across opens (the kernel still drops them when size or mtime change).
    public var keepCache = false
    /// When the kernel's cached pages of a file are dropped (see `Coherence`).
    public var coherence = Coherence.open
    /// Let the kernel gather writes in its cache (FUSE writeback cache).
    public var writebackCache = false
    /// Largest write request, bytes (the kernel caps it at 1 MiB).
    public var maxWrite = 1 << 20
    /// The kernel's read-ahead for the mount, KiB (0: leave the kernel's 128 KiB). FUSE caps
    /// the read-ahead the daemon may ask for at mount time by the 128 KiB default of the
    /// mount's backing device; only its sysfs entry raises it. With 4 MiB a streaming reader
    /// gets 1 MiB reads (decoded on several threads at once) instead of 128 KiB ones, a few in
    /// flight while it copies the last (docs/NOTES.md, session 27: 4 MiB against 1 MiB).
    public var readAheadKiB = 4096
    /// Worker threads (0: libfuse's default).
    public var threads = 0
    /// Serve extended attributes. Without them the layer answers ENOSYS once and the kernel
    /// stops asking (applications get EOPNOTSUPP), as bare FUSE (passthrough_ll) and bindfs
    /// --xattr-none do: no getxattr round trip per file written or chowned (security.capability)
    /// or per file `ls -l` lists (ACL, SELinux label).
    public var extendedAttributes = true
    /// Have the kernel enforce POSIX ACLs (FUSE_POSIX_ACL), as the lower file system would. Only
    /// where the kernel checks permissions at all (`default_permissions`, which FUSE_POSIX_ACL
    /// implies); `wrapfs-mount` turns it on with that option unless xattrs are off. Without it an
    /// ACL is stored and shown but only the mode bits are checked.
    public var posixACLs = false
    /// Take over the clearing of set-ID bits on write, truncate and chown from the kernel
    /// (FUSE_HANDLE_KILLPRIV_V2, when the kernel offers it): the kernel then stops asking for
    /// `security.capability` before every write(2), and the layer clears them by the VFS's
    /// current rules (see `Layer.modeWithoutSetID`).
    public var daemonClearsSetID = true
    /// Open a lower directory stream for each directory the kernel opens (OPENDIR/RELEASEDIR).
    /// Without them (FUSE_NO_OPENDIR_SUPPORT, when the kernel offers it) the kernel opens and
    /// closes directories without asking, two requests less per listing, and each listing reads
    /// the lower directory from the kernel's cookie (`ListingStreams`). The kernel then also
    /// keeps listings (its readdir cache) until the directory changes through the mount or its
    /// mtime does, which it checks when the attribute timeout has passed only with `.open`
    /// coherence: under `.explicit` handles stay whatever this says, so that a lower directory
    /// changed behind the layer lists afresh. And only where opening checks nothing the listing
    /// would not: `wrapfs-mount` keeps them for a daemon that is not root under no
    /// `default_permissions` (its own unreadable directory must fail at opendir).
    public var directoryHandles = true
    /// Offer readdirplus (names with attributes in one reply) to the kernel.
    public var readdirPlus = true
    /// With a codec that changes no byte (identity), take WRITE data by splice and move it to the
    /// lower file without copying it through the daemon. Off by default: libfuse then splices every
    /// request and reads small ones back out of the pipe, a syscall more per request (untar ~10%
    /// slower, 1 MiB writes ~7% faster in `bench/ab` and the A/B loop; docs/NOTES.md).
    public var splice = false
    /// Acknowledge big writes before storing them, while the lower file system has room to
    /// spare (see `WriteBehind`).
    public var writeBehind = true
    /// Names in the lower root that belong to the layer (its volume file): never shown, never usable.
    public var hiddenRootNames: Set<String> = []
    /// Take requests through FUSE over io_uring where the kernel offers it (`FuseRing`): a
    /// queue per CPU, so a request and its reply need no wake-up of another CPU.
    public var ioUring = false
    /// Serve requests on one thread (for debugging).
    public var singleThreaded = false

    public init() {}
}

/// How cached file pages follow a lower file that also changes elsewhere.
public enum Coherence: String, CaseIterable, Sendable {
    /// Close-to-open, as NFS: every open, and every change of size or mtime the layer sees,
    /// drops the file's cached pages.
    case open
    /// Cached pages stay until the application refreshes a range (`wrapfs-mount refresh`, the
    /// WRAPFS_IOC_REFRESH ioctl) or writes it through this layer: for files shared across
    /// machines whose users keep their caches coherent themselves (msync, then refresh).
    case explicit
}
