// BufferPool: reusable page buffers, so the read/write path allocates nothing in steady state.
import Foundation

/// Hands out page-aligned scratch buffers and takes them back. A buffer big enough for one
/// request is kept for the next; the pool holds at most `limit` idle buffers.
public final class BufferPool: @unchecked Sendable {
    private var idle: [UnsafeMutableRawBufferPointer] = []
    private let lock = NSLock()
    private let limit: Int

    public init(limit: Int = 64) { self.limit = limit }

    func take(_ count: Int) -> UnsafeMutableRawBufferPointer {
        lock.lock()
        if let i = idle.lastIndex(where: { $0.count >= count }) {
            let b = idle.remove(at: i)
            lock.unlock()
            return b
        }
        lock.unlock()
        // Round up so a buffer serves later requests of similar size.
        let size = max(count, 64 * 1024).roundedUp(to: 64 * 1024)
        return UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        lock.lock()
        if idle.count < limit {
            idle.append(buffer)
            lock.unlock()
        } else {
            lock.unlock()
            buffer.deallocate()
        }
    }

    /// Runs `body` with a scratch buffer of at least `count` bytes.
    public func with<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        let b = take(count)
        defer { give(b) }
        return try body(UnsafeMutableRawBufferPointer(rebasing: b[0..<count]))
    }
}

extension BinaryInteger {
    func roundedUp(to multiple: Self) -> Self { (self + multiple - 1) / multiple * multiple }
}
