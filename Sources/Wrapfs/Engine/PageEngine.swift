// PageEngine: reads, writes, truncates and seeks file content one page at a time through a codec.
import Glibc
import CFuse
import Logging
import Synchronization

/// The lower file a request works on: its open descriptor and the inode it belongs to.
struct LowerFile {
    let fd: FileDescriptor
    let inode: Inode

    /// A read the layer makes for itself, not for a caller's read: the lower atime stays as a
    /// local file system's write, truncate or stat would leave it.
    func readOwn(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try fd.withoutAccessTimes { try fd.read(into: buffer, at: offset) }
    }
}

/// A WRITE request's data: in libfuse's buffer, or still in the pipe it was spliced into from
/// /dev/fuse (`count` bytes either way).
enum WriteSource {
    case memory(UnsafeRawBufferPointer)
    case pipe(UnsafeMutablePointer<fuse_bufvec>, count: Int)
    var count: Int {
        switch self {
        case .memory(let data): data.count
        case .pipe(_, let count): count
        }
    }
}

/// Maps logical byte ranges to slots of the lower file and runs every page through the codec.
///
/// Callers hold the inode's content lock: shared for `read` and `seek`, exclusive for the rest.
/// Sizes are derived from the lower file on every call (no size field to keep in step), so
/// a lower file changed behind the layer's back is still read as it is.
final class PageEngine {
    let codec: Codec
    let pageSize: Int64
    let slotSize: Int64
    let headerSize: Int64
    /// The largest logical size whose slots all have lower offsets an Int64 holds. The kernel
    /// lets a FUSE file grow to Int64.max bytes, and a slot takes more room than its page: past
    /// this size the lower offsets would overflow. A lower file system's own limit is usually
    /// far lower (ext4: 16 TiB) and answers EFBIG itself.
    let maximumSize: Int64
    /// The lower size that stands for `maximumSize`: a larger lower file (only ever one made
    /// behind the layer's back) is read as if cut there, so no offset computed from it overflows.
    let maximumLowerSize: Int64
    private let pool = BufferPool()
    private let log: Logger
    private let stats: Statistics
    /// The lower file system cannot allocate ahead (fallocate fails as unsupported).
    private let reservationUnsupported = Atomic<Bool>(false)

    init(codec: Codec, log: Logger, stats: Statistics) {
        self.stats = stats
        self.codec = codec
        self.pageSize = Int64(codec.pageSize)
        self.slotSize = Int64(codec.slotSize)
        self.headerSize = Int64(codec.headerSize)
        // Pages whose slots, and whose bytes, an Int64 holds (a plugin's slots may be smaller than its pages).
        let pages = min((Int64.max - headerSize) / slotSize, Int64.max / pageSize) - 2
        self.maximumSize = codec.passesBytesThrough ? Int64.max : pages * pageSize
        self.maximumLowerSize = codec.passesBytesThrough || codec.preservesSize ? maximumSize : headerSize + pages * slotSize
        self.log = log
    }

    private var preserves: Bool { codec.preservesSize }

    /// EFBIG, before anything changes, for a file that would grow past `maximumSize`.
    private func checkGrowth(to end: Int64) throws {
        if end > maximumSize || end < 0 { throw Errno.EFBIG }
    }
    private func slotStart(_ page: Int64) -> Int64 { headerSize + page * slotSize }

    // MARK: sizes

    /// The lower file's size and the logical size it stands for.
    func sizes(_ file: LowerFile) throws -> (lower: Int64, logical: Int64) {
        let lower = min(Int64(try file.fd.stat().st_size), maximumLowerSize)
        return (lower, try logicalSize(file, lowerSize: lower))
    }

    /// The logical size of a lower file of `lowerSize` bytes.
    ///
    /// A last slot that cannot give its length (torn by a daemon killed in the middle of its
    /// pwrite, or damaged) still gives the file a size: the slot's bytes, at most a page. The
    /// file stays listable, removable and truncatable through the mount; that page reads as EIO
    /// and fsck names it. Failing the size would make the whole file unreachable instead.
    func logicalSize(_ file: LowerFile, lowerSize: Int64) throws -> Int64 {
        let lowerSize = min(lowerSize, maximumLowerSize)
        if preserves { return lowerSize }
        if lowerSize <= headerSize { return 0 }
        let slots = (lowerSize - headerSize - 1) / slotSize + 1
        let lastStart = slotStart(slots - 1)
        let lastLength = Int(lowerSize - lastStart)
        var plain: Int
        var failure: String?
        if let overhead = codec.fixedOverhead {
            plain = lastLength - overhead
        } else if let known = file.inode.lastRecord, known.lowerSize == lowerSize {
            return (slots - 1) * pageSize + Int64(known.plain)
        } else {
            let header = try self.header(file, lowerSize: lowerSize, create: false)
            plain = try pool.with(lastLength) { slot in
                guard try file.readOwn(into: slot, at: lastStart) == lastLength else { throw Errno.EIO }
                return header.withUnsafeBytes { h in
                    do {
                        return try codec.plainLength(ofLastSlot: UnsafeRawBufferPointer(slot), context: PageContext(index: UInt64(slots - 1), header: h))
                    } catch {
                        failure = "\(error)"
                        return 0
                    }
                }
            }
        }
        if plain <= 0 || plain > pageSize {
            let stand = Int(min(pageSize, Int64(lastLength)))  // lastLength >= 1: lowerSize > headerSize
            // Said once per lower size: getattr asks again and again.
            if let known = file.inode.lastRecord, known.lowerSize == lowerSize, known.plain == stand {
                return (slots - 1) * pageSize + Int64(stand)
            }
            reportCorrupt(file, page: slots - 1, reason: "last slot of \(lastLength) bytes gives no page length (\(failure ?? "\(plain) bytes")); sized as \(stand) bytes, which read as EIO")
            plain = stand
            file.inode.lastRecord = (lowerSize, plain)
        } else if codec.fixedOverhead == nil {
            file.inode.lastRecord = (lowerSize, plain)
        }
        return (slots - 1) * pageSize + Int64(plain)
    }

    /// The lower offset up to which a file of logical size `end` may reach (its last slot whole);
    /// EFBIG past `maximumSize`.
    func lowerEnd(ofLogicalEnd end: Int64) throws -> Int64 {
        try checkGrowth(to: end)
        return preserves ? headerSize + end : slotStart((end + pageSize - 1) / pageSize)
    }

