// `wrapfs-mount init` and `passwd`: create an encrypted volume, change its passphrase.
import ArgumentParser
import Codecs
import Foundation
import Glibc
import Wrapfs

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create an encrypted volume in LOWER (an empty directory).",
        discussion: """
        Makes a random 256-bit master key, wraps it with AES-256-GCM under a key derived from the \
        passphrase with scrypt, and stores it in LOWER/.wrapfs.json (mode 0600). aes-gcm detects \
        any change to a page; aes-ctr only hides content.
        """)

    @Argument(help: "The directory that will hold the encrypted files.") var lower: String
    @Option(help: "aes-gcm (authenticated), aes-ctr (confidentiality only), or a chain such as gzip,aes-gcm.") var codec = "aes-gcm"
    @Flag(help: "Keep file names as they are (only content is encrypted).") var plaintextNames = false
    @Option(help: "scrypt cost: N = 2^LOGN (10...22).") var scryptLogn = ScryptCost.strong.logN
    @Option(help: "Plain bytes per page (power of two, 512...1048576; default 4096, gzip chains 65536).") var pageSize: Int?
    @OptionGroup var passphrase: PassphraseOptions

    func run() throws { try Failure.reported(create) }

    private func create() throws {
        BuiltinCodecs.register()
        let names = codec.split(separator: ",").map(String.init)
        guard let last = names.last, BuiltinCodecs.encrypting.contains(last) else {
            throw Failure("init makes encrypted volumes: --codec aes-gcm or aes-ctr, or a chain ending in one (gzip,aes-gcm), not \(codec)", Exit.unknownCodec)
        }
        for name in names where CodecRegistry.shared.descriptor(named: name) == nil {
            throw Failure("\(UnknownCodec(name: name, known: CodecRegistry.shared.all.map(\.name)))", Exit.unknownCodec)
        }
        let pageSize = self.pageSize ?? (names[0] == "gzip" ? 65536 : 4096)
        let cost = ScryptCost(logN: scryptLogn)
        guard cost.isValid else { throw Failure("--scrypt-logn must be between 10 and 22", Exit.badOption) }
        guard pageSize >= 512, pageSize <= 1 << 20, pageSize & (pageSize - 1) == 0 else {
            throw Failure("--page-size must be a power of two between 512 and 1048576", Exit.badOption)
        }
        var st = stat()
        guard stat(lower, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw Failure("LOWER \(lower) is missing or not a directory", Exit.badLower)
        }
        if try VolumeFile.load(from: lower) != nil { throw Failure("\(lower) is a volume already", Exit.badLower) }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: lower)) ?? []
        guard entries.isEmpty else { throw Failure("\(lower) is not empty: an encrypted volume starts empty", Exit.badLower) }

        let secret = try passphrase.read(prompt: "New passphrase: ", confirm: true)
        let master = try WrappedMasterKey.newMasterKey()
        let wrapped = try WrappedMasterKey(wrapping: master, passphrase: secret, cost: cost)
        master.wipe()
        try VolumeFile(codec: names.joined(separator: ","), options: ["page-size": String(pageSize), "plaintext-names": plaintextNames ? "true" : "false", "xattrs": "encrypted"], key: wrapped).save(in: lower)
        print("Created an \(codec) volume in \(lower). Mount it with: wrapfs-mount \(lower) MOUNTPOINT --codec \(codec)")
    }
}

struct PasswdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passwd",
        abstract: "Change an encrypted volume's passphrase (the data is not re-encrypted).")

    @Argument(help: "The volume's directory.") var lower: String
    @Option(help: "Read the new passphrase from the first line of FILE.") var newPassfile: String?
    @OptionGroup var passphrase: PassphraseOptions

    func run() throws {
        try Failure.reported {
            guard var volume = try VolumeFile.load(from: lower), let wrapped = volume.key else {
                throw Failure("\(lower) is not an encrypted volume", Exit.badLower)
            }
            let master = try passphrase.unlock(wrapped, of: lower)
            let fresh = try PassphraseOptions.parse(newPassfile.map { ["--passfile", $0] } ?? [])
                .read(prompt: "New passphrase: ", confirm: true)
            volume.key = try WrappedMasterKey(wrapping: master, passphrase: fresh, cost: wrapped.scrypt)
            master.wipe()
            try volume.save(in: lower)
            print("Changed the passphrase of \(lower).")
        }
    }
}
