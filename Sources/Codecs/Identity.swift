// The identity codec: content passes unchanged through the page engine (the mmap shim).
import Wrapfs

/// Leaves every byte as it is. Used as a shim that gives page-cache semantics (mmap) to
/// lower file systems that lack them; it still goes through the page engine like any codec.
public final class IdentityCodec: Codec {
    public let name = "identity"
    public let pageSize: Int
    public var slotSize: Int { pageSize }
    public var encodesZerosAsZeros: Bool { true }
    public var passesBytesThrough: Bool { true }

    public init(pageSize: Int = 4096) { self.pageSize = pageSize }

    public func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        if page.baseAddress != UnsafeRawPointer(slot.baseAddress) { slot.copyMemory(from: page) }
        return page.count
    }

    public func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        if slot.baseAddress != UnsafeRawPointer(page.baseAddress) { page.copyMemory(from: slot) }
        return slot.count
    }
}
