// The encrypting codec: aes-gcm (authenticated) or aes-ctr (confidentiality only), per page.
import COpenSSL
import Wrapfs

/// The header both write at the start of every file: magic "WC", version 1, the algorithm,
/// and a random 128-bit file ID that binds every page to its file.
enum EncryptedFileHeader {
    static let size = 20
    static func make(_ header: UnsafeMutableRawBufferPointer, algorithm: UInt8) throws {
        header[0] = 0x57; header[1] = 0x43; header[2] = 1; header[3] = algorithm
        try randomBytes(UnsafeMutableRawBufferPointer(rebasing: header[4..<20]))
    }
    static func check(_ header: UnsafeRawBufferPointer, algorithm: UInt8) throws {
        guard header.count == size, header[0] == 0x57, header[1] == 0x43 else { throw CodecError("not an encrypted file header") }
        guard header[2] == 1 else { throw CodecError("file header version \(header[2]) is not supported") }
        guard header[3] == algorithm else { throw CodecError("file was written by another cipher (\(header[3]))") }
    }
}

/// The encrypting content codecs, one page per slot after the file header:
/// - `aes-gcm` (as gocryptfs): slot = 16-byte random IV | ciphertext | 16-byte tag. The file ID
///   and the page index are authenticated data, so a page that is flipped, truncated, moved
///   within its file or into another file fails authentication (EIO and a log line).
/// - `aes-ctr`: slot = 16-byte random initial counter block | ciphertext. It hides content but
///   does not detect changes (no tag): use aes-gcm when tampering matters.
/// Every write of a page draws a fresh IV, so no keystream is ever reused. Names and symlink
/// targets are AES-SIV (`NameCipher`) unless the volume keeps plaintext names.
public final class AesCodec: Codec {
    public enum Mode: String, Sendable {
        case gcm = "aes-gcm", ctr = "aes-ctr"
        var algorithm: UInt8 { self == .gcm ? 1 : 2 }
        var overhead: Int { self == .gcm ? 32 : 16 }
    }

    public let mode: Mode
    public let pageSize: Int
    public var name: String { mode.rawValue }
    public var slotSize: Int { pageSize + mode.overhead }
    public var headerSize: Int { EncryptedFileHeader.size }
    public var fixedOverhead: Int? { mode.overhead }
    private let sealers: ThreadCiphers
    /// GCM opens with contexts of its own; CTR decrypts with the same pass that encrypts.
    private let openers: ThreadCiphers
    private let names: NameCipher?
    private let attributes: AttributeCipher?
    private let ivs = RandomReserve()

    /// `encryptAttributes`: user extended attributes too (volumes made since session 33 say so in
    /// their volume file; older ones keep theirs in plain, as they were written).
    public init(_ mode: Mode, masterKey: SecretBytes, pageSize: Int = 4096, encryptNames: Bool = true,
                encryptAttributes: Bool = false) throws {
        self.mode = mode
        self.pageSize = pageSize
        names = encryptNames ? try NameCipher(masterKey: masterKey) : nil
        attributes = encryptAttributes ? try AttributeCipher(masterKey: masterKey) : nil
        let key = try Subkeys.derive(from: masterKey, purpose: mode == .gcm ? "wrapfs aes-256-gcm page content" : "wrapfs aes-256-ctr page content")
        sealers = ThreadCiphers(gcm: mode == .gcm, encrypt: true, key: key)
        openers = mode == .gcm ? ThreadCiphers(gcm: true, encrypt: false, key: key) : sealers
    }

    public func makeHeader(_ header: UnsafeMutableRawBufferPointer) throws { try EncryptedFileHeader.make(header, algorithm: mode.algorithm) }
    public func checkHeader(_ header: UnsafeRawBufferPointer) throws { try EncryptedFileHeader.check(header, algorithm: mode.algorithm) }

