// XorCodec: a size-preserving codec that XORs every byte with a key byte.
import Wrapfs

/// XORs each byte with `key`, except 0 and `key` themselves, which stay as they are. That keeps
/// it a bijection in which zero stays zero (holes stay holes; no page of data turns into an
/// all-zero slot) and makes it its own inverse. Not encryption: an example of the protocol.
final class XorCodec: Codec {
    let name = "xor"
    let pageSize: Int
    var slotSize: Int { pageSize }  // size-preserving: encode and decode work in place
    var encodesZerosAsZeros: Bool { true }
    let key: UInt8

    init(key: UInt8, pageSize: Int = 4096) throws {
        guard key != 0 else { throw CodecError("key=0 would change nothing: give 1...255") }
        self.key = key
        self.pageSize = pageSize
    }

    func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        for i in 0..<page.count {
            let b = page[i]
            slot[i] = b == 0 || b == key ? b : b ^ key
        }
        return page.count
    }

    func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        try encode(slot, into: page, context: context)  // its own inverse
    }
}