    /// The lower size that holds `logical` bytes whose last page encodes to `lastEncoded` bytes.
    private func lowerEnd(lastPage: Int64, encoded: Int) -> Int64 { slotStart(lastPage) + Int64(encoded) }

    // MARK: header

    /// The file's header: cached, read from the file, or (with `create`, for an empty file) made
    /// and written, unless `deferWrite` (the caller writes it in front of the first slot).
    func header(_ file: LowerFile, lowerSize: Int64, create: Bool, deferWrite: Bool = false) throws -> [UInt8] {
        if headerSize == 0 { return [] }
        if lowerSize == 0 {
            guard create else { return [] }
            let h: [UInt8]
            if let cached = file.inode.header {
                h = cached  // made by a write that did not reach the disk
            } else {
                var made = [UInt8](repeating: 0, count: Int(headerSize))
                try made.withUnsafeMutableBytes { try codec.makeHeader($0) }
                h = made
            }
            file.inode.header = h
            if !deferWrite { try h.withUnsafeBytes { try file.fd.write($0, at: 0) } }
            return h
        }
        if let h = file.inode.header { return h }
        var h = [UInt8](repeating: 0, count: Int(headerSize))
        let n = try h.withUnsafeMutableBytes { try file.readOwn(into: $0, at: 0) }
        try adoptHeader(file, h, length: n)
        return h
    }

    /// Checks header bytes read from the file (`length` of them arrived) and caches them.
    private func adoptHeader(_ file: LowerFile, _ h: [UInt8], length: Int) throws {
        guard length >= h.count else {
            reportCorrupt(file, page: nil, reason: "file header is \(length) bytes, expected \(h.count)")
            throw Errno.EIO
        }
        do {
            try h.withUnsafeBytes { try codec.checkHeader($0) }
        } catch {
            reportCorrupt(file, page: nil, reason: "bad file header: \(error)")
            throw Errno.EIO
        }
        file.inode.header = h
    }

    // MARK: read