    public func encodeName(_ name: [UInt8]) throws -> [UInt8] { try names.map { try $0.encrypt(name) } ?? name }
    public func decodeName(_ name: [UInt8]) throws -> [UInt8] { try names.map { try $0.decrypt(name) } ?? name }
    public func encodeLinkTarget(_ target: [UInt8]) throws -> [UInt8] { try names.map { try $0.encryptLinkTarget(target) } ?? target }
    public func decodeLinkTarget(_ target: [UInt8]) throws -> [UInt8] { try names.map { try $0.decryptLinkTarget(target) } ?? target }
    public var preservesNameLength: Bool { names == nil }

    public func encodeAttributeName(_ name: [UInt8]) throws -> [UInt8] { try attributes.map { try $0.encryptName(name) } ?? name }
    public func decodeAttributeName(_ name: [UInt8]) throws -> [UInt8] { try attributes.map { try $0.decryptName(name) } ?? name }
    public func encodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8] {
        try attributes.map { try $0.seal(value, name: name) } ?? value
    }
    public func decodeAttributeValue(_ value: [UInt8], name: [UInt8]) throws -> [UInt8] {
        try attributes.map { try $0.open(value, name: name) } ?? value
    }
    public var keepsAttributes: Bool { attributes == nil }

    public func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        let n = page.count
        try ivs.fill(UnsafeMutableRawBufferPointer(rebasing: slot[0..<16]))
        let ok: Int32
        switch mode {
        case .gcm:
            ok = try withAdditionalData(context) { aad in
                wrapfs_gcm_seal(try sealers.context(), bytes(slot), bytes(aad), Int32(aad.count), bytes(page), Int32(n),
                                mutableBytes(slot) + 16, mutableBytes(slot) + 16 + n)
            }
        case .ctr:
            ok = wrapfs_ctr_xor(try sealers.context(), bytes(slot), bytes(page), Int32(n), mutableBytes(slot) + 16)
        }
        guard ok == 1 else { throw CodecError("\(name) encryption failed") }
        return n + mode.overhead
    }

    public func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
        let n = slot.count - mode.overhead
        guard n >= 1, n <= pageSize else { throw CodecError("slot of \(slot.count) bytes is too short or too long") }
        switch mode {
        case .gcm:
            let ok = try withAdditionalData(context) { aad in
                wrapfs_gcm_open(try openers.context(), bytes(slot), bytes(aad), Int32(aad.count), bytes(slot) + 16, Int32(n),
                                bytes(slot) + 16 + n, mutableBytes(page))
            }
            guard ok == 1 else { throw CodecError("authentication failed (page altered, moved or truncated)") }
        case .ctr:
            guard wrapfs_ctr_xor(try openers.context(), bytes(slot), bytes(slot) + 16, Int32(n), mutableBytes(page)) == 1 else {
                throw CodecError("AES-CTR decryption failed")
            }
        }
        return n
    }

    /// The file ID then the page index (big-endian): what ties a page to its place.
    private func withAdditionalData<R>(_ context: PageContext, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard context.header.count == EncryptedFileHeader.size else { throw CodecError("missing file header") }
        return try withUnsafeTemporaryAllocation(byteCount: 24, alignment: 8) { aad in
            aad.copyMemory(from: UnsafeRawBufferPointer(rebasing: context.header[4..<20]))
            aad.storeBytes(of: context.index.bigEndian, toByteOffset: 16, as: UInt64.self)
            return try body(UnsafeRawBufferPointer(aad))
        }
    }
}

@inline(__always) private func bytes(_ b: UnsafeRawBufferPointer) -> UnsafePointer<UInt8> { b.baseAddress!.assumingMemoryBound(to: UInt8.self) }
@inline(__always) private func bytes(_ b: UnsafeMutableRawBufferPointer) -> UnsafePointer<UInt8> { UnsafePointer(b.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
@inline(__always) private func mutableBytes(_ b: UnsafeMutableRawBufferPointer) -> UnsafeMutablePointer<UInt8> { b.baseAddress!.assumingMemoryBound(to: UInt8.self) }
