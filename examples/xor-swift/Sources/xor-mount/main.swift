// xor-mount: mounts LOWER on MOUNTPOINT with the XOR codec, in the foreground until unmounted.
// Usage: xor-mount LOWER MOUNTPOINT [key=N]   (N: 1...255, default 90)
import Glibc
import Logging
import Wrapfs

let args = CommandLine.arguments
guard args.count == 3 || args.count == 4 else {
    fputs("usage: xor-mount LOWER MOUNTPOINT [key=N]\n", stderr)
    exit(64)
}
var options = CodecOptions()
if args.count == 4 {
    let kv = args[3].split(separator: "=", maxSplits: 1).map(String.init)
    options.values[kv[0]] = kv.count > 1 ? kv[1] : ""
}
// The registry finds codecs by name, as it does the built-in ones.
CodecRegistry.shared.register(CodecDescriptor(name: "xor", summary: "XOR of every byte with a key (option key=1...255)") { o in
    let key = try o.int("key", default: 90)
    guard (1...255).contains(key) else { throw CodecError("key must be between 1 and 255, got \(key)") }
    return try XorCodec(key: UInt8(key))
})
do {
    let codec = try CodecRegistry.shared.make("xor", options: options)
    let layer = try Layer(lower: args[1], codec: codec, log: Logger(label: "xor-mount"))
    try layer.run(mountpoint: args[2], fuseOptions: [], foreground: true)
} catch {
    fputs("xor-mount: \(error)\n", stderr)
    exit(1)
}
