// Threads: background work and fork-join loops on the daemon's own pthreads, never libdispatch's.
import Glibc
import CFuse

// Why not libdispatch: on Linux a timer watches its thread pool and, each second that work
// waits in a global queue, opens /proc/TID/stat for every worker; when that open fails it aborts
// the process ("workq: registered worker exited prematurely"). The daemon runs out of descriptors
// by design (every file the kernel knows holds one) and must live through it.

/// Starts a detached pthread named `name` running `body`; false if the system refused one.
@discardableResult
func startThread(_ name: String, _ body: @escaping () -> Void) -> Bool {
    let start = Unmanaged.passRetained(ThreadStart(name, body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { context in
        let start = Unmanaged<ThreadStart>.fromOpaque(context!).takeRetainedValue()
        wrapfs_name_thread(start.name)
        start.body()
        return nil
    }, start)
    guard rc == 0 else {
        Unmanaged<ThreadStart>.fromOpaque(start).release()
        return false
    }
    pthread_detach(thread)
    return true
}

private final class ThreadStart {
    let name: String, body: () -> Void
    init(_ name: String, _ body: @escaping () -> Void) { self.name = name; self.body = body }
}

/// A pthread mutex with one condition variable.
final class Monitor: @unchecked Sendable {
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(m, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)  // waits with a deadline ignore clock changes
        pthread_cond_init(c, &attributes)
        pthread_condattr_destroy(&attributes)
    }
    deinit {
        pthread_cond_destroy(c)
        pthread_mutex_destroy(m)
        c.deallocate()
        m.deallocate()
    }

    @inline(__always) func locked<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body()
    }
    /// Inside `locked`: waits for a broadcast.
    func wait() { pthread_cond_wait(c, m) }
    /// Inside `locked`: waits for a broadcast or until `deadline` (CLOCK_MONOTONIC); false at the deadline.
    func wait(until deadline: timespec) -> Bool {
        var d = deadline
        return pthread_cond_timedwait(c, m, &d) == 0
    }
    /// Inside `locked`.
    func broadcast() { pthread_cond_broadcast(c) }

    /// CLOCK_MONOTONIC `milliseconds` from now.
    static func deadline(milliseconds: Int) -> timespec {
        let ns = wrapfs_monotonic_ns() + UInt64(max(0, milliseconds)) * 1_000_000
        return timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
    }
}

/// Counts pieces of work in progress (here or handed to other threads), so that one thread can
/// wait until none is.
final class Pending: @unchecked Sendable {
    private let monitor = Monitor()
    private var count = 0

    func enter() { monitor.locked { count += 1 } }
    func leave() { monitor.locked { count -= 1; if count == 0 { monitor.broadcast() } } }

    /// Runs `body` counted as one piece of work.
    func run<R>(_ body: () throws -> R) rethrows -> R {
        enter()
        defer { leave() }
        return try body()
    }

    /// Returns once every `enter` has had its `leave`, or after `milliseconds` (nil: no limit);
    /// false if some work was still out then.
    @discardableResult
    func wait(milliseconds: Int? = nil) -> Bool {
        let deadline = milliseconds.map { Monitor.deadline(milliseconds: $0) }
        return monitor.locked {
            while count > 0 {
                if let deadline { if !monitor.wait(until: deadline) { return count == 0 } } else { monitor.wait() }
            }
            return true
        }
    }
}

/// Runs closures in the background, in order of submission, on up to `maxThreads` threads it
/// starts when work finds none idle (1: one after the other). Idle threads wait for more.
final class BackgroundThreads: @unchecked Sendable {
    private let name: String
    private let maxThreads: Int
    private let monitor = Monitor()
    private var queue: [() -> Void] = []
    private var head = 0
    private var threads = 0, idle = 0
    private let unfinished = Pending()

    init(_ name: String, maxThreads: Int) {
        self.name = name
        self.maxThreads = max(1, maxThreads)
    }