    /// Reads up to `count` logical bytes at `offset` and hands them to `reply` (valid only during the call).
    func read(_ file: LowerFile, offset: Int64, count: Int, reply: (UnsafeRawBufferPointer) -> Void) throws {
        let (lowerSize, size) = try sizes(file)
        guard offset >= 0, offset < size, count > 0 else { return reply(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let end = offset + min(Int64(count), size - offset)
        let first = offset / pageSize, last = (end - 1) / pageSize
        let pages = Int(last - first + 1)
        let base = first * pageSize
        if preserves {
            let header = try self.header(file, lowerSize: lowerSize, create: false)
            // Slots are pages: read straight into the reply buffer and decode in place.
            try withReplyBuffer(pages * Int(pageSize), replyFromFirstByte: offset == base) { buf in
                let n = try file.fd.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(end, lowerSize) - base).roundedUp(to: Int(pageSize)).clamped(buf.count)]), at: base)
                try header.withUnsafeBytes { h in
                    var at = 0, page = first
                    while at < n {
                        let page1 = UnsafeMutableRawBufferPointer(rebasing: buf[at..<min(at + Int(pageSize), n)])
                        if codec.encodesZerosAsZeros || !page1.isAllZero {
                            _ = try decodePage(file, UnsafeRawBufferPointer(page1), into: page1, index: page, expect: page1.count, header: h)
                        }
                        at += Int(pageSize)
                        page += 1
                    }
                }
                let lo = Int(offset - base), hi = min(Int(end - base), n)
                reply(UnsafeRawBufferPointer(rebasing: buf[lo..<max(lo, hi)]))
            }
            return
        }
        let lastOfFile = (size - 1) / pageSize
        // An uncached header comes in the same pread as the first slots.
        let room = first == 0 && headerSize > 0 && file.inode.header == nil ? Int(headerSize) : 0
        try pool.with(room + pages * Int(slotSize)) { buffer in
            try withReplyBuffer(pages * Int(pageSize), replyFromFirstByte: offset == base) { plain in
                let lowerFrom = slotStart(first) - Int64(room)
                let got = try file.fd.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(lowerSize, slotStart(last + 1)) - lowerFrom)]), at: lowerFrom)
                let header = room == 0 ? try self.header(file, lowerSize: lowerSize, create: false) : Array(buffer[0..<room])
                if room > 0 { try adoptHeader(file, header, length: got) }
                let slots = UnsafeMutableRawBufferPointer(rebasing: buffer[room...])
                let n = got - room
                try header.withUnsafeBytes { h in
                    // Chunks of pages decode on all cores when the read is big (read-ahead's).
                    try forEachChunk(of: pages) { chunk in
                        for k in chunk {
                            let page = first + Int64(k)
                            let expect = Int(page == lastOfFile ? size - page * pageSize : pageSize)
                            let s = k * Int(slotSize)
                            let slot = UnsafeRawBufferPointer(rebasing: slots[min(s, n)..<min(s + Int(slotSize), n)])
                            let out = UnsafeMutableRawBufferPointer(rebasing: plain[k * Int(pageSize)..<(k + 1) * Int(pageSize)])
                            if slot.isEmpty || slot.isAllZero {
                                // A hole: pages never written read as zeros.
                                out.initializeMemory(as: UInt8.self, repeating: 0)
                                continue
                            }
                            _ = try decodePage(file, slot, into: out, index: page, expect: expect, header: h)
                        }
                    }
                }
                reply(UnsafeRawBufferPointer(rebasing: plain[Int(offset - base)..<Int(end - base)]))
            }
        }
    }

    /// A buffer for `count` bytes of plain pages: the room the reply is sent from when the
    /// transport offers one and the reply starts at the buffer's first byte (no copy into it
    /// later), else one from the pool.
    private func withReplyBuffer<R>(_ count: Int, replyFromFirstByte: Bool,
                                    _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        if replyFromFirstByte, let room = ReplyRoom.take(count) { return try body(room) }
        return try pool.with(count, body)
    }

    private func decodePage(_ file: LowerFile, _ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer,
                            index: Int64, expect: Int, header: UnsafeRawBufferPointer) throws -> Int {
        let n: Int
        do {
            n = try codec.decode(slot, into: page, context: PageContext(index: UInt64(index), header: header))
            stats.decoded(slot.count, into: n)
        } catch {
            reportCorrupt(file, page: index, reason: "\(error)")
            throw Errno.EIO
        }
        guard n == expect else {
            reportCorrupt(file, page: index, reason: "decoded \(n) bytes, expected \(expect)")
            throw Errno.EIO
        }
        return n
    }

    private func reportCorrupt(_ file: LowerFile, page: Int64?, reason: String) {
        let whereText = page.map { "page \($0)" } ?? "header"
        stats.decodeFailed()
        log.error("decode failed: \(file.inode.lowerPathForLogs), \(whereText): \(reason)")
    }

    // MARK: write

    /// Writes `data` at logical `offset`, growing the file as needed, and returns the bytes
    /// written: all of them, or with `mayStop` what a local file system's write(2) takes before
    /// it stops: the part below the largest file the lower file system holds (EFBIG past it), and
    /// at a full disk what the room left takes (ENOSPC: for a codec that changes no byte what the
    /// lower took, for others whole pages). Throws when nothing was written, or without `mayStop`
    /// when not all was (the file as it was).
    func write(_ file: LowerFile, offset: Int64, data: UnsafeRawBufferPointer, mayStop: Bool = false) throws -> Int {
        guard !data.isEmpty else { return 0 }
        if codec.passesBytesThrough {
            try checkGrowth(to: offset.rangeEnd(Int64(data.count)))
            return try writeThrough(file, offset: offset, count: data.count, mayStop: mayStop) { file.fd.writeUntilRefused(data, at: offset) }
        }
        do {
            try writePages(file, offset: offset, data: data)
            return data.count
        } catch let e as Errno where e == .EFBIG && mayStop {
            let fits = fittingLength(file, offset: offset, count: data.count)
            guard fits > 0 else { throw e }
            try writePages(file, offset: offset, data: UnsafeRawBufferPointer(rebasing: data[..<fits]))
            return fits
        } catch let e as Errno where e == .ENOSPC && mayStop {
            return try writeWhatRoomTakes(file, offset: offset, data: data)
        }
    }

    /// After ENOSPC: writes the longest of ever shorter parts of `data` (about halves, each
    /// ending on a page boundary) that the lower file system still has room for, and returns
    /// its length; ENOSPC when not even the part up to the next page boundary fits. A failed
    /// store leaves the file as it was (slots are reserved before they are written), so each
    /// try starts from the same file. On this failure path only.
    private func writeWhatRoomTakes(_ file: LowerFile, offset: Int64, data: UnsafeRawBufferPointer) throws -> Int {
        var count = data.count
        while true {
            let end = (offset + Int64(count / 2)) / pageSize * pageSize
            guard end > offset else { throw Errno.ENOSPC }
            count = Int(end - offset)
            do {
                try writePages(file, offset: offset, data: UnsafeRawBufferPointer(rebasing: data[..<count]))
                return count
            } catch let e as Errno where e == .ENOSPC {
                continue
            }
        }
    }

    /// How many of `count` bytes written at logical `offset` fit below `maximumSize` and the
    /// largest file the lower file system holds (`FileDescriptor.takesSize`). Asked only after a
    /// write failed with EFBIG. Exact for codecs that keep sizes or add a fixed overhead to a
    /// page; for others the last page's slot counts whole.
    private func fittingLength(_ file: LowerFile, offset: Int64, count: Int) -> Int {
        func fits(_ n: Int) -> Bool {
            let end = offset.rangeEnd(Int64(n))
            guard var lower = try? lowerEnd(ofLogicalEnd: end) else { return false }
            if !preserves, let overhead = codec.fixedOverhead {
                let last = (end - 1) / pageSize
                lower = lowerEnd(lastPage: last, encoded: Int(end - last * pageSize) + overhead)
            }
            return file.fd.takesSize(lower)
        }
        var (low, high) = (0, count)  // the answer lies in low...high
        while low < high {
            let middle = low + (high - low + 1) / 2
            if fits(middle) { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// `write` through the pages of a codec that encodes: all of `data` or an error, the file as it was.
    private func writePages(_ file: LowerFile, offset: Int64, data: UnsafeRawBufferPointer) throws {
        try checkGrowth(to: offset.rangeEnd(Int64(data.count)))
        var (lowerSize, size) = try sizes(file)
        let first = offset / pageSize
        // A new file's header goes out in one pwrite with its first slot.
        let headerWithFirstSlot = lowerSize == 0 && first == 0 && headerSize > 0 && !preserves
        let header = try self.header(file, lowerSize: lowerSize, create: true, deferWrite: headerWithFirstSlot)
        if lowerSize == 0 { lowerSize = headerSize }
        // The old last page becomes a middle page: it must be stored as a full page.
        let grewOldLast = size % pageSize != 0 && (size - 1) / pageSize < first
        if grewOldLast {
            try rewritePage(file, header: header, index: (size - 1) / pageSize, size: size, lowerSize: lowerSize,
                            newLength: Int(pageSize), becomesLast: false)
            lowerSize = Int64(try file.fd.stat().st_size)  // a failed write below is cut back to here, not into that page
        }
        do {
            try storeWrite(file, header: header, offset: offset, data: data, size: size, lowerSize: lowerSize,
                           writingHeader: headerWithFirstSlot)
        } catch {
            // A failed write (a full lower disk) leaves the size as it was, as on a local file system.
            if grewOldLast { try? truncate(file, to: size) }
            throw error
        }
    }

    /// Writes a request's data wherever it is: in memory, or still in the pipe libfuse spliced
    /// it into (only codecs that change no byte ask for that; any other gets it copied out).
    /// Returns the bytes written, as `write(_:offset:data:mayStop:)`.
    func write(_ file: LowerFile, offset: Int64, source: WriteSource, mayStop: Bool) throws -> Int {
        switch source {
        case .memory(let data):
            return try write(file, offset: offset, data: data, mayStop: mayStop)
        case .pipe(let bufv, let count) where codec.passesBytesThrough:
            guard count > 0 else { return 0 }
            try checkGrowth(to: offset.rangeEnd(Int64(count)))
            return try writeThrough(file, offset: offset, count: count, mayStop: mayStop) {
                // The kernel moves the request's pages from the pipe into the lower file.
                var done = 0
                while done < count {
                    let n = wrapfs_buf_to_fd(bufv, file.fd.rawValue, off_t(offset) + off_t(done))
                    if n <= 0 { return (done, n < 0 ? Errno(Int32(-n)) : .EIO) }
                    done += n
                }
                return (done, nil)
            }
        case .pipe(let bufv, let count):
            return try pool.with(count) { buffer in
                guard wrapfs_buf_to_mem(bufv, buffer.baseAddress, count) == count else { throw Errno.EIO }
                return try write(file, offset: offset, data: UnsafeRawBufferPointer(buffer), mayStop: mayStop)
            }
        }
    }

    /// `write` for a codec that changes no byte: the request's bytes go down as they are (no page
    /// loaded, copied or encoded; unaligned writes read nothing).
    /// `store` returns the bytes it wrote and the error that stopped it short.
    private func writeThrough(_ file: LowerFile, offset: Int64, count: Int, mayStop: Bool,
                              _ store: () -> (written: Int, error: Errno?)) throws -> Int {
        let lowerSize = Int64(try file.fd.stat().st_size)
        let (written, error) = store()
        if let error, written == 0 || !mayStop {
            // A full lower disk mid-write: the file keeps its old length, as the failed call reports.
            if offset + Int64(count) > lowerSize { try? file.fd.truncate(to: lowerSize) }
            throw error
        }
        stats.encoded(plain: written, into: written)
        return written
    }

    /// The second half of `write`: loads partly covered pages, copies `data` in and stores the pages.
    private func storeWrite(_ file: LowerFile, header: [UInt8], offset: Int64, data: UnsafeRawBufferPointer,
                            size: Int64, lowerSize: Int64, writingHeader headerWithFirstSlot: Bool) throws {
        let end = offset + Int64(data.count)
        let newSize = max(size, end)
        let first = offset / pageSize, last = (end - 1) / pageSize
        let pages = Int(last - first + 1)
        // Only the first and last pages can be partly covered.
        func isPartial(_ page: Int64) -> Bool {
            let pStart = page * pageSize
            return offset > pStart || end < pStart + min(pageSize, newSize - pStart)
        }
        if !preserves && !isPartial(first) && !isPartial(last) {
            // Whole pages: encoded straight from the request's buffer, no copy.
            try header.withUnsafeBytes { h in
                try storeSlots(file, header: h, first: first, plain: data, pages: pages, lastOfFile: (newSize - 1) / pageSize,
                               lowerSize: lowerSize, writingHeader: headerWithFirstSlot)
            }
            return
        }
        try pool.with(pages * Int(pageSize)) { plain in
            // Load the old content of partly covered pages.
            func loadIfPartial(_ page: Int64) throws {
                if isPartial(page) {
                    let k = Int(page - first) * Int(pageSize)
                    try loadPage(file, header: header, index: page, size: size, lowerSize: lowerSize,
                                 into: UnsafeMutableRawBufferPointer(rebasing: plain[k..<k + Int(pageSize)]))
                }
            }
            try loadIfPartial(first)
            if last != first { try loadIfPartial(last) }
            UnsafeMutableRawBufferPointer(rebasing: plain[Int(offset - first * pageSize)...]).copyMemory(from: data)
            try storePages(file, header: header, first: first, plain: plain, newSize: newSize, lowerSize: lowerSize,
                           writingHeader: headerWithFirstSlot)
        }
    }

    /// Reads and decodes page `index` into `page` (pageSize bytes), zero-filling past its old end.
    private func loadPage(_ file: LowerFile, header: [UInt8], index: Int64, size: Int64, lowerSize: Int64,
                          into page: UnsafeMutableRawBufferPointer) throws {
        let pStart = index * pageSize
        guard pStart < size else {
            page.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        let oldLength = Int(min(pageSize, size - pStart))
        try header.withUnsafeBytes { h in
            if preserves {
                let slot = UnsafeMutableRawBufferPointer(rebasing: page[0..<oldLength])
                let n = try file.readOwn(into: slot, at: pStart)
                guard n == oldLength else { throw Errno.EIO }
                if codec.encodesZerosAsZeros || !slot.isAllZero {
                    _ = try decodePage(file, UnsafeRawBufferPointer(slot), into: slot, index: index, expect: oldLength, header: h)
                }
                return
            }
            let from = slotStart(index)
            let length = Int(min(slotSize, lowerSize - from))
            try pool.with(Int(slotSize)) { slotBuffer in
                let n = try file.readOwn(into: UnsafeMutableRawBufferPointer(rebasing: slotBuffer[0..<max(length, 0)]), at: from)
                let slot = UnsafeRawBufferPointer(rebasing: slotBuffer[0..<n])
                if slot.isEmpty || slot.isAllZero {  // a hole
                    UnsafeMutableRawBufferPointer(rebasing: page[0..<oldLength]).initializeMemory(as: UInt8.self, repeating: 0)
                    return
                }
                _ = try decodePage(file, slot, into: page, index: index, expect: oldLength, header: h)
            }
        }
        // Past the old end: zeros (after decoding, since a decoder may use the whole page as scratch, as zstd does).
        UnsafeMutableRawBufferPointer(rebasing: page[oldLength...]).initializeMemory(as: UInt8.self, repeating: 0)
    }

    /// Encodes the pages in `plain` (starting at page `first`, covering up to `newSize`) and
    /// writes their slots; sets the lower length when the file's last page is among them.
    /// With `writingHeader` (only for `first` == 0), the header goes out with the first run.
    private func storePages(_ file: LowerFile, header: [UInt8], first: Int64, plain: UnsafeMutableRawBufferPointer,
                            newSize: Int64, lowerSize: Int64, writingHeader: Bool = false) throws {
        let lastOfFile = (newSize - 1) / pageSize
        let count = Int(min(Int64(plain.count), newSize - first * pageSize))
        let pages = (count + Int(pageSize) - 1) / Int(pageSize)
        try header.withUnsafeBytes { h in
            if preserves {
                for k in 0..<pages {
                    let page = UnsafeMutableRawBufferPointer(rebasing: plain[k * Int(pageSize)..<min((k + 1) * Int(pageSize), count)])
                    _ = try encodePage(UnsafeRawBufferPointer(page), into: page, index: first + Int64(k), header: h)
                }
                do {
                    try file.fd.write(UnsafeRawBufferPointer(rebasing: plain[0..<count]), at: first * pageSize)
                } catch {
                    // A full lower disk mid-write: the file keeps its old length, as the failed call reports.
                    if first * pageSize + Int64(count) > lowerSize { try? file.fd.truncate(to: lowerSize) }
                    throw error
                }
                return
            }
            try storeSlots(file, header: h, first: first, plain: UnsafeRawBufferPointer(rebasing: plain[0..<count]), pages: pages,
                           lastOfFile: lastOfFile, lowerSize: lowerSize, writingHeader: writingHeader)
        }
    }

    /// Pages per unit of work when a request's pages are encoded or decoded on several cores:
    /// 64 KiB, big enough that waking a core pays (a small file's write stays on the request's
    /// thread), small enough that one chunk's pwrite overlaps the next chunk's encoding.
    private var chunkPages: Int { max(1, 65536 / Int(pageSize)) }

    /// Runs `body` on each chunk of `pages` pages (page indices), on all cores when there are
    /// several; each chunk touches only its own pages. Throws the first failed chunk's error once
    /// every chunk has finished.
    private func forEachChunk(of pages: Int, _ body: (Range<Int>) throws -> Void) throws {
        let size = chunkPages
        let chunks = (pages + size - 1) / size
        if chunks <= 1 { return try body(0..<pages) }
        var failures = [Error?](repeating: nil, count: chunks)
        failures.withUnsafeMutableBufferPointer { failureBuffer in
            let errors = failureBuffer  // a copy the closure may capture
            ParallelLoop.shared.perform(iterations: chunks) { c in
                do { try body(c * size..<min(pages, (c + 1) * size)) } catch { errors[c] = error }
            }
        }
        if let failure = failures.lazy.compactMap({ $0 }).first { throw failure }
    }

    /// The slot-changing half of `storePages`: encodes `pages` pages of `plain` into slots and
    /// writes them. An append (nothing of the old file in the way) writes each chunk as soon as
    /// it is encoded, so the lower write of one chunk runs beside the encoding of the next; an
    /// overwrite encodes everything first, reserves the blocks, then writes.
    private func storeSlots(_ file: LowerFile, header h: UnsafeRawBufferPointer, first: Int64, plain: UnsafeRawBufferPointer,
                            pages: Int, lastOfFile: Int64, lowerSize: Int64, writingHeader: Bool) throws {
        file.inode.lastRecord = nil  // the last record may change (only size-changing codecs keep one)
        let room = writingHeader ? h.count : 0
        let existing = room > 0 ? 0 : lowerSize  // with the header going out now, the file is empty
        let appending = slotStart(first) - Int64(room) >= existing
        try pool.with(room + pages * Int(slotSize)) { buffer in
            if room > 0 { UnsafeMutableRawBufferPointer(rebasing: buffer[0..<room]).copyMemory(from: h) }
            let slots = UnsafeMutableRawBufferPointer(rebasing: buffer[room...])
            var encoded = [Int](repeating: 0, count: pages)
            let handoff = appending ? WriteHandoff() : nil
            do {
                try encoded.withUnsafeMutableBufferPointer { lengths in
                    try forEachChunk(of: pages) { chunk in
                        for k in chunk {
                            let page = UnsafeRawBufferPointer(rebasing: plain[k * Int(pageSize)..<min((k + 1) * Int(pageSize), plain.count)])
                            let slot = UnsafeMutableRawBufferPointer(rebasing: slots[k * Int(slotSize)..<(k + 1) * Int(slotSize)])
                            lengths[k] = try encodePage(page, into: slot, index: first + Int64(k), header: h)
                        }
                        handoff?.encoded(chunk) { ready in
                            try writeSlots(file, buffer, room: room, first: first, encoded: UnsafeBufferPointer(lengths),
                                           pages: ready, lastOfFile: lastOfFile)
                        }
                    }
                }
                if let failure = handoff?.failure { throw failure }
            } catch {
                // A failed append (a full lower disk, a failed encode) leaves the old length.
                if appending { try? file.fd.truncate(to: existing) }
                throw error
            }
            if !appending {
                let all = 0..<pages
                let writeTo = slotStart(first + Int64(pages - 1)) + Int64(encoded[pages - 1])
                // Only the old last slot in the way, on a lower file system that gives a write its
                // blocks as it takes it and overwrites allocated blocks in place: nothing to reserve.
                // The part past the old end goes first (ENOSPC there leaves the old file whole, and
                // is cut back), then the slot's old part, whose blocks are there already (a last
                // slot is never a hole). This is every later write of a file that grows by writes
                // not ending on a page (tar's 10 KiB records).
                let lastSlotOnly = existing <= slotStart(first) + slotSize && overwritesInPlace(file)
                try encoded.withUnsafeBufferPointer { lengths in
                    if !lastSlotOnly {
                        // Exactly the bytes that will be written are reserved (a shrunk slot's tail is not:
                        // past the end of file it could not be punched again).
                        try forEachRun(room: room, first: first, encoded: lengths, pages: all) { _, lower, _ in
                            try reserve(file, from: lower.lowerBound, to: lower.upperBound)
                        }
                    }
                    do {
                        try writeSlots(file, buffer, room: room, first: first, encoded: lengths, pages: all, lastOfFile: lastOfFile,
                                       pastFirst: lastSlotOnly && writeTo > existing ? existing : nil)
                    } catch {
                        // Without a reservation the lower disk may fill mid-write: what went past the old end goes.
                        if writeTo > existing { try? file.fd.truncate(to: existing) }
                        throw error
                    }
                }
            }
            let lastIndex = first + Int64(pages - 1)
            if lastIndex == lastOfFile {
                let end = lowerEnd(lastPage: lastIndex, encoded: encoded[pages - 1])
                if lowerSize > end { try file.fd.truncate(to: end) }
            }
        }
    }

    /// Calls `body` for each run of encoded slots among `pages` (`encoded[k]` bytes of slot k,
    /// after `room` header bytes in the buffer) with its range in the buffer and in the lower
    /// file and the index of its last slot: full slots run together; a run ends at a shrunk slot
    /// (whose tail is left out) or at the last of `pages`.
    private func forEachRun(room: Int, first: Int64, encoded: UnsafeBufferPointer<Int>, pages: Range<Int>,
                            _ body: (_ buffer: Range<Int>, _ lower: Range<Int64>, _ last: Int) throws -> Void) throws {
        var runStart = pages.lowerBound, runBytes = 0
        for k in pages {
            let e = encoded[k]
            runBytes += e
            guard k == pages.upperBound - 1 || e < Int(slotSize) else { continue }
            let withHeader = runStart == 0 ? room : 0
            let from = room + runStart * Int(slotSize) - withHeader
            let at = slotStart(first + Int64(runStart)) - Int64(withHeader)
            let count = withHeader + runBytes
            try body(from..<from + count, at..<at + Int64(count), k)
            runStart = k + 1
            runBytes = 0
        }
    }

    /// Writes the runs of encoded slots among `pages`; a shrunk middle slot's tail is punched.
    /// With `pastFirst`, the bytes from that lower offset on are written before those below it.
    private func writeSlots(_ file: LowerFile, _ buffer: UnsafeMutableRawBufferPointer, room: Int, first: Int64,
                            encoded: UnsafeBufferPointer<Int>, pages: Range<Int>, lastOfFile: Int64, pastFirst split: Int64? = nil) throws {
        if let split {
            try forEachRun(room: room, first: first, encoded: encoded, pages: pages) { bytes, lower, _ in
                guard lower.upperBound > split else { return }
                let skip = Int(max(0, split - lower.lowerBound))
                try file.fd.write(UnsafeRawBufferPointer(rebasing: buffer[(bytes.lowerBound + skip)..<bytes.upperBound]), at: lower.lowerBound + Int64(skip))
            }
        }
        try forEachRun(room: room, first: first, encoded: encoded, pages: pages) { bytes, lower, k in
            let below = Int(min(lower.upperBound, split ?? lower.upperBound) - lower.lowerBound)
            if below > 0 {
                try file.fd.write(UnsafeRawBufferPointer(rebasing: buffer[bytes.lowerBound..<(bytes.lowerBound + below)]), at: lower.lowerBound)
            }
            let index = first + Int64(k), e = encoded[k]
            if e < Int(slotSize) && index != lastOfFile {
                // The slot shrank: its tail becomes a hole, so the saving shows on disk.
                try? file.fd.allocate(mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                      offset: slotStart(index) + Int64(e), length: slotSize - Int64(e))
            }
        }
    }

    /// Whether `file`'s file system allocates a write's blocks when it takes the write (a full disk
    /// fails that write) and overwrites allocated blocks in place (no block needed): ext2/3/4 and
    /// tmpfs. Not xfs (reflinked extents are copied on write), btrfs, f2fs, network or FUSE ones.
    private func overwritesInPlace(_ file: LowerFile) -> Bool {
        if let known = file.inode.lowerOverwritesInPlace { return known }
        let type = wrapfs_fs_type(file.fd.rawValue)
        guard type != 0 else { return false }  // not known: reserve, and ask again next time
        let inPlace = type == 0xEF53 /* ext2/3/4 */ || type == 0x0102_1994 /* tmpfs */
        file.inode.lowerOverwritesInPlace = inPlace
        return inPlace
    }

    /// Allocates the lower blocks of `from ..< to` before any slot there is written, so a full
    /// lower disk fails the write with ENOSPC before a byte of it lands, never in the middle of a
    /// slot (a torn slot would be a damaged page). Where the lower file cannot allocate ahead, the
    /// caller cuts a failed write past the old end back.
    private func reserve(_ file: LowerFile, from: Int64, to: Int64) throws {
        guard to > from else { return }
        if !reservationUnsupported.load(ordering: .relaxed) {
            do {
                try file.fd.allocate(mode: FALLOC_FL_KEEP_SIZE, offset: from, length: to - from)
                return
            } catch let e as Errno where e == .EOPNOTSUPP || e == .ENOSYS || e == .EINVAL {
                reservationUnsupported.store(true, ordering: .relaxed)  // the lower file system never will: stop asking
            }
        }
    }

    private func encodePage(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, index: Int64,
                            header: UnsafeRawBufferPointer) throws -> Int {
        let e: Int
        do {
            e = try codec.encode(page, into: slot, context: PageContext(index: UInt64(index), header: header))
            stats.encoded(plain: page.count, into: e)
        } catch {
            stats.encodeFailed()
            log.error("encode failed: page \(index): \(error)")
            throw Errno.EIO
        }
        guard e > 0 || page.isEmpty, e <= slot.count, !preserves || e == page.count else {
            log.error("codec \(codec.name) returned \(e) bytes for a page of \(page.count) (slot \(slot.count))")
            throw Errno.EIO
        }
        return e
    }

    /// Re-stores page `index` with `newLength` plain bytes (cut or zero-padded). A page that is
    /// all zeros stays a hole unless it must hold the file's last record.
    /// With `cutFirst`, the lower file is cut to the page's slot start once the page is read and
    /// before it is stored again (a shrinking truncate), so a daemon killed in between leaves a
    /// shorter file whose every page decodes, not a new short record before an old record's tail.
    private func rewritePage(_ file: LowerFile, header: [UInt8], index: Int64, size: Int64, lowerSize: Int64,
                             newLength: Int, becomesLast: Bool, cutFirst: Bool = false) throws {
        try pool.with(Int(pageSize)) { page in
            try loadPage(file, header: header, index: index, size: size, lowerSize: lowerSize, into: page)
            var lowerSize = lowerSize
            if cutFirst && slotStart(index) < lowerSize {
                try file.fd.truncate(to: slotStart(index))
                lowerSize = slotStart(index)
            }
            let kept = UnsafeMutableRawBufferPointer(rebasing: page[0..<newLength])
            if kept.isAllZero && (preserves || !becomesLast) {
                // Zeros need no record: a size-preserving slot already reads as zeros, any other
                // slot (which may hold a short record) becomes a hole.
                if !preserves && slotStart(index) < lowerSize {
                    try punchSlots(file, from: index, to: index + 1, lowerSize: lowerSize)
                }
                return
            }
            try storePages(file, header: header, first: index, plain: kept,
                           newSize: index * pageSize + Int64(newLength), lowerSize: lowerSize)
        }
    }

    /// Makes slots `from ..< to` holes (written as zeros where the lower file cannot punch).
    private func punchSlots(_ file: LowerFile, from: Int64, to: Int64, lowerSize: Int64) throws {
        let start = slotStart(from), end = min(slotStart(to), lowerSize)
        guard start < end else { return }
        do {
            try file.fd.allocate(mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset: start, length: end - start)
        } catch let e as Errno where e == .EOPNOTSUPP {
            try pool.with(Int(end - start)) { zeros in
                zeros.initializeMemory(as: UInt8.self, repeating: 0)
                try file.fd.write(UnsafeRawBufferPointer(zeros), at: start)
            }
        }
    }

    // MARK: truncate

    /// Sets the logical size to `newSize`. Growing leaves holes and writes at most one page.
    func truncate(_ file: LowerFile, to newSize: Int64) throws {
        try checkGrowth(to: newSize)
        file.inode.lastRecord = nil
        if codec.passesBytesThrough {
            // No page to load or pad: the lower file is cut or grown (with a hole) as it is.
            return try file.fd.truncate(to: newSize)
        }
        let (lowerSize, size) = try sizes(file)
        if newSize == size {
            try file.fd.truncate(to: lowerSize)  // the lower file updates its times as a truncate does
            return
        }
        if newSize == 0 {
            try file.fd.truncate(to: 0)
            file.inode.header = nil  // a new header, with a new file ID, on the next write
            return
        }
        let header = try self.header(file, lowerSize: lowerSize, create: true)
        var lowerBase = max(lowerSize, headerSize)
        if newSize < size {
            let keep = newSize % pageSize
            if keep == 0 {
                let lastPage = newSize / pageSize - 1
                try file.fd.truncate(to: preserves ? newSize : slotStart(lastPage + 1))
                if !preserves {
                    // The kept last page must hold a record: a hole there is rewritten as zeros.
                    try rewritePage(file, header: header, index: lastPage, size: newSize, lowerSize: slotStart(lastPage + 1),
                                    newLength: Int(pageSize), becomesLast: true)
                }
            } else {
                let page = newSize / pageSize
                try rewritePage(file, header: header, index: page, size: size, lowerSize: lowerBase, newLength: Int(keep),
                                becomesLast: true, cutFirst: !preserves)
                if preserves { try file.fd.truncate(to: newSize) }
            }
            return
        }
        // Growing: the old last page is padded, the new last page (if another) stored as zeros.
        let oldLast = (size - 1) / pageSize, newLast = (newSize - 1) / pageSize
        let paddedOldLast = size > 0 && size % pageSize != 0
        if paddedOldLast {
            let length = oldLast == newLast ? newSize - oldLast * pageSize : pageSize
            try rewritePage(file, header: header, index: oldLast, size: size, lowerSize: lowerBase,
                            newLength: Int(length), becomesLast: oldLast == newLast)
            if oldLast == newLast {
                if preserves { try file.fd.truncate(to: newSize) }
                return
            }
            lowerBase = Int64(try file.fd.stat().st_size)  // a failed store below is cut back to here, not into that page
        }
        do {
            if preserves {
                try file.fd.truncate(to: newSize)
            } else {
                try pool.with(Int(pageSize)) { page in
                    page.initializeMemory(as: UInt8.self, repeating: 0)
                    try storePages(file, header: header, first: newLast,
                                   plain: UnsafeMutableRawBufferPointer(rebasing: page[0..<Int(newSize - newLast * pageSize)]),
                                   newSize: newSize, lowerSize: lowerBase)
                }
            }
        } catch {
            // The lower file system refused the new end (EFBIG past its limit, ENOSPC): the old
            // last page goes back to its length, so the file is as it was, as write does.
            if paddedOldLast { try? truncate(file, to: size) }
            throw error
        }
    }

    // MARK: holes and allocation

    /// Makes logical bytes `offset ..< offset+length` read as zeros without changing the size
    /// (fallocate PUNCH_HOLE or ZERO_RANGE, passed as `lowerMode` to the lower file): whole
    /// pages become lower holes, partial edge pages are rewritten. A lower file system that
    /// refuses the mode makes the layer refuse it too, before anything changes.
    func zeroRange(_ file: LowerFile, offset: Int64, length: Int64, lowerMode: Int32) throws {
        if codec.passesBytesThrough {
            // Bytes are bytes: the lower file system takes the range as asked (and its limits).
            return try zeroLower(file, mode: lowerMode, offset: offset, length: length)
        }
        // fallocate checks the file system's largest size before anything else, even for a range
        // past the end of file; lseek(SEEK_SET) answers EINVAL past that same limit.
        let rangeEnd = offset.rangeEnd(length)
        let lowerRangeEnd = rangeEnd < 0 || rangeEnd > maximumSize ? Int64.max : try lowerEnd(ofLogicalEnd: rangeEnd)
        guard file.fd.takesSize(lowerRangeEnd) else { throw Errno.EFBIG }
        let (lowerSize, size) = try sizes(file)
        let end = rangeEnd < 0 ? size : min(rangeEnd, size)
        var holeFrom = offset < end ? (offset + pageSize - 1) / pageSize : 0  // (past the end, nothing to punch)
        var holeTo = end / pageSize  // exclusive
        if end == size && size % pageSize != 0 && preserves { holeTo += 1 }  // a partial last page can be a hole too
        if !preserves && holeTo > (size - 1) / pageSize { holeTo = (size - 1) / pageSize }  // the last page keeps its record
        if offset < end && holeFrom < holeTo {
            let start = slotStart(holeFrom)
            try zeroLower(file, mode: lowerMode, offset: start, length: min(slotStart(holeTo), max(lowerSize, start + 1)) - start)
        } else {
            // No whole page to hand down: ask the lower file system past its end whether it can.
            let probe = lowerSize.roundedUp(to: slotSize) + slotSize
            try file.fd.allocate(mode: lowerMode, offset: probe, length: slotSize)
            if lowerMode & FALLOC_FL_PUNCH_HOLE == 0 {
                try? file.fd.allocate(mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset: probe, length: slotSize)
            }
            holeFrom = holeTo
        }
        guard offset < end else { return }
        if holeFrom > holeTo { holeFrom = holeTo }
        try writeZeros(file, from: offset, to: min(end, holeFrom * pageSize))
        try writeZeros(file, from: max(offset, holeTo * pageSize), to: end)
    }

    /// fallocate of `mode` (PUNCH_HOLE or ZERO_RANGE, with KEEP_SIZE) on the lower range.
    private func zeroLower(_ file: LowerFile, mode: Int32, offset: Int64, length: Int64) throws {
        try file.fd.allocate(mode: mode, offset: offset, length: length)
        if mode & FALLOC_FL_PUNCH_HOLE == 0 {
            // ZERO_RANGE: GlusterFS's FUSE client accepts it and only allocates (the bytes stay).
            // A punched hole reads as zeros everywhere; allocating again keeps the space ZERO_RANGE
            // reserves.
            if (try? file.fd.allocate(mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset: offset, length: length)) != nil {
                try? file.fd.allocate(mode: FALLOC_FL_KEEP_SIZE, offset: offset, length: length)
            }
        }
    }

    private func writeZeros(_ file: LowerFile, from: Int64, to: Int64) throws {
        var at = from
        while at < to {
            let n = Int(min(to - at, 1 << 20))
            try pool.with(n) { zeros in
                zeros.initializeMemory(as: UInt8.self, repeating: 0)
                _ = try write(file, offset: at, data: UnsafeRawBufferPointer(zeros))
            }
            at += Int64(n)
        }
    }

    /// Reserves lower space for logical bytes `offset ..< offset+length` (fallocate mode 0 or KEEP_SIZE).
    func allocate(_ file: LowerFile, offset: Int64, length: Int64, keepSize: Bool) throws {
        try checkGrowth(to: offset.rangeEnd(length))
        if codec.passesBytesThrough {
            return try file.fd.allocate(mode: keepSize ? FALLOC_FL_KEEP_SIZE : 0, offset: offset, length: length)
        }
        let (_, size) = try sizes(file)
        let first = offset / pageSize, last = (offset + length - 1) / pageSize
        // Space first: a lower file system that cannot allocate leaves the size untouched.
        try file.fd.allocate(mode: FALLOC_FL_KEEP_SIZE, offset: slotStart(first), length: slotStart(last + 1) - slotStart(first))
        if !keepSize && offset + length > size { try truncate(file, to: offset + length) }
    }

    // MARK: seek

    /// lseek with SEEK_DATA or SEEK_HOLE, in logical offsets, at page granularity.
    func seek(_ file: LowerFile, offset: Int64, whence: Int32) throws -> Int64 {
        let (lowerSize, size) = try sizes(file)
        guard offset >= 0 else { throw Errno.EINVAL }
        guard offset < size else { throw Errno.ENXIO }
        if preserves {
            let r = try file.fd.seek(offset, whence: whence)
            return min(max(r, offset), size)
        }
        var page = offset / pageSize
        if whence == SEEK_DATA {
            while true {
                let r: Int64
                do { r = try file.fd.seek(slotStart(page), whence: SEEK_DATA) } catch let e as Errno where e == .ENXIO { throw Errno.ENXIO }
                let p = max((r - headerSize) / slotSize, page)
                if p * pageSize >= size { throw Errno.ENXIO }
                // Slots need not be block-aligned: a lower block holding one slot's tail (or the
                // header) is data for the next slot too. Bytes decide.
                if try !slotIsZero(file, p, lowerSize: lowerSize) && !lastPageIsZeros(file, p, size: size, lowerSize: lowerSize) {
                    return max(offset, p * pageSize)
                }
                page = p + 1
            }
        }
        // SEEK_HOLE: the first page whose slot is all zeros, or the end of file. Slots need not
        // be block-aligned, so the lower answers only narrow the search; bytes decide, and
        // every round moves past at least one page.
        let lastPage = (size - 1) / pageSize
        while page < lastPage {
            let r = try file.fd.seek(slotStart(page), whence: SEEK_HOLE)
            if r >= lowerSize { return size }
            // The slot holding the lower hole's start may have only zeros in its allocated part.
            let candidate = max(page, (r - headerSize) / slotSize)
            if candidate >= lastPage { return size }
            let next: Int64
            do { next = try file.fd.seek(slotStart(candidate), whence: SEEK_DATA) } catch let e as Errno where e == .ENXIO { next = lowerSize }
            if try next >= slotStart(candidate + 1) || slotIsZero(file, candidate, lowerSize: lowerSize) {
                return min(max(offset, candidate * pageSize), size)
            }
            page = max(candidate + 1, (next - headerSize) / slotSize)
        }
        return size
    }

    /// Whether `index` is the last page and holds only zeros: a file grown by truncate stores
    /// its last page (it carries the size), which a local file system would show as a hole.
    private func lastPageIsZeros(_ file: LowerFile, _ index: Int64, size: Int64, lowerSize: Int64) throws -> Bool {
        guard index == (size - 1) / pageSize else { return false }
        let h = try header(file, lowerSize: lowerSize, create: false)
        return try pool.with(Int(pageSize)) { page in
            try loadPage(file, header: h, index: index, size: size, lowerSize: lowerSize, into: page)
            return UnsafeRawBufferPointer(page).isAllZero
        }
    }

    private func slotIsZero(_ file: LowerFile, _ index: Int64, lowerSize: Int64) throws -> Bool {
        let length = Int(min(slotSize, lowerSize - slotStart(index)))
        guard length > 0 else { return true }
        return try pool.with(length) { buf in
            let n = try file.readOwn(into: buf, at: slotStart(index))
            return UnsafeRawBufferPointer(rebasing: buf[0..<n]).isAllZero
        }
    }
}

extension UnsafeRawBufferPointer {
    /// True when every byte is zero (a hole, or a page of zeros).
    var isAllZero: Bool {
        guard let base = baseAddress else { return true }
        var i = 0
        let words = count / 8
        let w = UnsafeRawPointer(base)
        while i < words {
            if w.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            i += 1
        }
        for j in (words * 8)..<count where base.load(fromByteOffset: j, as: UInt8.self) != 0 { return false }
        return true
    }
}

extension UnsafeMutableRawBufferPointer {
    var isAllZero: Bool { UnsafeRawBufferPointer(self).isAllZero }
}

extension Int64 {
    /// `self + length`, or -1 where that overflows (which `checkGrowth` refuses with EFBIG): the
    /// kernel keeps a request's range within off_t, and the daemon does not trap if one is not.
    func rangeEnd(_ length: Int64) -> Int64 {
        let (end, overflow) = addingReportingOverflow(length)
        return overflow ? -1 : end
    }
}

extension Int {
    func clamped(_ limit: Int) -> Int { Swift.min(self, limit) }
}
