// Inode: one lower file known to the kernel, held by an O_PATH descriptor.
import Glibc
import Synchronization

/// The identity of a lower file: device and inode number.
struct InodeKey: Hashable {
    let dev: UInt64
    let ino: UInt64
    init(_ st: stat) {
        dev = UInt64(st.st_dev)
        ino = UInt64(st.st_ino)
    }
    init(dev: UInt64, ino: UInt64) {
        self.dev = dev
        self.ino = ino
    }
}

/// A lower file the kernel has looked up. All access to it goes through `fd` (O_PATH) with
/// `*at()` calls, so renames elsewhere in the tree never redirect a request.
public final class Inode {
    /// The descriptor every request uses; replaced only over path-based lower FUSE file
    /// systems (see `adopt`).
    var fd: FileDescriptor { FileDescriptor(rawValue: currentFd.load(ordering: .acquiring)) }
    private let currentFd: Atomic<Int32>
    /// Descriptors `adopt` replaced: requests may still be using them, so they close with the inode.
    private var retired: [FileDescriptor] = []
    let key: InodeKey
    let fileType: mode_t
    /// Kernel lookups not yet forgotten; guarded by the inode table's lock.
    var lookups: UInt64 = 0
    /// The mounts (bit i: mount i) that have looked this file up: a change of its content
    /// through one drops the others' cached pages. Bits are never cleared (a mount that forgot
    /// the file answers the notification with ENOENT, harmlessly).
    var seenBy: UInt64 { mountsSeen.load(ordering: .relaxed) }
    func markSeen(by mount: Int) {
        let bit = UInt64(1) << UInt64(mount)
        if mountsSeen.load(ordering: .relaxed) & bit == 0 { mountsSeen.bitwiseOr(bit, ordering: .relaxed) }
    }
    private let mountsSeen = Atomic<UInt64>(0)
    /// Serialises the page engine's size changes and read-modify-write for this file only.
    let content = ReadWriteLock()
    /// The file's codec header, once read or written; guarded by `headerLock`.
    private var cachedHeader: [UInt8]?
    private let headerLock = Mutex()

    init(fd: FileDescriptor, stat st: stat) {
        currentFd = Atomic(fd.rawValue)
        self.key = InodeKey(st)
        self.fileType = st.st_mode & S_IFMT
    }

    deinit {
        fd.close()
        for old in retired { old.close() }
    }

    /// Keeps `newFd`, just opened by a name the file has now, if that name differs from the
    /// current descriptor's: as the one requests use when the current name no longer reaches
    /// the file, else as a spare; returns false (and the caller closes `newFd`) if not. A lower
    /// file system built on libfuse's path-based API reaches a file by the name it was opened
    /// with: once that name is unlinked, only a descriptor from another of its names still works.
    func adopt(_ newFd: FileDescriptor) -> Bool {
        headerLock.locked {
            guard let newPath = try? newFd.readLinkProc(), (try? fd.readLinkProc()) != newPath else { return false }
            if reaches(fd) {
                // The current name still reaches the file: requests stay on it. Over such a file
                // system each name of a hard-linked file is a kernel inode of its own, with its own
                // page cache and attributes, so opens by two names would not see each other's
                // writes. The new descriptor waits as a spare (`reviveFromRetired`).
                retired.append(newFd)
                return true
            }
            let old = currentFd.exchange(newFd.rawValue, ordering: .acquiringAndReleasing)
            // A request may still be using the old one: it closes with the inode.
            retired.append(FileDescriptor(rawValue: old))
            return true
        }
    }

    /// Over a path-based lower: once the name the current descriptor came by is unlinked, that
    /// descriptor answers ENOENT while the file lives on under its other names. Makes current the
    /// newest replaced descriptor that still reaches this file; true if the current one (maybe
    /// just revived by another request) does.
    func reviveFromRetired() -> Bool {
        headerLock.locked {
            if reaches(fd) { return true }
            for i in retired.indices.reversed() where reaches(retired[i]) {
                retired[i] = FileDescriptor(rawValue: currentFd.exchange(retired[i].rawValue, ordering: .acquiringAndReleasing))
                return true
            }
            return false
        }
    }

    /// Whether `d` still holds this file (asked of the lower file system, past its attribute cache).
    private func reaches(_ d: FileDescriptor) -> Bool { (try? d.freshStat()).map { InodeKey($0) == key } ?? false }

    var isDirectory: Bool { fileType == S_IFDIR }
    var isRegular: Bool { fileType == S_IFREG }
    var isSymlink: Bool { fileType == S_IFLNK }

    /// The plain length of the last record when the lower file had `lowerSize` bytes: saves
    /// reading it for every getattr of a size-changing codec's file (and, for a last slot that
    /// gives no length, logging that again; see `PageEngine.logicalSize`). The page engine clears
    /// it before it writes (under the content lock, which readers of the size hold too).
    /// Whether the lower file's file system overwrites in place (`PageEngine.overwritesInPlace`),
    /// once asked. Read and written only by the page engine's stores, under the content lock.
    var lowerOverwritesInPlace: Bool?

    /// A symlink's plain target length, read at its first stat (the reply to its creation or
    /// lookup): a target never changes, and reading it for every stat would change the lower
    /// atime, which a local file system's lstat does not (there is no O_NOATIME for readlink).
    var linkLength: Int? {
        get { headerLock.locked { knownLinkLength } }
        set { headerLock.locked { knownLinkLength = newValue } }
    }
    private var knownLinkLength: Int?

