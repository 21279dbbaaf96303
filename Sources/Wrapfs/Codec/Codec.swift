// The codec protocol: what a content transform provides to the page engine.

/// Where a page sits, handed to every encode and decode call.
public struct PageContext {
    /// The page's index in its file (page `i` holds logical bytes `i*pageSize ..< (i+1)*pageSize`).
    public let index: UInt64
    /// The file's header bytes (`headerSize` of them; empty when the codec has no header).
    public let header: UnsafeRawBufferPointer

    public init(index: UInt64, header: UnsafeRawBufferPointer) {
        self.index = index
        self.header = header
    }
}

/// A transform applied to file content one page at a time, and optionally to names.
///
/// The page engine owns everything else: alignment, read-modify-write, appends, truncation,
/// holes, concurrency. A lower file is laid out as `header | slot 0 | slot 1 | ...`, slot `i` at
/// `headerSize + i * slotSize`, so any page is found in O(1) and rewriting one page rewrites one
/// slot. The last page of a file may be shorter than `pageSize`; every other page is full.
///
/// Encode and decode may be called from many threads at once: keep per-call state on the stack.
public protocol Codec: AnyObject {
    /// The name on the command line (`--codec NAME`).
    var name: String { get }
    /// Logical (plain) bytes per page.
    var pageSize: Int { get }
    /// The most bytes one encoded page may take in the lower file.
    var slotSize: Int { get }
    /// Bytes at the start of every non-empty lower file, before slot 0. Zero for none.
    var headerSize: Int { get }
    /// True when an encoded page is exactly as long as its plain page, `slotSize == pageSize`
    /// and there is no header: lower sizes then equal logical sizes, and for such codecs
    /// `encode`/`decode` must accept the same buffer as input and output (in-place transform).
    var preservesSize: Bool { get }
    /// True when a page of zeros encodes to zeros and back (identity, rot). The engine then skips
    /// its hole check on reads. Otherwise an all-zero slot reads as zeros without decoding, so
    /// `encode` must never turn a page that is not all zeros into an all-zero slot.
    var encodesZerosAsZeros: Bool { get }
    /// True when encode and decode change no byte (identity). The engine then writes a request's
    /// bytes straight to the lower file at their offset, with no page loaded, copied or encoded.
    var passesBytesThrough: Bool { get }

    /// Fills a new file's header (for example with a random file ID). Called once per file.
    func makeHeader(_ header: UnsafeMutableRawBufferPointer) throws
    /// Validates a file's header when the file is opened; throw `CodecError` if it is unusable.
    func checkHeader(_ header: UnsafeRawBufferPointer) throws

    /// Encodes `page` (1...pageSize bytes) into `slot` (slotSize bytes); returns the encoded length.
    func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int
    /// Decodes one slot into `page` (pageSize bytes) and returns the plain length. `slot` holds
    /// the slot's bytes as stored: for any page but the last, `slotSize` bytes, of which only
    /// the encoded length is meaningful. Throw on anything that does not check out. Only the
    /// returned number of bytes of `page` count: the rest may be used as scratch.
    func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int
    /// The plain length of the file's last page, from the slot's stored bytes. The default
    /// decodes the page; a codec whose record says its length can answer faster.
    func plainLength(ofLastSlot slot: UnsafeRawBufferPointer, context: PageContext) throws -> Int
    /// Bytes every encoded page adds to its plain length, when that is a constant (an IV and a
    /// tag, say). The engine then derives file sizes from lower sizes without reading. nil
    /// (the default) for codecs whose encoded length varies.
    var fixedOverhead: Int? { get }

    /// Encodes one path component for the lower file system. Must be a bijection onto valid names
    /// (no '/', no NUL, not "." or ".."). The default keeps names as they are.
    func encodeName(_ name: [UInt8]) throws -> [UInt8]
    /// Inverse of `encodeName`; throw for a lower name this codec did not make (it is hidden).
    func decodeName(_ name: [UInt8]) throws -> [UInt8]
    /// Encodes a symlink target. The default keeps targets as they are.
    func encodeLinkTarget(_ target: [UInt8]) throws -> [UInt8]
    func decodeLinkTarget(_ target: [UInt8]) throws -> [UInt8]
    /// True when `encodeName`/`encodeLinkTarget` keep lengths (the layer can then report lower sizes).
    var preservesNameLength: Bool { get }

    /// Encodes the name of an extended attribute in the user namespace, the part after "user."
    /// (other namespaces, ACLs and capabilities among them, reach the lower file as they are).
    /// The lower name must be valid there; the default keeps it.
    func encodeAttributeName(_ name: [UInt8]) throws -> [UInt8]
    /// Inverse of `encodeAttributeName`; throw for a lower name this codec did not make (it is hidden).
    func decodeAttributeName(_ name: [UInt8]) throws -> [UInt8]
    /// Encodes the value of the user attribute whose full plain name is `name`. The default keeps it.
    func encodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8]
    /// Inverse of `encodeAttributeValue`; throw for a value that does not check out (EIO).
    func decodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8]
    /// True when the four attribute methods keep names and values as they are.
    var keepsAttributes: Bool { get }
}

/// A page or name that a codec refuses: the layer answers EIO for it and logs `reason`.
public struct CodecError: Error, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

extension Codec {
    public var headerSize: Int { 0 }
    public var preservesSize: Bool { slotSize == pageSize && headerSize == 0 }
    public var encodesZerosAsZeros: Bool { false }
    public var passesBytesThrough: Bool { false }
    public func makeHeader(_ header: UnsafeMutableRawBufferPointer) throws {}
    public func checkHeader(_ header: UnsafeRawBufferPointer) throws {}
    public func plainLength(ofLastSlot slot: UnsafeRawBufferPointer, context: PageContext) throws -> Int {
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: pageSize, alignment: 16)
        defer { page.deallocate() }
        return try decode(slot, into: page, context: context)
    }
    public var fixedOverhead: Int? { preservesSize ? 0 : nil }
    public func encodeName(_ name: [UInt8]) throws -> [UInt8] { name }
    public func decodeName(_ name: [UInt8]) throws -> [UInt8] { name }
    public func encodeLinkTarget(_ target: [UInt8]) throws -> [UInt8] { target }
    public func decodeLinkTarget(_ target: [UInt8]) throws -> [UInt8] { target }
    public var preservesNameLength: Bool { true }
    public func encodeAttributeName(_ name: [UInt8]) throws -> [UInt8] { name }
    public func decodeAttributeName(_ name: [UInt8]) throws -> [UInt8] { name }
    public func encodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8] { value }
    public func decodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8] { value }
    public var keepsAttributes: Bool { true }
}
