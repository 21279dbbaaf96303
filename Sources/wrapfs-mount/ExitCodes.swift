// The exit codes of wrapfs-mount, one per kind of failure a user can act on (documented in README).
import ArgumentParser

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
