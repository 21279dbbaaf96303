// ThreadCiphers: one keyed OpenSSL cipher context per thread, so a page costs no allocation.
import COpenSSL
import Glibc
import Wrapfs

/// Contexts for one key and direction. Encode and decode run on many threads at once; each
/// thread keys its own context on first use and then only sets an IV per page.
final class ThreadCiphers: @unchecked Sendable {
    private var slot = pthread_key_t()
    private let gcm: Bool
    private let encrypt: Bool
    private let key: SecretBytes

    init(gcm: Bool, encrypt: Bool, key: SecretBytes) {
        self.gcm = gcm
        self.encrypt = encrypt
        self.key = key
        pthread_key_create(&slot) { wrapfs_cipher_free($0) }
    }

    func context() throws -> OpaquePointer {
        if let c = pthread_getspecific(slot) { return OpaquePointer(c) }
        let c = key.withBytes { k in wrapfs_cipher_new(gcm ? 1 : 0, encrypt ? 1 : 0, k.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        guard let c else { throw CodecError("OpenSSL cannot set up an AES context") }
        pthread_setspecific(slot, UnsafeRawPointer(c))
        return c
    }
}

/// Subkeys of a master key, one per purpose (HKDF-SHA256), so no key serves two algorithms.
enum Subkeys {
    static func derive(from master: SecretBytes, purpose: String, count: Int = 32) throws -> SecretBytes {
        let out = try SecretBytes(count: count)
        let info = Array(purpose.utf8)
        let ok = master.withBytes { m in
            out.withMutableBytes { o in
                wrapfs_hkdf_sha256(m.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(m.count), info, Int32(info.count),
                                   o.baseAddress!.assumingMemoryBound(to: UInt8.self), o.count)
            }
        }
        guard ok == 1 else { throw CodecError("OpenSSL HKDF failed") }
        return out
    }
}

/// Random IVs drawn ahead, one reserve per thread: OpenSSL's generator costs about a
/// microsecond per call whatever the length (a lock and a fork check), as much as encrypting a
/// page, so each call fetches a few hundred IVs (gocryptfs prefetches its nonces the same way).
/// IVs are public (stored beside their ciphertext), so the reserve holds nothing secret.
final class RandomReserve: @unchecked Sendable {
    private final class Reserve {
        static let size = 4096
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        var used = size
        deinit { bytes.deallocate() }
    }
    private var slot = pthread_key_t()

    init() {
        pthread_key_create(&slot) { if let r = $0 { Unmanaged<AnyObject>.fromOpaque(r).release() } }
    }

    /// Fills `buffer` (at most 4096 bytes) with fresh random bytes.
    func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        let reserve: Reserve
        if let r = pthread_getspecific(slot) {
            reserve = Unmanaged<Reserve>.fromOpaque(r).takeUnretainedValue()
        } else {
            reserve = Reserve()
            pthread_setspecific(slot, Unmanaged.passRetained(reserve).toOpaque())
        }
        precondition(buffer.count <= Reserve.size)
        if reserve.used + buffer.count > Reserve.size {
            try randomBytes(reserve.bytes)
            reserve.used = 0
        }
        let taken = UnsafeMutableRawBufferPointer(rebasing: reserve.bytes[reserve.used..<reserve.used + buffer.count])
        buffer.copyMemory(from: UnsafeRawBufferPointer(taken))
        taken.initializeMemory(as: UInt8.self, repeating: 0)  // each IV is handed out once
        reserve.used += buffer.count
    }
}

/// Fills `buffer` from OpenSSL's random generator.
func randomBytes(_ buffer: UnsafeMutableRawBufferPointer) throws {
    guard RAND_bytes(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(buffer.count)) == 1 else {
        throw CodecError("OpenSSL's random generator failed")
    }
}
