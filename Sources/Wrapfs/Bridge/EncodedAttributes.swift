// EncodedAttributes: user extended attributes through a codec that encodes them (an encrypted volume).
import Glibc
import CFuse

extension Layer {
    private static let userPrefix = Array("user.".utf8)

    /// Whether attribute `name` goes through the codec: a user attribute, with a codec that encodes them.
    func encodesAttribute(_ name: UnsafePointer<CChar>) -> Bool {
        !codec.keepsAttributes && strncmp(name, "user.", 5) == 0
    }

    /// The lower name of user attribute `name`, NUL-terminated. ERANGE when it no longer fits the
    /// 255 bytes of an attribute name (as the kernel answers for a plain name that long).
    func lowerAttributeName(_ name: UnsafePointer<CChar>) throws -> [CChar] {
        let suffix = Array(Layer.bytes(name).dropFirst(Self.userPrefix.count))
        guard !suffix.isEmpty else { throw Errno.EINVAL }
        let encoded: [UInt8]
        do { encoded = try codec.encodeAttributeName(suffix) } catch { throw Errno.EIO }
        guard Self.userPrefix.count + encoded.count <= 255 else { throw Errno.ERANGE }
        return Layer.cString(Self.userPrefix + encoded)
    }

    /// Sets user attribute `name` to `value` (encoded) on `path`.
    func setEncodedAttribute(_ path: String, _ name: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer, flags: Int32) throws {
        let lower = try lowerAttributeName(name)
        let sealed: [UInt8]
        do { sealed = try codec.encodeAttributeValue(Array(value), name: Layer.bytes(name)) } catch { throw Errno.EIO }
        _ = try sys { wrapfs_setxattr(path, lower, sealed, sealed.count, flags) }
    }

    /// The plain value of user attribute `name` on `path` (`inode`'s); EIO, a log line and a
    /// decode failure in `status` for one that does not decode.
    func encodedAttribute(_ path: String, _ name: UnsafePointer<CChar>, of inode: Inode) throws -> [UInt8] {
        let lower = try lowerAttributeName(name)
        let stored = try ExtendedAttributes.value(path, lower)
        do {
            return try codec.decodeAttributeValue(stored, name: Layer.bytes(name))
        } catch {
            stats.decodeFailed()
            log.error("decode failed: \(inode.lowerPathForLogs), extended attribute \(String(cString: name)): \(error)")
            throw Errno.EIO
        }
    }

    /// The attribute list of `path` with user names decoded (names this codec did not make are left out).
    func encodedAttributeList(_ path: String) throws -> [UInt8] {
        let stored = try ExtendedAttributes.list(path)
        var list: [UInt8] = []
        for name in stored.split(separator: 0, omittingEmptySubsequences: true) {
            if name.starts(with: Self.userPrefix) {
                guard let plain = try? codec.decodeAttributeName(Array(name.dropFirst(Self.userPrefix.count))) else { continue }
                list += Self.userPrefix + plain
            } else {
                list += name
            }
            list.append(0)
        }
        return list
    }

    /// Replies to a getxattr or listxattr of `bytes`: their size when asked for it, ERANGE when
    /// the caller's buffer is too small.
    func replyAttributeBytes(_ req: fuse_req_t, _ bytes: [UInt8], size: Int) throws {
        if size == 0 { fuse_reply_xattr(req, bytes.count); return }
        guard bytes.count <= size else { throw Errno.ERANGE }
        _ = bytes.withUnsafeBytes { fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
    }
}
