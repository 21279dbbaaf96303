// Shadow files: the root of a shim mount, where `ln -s /abs/backing name` makes `name` the backing file.
import Glibc
import CFuse

/// The entries of a shim mount (`wrapfs-mount --shim MOUNTPOINT`). It has no lower directory:
/// each entry is a name for one backing file anywhere on the system, given by an absolute
/// symlink target at creation. Through the entry the backing file is a regular file of the
/// mount (with the page cache, so mmap works even where the backing file system has none).
/// Removing the entry closes the backing file; the backing file itself is never deleted.
final class ShadowFiles {
    struct Entry {
        /// O_PATH descriptor of the backing file, held while the entry exists.
        let backing: FileDescriptor
        let path: String
    }

    private var entries: [[UInt8]: Entry] = [:]
    private let lock = Mutex()
    /// The mount point, as given at mount time (absolute, resolved).
    let mountpoint: String
    /// The device number of the mount itself, read once from /proc/self/mountinfo.
    private var mountDevice: dev_t?

    init(mountpoint: String) { self.mountpoint = mountpoint }

    deinit { for e in entries.values { e.backing.close() } }

    func entry(_ name: [UInt8]) -> Entry? { lock.locked { entries[name] } }

    /// Names and inode numbers, for readdir.
    func list() -> [(name: [UInt8], ino: ino_t)] {
        lock.locked { entries.map { ($0.key, (try? $0.value.backing.stat().st_ino) ?? 0) } }.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// Makes entry `name` for the backing file `target`. Errors: EINVAL (relative target, not a
    /// regular file), ENOENT (missing), EISDIR (a directory), ELOOP (inside this mount), EEXIST.
    func add(_ name: [UInt8], target: [UInt8], log: (String) -> Void) throws -> Entry {
        let text = String(decoding: target, as: UTF8.self)
        guard target.first == UInt8(ascii: "/") else {
            log("shim: \(text): the target must be an absolute path")
            throw Errno.EINVAL
        }
        if Self.lexicallyInside(text, mountpoint) {
            log("shim: \(text) is inside the shim mount itself")
            throw Errno.ELOOP
        }
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(text, O_PATH)
        } catch let e as Errno {
            log("shim: cannot open backing file \(text): \(e)")
            throw e
        }
        do {
            let st = try fd.stat()
            switch st.st_mode & S_IFMT {
            case S_IFREG: break
            case S_IFDIR:
                log("shim: \(text) is a directory; only regular files can be shadowed")
                throw Errno.EISDIR
            default:
                log("shim: \(text) is not a regular file")
                throw Errno.EINVAL
            }
            if st.st_dev == ownDevice() {
                log("shim: \(text) is inside the shim mount itself")
                throw Errno.ELOOP
            }
            let entry = Entry(backing: fd, path: text)
            try lock.locked {
                if entries[name] != nil { throw Errno.EEXIST }
                entries[name] = entry
            }
            return entry
        } catch {
            fd.close()
            throw error
        }
    }

    /// Removes entry `name` and closes its backing file.
    func remove(_ name: [UInt8]) throws {
        guard let e = lock.locked({ entries.removeValue(forKey: name) }) else { throw Errno.ENOENT }
        e.backing.close()
    }

    /// rename(2) between two entries, with RENAME_NOREPLACE (1) and RENAME_EXCHANGE (2).
    func rename(_ from: [UInt8], to: [UInt8], flags: UInt32) throws {
        var replaced: Entry?
        try lock.locked {
            guard let moving = entries[from] else { throw Errno.ENOENT }
            if from == to { return }
            switch flags {
            case 0:
                replaced = entries.updateValue(moving, forKey: to)
                entries[from] = nil
            case 1:
                if entries[to] != nil { throw Errno.EEXIST }
                entries[to] = moving
                entries[from] = nil
            case 2:
                guard let other = entries[to] else { throw Errno.ENOENT }
                entries[to] = moving
                entries[from] = other
            default:
                throw Errno.EINVAL
            }
        }
        replaced?.backing.close()
    }

    /// True when `path`, with "." and ".." resolved by text, is `root` or below it.
    static func lexicallyInside(_ path: String, _ root: String) -> Bool {
        var parts: [Substring] = []
        for p in path.split(separator: "/") {
            if p == "." { continue }
            if p == ".." { _ = parts.popLast(); continue }
            parts.append(p)
        }
        let normal = "/" + parts.joined(separator: "/")
        return normal == root || normal.hasPrefix(root == "/" ? "/" : root + "/")
    }

    /// The mount's own device number: asking the kernel with stat(2) would send a request to
    /// this daemon, so it comes from /proc/self/mountinfo (the last mount on the mount point).
    private func ownDevice() -> dev_t? {
        if let d = lock.locked({ mountDevice }) { return d }
        let found = MountInfo.all().last { $0.point == mountpoint }?.device
        lock.locked { mountDevice = found }
        return found
    }
}
