// Locks: a pthread read-write lock for per-inode content, a plain mutex, and a count of work in progress.
import Glibc

/// A read-write lock: many readers of a file's pages at once, one writer.
public final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    public init() {
        lock = .allocate(capacity: 1)
        pthread_rwlock_init(lock, nil)
    }
    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inline(__always) public func reading<R>(_ body: () throws -> R) rethrows -> R {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    @inline(__always) public func writing<R>(_ body: () throws -> R) rethrows -> R {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// A mutex for short critical sections (tables, caches).
public final class Mutex: @unchecked Sendable {
    private let m: UnsafeMutablePointer<pthread_mutex_t>
    public init() {
        m = .allocate(capacity: 1)
        pthread_mutex_init(m, nil)
    }
    deinit {
        pthread_mutex_destroy(m)
        m.deallocate()
    }
    @inline(__always) public func locked<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body()
    }
}

/// Counts pieces of work in progress so that another thread can wait until none is.
public final class WorkCounter: @unchecked Sendable {
    private let running = Pending()

    public init() {}

    public func run<R>(_ body: () throws -> R) rethrows -> R {
        running.enter()
        defer { running.leave() }
        return try body()
    }

    /// Returns when no work runs, or after `milliseconds` at the latest.
    public func waitUntilIdle(milliseconds: Int) { running.wait(milliseconds: milliseconds) }
}
