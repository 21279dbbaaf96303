// `wrapfs-mount fsck LOWER`: decodes every page of every file of a volume (encrypted or gzip), offline.
import ArgumentParser
import Codecs
import Foundation
import Glibc
import Wrapfs

struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Read every file of a volume and name every page that fails to decode (authentication for aes-gcm, CRC-32 for gzip).",
        discussion: "Works on any directory with a volume file (made by `init`, or by a first mount with a codec that keeps one, such as gzip). Exit codes: 0 every page checks out, 72 damaged pages or headers found, 71 wrong passphrase, 66 not a volume.")

    @Argument(help: "The volume's directory (not mounted, or mounted: fsck only reads).") var lower: String
    @OptionGroup var passphrase: PassphraseOptions

    func run() throws {
        try Failure.reported {
            let damaged = try check()
            if damaged > 0 {
                print("\(damaged) damaged page(s) or header(s)")
                throw Exit.damaged
            }
            print("every page checks out")
        }
    }

    private func check() throws -> Int {
        BuiltinCodecs.register()
        guard let volume = try VolumeFile.load(from: lower) else {
            throw Failure("\(lower) is not a volume (no \(VolumeFile.name))", Exit.badLower)
        }
        let master = try volume.key.map { try passphrase.unlock($0, of: lower, prompt: "Passphrase for \(lower): ") }
        let codec = try Failure.makingCodec(volume.codec, CodecOptions(volume.options, masterKey: master),
                                            context: "volume file \(VolumeFile.path(in: lower)): ")
        var damaged = 0
        let walker = FileManager.default.enumerator(atPath: lower)
        while let relative = walker?.nextObject() as? String {
            if relative == VolumeFile.name { continue }
            if LongNames.isSideFile(Array((relative.split(separator: "/").last ?? "").utf8)) { continue }  // a long name's full name
            let path = lower + "/" + relative
            var st = stat()
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size > 0 else { continue }
            damaged += checkFile(path, shown(relative, codec), relative, size: Int(st.st_size), codec)
        }
        return damaged
    }

    /// The path as the mount shows it: each lower component decoded (a long name through its
    /// side file); a component the codec cannot decode is shown as it is, marked with "?".
    private func shown(_ relative: String, _ codec: Codec) -> String {
        var dir = lower
        var parts: [String] = []
        for component in relative.split(separator: "/").map(String.init) {
            var encoded = Array(component.utf8)
            if LongNames.isStandIn(encoded), let full = FileManager.default.contents(atPath: dir + "/" + component + ".name") {
                encoded = [UInt8](full)
            }
            if let plain = try? codec.decodeName(encoded) {
                parts.append(String(decoding: plain, as: UTF8.self))
            } else {
                parts.append(component + "?")
            }
            dir += "/" + component
        }
        return parts.joined(separator: "/")
    }

    /// Decodes each slot of one lower file; prints and counts the ones that fail.
    private func checkFile(_ path: String, _ name: String, _ lowerName: String, size: Int, _ codec: Codec) -> Int {
        guard let data = FileManager.default.contents(atPath: path) else {
            print("\(name): cannot be read (lower file \(lowerName))")
            return 1
        }
        let bytes = [UInt8](data)
        guard bytes.count >= codec.headerSize else {
            print("\(name): header truncated to \(bytes.count) bytes (lower file \(lowerName))")
            return 1
        }
        let header = Array(bytes[0..<codec.headerSize])
        if let error = header.withUnsafeBytes({ h in Result { try codec.checkHeader(h) }.failure }) {
            print("\(name): header (lower file \(lowerName)): \(error)")
            return 1
        }
        var damaged = 0
        var page = [UInt8](repeating: 0, count: codec.pageSize)
        var index = 0
        var start = codec.headerSize
        while start < bytes.count {
            let end = min(start + codec.slotSize, bytes.count)
            let slot = bytes[start..<end]
            if !slot.allSatisfy({ $0 == 0 }) {  // all zeros: a hole, which reads as zeros
                let failure = header.withUnsafeBytes { h in
                    slot.withUnsafeBytes { s in
                        page.withUnsafeMutableBytes { p in
                            Result {
                                let n = try codec.decode(s, into: p, context: PageContext(index: UInt64(index), header: h))
                                // Only the last page may be short (a short middle page is a torn or moved slot).
                                if end < bytes.count && n != codec.pageSize {
                                    throw CodecError("decoded \(n) bytes where a middle page holds \(codec.pageSize)")
                                }
                            }.failure
                        }
                    }
                }
                if let failure {
                    print("\(name): page \(index) (lower file \(lowerName), bytes \(start)..<\(end)): \(failure)")
                    damaged += 1
                }
            }
            index += 1
            start = end
        }
        return damaged
    }
}

extension Result {
    var failure: Failure? { if case .failure(let f) = self { return f } else { return nil } }
}
