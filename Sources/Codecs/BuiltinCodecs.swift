// Registers the built-in codecs with the registry.
import Wrapfs

public enum BuiltinCodecs {
    /// Adds every built-in codec to `registry`. Safe to call more than once.
    public static func register(in registry: CodecRegistry = .shared) {
        registry.register(CodecDescriptor(name: "identity", summary: "no transform; gives mmap to lower file systems without it") { o in
            IdentityCodec(pageSize: try pageSizeOption(o))
        })
        registry.register(CodecDescriptor(name: "rot", summary: "byte rotation of content, ROT13 of names (size-preserving)") { o in
            try RotCodec(shift: try o.int("shift", default: 13), pageSize: try pageSizeOption(o))
        })
        registry.register(CodecDescriptor(name: "gzip", summary: "zlib deflate per page in fixed slots (size-changing; options page-size, level)") { o in
            try GzipCodec(pageSize: try pageSizeOption(o, default: 65536), level: try o.int("level", default: 6))
        })
        registry.register(CodecDescriptor(name: "aes-gcm", summary: "AES-256-GCM per page, authenticated (volume made by `wrapfs-mount init`)") { o in
            try AesCodec(.gcm, masterKey: try masterKey(o, "aes-gcm"), pageSize: try pageSizeOption(o), encryptNames: o.string("plaintext-names") != "true",
                         encryptAttributes: o.string("xattrs") == "encrypted")
        })
        registry.register(CodecDescriptor(name: "aes-ctr", summary: "AES-256-CTR per page, confidentiality only (volume made by `wrapfs-mount init`)") { o in
            try AesCodec(.ctr, masterKey: try masterKey(o, "aes-ctr"), pageSize: try pageSizeOption(o), encryptNames: o.string("plaintext-names") != "true",
                         encryptAttributes: o.string("xattrs") == "encrypted")
        })
    }

    /// The codecs that need a volume's master key.
    public static let encrypting: Set<String> = ["aes-gcm", "aes-ctr"]

    static func masterKey(_ o: CodecOptions, _ codec: String) throws -> SecretBytes {
        guard let key = o.masterKey else {
            throw CodecError("\(codec) needs a volume: create one with `wrapfs-mount init LOWER --codec \(codec)`")
        }
        return key
    }

    static func pageSizeOption(_ o: CodecOptions, default value: Int = 4096) throws -> Int {
        // In a chain, a codec's pages are what the codec before it makes (see ChainCodec).
        if let input = o.values["input-size"], let n = Int(input), n > 0 { return n }
        let p = try o.int("page-size", default: value)
        guard p >= 512, p <= 1 << 20, p & (p - 1) == 0 else {
            throw CodecError("page-size must be a power of two between 512 and 1048576, got \(p)")
        }
        return p
    }
}
