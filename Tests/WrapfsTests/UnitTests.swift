// Unit tests of the layer's pure helpers (no mount needed).
import COpenSSL
import Foundation
import Testing
import Wrapfs

@Suite("Units", .onOwnThread)
struct UnitTests {
    @Test("the composed AES-SIV of names gives OpenSSL's AES-256-SIV bytes for every name length under random keys, opens them, and refuses any flipped bit")
    func composedSIV() throws {
        var generator = SystemRandomNumberGenerator()
        guard let cipher = wrapfs_siv_cipher() else { Issue.record("OpenSSL has no AES-256-SIV"); return }
        defer { EVP_CIPHER_free(cipher) }
        for _ in 0..<8 {
            let key = (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) }
            guard let fast = wrapfs_siv_composed_new(key), let reference = wrapfs_siv_contexts_new(cipher, key) else {
                Issue.record("no contexts"); return
            }
            defer { wrapfs_siv_composed_free(fast); wrapfs_siv_contexts_free(reference) }
            /// Seals (`encrypt` 1) or opens `data` (tag, then the text) with `body`'s contexts, in place.
            func run(_ encrypt: Int32, _ data: inout [UInt8], _ plain: inout [UInt8],
                     _ body: (Int32, UnsafePointer<UInt8>, Int32, UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<UInt8>) -> Int32) -> Bool {
                let n = plain.count
                return data.withUnsafeMutableBufferPointer { d in
                    plain.withUnsafeMutableBufferPointer { p in
                        encrypt == 1 ? body(1, p.baseAddress!, Int32(n), d.baseAddress! + 16, d.baseAddress!) == 1
                                     : body(0, d.baseAddress! + 16, Int32(n), p.baseAddress!, d.baseAddress!) == 1
                    }
                }
            }
            let composed = { wrapfs_siv_composed_with(fast, $0, $1, $2, $3, $4) }
            let openssl = { wrapfs_siv_with(reference, $0, $1, $2, $3, $4) }
            for n in Array(1...300) + [511, 512, 513, 1000, 4095, 4200] {
                var name = (0..<n).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let original = name
                var expected = [UInt8](repeating: 0, count: n + 16), got = expected
                #expect(run(1, &expected, &name, openssl))
                #expect(run(1, &got, &name, composed))
                #expect(got == expected, "length \(n)")
                var back = [UInt8](repeating: 0, count: n)
                #expect(run(0, &got, &back, composed) && back == original)
                let bit = Int.random(in: 0..<((n + 16) * 8), using: &generator)
                got[bit / 8] ^= UInt8(1 << (bit % 8))
                #expect(!run(0, &got, &back, composed), "length \(n), bit \(bit) flipped")
                #expect(!run(0, &got, &back, openssl))
            }
        }
    }

    @Test("base64url round-trips every length and matches Foundation's alphabet; only canonical spellings decode")
    func base64url() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<70 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let text = Base64URL.encode(bytes)
            let foundation = Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(String(decoding: text, as: UTF8.self) == foundation)
            #expect(Base64URL.decode(text) == bytes)
        }
        #expect(Base64URL.decode(Array("QQ==".utf8)) == nil)   // padding
        #expect(Base64URL.decode(Array("QR".utf8)) == nil)     // unused low bits set
        #expect(Base64URL.decode(Array("QQ".utf8)) == [0x41])
        #expect(Base64URL.decode(Array("QUJDR".utf8)) == nil)  // impossible length
        #expect(Base64URL.decode(Array("a+b/".utf8)) == nil)   // standard alphabet
        #expect(Base64URL.decode(Array("ab.c".utf8)) == nil)
    }

    /// The tests' own children (mount daemons among them) must hold nothing another case opened:
    /// bindfs keeps a file unlinked while open until its last holder closes it, and the rmdir
    /// test then waited in vain for a daemon that another case had started meanwhile.
    @Test("children the tests start inherit only their standard descriptors")
    func childrenInheritNothing() throws {
        // No O_CLOEXEC, as a test's open(2) calls have; at a number ls's own will not take (the
        // lowest free from 200: dup2 to a fixed number could close another case's descriptor).
        let opened = open("/dev/null", O_RDONLY)
        let fd = fcntl(opened, F_DUPFD, 200)
        close(opened)
        #expect(fd >= 200)
        defer { close(fd) }
        let listing = try run("/bin/ls", ["/proc/self/fd"])
        #expect(listing.status == 0)
        // ls's own directory stream is the one descriptor above 2 it may show.
        let above = listing.output.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }.filter { $0 > 2 }
        #expect(above.count <= 1 && !above.contains(Int(fd)), "\(listing.output)")
    }
}
