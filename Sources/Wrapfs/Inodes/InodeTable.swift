// InodeTable: lower files the kernel knows, keyed by (st_dev, st_ino), with lookup counts.
import Glibc
import CFuse

/// Maps kernel node IDs to inodes. A node ID is the address of its `Inode` (as in libfuse's
/// passthrough_hp), so resolving one takes no lock; the table's lock guards only the
/// (dev, ino) index and the lookup counts that `forget` lowers.
final class InodeTable {
    let root: Inode
    private var byKey: [InodeKey: Inode] = [:]
    /// Inodes the kernel still knows whose key a newer inode took (see `remember`).
    private var displaced: [ObjectIdentifier: Inode] = [:]
    private let lock = Mutex()

    /// A lower FUSE file system may give one inode number to two files (path-based ones built on
    /// libfuse's high-level API, such as bindfs, do not pin their backing files): check hits.
    let verifyHits: Bool

    init(root: Inode) {
        self.root = root
        root.lookups = 1  // never forgotten
        verifyHits = wrapfs_fs_type(root.fd.rawValue) == 0x6573_5546  // FUSE_SUPER_MAGIC
    }

    func inode(_ id: fuse_ino_t) -> Inode {
        if id == FUSE_ROOT_ID { return root }
        return Unmanaged<Inode>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(id))!).takeUnretainedValue()
    }

    func id(of inode: Inode) -> fuse_ino_t {
        if inode === root { return fuse_ino_t(FUSE_ROOT_ID) }
        return fuse_ino_t(UInt(bitPattern: Unmanaged.passUnretained(inode).toOpaque()))
    }

    /// Records one kernel lookup of the file open as `fd` (O_PATH) with status `st`; returns its
    /// inode. If the file is known already, `fd` is closed and the known inode is returned.
    /// A known inode that turns out to be another file (see `verifyHits`) is replaced, not reused.
    func remember(fd: FileDescriptor, stat st: stat) -> Inode {
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
            // The kernel may still use the one it replaces: it lives until forgotten.
            if let displaced = byKey.updateValue(inode, forKey: key) { self.displaced[ObjectIdentifier(displaced)] = displaced }
            return (inode, true)
        }
        if !fresh { fd.close() }
        return inode
    }

    /// Records one more kernel lookup of a file known as `key` with type `type`, if the table
    /// holds it; nil otherwise (and always on lower FUSE file systems, see `verifyHits`).
    /// Safe on local file systems: the held O_PATH descriptor pins the inode, so its number
    /// cannot have been given to another file.
    func rememberKnown(_ key: InodeKey, type: mode_t) -> Inode? {
        if verifyHits { return nil }
        return lock.locked {
            guard let known = byKey[key], known.fileType == type, known !== root else { return nil }
            known.lookups += 1
            return known
        }
    }

    /// Lowers the lookup count by `count`; the inode (and its descriptor) goes at zero.
    func forget(_ id: fuse_ino_t, count: UInt64) {
        if id == FUSE_ROOT_ID { return }
        var doomed = lock.locked { () -> Inode? in
            let inode = self.inode(id)
            inode.lookups -= min(count, inode.lookups)
            guard inode.lookups == 0 else { return nil }
            if byKey[inode.key] === inode { return byKey.removeValue(forKey: inode.key) }
            return displaced.removeValue(forKey: ObjectIdentifier(inode))
        }
        // Closing the last descriptor of an unlinked file frees it in the lower file system; an
        // rmdir of its directory meanwhile busy-waits in the kernel, so rmdir waits for `closing`.
        if doomed != nil { closing.run { doomed = nil } }
    }

    /// Closes of forgotten inodes' descriptors in progress.
    let closing = WorkCounter()
}
