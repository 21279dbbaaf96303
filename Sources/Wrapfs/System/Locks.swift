// Locks: a pthread read-write lock for per-inode content, and a plain mutex.
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
    private let m: UnsafeMutablePointer<pthread_mutex_t>
    private let idle: UnsafeMutablePointer<pthread_cond_t>
    private var running = 0

    public init() {
        m = .allocate(capacity: 1)
        idle = .allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        pthread_cond_init(idle, nil)
    }
    deinit {
        pthread_cond_destroy(idle)
        pthread_mutex_destroy(m)
        idle.deallocate()
        m.deallocate()
    }

    public func run<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(m)
        running += 1
        pthread_mutex_unlock(m)
        defer {
            pthread_mutex_lock(m)
            running -= 1
            if running == 0 { pthread_cond_broadcast(idle) }
            pthread_mutex_unlock(m)
        }
        return try body()
    }

    /// Returns when no work runs, or after `milliseconds` at the latest.
    public func waitUntilIdle(milliseconds: Int) {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        deadline.tv_nsec += milliseconds % 1000 * 1_000_000
        deadline.tv_sec += milliseconds / 1000 + deadline.tv_nsec / 1_000_000_000
        deadline.tv_nsec %= 1_000_000_000
        pthread_mutex_lock(m)
        while running > 0 {
            if pthread_cond_timedwait(idle, m, &deadline) != 0 { break }
        }
        pthread_mutex_unlock(m)
    }
}
