// SecretBytes: key material in locked memory, left out of core dumps, zeroed when done.
import Glibc

/// Bytes of a key. They live in their own pages, locked so they stay out of swap where the
/// system allows (RLIMIT_MEMLOCK), excluded from core dumps, and zeroed by `wipe` and on release.
public final class SecretBytes: @unchecked Sendable {
    public let count: Int
    private let base: UnsafeMutableRawPointer
    private let mapped: Int
    /// Whether mlock succeeded (it may not, for an unprivileged user with a small limit).
    public let locked: Bool

    public init(count: Int) throws {
        precondition(count > 0)
        mapped = (count + 4095) & ~4095
        let p = mmap(nil, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != UnsafeMutableRawPointer(bitPattern: -1) else { throw Errno.current }
        base = p
        self.count = count
        locked = mlock(p, mapped) == 0
        _ = madvise(p, mapped, MADV_DONTDUMP)
        Self.registry.locked { Self.live[UInt(bitPattern: p)] = mapped }
    }

    /// Every live secret's pages, so that `wipeAll` can zero them when the layer unmounts.
    private static let registry = Mutex()
    nonisolated(unsafe) private static var live: [UInt: Int] = [:]

    /// Locks every live secret's pages again (after fork: locks are not inherited).
    public static func relockAll() {
        registry.locked {
            for (address, length) in live { _ = mlock(UnsafeRawPointer(bitPattern: address), length) }
        }
    }

    /// Zeroes every key still in memory (at unmount: the process may not free them first).
    public static func wipeAll() {
        registry.locked {
            for (address, length) in live { explicit_bzero(UnsafeMutableRawPointer(bitPattern: address)!, length) }
        }
    }

    /// A copy of `bytes`, which the caller should then zero.
    public convenience init(copying bytes: UnsafeRawBufferPointer) throws {
        try self.init(count: bytes.count)
        base.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    public func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(start: base, count: count))
    }

    /// Zeroes the bytes (explicit_bzero: the compiler may not drop it).
    public func wipe() { explicit_bzero(base, mapped) }

    deinit {
        Self.registry.locked { _ = Self.live.removeValue(forKey: UInt(bitPattern: base)) }
        wipe()
        if locked { munlock(base, mapped) }
        munmap(base, mapped)
    }
}
