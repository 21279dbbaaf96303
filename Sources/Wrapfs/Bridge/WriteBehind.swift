// WriteBehind: when a big write may be acknowledged before it is stored, and the room it holds.
import Glibc
import CFuse
import Synchronization

/// Without the writeback cache a writer waits for each WRITE request to be stored: its next
/// chunk is copied into the kernel only after the daemon's pwrite. Acknowledging first and
/// storing right after (on the same worker thread, still holding the file's content lock, so
/// every other request on the file waits for the data) lets the two copies overlap.
///
/// It keeps ext4's semantics for a full disk: a write is acknowledged early only while the lower
/// file system has `margin` bytes free beyond everything acknowledged and not yet stored, so
/// ENOSPC still comes at write(2). A failure after the acknowledgement (an I/O error, or a disk
/// another program filled within the margin) fails every later write to the file until fsync or
/// close reports it (`Inode.pendingWriteError`). close(2) waits for the stores (see `mayApply`).
/// An encoding codec's direct opens never write behind (`OpenFile.writesBehind`, set in `Layer.configure`).
final class WriteBehind: @unchecked Sendable {
    /// Smallest write acknowledged early (streaming writes; small ones keep their full round trip).
    static let smallest = 64 << 10
    /// Free space kept beyond what is in flight.
    static let margin: Int64 = 64 << 20

    let enabled: Bool
    private let inFlight = Atomic<Int64>(0)

    /// Every codec (encoding is part of the store), but not with the writeback cache, which
    /// already acknowledges early.
    init(options: LayerOptions) {
        enabled = options.writeBehind && !options.writebackCache
    }

    /// File systems whose statfs tells free space exactly and at once (not network or FUSE ones,
    /// whose writes may also fail for reasons statfs cannot see).
    private static let local: Set<Int> = [0xEF53 /* ext2/3/4 */, 0x0102_1994 /* tmpfs */, 0x5846_5342 /* xfs */,
                                          0x9123_683E /* btrfs */, 0xF2F5_2010 /* f2fs */]

    /// Reserves room for `count` bytes about to be written through `fd` (an open with upper
    /// `flags`); false when the write must be stored before it is acknowledged.
    /// The write reaches lower offset `lowerEnd`: past the file system's largest file size
    /// (ext4: 16 TiB with 4 KiB blocks) it must fail at write(2) with EFBIG, so it is stored first
    /// (`FileDescriptor.takesSize`).
    func reserve(_ count: Int, writingTo fd: FileDescriptor, reaching lowerEnd: Int64, flags: Int32) -> Bool {
        guard enabled, count >= Self.smallest, flags & (O_SYNC | O_DSYNC | O_APPEND) == 0 else { return false }
        guard let fs = Self.localStatus(fd) else { return false }
        guard fd.takesSize(lowerEnd) else { return false }
        let free = Int64(fs.f_bavail) * Int64(fs.f_bsize)
        guard free - inFlight.load(ordering: .relaxed) - Int64(count) >= Self.margin else { return false }
        inFlight.add(Int64(count), ordering: .relaxed)
        return true
    }

    /// Gives back what `reserve` took, once the data is stored (or failed).
    func stored(_ count: Int) { inFlight.subtract(Int64(count), ordering: .relaxed) }

    /// Whether a write through an open of `fd` with upper `flags` may ever be acknowledged early.
    /// Only such opens get a FLUSH at close(2), which waits for their stores: after close the
    /// lower file holds every byte, and a store that failed is reported there. (O_APPEND does
    /// not count: fcntl may clear it.)
    func mayApply(to fd: FileDescriptor, flags: Int32) -> Bool {
        guard enabled, flags & O_ACCMODE != O_RDONLY, flags & (O_SYNC | O_DSYNC) == 0 else { return false }
        return Self.localStatus(fd) != nil
    }

    /// The statfs of the file system holding `fd`, if it is one of `local`.
    private static func localStatus(_ fd: FileDescriptor) -> statfs? {
        var fs = statfs()
        return fstatfs(fd.rawValue, &fs) == 0 && local.contains(Int(fs.f_type)) ? fs : nil
    }
}
