// WriteHandoff: one writer at a time for the chunks of a parallel append.
import Glibc

/// The threads encoding an append's chunks hand each encoded chunk (a range of page indices) to
/// whichever of them is writing, so only one thread writes the lower file at a time and the
/// others go on encoding. Two pwrites into one file contend for its inode lock, where the kernel
/// spins the second writer: `perf` of a 1 GiB aes-gcm stream on tmpfs put 28% of the daemon's
/// CPU there.
final class WriteHandoff: @unchecked Sendable {
    private let monitor = Monitor()
    /// Chunks encoded and not yet written, in the order they were handed over.
    private var ready: [Range<Int>] = []
    private var writing = false
    /// The first failed write; no chunk is written after it (the caller undoes the append).
    private(set) var failure: Error?

    /// `chunk` is encoded: writes it with `write`, and every chunk handed over meanwhile, unless
    /// another thread is writing, which then writes it too before it stops.
    func encoded(_ chunk: Range<Int>, write: (Range<Int>) throws -> Void) {
        var next = monitor.locked { () -> Range<Int>? in
            ready.append(chunk)
            return takeNext()
        }
        while let pages = next {
            var error: Error?
            do { try write(pages) } catch let e { error = e }
            next = monitor.locked {
                writing = false
                if let e = error, failure == nil { failure = e }
                return takeNext()
            }
        }
    }

    /// Inside the lock: the next chunk for this thread to write, if no other thread is writing
    /// and no write has failed.
    private func takeNext() -> Range<Int>? {
        guard !writing, failure == nil, !ready.isEmpty else { return nil }
        writing = true
        return ready.removeFirst()
    }
}
