// ReplyRoom: the buffer a READ's reply will be sent from, offered to the page engine so it decodes there instead of copying.
import Glibc

/// Through FUSE over io_uring a reply goes out of the ring entry's own buffer: a read that
/// decodes into that buffer spares the copy of every byte it returns. The ring offers the buffer
/// on the thread that serves the READ; the engine takes it once, when the reply would start at
/// its first byte.
enum ReplyRoom {
    /// Offers `capacity` bytes at `base` to the request this thread serves next.
    static func offer(_ base: UnsafeMutableRawPointer, capacity: Int) {
        pthread_setspecific(keys.base, base)
        pthread_setspecific(keys.capacity, UnsafeRawPointer(bitPattern: capacity))
    }

    /// Ends the offer (the request is served).
    static func withdraw() { pthread_setspecific(keys.base, nil) }

    /// The offered room when it holds `count` bytes; the offer ends either way.
    static func take(_ count: Int) -> UnsafeMutableRawBufferPointer? {
        guard let base = pthread_getspecific(keys.base) else { return nil }
        pthread_setspecific(keys.base, nil)
        return count <= Int(bitPattern: pthread_getspecific(keys.capacity)) ? UnsafeMutableRawBufferPointer(start: base, count: count) : nil
    }

    private static let keys: (base: pthread_key_t, capacity: pthread_key_t) = {
        var base = pthread_key_t(), capacity = pthread_key_t()
        pthread_key_create(&base, nil)
        pthread_key_create(&capacity, nil)
        return (base, capacity)
    }()
}