    /// Queues `work`. Without any thread to run it (the system refused the first one) it runs
    /// here, on the caller's thread.
    func async(_ work: @escaping () -> Void) {
        unfinished.enter()
        let startOne = monitor.locked { () -> Bool in
            queue.append(work)
            if idle > 0 { monitor.broadcast(); return false }
            guard threads < maxThreads else { return false }
            threads += 1
            return true
        }
        guard startOne, !startThread(name, { [self] in serve() }) else { return }
        let orphans = monitor.locked { () -> [() -> Void] in
            threads -= 1
            guard threads == 0 else { return [] }
            defer { queue.removeAll(keepingCapacity: true); head = 0 }
            return Array(queue[head...])
        }
        for work in orphans { work(); unfinished.leave() }
    }

    /// Returns once everything queued so far has run, or after `milliseconds` (nil: no limit);
    /// false if work was still unfinished then.
    @discardableResult
    func waitUntilIdle(milliseconds: Int? = nil) -> Bool { unfinished.wait(milliseconds: milliseconds) }

    private func serve() {
        while true {
            let work = monitor.locked { () -> () -> Void in
                while head == queue.count {
                    idle += 1
                    monitor.wait()
                    idle -= 1
                }
                let work = queue[head]
                head += 1
                if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 }
                return work
            }
            work()
            unfinished.leave()
        }
    }
}

/// Fork-join loops on all cores: `perform` runs `body` for each index, on helper threads and the
/// caller's, and returns when every index has run. Helpers start on first use and stay.
final class ParallelLoop: @unchecked Sendable {
    static let shared = ParallelLoop(helpers: max(0, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) - 1))

    private final class Job {
        var body: ((Int) -> Void)?
        let iterations: Int
        var next = 0, done = 0
        init(_ body: @escaping (Int) -> Void, _ iterations: Int) { self.body = body; self.iterations = iterations }
    }

    private let monitor = Monitor()
    private let wanted: Int
    private var started = 0
    /// Jobs with indices nobody has taken yet.
    private var open: [Job] = []

    init(helpers: Int) { wanted = helpers }

    func perform(iterations: Int, _ body: (Int) -> Void) {
        if iterations <= 1 || wanted == 0 { for i in 0..<iterations { body(i) }; return }
        withoutActuallyEscaping(body) { body in
            let job = Job(body, iterations)
            let startHelpers = monitor.locked { () -> Int in
                open.append(job)
                monitor.broadcast()
                defer { started = wanted }
                return wanted - started
            }
            for _ in 0..<startHelpers { startThread("wrapfs-parallel") { [self] in help() } }
            // The caller works too (all of it if no helper could start).
            while let i = monitor.locked({ take(from: job) }) {
                body(i)
                monitor.locked { complete(job) }
            }
            monitor.locked {
                while job.done < job.iterations { monitor.wait() }
                job.body = nil  // nothing keeps the caller's closure past this call
            }
        }
    }

    private func help() {
        while true {
            let (job, i) = monitor.locked { () -> (Job, Int) in
                while true {
                    if let job = open.first, let i = take(from: job) { return (job, i) }
                    monitor.wait()
                }
            }
            run(job, i)
            monitor.locked { complete(job) }
        }
    }

    /// The caller's closure is held only for the call (see `perform`: it must not outlive it).
    @inline(never) private func run(_ job: Job, _ i: Int) { job.body!(i) }

    /// Inside the lock: the next untaken index of `job`, if any.
    private func take(from job: Job) -> Int? {
        guard job.next < job.iterations else { return nil }
        let i = job.next
        job.next += 1
        if job.next == job.iterations, let k = open.firstIndex(where: { $0 === job }) { open.remove(at: k) }
        return i
    }

    /// Inside the lock.
    private func complete(_ job: Job) {
        job.done += 1
        if job.done == job.iterations { monitor.broadcast() }
    }
}
