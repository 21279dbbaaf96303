// The exit codes of wrapfs-mount, one per kind of failure a user can act on (documented in README).
import ArgumentParser
import Codecs
import Foundation
import Wrapfs

enum Exit {
    static let ok = ExitCode(0)
    static let failure = ExitCode(1)
    /// A bad option or argument (ArgumentParser's own usage errors use it too).
    static let badOption = ExitCode(64)
    static let unknownCodec = ExitCode(65)
    static let badLower = ExitCode(66)
    static let badMountpoint = ExitCode(67)
    static let alreadyMounted = ExitCode(68)
    static let noFuseDevice = ExitCode(69)
    static let mountFailed = ExitCode(70)
    /// The passphrase does not unwrap the volume's key.
    static let wrongPassphrase = ExitCode(71)
    /// fsck found pages or headers that do not check out.
    static let damaged = ExitCode(72)
}

/// A failure with its message and exit code.
struct Failure: Error, CustomStringConvertible {
    let message: String
    let code: ExitCode
    init(_ message: String, _ code: ExitCode) {
        self.message = message
        self.code = code
    }
    var description: String { message }
}

extension Failure {
    /// Runs a command's body; a `Failure` is printed as "wrapfs-mount: message" on standard
    /// error and becomes the command's exit code.
    static func reported(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let f as Failure {
            FileHandle.standardError.write("wrapfs-mount: \(f.message)\n".data(using: .utf8)!)
            throw f.code
        }
    }
}

extension Failure {
    /// Makes codec `spec` (one codec or a chain): an unknown name fails with exit 65, any other
    /// refusal (a bad option) with exit 64; `context` goes in front of the message.
    static func makingCodec(_ spec: String, _ options: CodecOptions, context: String = "") throws -> Codec {
        do {
            return try ChainCodec.make(spec, options: options)
        } catch let e as UnknownCodec {
            throw Failure(context + "\(e)", Exit.unknownCodec)
        } catch {
            throw Failure(context + "codec \(spec): \(error)", Exit.badOption)
        }
    }
}
