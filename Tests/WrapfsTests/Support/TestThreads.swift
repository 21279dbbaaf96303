// Test cases on threads of their own: they block in system calls, and Swift's cooperative pool is only as wide as the CPUs.
import Foundation
import Testing

/// Every suite here carries this trait. Its test cases block for most of their time (FUSE round
/// trips, fsync, child processes, sleeps), and on Swift's cooperative pool, one thread per CPU,
/// two such cases would hold a 2-core machine's whole pool while its CPUs idle. So each case runs
/// on a thread of its own, at most `TestThreads.width` at once (WRAPFS_TEST_JOBS, default 4).
struct OnOwnThread: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else { return try await function() }
        await TestThreads.slots.acquire()
        do {
            try await withTaskExecutorPreference(TestThreads.executor) { try await function() }
        } catch {
            await TestThreads.slots.release()
            throw error
        }
        await TestThreads.slots.release()
    }
}

extension Trait where Self == OnOwnThread {
    /// Runs each test case on a thread of its own (`OnOwnThread`).
    static var onOwnThread: Self { OnOwnThread() }
}

enum TestThreads {
    static let width = max(1, Int(ProcessInfo.processInfo.environment["WRAPFS_TEST_JOBS"] ?? "") ?? 4)
    static let slots = Slots(width)
    static let executor = ThreadPerJob()

    /// A task executor that runs each job it is given on a new thread.
    final class ThreadPerJob: TaskExecutor, @unchecked Sendable {
        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            let thread = Thread { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// A counting semaphore that suspends rather than blocks.
    actor Slots {
        private var free: Int
        private var waiting: [CheckedContinuation<Void, Never>] = []
        init(_ count: Int) { free = count }
        func acquire() async {
            if free > 0 { free -= 1; return }
            await withCheckedContinuation { waiting.append($0) }
        }
        func release() {
            if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
        }
    }
}
