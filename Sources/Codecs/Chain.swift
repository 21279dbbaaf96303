// Codec chains: `--codec gzip,aes-gcm` compresses each page, then encrypts what gzip made.
import Wrapfs

/// Two codecs in a row: `inner` encodes the page, `outer` encodes what `inner` produced (so
/// `outer` sees pages of up to `inner.slotSize` bytes). Longer chains nest. A slot is the outer
/// encoding's length (4 bytes, little-endian) and the outer encoding: an outer codec such as
/// aes-gcm must know exactly how many bytes it made, and a shrinking inner codec leaves the
/// slot's tail unused. The length is not secret; changing it makes aes-gcm's check fail.
public final class ChainCodec: Codec {
    public let inner: Codec
    public let outer: Codec
    public var name: String { inner.name + "," + outer.name }
    public var pageSize: Int { inner.pageSize }
    public var slotSize: Int { 4 + outer.slotSize }
    public var headerSize: Int { outer.headerSize + inner.headerSize }
    public var preservesSize: Bool { false }
    /// The middle buffer between the two codecs, reused across pages.
    private let buffers = BufferPool()

    /// `outer` must accept pages of `inner.slotSize` bytes.
    public init(inner: Codec, outer: Codec) throws {
        guard outer.pageSize >= inner.slotSize else {
            throw CodecError("\(outer.name) takes pages of \(outer.pageSize) bytes, \(inner.name) makes up to \(inner.slotSize)")
        }
        self.inner = inner
        self.outer = outer
    }

    public func makeHeader(_ header: UnsafeMutableRawBufferPointer) throws {
        try outer.makeHeader(UnsafeMutableRawBufferPointer(rebasing: header[0..<outer.headerSize]))
        try inner.makeHeader(UnsafeMutableRawBufferPointer(rebasing: header[outer.headerSize...]))
    }

    public func checkHeader(_ header: UnsafeRawBufferPointer) throws {
        guard header.count == headerSize else { throw CodecError("chain header of \(header.count) bytes, expected \(headerSize)") }
        try outer.checkHeader(UnsafeRawBufferPointer(rebasing: header[0..<outer.headerSize]))
        try inner.checkHeader(UnsafeRawBufferPointer(rebasing: header[outer.headerSize...]))
    }

    private func contexts(_ context: PageContext) -> (outer: PageContext, inner: PageContext) {
        (PageContext(index: context.index, header: UnsafeRawBufferPointer(rebasing: context.header[0..<outer.headerSize])),
         PageContext(index: context.index, header: UnsafeRawBufferPointer(rebasing: context.header[outer.headerSize...])))
    }

    public func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        let (outerContext, innerContext) = contexts(context)
        return try buffers.with(inner.slotSize) { middle in
            let m = try inner.encode(page, into: middle, context: innerContext)
            let e = try outer.encode(UnsafeRawBufferPointer(rebasing: middle[0..<m]),
                                     into: UnsafeMutableRawBufferPointer(rebasing: slot[4...]), context: outerContext)
            slot.storeBytes(of: UInt32(e).littleEndian, toByteOffset: 0, as: UInt32.self)
            return 4 + e
        }
    }

    public func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        guard slot.count > 4 else { throw CodecError("chain slot of \(slot.count) bytes is too short") }
        let e = Int(UInt32(littleEndian: slot.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        guard e >= 1, 4 + e <= slot.count else { throw CodecError("chain slot length \(e) out of range") }
        let (outerContext, innerContext) = contexts(context)
        return try buffers.with(outer.pageSize) { middle in
            let m = try outer.decode(UnsafeRawBufferPointer(rebasing: slot[4..<(4 + e)]), into: middle, context: outerContext)
            return try inner.decode(UnsafeRawBufferPointer(rebasing: middle[0..<m]), into: page, context: innerContext)
        }
    }

    // Names, symlink targets and user attributes go through both, the outer last (it is the one the lower sees).
    public func encodeAttributeName(_ name: [UInt8]) throws -> [UInt8] { try outer.encodeAttributeName(try inner.encodeAttributeName(name)) }
    public func decodeAttributeName(_ name: [UInt8]) throws -> [UInt8] { try inner.decodeAttributeName(try outer.decodeAttributeName(name)) }
    public func encodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8] {
        try outer.encodeAttributeValue(try inner.encodeAttributeValue(value, name: name), name: name)
    }
    public func decodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8] {
        try inner.decodeAttributeValue(try outer.decodeAttributeValue(value, name: name), name: name)
    }
    public var keepsAttributes: Bool { inner.keepsAttributes && outer.keepsAttributes }
    public func encodeName(_ name: [UInt8]) throws -> [UInt8] { try outer.encodeName(try inner.encodeName(name)) }
    public func decodeName(_ name: [UInt8]) throws -> [UInt8] { try inner.decodeName(try outer.decodeName(name)) }
    public func encodeLinkTarget(_ t: [UInt8]) throws -> [UInt8] { try outer.encodeLinkTarget(try inner.encodeLinkTarget(t)) }
    public func decodeLinkTarget(_ t: [UInt8]) throws -> [UInt8] { try inner.decodeLinkTarget(try outer.decodeLinkTarget(t)) }
    public var preservesNameLength: Bool { inner.preservesNameLength && outer.preservesNameLength }
}

extension ChainCodec {
    /// Makes `spec`, one codec or a chain ("gzip,aes-gcm"), from the registry: the first codec
    /// takes `options`; each next one takes pages of what the one before makes, the master key,
    /// and the name and attribute options.
    public static func make(_ spec: String, options: CodecOptions, registry: CodecRegistry = .shared) throws -> Codec {
        let names = spec.split(separator: ",").map(String.init)
        guard let first = names.first else { throw CodecError("no codec named") }
        var made = try registry.make(first, options: options)
        for next in names.dropFirst() {
            var values = ["input-size": String(made.slotSize)]
            values["plaintext-names"] = options.values["plaintext-names"]
            values["xattrs"] = options.values["xattrs"]
            let outer = try registry.make(next, options: CodecOptions(values, masterKey: options.masterKey))
            made = try ChainCodec(inner: made, outer: outer)
        }
        return made
    }
}
