// The rot codec: a size-preserving byte rotation, the simplest transform that shows in the lower file.
import Wrapfs

/// Rotates every non-zero byte by `shift` within 1...255 (zero stays zero, so holes stay holes
/// and all-zero pages need no special case), and ROT13s the letters of names and symlink
/// targets (which keeps names valid: no '/' or NUL can appear, length is unchanged).
public final class RotCodec: Codec {
    public let name = "rot"
    public let pageSize: Int
    public var slotSize: Int { pageSize }
    public var encodesZerosAsZeros: Bool { true }
    private let forward: [UInt8]
    private let backward: [UInt8]

    public init(shift: Int = 13, pageSize: Int = 4096) throws {
        guard (1...254).contains(shift) else { throw CodecError("rot shift must be in 1...254, got \(shift)") }
        var f = [UInt8](repeating: 0, count: 256), b = [UInt8](repeating: 0, count: 256)
        for v in 1...255 {
            let r = (v - 1 + shift) % 255 + 1
            f[v] = UInt8(r)
            b[r] = UInt8(v)
        }
        forward = f
        backward = b
        self.pageSize = pageSize
    }

    public func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        map(page, into: slot, table: forward)
        return page.count
    }

    public func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        map(slot, into: page, table: backward)
        return slot.count
    }

    private func map(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, table: [UInt8]) {
        table.withUnsafeBufferPointer { t in
            let src = input.bindMemory(to: UInt8.self), dst = output.bindMemory(to: UInt8.self)
            for i in 0..<src.count { dst[i] = t[Int(src[i])] }
        }
    }

    public func encodeName(_ name: [UInt8]) throws -> [UInt8] { name.map(Self.rot13) }
    public func decodeName(_ name: [UInt8]) throws -> [UInt8] { name.map(Self.rot13) }
    public func encodeLinkTarget(_ target: [UInt8]) throws -> [UInt8] { target.map(Self.rot13) }
    public func decodeLinkTarget(_ target: [UInt8]) throws -> [UInt8] { target.map(Self.rot13) }

    static func rot13(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return (c - UInt8(ascii: "a") + 13) % 26 + UInt8(ascii: "a")
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return (c - UInt8(ascii: "A") + 13) % 26 + UInt8(ascii: "A")
        default: return c
        }
    }
}
