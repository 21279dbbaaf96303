// ListingStreams: lower directory streams kept between the requests of one listing when the kernel opens directories without asking.
import Glibc
import CFuse

/// Without directory handles (FUSE_NO_OPENDIR_SUPPORT) a READDIR carries only the directory and
/// a cookie. A listing takes several requests (at least one more that finds the end), so the
/// stream a request leaves off with is parked here, and the request that resumes at one of its
/// cookies takes it back: the listing reads the lower directory once, from one snapshot, as it
/// would through a handle. A listing whose reply reached the end leaves only a mark (no
/// descriptor), which answers the request for the end without reading the lower directory:
/// rm opens every directory once just to see whether it is empty and never asks for the end.
///
/// A request that finds nothing parked (the first of a listing, one whose stream was pushed out
/// or expired, a cookie kept from long ago) opens the lower directory and seeks to the cookie,
/// which Linux file systems keep valid across opens (they are what NFS hands out).
final class ListingStreams: @unchecked Sendable {
    private struct Parked {
        /// Weak: a parked listing keeps no forgotten inode (and its descriptor) alive, and a
        /// node ID that comes back for another directory cannot match.
        weak var inode: Inode?
        /// Nil: the listing ended at `end`.
        let stream: OpenDirectory?
        let end: off_t
        let parkedMs: UInt64
    }
    /// Oldest first.
    private var parked: [Parked] = []
    private let lock = Mutex()
    /// Listings kept at most (a stream holds a lower descriptor).
    static let capacity = 32
    /// A listing's requests follow each other within milliseconds; an abandoned one (`ls | head`)
    /// goes when the next listing parks or resumes after this long.
    static let lifetimeMs: UInt64 = 2000

    enum Resumption {
        case stream(OpenDirectory)
        /// The listing this cookie belongs to ended there.
        case end
    }

    /// What a listing of `inode` left at `cookie`, taken out for one request.
    func take(_ inode: Inode, resumingAt cookie: off_t) -> Resumption? {
        var expired: [Parked] = []
        defer { _ = expired }  // their streams close after the lock is released
        return lock.locked {
            expired = expire()
            guard let i = parked.lastIndex(where: { p in
                p.inode === inode && (p.stream.map { $0.indexAfter[cookie] != nil } ?? (p.end == cookie))
            }) else { return nil }
            let p = parked.remove(at: i)
            return p.stream.map { .stream($0) } ?? .end
        }
    }

    /// Keeps `stream` for the request that resumes where this one left off, or only a mark at
    /// `end` when `stream` has given its last entry.
    func park(_ stream: OpenDirectory, of inode: Inode, ended end: off_t?) {
        var dropped: [Parked] = []
        defer { _ = dropped }
        lock.locked {
            dropped = expire()
            parked.append(Parked(inode: inode, stream: end == nil ? stream : nil, end: end ?? 0, parkedMs: Self.now()))
            if parked.count > Self.capacity { dropped.append(parked.removeFirst()) }
        }
    }

    /// Removes what expired or lost its inode; under `lock`.
    private func expire() -> [Parked] {
        let now = Self.now()
        var gone: [Parked] = []
        parked.removeAll { p in
            let stale = p.inode == nil || now &- p.parkedMs > Self.lifetimeMs
            if stale { gone.append(p) }
            return stale
        }
        return gone
    }

    private static func now() -> UInt64 { wrapfs_monotonic_ns() / 1_000_000 }
}
