// Inode: one lower file known to the kernel, held by an O_PATH descriptor.
import Glibc

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
    let fd: FileDescriptor
    let key: InodeKey
    let fileType: mode_t
    /// Kernel lookups not yet forgotten; guarded by the inode table's lock.
    var lookups: UInt64 = 0
    /// Serialises the page engine's size changes and read-modify-write for this file only.
    let content = ReadWriteLock()
    /// The file's codec header, once read or written; guarded by `headerLock`.
    private var cachedHeader: [UInt8]?
    private let headerLock = Mutex()

    init(fd: FileDescriptor, stat st: stat) {
        self.fd = fd
        self.key = InodeKey(st)
        self.fileType = st.st_mode & S_IFMT
    }

    deinit { fd.close() }

    var isDirectory: Bool { fileType == S_IFDIR }
    var isRegular: Bool { fileType == S_IFREG }
    var isSymlink: Bool { fileType == S_IFLNK }

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
