// MountGroup: the mounts one daemon serves over one lower directory (its namespaces), their
// shared inode table and sessions, and the cross-mount invalidation that keeps them coherent.
import Glibc
import CFuse

/// Mounts of one daemon. Each shows one directory of the lower file system; they share the
/// inode table, so a file reachable from two of them (a hard link across namespaces) is one
/// inode with one content lock, and a change made through one mount drops the others' cache.
final class MountGroup: @unchecked Sendable {
    let table: InodeTable
    private var sessions: [OpaquePointer?]
    private let lock = Mutex()
    /// Runs cross-mount invalidations (see `contentChanged`).
    private let notifier = BackgroundThreads("wrapfs-notify", maxThreads: 16)

    init(table: InodeTable, mounts: Int) {
        self.table = table
        sessions = Array(repeating: nil, count: mounts)
        table.onScarce = { [unowned self] in shedEntries() }
    }

    /// Whether a shedding pass is queued or running, and when the last one started.
    private var shedding = false
    private var lastShed: UInt64 = 0

    /// Asks the kernel to drop the cached entries of the oldest known files (the table is past its
    /// descriptor high water mark). Each entry nothing uses goes at once and the kernel forgets its
    /// inode, so the descriptor closes; an open file keeps working. At most one pass at a time,
    /// and not more often than every 50 ms (names may be stale; then nothing is dropped).
    private func shedEntries() {
        let now = wrapfs_monotonic_ns()
        let start = lock.locked { () -> Bool in
            guard !shedding, now - lastShed > 50_000_000 else { return false }
            shedding = true
            lastShed = now
            return true
        }
        guard start else { return }
        notifier.async { [self] in
            defer { lock.locked { shedding = false } }
            for victim in table.sheddable(table.excess) {
                guard let se = session(victim.mount) else { continue }
                victim.name.withUnsafeBufferPointer { name in
                    name.withMemoryRebound(to: CChar.self) {
                        _ = fuse_lowlevel_notify_inval_entry(se, fuse_ino_t(victim.parent), $0.baseAddress, $0.count)
                    }
                }
            }
        }
    }

    var count: Int { sessions.count }

    func setSession(_ se: OpaquePointer?, mount: Int) { lock.locked { sessions[mount] = se } }
    func session(_ mount: Int) -> OpaquePointer? { lock.locked { sessions[mount] } }

    /// Waits for invalidations still running (one that outlived its wait must not outlive the
    /// session it writes to).
    func quiesce() { notifier.waitUntilIdle() }

    /// Drops every other mount's cached pages and attributes of `inode`, whose content `mount`
    /// just changed. Called after the content lock is released, before the change is answered,
    /// so the other mounts read the new bytes as soon as the writer's call returns. The kernel
    /// locks a file's pages while a write to it is in flight: two mounts writing one file at
    /// once would each wait here for the other's pages, so the wait is bounded and the
    /// invalidation finishes in the background if it must (once the other write is answered).
    func contentChanged(_ inode: Inode, by mount: Int) {
        let others = inode.seenBy & ~(UInt64(1) << UInt64(mount))
        guard others != 0 else { return }
        let ino = UInt(bitPattern: Unmanaged.passUnretained(inode).toOpaque())
        let done = Pending()
        for other in 0..<count where others & (UInt64(1) << UInt64(other)) != 0 {
            guard let se = session(other) else { continue }
            let bits = UInt(bitPattern: se)
            done.enter()
            notifier.async {
                // ENOENT: that mount holds nothing of the file any more.
                _ = fuse_lowlevel_notify_inval_inode(OpaquePointer(bitPattern: bits), fuse_ino_t(ino), 0, 0)
                done.leave()
            }
        }
        done.wait(milliseconds: 200)
    }
}
