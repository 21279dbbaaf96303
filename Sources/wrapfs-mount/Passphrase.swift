// Passphrases: from the terminal without echo, a file, or a command; never argv or the environment.
import ArgumentParser
import CFuse
import Codecs
import Foundation
import Glibc
import Wrapfs

struct PassphraseOptions: ParsableArguments {
    @Option(help: "Read the passphrase from the first line of FILE.") var passfile: String?
    @Option(help: "Run CMD with /bin/sh and read the passphrase from the first line it prints.") var extpass: String?

    func validate() throws {
        if passfile != nil && extpass != nil { throw ValidationError("give --passfile or --extpass, not both") }
    }

    /// The master key of the volume in `lower`, unwrapped with the passphrase asked for here.
    func unlock(_ wrapped: WrappedMasterKey, of lower: String, prompt: String = "Passphrase: ") throws -> SecretBytes {
        // A key section of another version is damaged or newer than this tool: said before any
        // passphrase is asked for, with the exit code of a damaged key section.
        guard wrapped.version == 1 else {
            throw Failure("cannot unlock \(lower): the volume file's key section has version \(wrapped.version), which this wrapfs-mount does not know (damaged, or made by a newer Wrapfs)", Exit.wrongPassphrase)
        }
        do {
            return try wrapped.unwrap(passphrase: try read(prompt: prompt))
        } catch let e as WrongPassphrase {
            throw Failure("\(e)", Exit.wrongPassphrase)
        } catch let f as Failure {
            throw f
        } catch {
            throw Failure("cannot unlock \(lower): \(error)", Exit.failure)
        }
    }

    /// The passphrase; on a terminal `confirm` asks a second time and the two must agree.
    func read(prompt: String, confirm: Bool = false) throws -> SecretBytes {
        let secret: SecretBytes
        if let passfile {
            guard let fd = Optional(open(passfile, O_RDONLY | O_CLOEXEC)), fd >= 0 else {
                throw Failure("cannot read --passfile \(passfile): \(String(cString: strerror(errno)))", Exit.badOption)
            }
            defer { close(fd) }
            secret = try Self.firstLine(fd, from: "--passfile \(passfile)")
        } else if let extpass {
            secret = try Self.fromCommand(extpass)
        } else {
            secret = try Self.fromTerminal(prompt)
            if confirm {
                let again = try Self.fromTerminal("Repeat the passphrase: ")
                let same = secret.count == again.count && secret.withBytes { a in again.withBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 } }
                guard same else { throw Failure("the passphrases differ", Exit.badOption) }
            }
        }
        return secret
    }

    /// Reads up to the first newline (at most 4 KiB) into locked memory.
    private static func firstLine(_ fd: Int32, from source: String) throws -> SecretBytes {
        let buffer = try SecretBytes(count: 4096)
        var length = 0
        try buffer.withMutableBytes { b in
            while length < b.count {
                let n = Glibc.read(fd, b.baseAddress! + length, b.count - length)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { throw Failure("cannot read the passphrase from \(source): \(String(cString: strerror(errno)))", Exit.badOption) }
                if n == 0 { break }
                if let nl = UnsafeRawBufferPointer(rebasing: b[length..<(length + n)]).firstIndex(of: 0x0A) {
                    length = nl
                    return
                }
                length += n
            }
        }
        guard length > 0 else { throw Failure("empty passphrase from \(source)", Exit.badOption) }
        return try buffer.withBytes { try SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
    }

    private static func fromTerminal(_ prompt: String) throws -> SecretBytes {
        let tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard tty >= 0 else {
            throw Failure("no terminal to ask for the passphrase; use --passfile FILE or --extpass CMD", Exit.badOption)
        }
        defer { close(tty) }
        var saved = termios()
        guard tcgetattr(tty, &saved) == 0 else { throw Failure("cannot set up the terminal: \(String(cString: strerror(errno)))", Exit.badOption) }
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(tty, TCSAFLUSH, &quiet)
        defer {
            var restore = saved
            tcsetattr(tty, TCSAFLUSH, &restore)
            _ = write(tty, "\n", 1)
        }
        _ = prompt.withCString { write(tty, $0, strlen($0)) }
        return try firstLine(tty, from: "the terminal")
    }

    private static func fromCommand(_ command: String) throws -> SecretBytes {
        var pipeFds: [Int32] = [0, 0]
        guard pipe(&pipeFds) == 0 else { throw Failure("cannot run --extpass: \(String(cString: strerror(errno)))", Exit.badOption) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipeFds[1], 1)
        // Nothing else of ours (the pipe's ends included): the command, and whatever it leaves
        // running, gets stdin, stdout and stderr.
        wrapfs_spawn_close_from(&actions, 3)
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
        defer { argv.forEach { free($0) } }
        let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ)
        close(pipeFds[1])
        defer { close(pipeFds[0]) }
        guard rc == 0 else { throw Failure("cannot run --extpass: \(String(cString: strerror(rc)))", Exit.badOption) }
        let secret = Result { try firstLine(pipeFds[0], from: "--extpass") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { throw Failure("--extpass command failed (status \(status))", Exit.badOption) }
        return try secret.get()
    }
}