    var lastRecord: (lowerSize: Int64, plain: Int)? {
        get { headerLock.locked { cachedLastRecord } }
        set { headerLock.locked { cachedLastRecord = newValue } }
    }
    private var cachedLastRecord: (lowerSize: Int64, plain: Int)?

    /// Whether a getxattr of `security.capability` found none since the last xattr change made
    /// through the layer. The kernel asks for that attribute before every write(2) to a FUSE file
    /// (to drop file capabilities); a lower round trip per write is the cost this saves.
    /// A generation count keeps a lookup that raced with a change from recording a stale answer.
    func knownToLackCapability() -> (known: Bool, generation: UInt64) {
        let g = xattrGeneration.load(ordering: .acquiring)
        return (lacksCapabilityAt.load(ordering: .acquiring) == g + 1, g)
    }
    func recordLacksCapability(generation: UInt64? = nil) {
        let g = generation ?? xattrGeneration.load(ordering: .acquiring)
        lacksCapabilityAt.store(g + 1, ordering: .releasing)
    }
    func xattrsChanged() { xattrGeneration.add(1, ordering: .acquiringAndReleasing) }
    private let xattrGeneration = Atomic<UInt64>(0)
    private let lacksCapabilityAt = Atomic<UInt64>(0)

    /// The process whose request removed `security.capability` last (0: none since). The kernel
    /// removes it before the empty SETATTR that stands for a write's loss of privileges; see
    /// `Layer.setattr`.
    func capabilityRemoved(by pid: pid_t) { capabilityRemover.store(pid, ordering: .relaxed) }
    func takeCapabilityRemover() -> pid_t { capabilityRemover.exchange(0, ordering: .relaxed) }
    private let capabilityRemover = Atomic<Int32>(0)

    /// The name the kernel last looked this file up by: its parent's node ID, the mount, and the
    /// upper name. Used only to ask the kernel to drop the entry when descriptors run short
    /// (a stale name is harmless: the kernel then finds nothing to drop).
    var upperName: (mount: Int, parent: UInt64, name: [UInt8])? {
        get { headerLock.locked { lastName } }
        set { headerLock.locked { lastName = newValue } }
    }
    private var lastName: (mount: Int, parent: UInt64, name: [UInt8])?
    /// Order of creation among inodes (older ones are dropped first when descriptors run short).
    var sequence: UInt64 = 0

    /// A write to this file was acknowledged before it was stored (see `WriteBehind`): readers of
    /// its size must then take the content lock, which the storing thread holds.
    var writtenBehind: Bool { wroteBehind.load(ordering: .acquiring) }
    func markWrittenBehind() { if !writtenBehind { wroteBehind.store(true, ordering: .releasing) } }
    private let wroteBehind = Atomic<Bool>(false)
    /// Waits until no write acknowledged before it was stored is still being stored (such a store
    /// holds the content lock from before its acknowledgement): a utimens after it must land after
    /// the pwrite, which would otherwise set the mtime to now again.
    func waitForStores() { if writtenBehind { content.reading {} } }
    /// `waitForStores`, then the error of a store that failed (fsync and close report it).
    func finishStores() throws {
        waitForStores()
        if let e = takeWriteError() { throw e }
    }

    /// The error of a write that failed after it was acknowledged. Later writes fail with it
    /// (`pendingWriteError`) until fsync or close reports it (`takeWriteError`): a write(2) that
    /// the kernel splits into several requests (more than max_write, or a direct write from a
    /// buffer that is not page-aligned) returns a short count when a later request fails, and
    /// the kernel drops that request's error, so a write alone must not use it up.
    func deferWriteError(_ e: Errno) { deferredWriteError.store(e.rawValue, ordering: .releasing) }
    func pendingWriteError() -> Errno? {
        let e = deferredWriteError.load(ordering: .acquiring)
        return e == 0 ? nil : Errno(e)
    }
    func takeWriteError() -> Errno? {
        let e = deferredWriteError.exchange(0, ordering: .acquiringAndReleasing)
        return e == 0 ? nil : Errno(e)
    }
    private let deferredWriteError = Atomic<Int32>(0)

    /// When a mount last gave the kernel this file's entry with attributes: milliseconds on the
    /// monotonic clock, shifted left 6, or'ed with the mount number (0: never). A listing soon
    /// after may then name the file without attributes (see `Layer.readdir`).
    func noteEntryGiven(mount: Int, atMs ms: UInt64) {
        entryGiven.store(ms << 6 | UInt64(mount), ordering: .relaxed)
    }
    func entryGiven(mount: Int, sinceMs ms: UInt64) -> Bool {
        let v = entryGiven.load(ordering: .relaxed)
        return v != 0 && v & 63 == UInt64(mount) && v >> 6 >= ms
    }
    private let entryGiven = Atomic<UInt64>(0)

    var header: [UInt8]? {
        get { headerLock.locked { cachedHeader } }
        set { headerLock.locked { cachedHeader = newValue } }
    }

    /// The lower path, for log lines only (never used to reach the file).
    var lowerPathForLogs: String {
        (try? fd.readLinkProc()) ?? "inode \(key.ino) on device \(key.dev)"
    }
}

extension FileDescriptor {
    func readLinkProc() throws -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try sys { readlink(procPath, &buf, buf.count - 1) }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
