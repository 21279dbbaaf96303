// CodecPlugin: codecs loaded at mount time from shared objects, through include/wrapfs_codec.h.
import Glibc
import CFuse

/// Loads C-ABI codec plugins (`--codec-plugin PATH.so`) into a registry. Everything a plugin
/// hands back is checked before use: a missing symbol, another ABI version or an unusable
/// description fails the load with a message; an error or an oversized result from encode or
/// decode fails that page (EIO), never the daemon.
public enum CodecPlugin {
    typealias VersionFunction = @convention(c) () -> UInt32
    typealias InitFunction = @convention(c) (UnsafeMutablePointer<wrapfs_codec>?, UnsafePointer<UnsafePointer<CChar>?>?,
                                                      UnsafeMutablePointer<CChar>?, Int) -> Int32

    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Loads the plugin at `path` and registers its codec; returns the codec's name. The codec is
    /// made (its init called again, with the mount's `--codec-option`s) when a mount asks for it.
    @discardableResult
    public static func load(_ path: String, into registry: CodecRegistry = .shared) throws -> String {
        guard path.contains("/") else { throw LoadError(description: "codec plugin \(path): give a path (./\(path) for one here)") }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw LoadError(description: "cannot load codec plugin \(path): \(dlerror().map { String(cString: $0) } ?? "unknown error")")
        }
        guard let versionSymbol = dlsym(handle, "wrapfs_codec_abi_version") else {
            throw LoadError(description: "\(path) is not a Wrapfs codec plugin: it has no wrapfs_codec_abi_version symbol")
        }
        let version = unsafeBitCast(versionSymbol, to: VersionFunction.self)()
        guard version == UInt32(WRAPFS_CODEC_ABI_VERSION) else {
            throw LoadError(description: "\(path) was built for codec ABI version \(version); this Wrapfs speaks version \(WRAPFS_CODEC_ABI_VERSION) (rebuild it against include/wrapfs_codec.h)")
        }
        guard let initSymbol = dlsym(handle, "wrapfs_codec_init") else {
            throw LoadError(description: "\(path) is not a Wrapfs codec plugin: it has no wrapfs_codec_init symbol")
        }
        let initialize = unsafeBitCast(initSymbol, to: InitFunction.self)
        // A first codec with default options tells the name (and proves the plugin works).
        let probe = try PluginCodec(path: path, initialize: initialize, options: [:])
        let name = probe.name
        if let existing = registry.descriptor(named: name), !existing.summary.hasPrefix("plugin ") {
            throw LoadError(description: "\(path) names its codec \(name), which is a built-in codec's name")
        }
        registry.register(CodecDescriptor(name: name, summary: "plugin \(path): \(probe.summary)") { options in
            try PluginCodec(path: path, initialize: initialize, options: options.values)
        })
        return name
    }

    /// One codec made by a plugin's init.
    final class PluginCodec: Codec, @unchecked Sendable {
        private let spec: wrapfs_codec
        let name: String
        let summary: String
        let pageSize: Int
        let slotSize: Int
        let headerSize: Int
        private let encodeFunction: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<UInt8>?, Int, UnsafePointer<wrapfs_codec_page>?) -> Int
        private let decodeFunction: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<UInt8>?, Int, UnsafePointer<wrapfs_codec_page>?) -> Int

        fileprivate init(path: String, initialize: InitFunction, options: [String: String]) throws {
            let pairs = options.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") }
            defer { pairs.forEach { free($0) } }
            var argv: [UnsafePointer<CChar>?] = pairs.map { UnsafePointer($0) } + [nil]
            var message = [CChar](repeating: 0, count: 512)
            var spec = wrapfs_codec()
            let rc = argv.withUnsafeMutableBufferPointer { a in
                initialize(&spec, UnsafePointer(a.baseAddress), &message, message.count - 1)
            }
            guard rc == 0 else {
                let text = String(cString: message)
                throw LoadError(description: "codec plugin \(path) refused to start: \(text.isEmpty ? "error \(rc)" : text)")
            }
            func bad(_ why: String) -> LoadError {
                spec.destroy?(spec.state)
                return LoadError(description: "codec plugin \(path): \(why)")
            }
            guard spec.abi_version == UInt32(WRAPFS_CODEC_ABI_VERSION) else { throw bad("its codec says ABI version \(spec.abi_version), not \(WRAPFS_CODEC_ABI_VERSION)") }
            guard let n = spec.name, strlen(n) > 0 else { throw bad("its codec has no name") }
            name = String(cString: n)
            guard !name.contains(","), !name.contains(" ") else { throw bad("codec name '\(name)' has a comma or space") }
            summary = spec.summary.map { String(cString: $0) } ?? ""
            let p = Int(spec.page_size)
            guard p >= 512, p <= 1 << 20, p & (p - 1) == 0 else { throw bad("page_size \(p) is not a power of two between 512 and 1048576") }
            guard spec.slot_size >= 1, spec.slot_size <= 1 << 24 else { throw bad("slot_size \(spec.slot_size) is not between 1 and 16 MiB") }
            guard spec.header_size <= 4096 else { throw bad("header_size \(spec.header_size) is over 4096") }
            guard let e = spec.encode, let d = spec.decode else { throw bad("its codec lacks encode or decode") }
            if spec.header_size > 0 && spec.make_header == nil { throw bad("it has a header but no make_header") }
            self.spec = spec
            pageSize = p
            slotSize = Int(spec.slot_size)
            headerSize = Int(spec.header_size)
            encodeFunction = e
            decodeFunction = d
        }

        deinit { spec.destroy?(spec.state) }

        private func place(_ context: PageContext) -> wrapfs_codec_page {
            wrapfs_codec_page(index: context.index, header: context.header.baseAddress?.assumingMemoryBound(to: UInt8.self),
                              header_size: context.header.count)
        }

        func makeHeader(_ header: UnsafeMutableRawBufferPointer) throws {
            guard let make = spec.make_header else { return }
            let rc = make(spec.state, header.baseAddress?.assumingMemoryBound(to: UInt8.self), header.count)
            if rc != 0 { throw CodecError("\(name): make_header failed: \(String(cString: strerror(abs(rc))))") }
        }

        func checkHeader(_ header: UnsafeRawBufferPointer) throws {
            guard let check = spec.check_header else { return }
            let rc = check(spec.state, header.baseAddress?.assumingMemoryBound(to: UInt8.self), header.count)
            if rc != 0 { throw CodecError("\(name): bad header: \(String(cString: strerror(abs(rc))))") }
        }

        func encode(_ page: UnsafeRawBufferPointer, into slot: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
            var at = place(context)
            let n = encodeFunction(spec.state, page.baseAddress?.assumingMemoryBound(to: UInt8.self), page.count,
                                   slot.baseAddress?.assumingMemoryBound(to: UInt8.self), slot.count, &at)
            if n < 0 { throw CodecError("\(name): encode of page \(context.index) failed: \(String(cString: strerror(Int32(clamping: -n))))") }
            guard n > 0, n <= slot.count else { throw CodecError("\(name): encode of page \(context.index) returned \(n) bytes for a slot of \(slot.count)") }
            return n
        }

        func decode(_ slot: UnsafeRawBufferPointer, into page: UnsafeMutableRawBufferPointer, context: PageContext) throws -> Int {
            var at = place(context)
            let n = decodeFunction(spec.state, slot.baseAddress?.assumingMemoryBound(to: UInt8.self), slot.count,
                                   page.baseAddress?.assumingMemoryBound(to: UInt8.self), page.count, &at)
            if n < 0 { throw CodecError("\(name): decode of page \(context.index) failed: \(String(cString: strerror(Int32(clamping: -n))))") }
            guard n <= page.count else { throw CodecError("\(name): decode of page \(context.index) returned \(n) bytes for a page of \(page.count)") }
            return n
        }
    }
}
