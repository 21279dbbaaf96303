// InodeTable: lower files the kernel knows, keyed by (st_dev, st_ino), with lookup counts;
// shared by every mount (namespace) one daemon serves, each seeing it through an InodeView.
import Glibc
import CFuse
import Synchronization

/// Maps kernel node IDs to inodes. A node ID is the address of its `Inode` (as in libfuse's
/// passthrough_hp), so resolving one takes no lock; the table's lock guards only the
/// (dev, ino) index and the lookup counts that `forget` lowers. One table serves all the
/// daemon's mounts: a file hard-linked into two namespaces is one `Inode`, with one content
/// lock, whichever mount reaches it.
final class InodeTable {
    private var byKey: [InodeKey: Inode] = [:]
    /// Inodes the kernel still knows whose key a newer inode took (see `remember`).
    private var displaced: [ObjectIdentifier: Inode] = [:]
    private let lock = Mutex()
    /// Inodes known (each holds a descriptor), the root not counted.
    private let known = Atomic<Int>(0)
    /// Past this many known inodes (the open-file limit less a reserve for open files and the
    /// daemon's own: a quarter of the limit, at most 2,048), the kernel is asked to drop old entries
    /// and new ones reach it uncached: it forgets each inode nothing uses, which closes the
    /// descriptor. Without that, a tree of more files than the limit (20,000 on some machines)
    /// fails with EMFILE while the kernel caches every entry it has seen.
    let descriptorHighWater = { (limit: Int) in max(48, limit - min(limit / 4, 2048)) }(wrapfs_nofile())
    /// Whether new entries should reach the kernel uncached (see `descriptorHighWater`).
    var descriptorsScarce: Bool { known.load(ordering: .relaxed) > descriptorHighWater }
    /// Called (on the thread that found it) when the known inodes pass `descriptorHighWater`: the
    /// mount group then asks the kernel to drop the entries of the oldest (see `sheddable`).
    var onScarce: (() -> Void)?
    private var nextSequence: UInt64 = 0

    /// A lower FUSE file system may give one inode number to two files (path-based ones built on
    /// libfuse's high-level API, such as bindfs, do not pin their backing files): check hits.
    let verifyHits: Bool

    /// `lowerRoot` is any directory of the lower file system (its type decides `verifyHits`).
    init(lowerRoot: FileDescriptor) {
        verifyHits = wrapfs_fs_type(lowerRoot.rawValue) == 0x6573_5546  // FUSE_SUPER_MAGIC
    }

    /// The view of mount number `mount` (0...63), whose root directory is `root`.
    func view(root: Inode, mount: Int) -> InodeView {
        precondition(mount >= 0 && mount < 64)
        root.lookups = 1  // never forgotten
        root.markSeen(by: mount)
        return InodeView(table: self, root: root, mount: mount)
    }

    /// Records one kernel lookup, by mount `mount`, of the file open as `fd` (O_PATH) with status
    /// `st`; returns its inode. If the file is known already, `fd` is closed and the known inode is
    /// returned. A known inode that turns out to be another file (see `verifyHits`) is replaced.
    fileprivate func remember(fd: FileDescriptor, stat st: stat, root: Inode, mount: Int) -> Inode {
        let key = InodeKey(st)
        if key == root.key {
            fd.close()
            return lock.locked { root.lookups += 1; return root }
        }
        let (inode, fresh) = lock.locked { () -> (Inode, Bool) in
            if let known = byKey[key], known.fileType == st.st_mode & S_IFMT,
               !verifyHits || wrapfs_same_live_file(known.fd.rawValue, fd.rawValue) != 0 {
                known.lookups += 1
                return (known, verifyHits && known.adopt(fd))  // an adopted `fd` stays open
            }
            let inode = Inode(fd: fd, stat: st)
            inode.lookups = 1
            nextSequence += 1
            inode.sequence = nextSequence
            known.add(1, ordering: .relaxed)
            // The kernel may still use the one it replaces: it lives until forgotten.
            if let displaced = byKey.updateValue(inode, forKey: key) { self.displaced[ObjectIdentifier(displaced)] = displaced }
            return (inode, true)
        }
        inode.markSeen(by: mount)
        if !fresh { fd.close() }
        if descriptorsScarce { onScarce?() }
        return inode
    }

