// The codec registry: codecs found by name, built-in and loaded alike.
import Foundation

/// Options given with `--codec-option key=value`, read by a codec's factory.
public struct CodecOptions {
    public var values: [String: String]
    /// A volume's master key, for codecs that encrypt (unwrapped by the mount command).
    public var masterKey: SecretBytes?
    public init(_ values: [String: String] = [:], masterKey: SecretBytes? = nil) {
        self.values = values
        self.masterKey = masterKey
    }

    /// An integer option, or `default` when absent; throws on a malformed value.
    public func int(_ key: String, default value: Int) throws -> Int {
        guard let text = values[key] else { return value }
        guard let n = Int(text) else { throw CodecError("option \(key)=\(text) is not an integer") }
        return n
    }
    public func string(_ key: String) -> String? { values[key] }
}

/// What the registry knows of a codec before making one.
public struct CodecDescriptor {
    public let name: String
    public let summary: String
    public let make: (CodecOptions) throws -> Codec
    public init(name: String, summary: String, make: @escaping (CodecOptions) throws -> Codec) {
        self.name = name
        self.summary = summary
        self.make = make
    }
}

/// Codecs by name. Built-in codecs register here at start-up, plugins when they load.
public final class CodecRegistry {
    public static let shared = CodecRegistry()
    private var descriptors: [String: CodecDescriptor] = [:]
    private let lock = NSLock()

    public init() {}

    public func register(_ descriptor: CodecDescriptor) {
        lock.lock(); defer { lock.unlock() }
        descriptors[descriptor.name] = descriptor
    }

    public var all: [CodecDescriptor] {
        lock.lock(); defer { lock.unlock() }
        return descriptors.values.sorted { $0.name < $1.name }
    }

    public func descriptor(named name: String) -> CodecDescriptor? {
        lock.lock(); defer { lock.unlock() }
        return descriptors[name]
    }

    /// Makes the codec `name`; throws `UnknownCodec` when nothing is registered under it.
    public func make(_ name: String, options: CodecOptions = CodecOptions()) throws -> Codec {
        guard let d = descriptor(named: name) else { throw UnknownCodec(name: name, known: all.map(\.name)) }
        return try d.make(options)
    }
}

public struct UnknownCodec: Error, CustomStringConvertible {
    public let name: String
    public let known: [String]
    public init(name: String, known: [String]) {
        self.name = name
        self.known = known
    }
    public var description: String { "unknown codec '\(name)' (known: \(known.joined(separator: ", ")))" }
}
