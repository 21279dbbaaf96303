// The gzip codec: each page deflated (zlib) into its own fixed slot, with a small checked record header.
import CZlib
import Glibc
import Wrapfs

/// One deflate and one inflate stream per thread (zlib's one-shot calls allocate ~300 KiB each).
enum ZlibStreams {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { wrapfs_zstreams_free($0) }
        return k
    }()

    static func current() throws -> UnsafeMutablePointer<wrapfs_zstreams> {
        if let p = pthread_getspecific(key) { return p.assumingMemoryBound(to: wrapfs_zstreams.self) }
        guard let z = wrapfs_zstreams_new() else { throw CodecError("out of memory for zlib streams") }
        pthread_setspecific(key, z)
        return z
    }
}

/// Compresses every page into its own slot: a 16-byte record header then the deflated bytes
/// (or the page as it is, when deflate does not make it smaller). The rest of the slot is a
/// hole in the lower file, so disk usage shows the saving.
///
/// Record header, little-endian: magic "WZ", flags (bit 0: stored raw), version 1, encoded
/// length (UInt32), plain length (UInt32), CRC-32 of the plain bytes (UInt32).
public final class GzipCodec: Codec {
    public let name = "gzip"
    public let pageSize: Int
    public let level: Int32
    public static let recordHeaderSize = 16
    /// A stored-raw page fits, so a slot costs at most the record header over the page.
    public var slotSize: Int { pageSize + Self.recordHeaderSize }
    public var preservesSize: Bool { false }

    public init(pageSize: Int = 65536, level: Int = 6) throws {
        guard (1...9).contains(level) else { throw CodecError("gzip level must be 1...9, got \(level)") }
        self.pageSize = pageSize
        self.level = Int32(level)
    }

    public func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        let h = Self.recordHeaderSize
        let body = UnsafeMutableRawBufferPointer(rebasing: slot[h...])
        var length = UInt(body.count)
        // The thread's own stream: no allocation per page in steady state.
        let rc = wrapfs_deflate(try ZlibStreams.current(), body.baseAddress!.assumingMemoryBound(to: UInt8.self), &length,
                                page.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(page.count), level)
        var raw = false
        if rc != Z_OK || Int(length) >= page.count {
            // Incompressible (or deflate needs more room): store the page as it is.
            body.copyMemory(from: page)
            length = UInt(page.count)
            raw = true
        }
        let crc = UInt32(crc32(0, page.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt(page.count)))
        slot[0] = 0x57; slot[1] = 0x5A
        slot[2] = raw ? 1 : 0
        slot[3] = 1
        slot.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 4, as: UInt32.self)
        slot.storeBytes(of: UInt32(page.count).littleEndian, toByteOffset: 8, as: UInt32.self)
        slot.storeBytes(of: crc.littleEndian, toByteOffset: 12, as: UInt32.self)
        return h + Int(length)
    }

    /// The record's fields, checked against the slot they came from.
    private func record(_ slot: UnsafeRawBufferPointer) throws -> (raw: Bool, encoded: Int, plain: Int, crc: UInt32) {
        let h = Self.recordHeaderSize
        guard slot.count >= h, slot[0] == 0x57, slot[1] == 0x5A, slot[3] == 1, slot[2] & ~1 == 0 else {
            throw CodecError("bad record header")
        }
        let encoded = Int(UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        let plain = Int(UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        let crc = UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        guard encoded <= slot.count - h, plain >= 1, plain <= pageSize, slot[2] == 0 || encoded == plain else {
            throw CodecError("record lengths out of range (encoded \(encoded), plain \(plain), slot \(slot.count))")
        }
        return (slot[2] == 1, encoded, plain, crc)
    }

    public func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        let r = try record(slot)
        let body = UnsafeRawBufferPointer(rebasing: slot[Self.recordHeaderSize..<(Self.recordHeaderSize + r.encoded)])
        if r.raw {
            UnsafeMutableRawBufferPointer(rebasing: page[0..<r.plain]).copyMemory(from: body)
        } else {
            var length = UInt(page.count)
            let rc = wrapfs_inflate(try ZlibStreams.current(), page.baseAddress!.assumingMemoryBound(to: UInt8.self), &length,
                                    body.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(r.encoded))
            guard rc == Z_OK, Int(length) == r.plain else { throw CodecError("inflate failed (zlib \(rc))") }
        }
        let crc = UInt32(crc32(0, page.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt(r.plain)))
        guard crc == r.crc else { throw CodecError("CRC-32 mismatch") }
        return r.plain
    }

    public func plainLength(ofLastSlot slot: UnsafeRawBufferPointer, context: PageContext) throws -> Int {
        try record(slot).plain
    }
}