    /// The names of up to `count` of the oldest known files that are not directories (dropping a
    /// directory's entry would drop its whole subtree's), to be dropped from the kernel's cache:
    /// it then forgets each file nothing holds open, and its descriptor closes.
    /// (Names only leave the lock: an inode held past it could be freed, and its descriptor closed,
    /// outside `closing`, where rmdir would not wait for it.)
    /// Names in a directory where a lookup or create waits for a descriptor are left out: the
    /// kernel holds that directory's lock through the request, and dropping an entry there takes
    /// the lock, so it would wait for the very request it is meant to help (and hold up the rest).
    func sheddable(_ count: Int) -> [(mount: Int, parent: UInt64, name: [UInt8])] {
        lock.locked {
            Array(byKey.values.filter { !$0.isDirectory }.sorted { $0.sequence < $1.sequence }.lazy
                .compactMap { $0.upperName }
                .filter { self.waitingIn[DirectoryKey(mount: $0.mount, node: $0.parent)] == nil }
                .prefix(max(0, count)))
        }
    }

    /// A directory as one mount's kernel knows it: the mount and its node ID there.
    struct DirectoryKey: Hashable {
        let mount: Int
        let node: UInt64
    }
    /// Directories whose lock the kernel holds through a request that waits for a descriptor
    /// (see `Layer.withDescriptorRoom`), with how many such requests; guarded by `lock`.
    private var waitingIn: [DirectoryKey: Int] = [:]

    /// Runs `body` marked as waiting for a descriptor in directory `dir` (see `sheddable`).
    func waiting<R>(in dir: DirectoryKey, _ body: () throws -> R) rethrows -> R {
        lock.locked { waitingIn[dir, default: 0] += 1 }
        defer {
            lock.locked {
                let left = waitingIn[dir, default: 1] - 1
                waitingIn[dir] = left == 0 ? nil : left
            }
        }
        return try body()
    }

    /// How many known inodes to shed to get back to two thirds of the high water mark (0 or less
    /// when there are fewer: an EMFILE may come from open files, not inodes).
    var excess: Int { known.load(ordering: .relaxed) - descriptorHighWater * 2 / 3 }

    fileprivate func rememberKnown(_ key: InodeKey, type: mode_t, root: Inode, mount: Int) -> Inode? {
        if verifyHits { return nil }
        let known = lock.locked { () -> Inode? in
            guard let known = byKey[key], known.fileType == type, known !== root else { return nil }
            known.lookups += 1
            return known
        }
        known?.markSeen(by: mount)
        return known
    }

    /// Whether mount `mount`'s kernel still holds a lookup of the file known as `key` (type
    /// `type`) and was given its entry with attributes at or after `ms` (monotonic milliseconds).
    fileprivate func givenSince(_ key: InodeKey, type: mode_t, mount: Int, ms: UInt64) -> Bool {
        if verifyHits { return false }
        let known = lock.locked { () -> Inode? in
            guard let known = byKey[key], known.fileType == type, known.lookups > 0 else { return nil }
            return known
        }
        return known?.entryGiven(mount: mount, sinceMs: ms) ?? false
    }

    /// `id` is an inode's address (never the root's). The inode is resolved inside the lock and
    /// held by nobody else here, so dropping `doomed` runs its deinit (the close) inside `closing`:
    /// a caller holding it across this call would close it after `closing` ends and let rmdir
    /// spin in the kernel (that made rm -rf twice as slow once).
    fileprivate func forget(_ id: fuse_ino_t, count: UInt64) {
        var doomed = lock.locked { () -> Inode? in
            let inode = InodeTable.inode(at: id)
            inode.lookups -= min(count, inode.lookups)
            guard inode.lookups == 0 else { return nil }
            if byKey[inode.key] === inode { return byKey.removeValue(forKey: inode.key) }
            return displaced.removeValue(forKey: ObjectIdentifier(inode))
        }
        // Closing the last descriptor of an unlinked file frees it in the lower file system; an
        // rmdir of its directory meanwhile busy-waits in the kernel, so rmdir waits for `closing`.
        if doomed != nil {
            known.subtract(1, ordering: .relaxed)
            closing.run { doomed = nil }
        }
    }

