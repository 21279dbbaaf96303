// Unit tests of the layer's pure helpers (no mount needed).
import Foundation
import Testing
import Wrapfs

@Suite("Units")
struct UnitTests {
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
}
