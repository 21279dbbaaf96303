// ReadAhead: raises the kernel's read-ahead of a mount once the mount's INIT is done.
import Glibc
import CFuse
import Logging
import Synchronization

/// FUSE caps a mount's read-ahead at the 128 KiB its backing device starts with (the INIT
/// reply can only lower it, and the kernel applies that reply after the mount is made), so the
/// daemon writes the device's sysfs entry itself, on the first request after INIT. Without the
/// right to write sysfs (a mount by an ordinary user) the kernel's default stays.
final class ReadAhead: Sendable {
    private let pending = Atomic<Bool>(false)
    /// The sysfs file and the value to write there.
    private let setting = Synchronization.Mutex<(path: String, kib: Int)?>(nil)

    /// Finds the backing device of the mount just made on `point` in /proc/self/mountinfo (a stat
    /// of the mount point would wait for this daemon) and arms the setting.
    func arm(mountpoint point: String, kib: Int) {
        guard kib > 0,
              let mount = MountInfo.all().last(where: { $0.point == point && $0.type.hasPrefix("fuse") }) else { return }
        setting.withLock { $0 = ("/sys/class/bdi/\(wrapfs_major(mount.device)):\(wrapfs_minor(mount.device))/read_ahead_kb", kib) }
        pending.store(true, ordering: .releasing)
    }

    /// Called on every request: one relaxed load once the setting is done.
    @inline(__always)
    func applyIfPending(log: Logger) {
        guard pending.load(ordering: .relaxed), pending.exchange(false, ordering: .acquiring) else { return }
        guard let (path, kib) = setting.withLock({ $0 }) else { return }
        guard let f = fopen(path, "w") else {
            log.debug("read-ahead stays the kernel's: \(path): \(String(cString: strerror(errno)))")
            return
        }
        fputs("\(kib)\n", f)
        if fclose(f) != 0 { log.debug("read-ahead stays the kernel's: \(path): \(String(cString: strerror(errno)))") }
    }
}