    /// The inode whose address is node ID `id` (any but FUSE_ROOT_ID).
    fileprivate static func inode(at id: fuse_ino_t) -> Inode {
        Unmanaged<Inode>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(id))!).takeUnretainedValue()
    }

    /// Closes of forgotten inodes' descriptors in progress.
    let closing = Pending()
}

/// One mount's view of the shared table: its root answers to FUSE_ROOT_ID, every other inode
/// to its address (the same in every mount, so one file has one node ID everywhere).
struct InodeView {
    let table: InodeTable
    let root: Inode
    /// This mount's number, for `Inode.seenBy`.
    let mount: Int

    var verifyHits: Bool { table.verifyHits }
    var descriptorsScarce: Bool { table.descriptorsScarce }
    /// Asks the kernel to drop old entries now (see `InodeTable.onScarce`).
    func shedEntries() { table.onScarce?() }
    var closing: Pending { table.closing }
    /// Runs `body` marked as waiting for a descriptor in `dir` (see `InodeTable.sheddable`).
    func waiting<R>(in dir: Inode, _ body: () throws -> R) rethrows -> R {
        try table.waiting(in: InodeTable.DirectoryKey(mount: mount, node: UInt64(id(of: dir))), body)
    }
    /// How many known inodes shedding would drop (see `InodeTable.excess`).
    var excess: Int { table.excess }

    func inode(_ id: fuse_ino_t) -> Inode {
        if id == FUSE_ROOT_ID { return root }
        return InodeTable.inode(at: id)
    }

    func id(of inode: Inode) -> fuse_ino_t {
        if inode === root { return fuse_ino_t(FUSE_ROOT_ID) }
        return fuse_ino_t(UInt(bitPattern: Unmanaged.passUnretained(inode).toOpaque()))
    }

    /// Records one kernel lookup of the file open as `fd` (O_PATH) with status `st` (see
    /// `InodeTable.remember`).
    func remember(fd: FileDescriptor, stat st: stat) -> Inode {
        table.remember(fd: fd, stat: st, root: root, mount: mount)
    }

    /// Records one more kernel lookup of a file known as `key` with type `type`, if the table
    /// holds it; nil otherwise (and always on lower FUSE file systems, see `verifyHits`).
    /// Safe on local file systems: the held O_PATH descriptor pins the inode, so its number
    /// cannot have been given to another file.
    func rememberKnown(_ key: InodeKey, type: mode_t) -> Inode? {
        table.rememberKnown(key, type: type, root: root, mount: mount)
    }

    /// Whether this mount's kernel was given the entry of the file known as `key`, with its
    /// attributes, at or after `ms` (monotonic milliseconds), and some mount still holds the file.
    /// (If this one forgot it meanwhile, a name without attributes only costs the kernel a lookup.)
    func givenSince(_ key: InodeKey, type: mode_t, ms: UInt64) -> Bool {
        table.givenSince(key, type: type, mount: mount, ms: ms)
    }

    /// Notes that this mount's kernel is being given `id`'s entry with attributes now.
    func noteEntryGiven(_ id: fuse_ino_t, atMs ms: UInt64) {
        inode(id).noteEntryGiven(mount: mount, atMs: ms)
    }

    /// Lowers the lookup count by `count`; the inode (and its descriptor) goes at zero.
    func forget(_ id: fuse_ino_t, count: UInt64) {
        if id == FUSE_ROOT_ID { return }
        table.forget(id, count: count)
    }
}
