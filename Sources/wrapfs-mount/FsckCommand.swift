// `wrapfs-mount fsck LOWER`: decodes every page of every file of a volume (encrypted or gzip), its encrypted names, symlink targets and extended attributes.
import ArgumentParser
import CFuse
import Codecs
import Foundation
import Glibc
import Wrapfs

struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Read every file of a volume and name every page that fails to decode (authentication for aes-gcm, CRC-32 for gzip), every encrypted name that does not decode (the mount hides it), every symlink target that does not, and every user extended attribute whose encrypted name or value does not decode.",
        discussion: "Works on any directory with a volume file (made by `init`, or by a first mount with a codec that keeps one, such as gzip). Exit codes: 0 every page checks out, 72 damaged pages, headers, names or attributes found, 71 wrong passphrase, 66 not a volume.")

    @Argument(help: "The volume's directory (not mounted, or mounted: fsck only reads).") var lower: String
    @OptionGroup var passphrase: PassphraseOptions

    func run() throws {
        try Failure.reported {
            let damaged = try check()
            if damaged > 0 {
                print("\(damaged) damaged page(s), header(s), name(s) or attribute(s)")
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
        var damaged = checkAttributes(lower, ".", ".", codec)  // the top directory
        var seenLinked = Set<[UInt64]>()  // (dev, ino) of files with more than one name, checked once
        let walker = FileManager.default.enumerator(atPath: lower)
        while let relative = walker?.nextObject() as? String {
            if relative == VolumeFile.name { continue }
            if LongNames.isSideFile(Array((relative.split(separator: "/").last ?? "").utf8)) { continue }  // a long name's full name
            let path = lower + "/" + relative
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            let (name, decodes) = shown(relative, codec)
            if !decodes {
                print("\(name): its name does not decode, so the mount hides it (lower file \(relative))")
                damaged += 1
                if type == S_IFDIR { walker?.skipDescendants() }  // hidden with it
                continue
            }
            if type == S_IFLNK { damaged += checkLink(path, name, relative, codec) }
            guard type == S_IFREG || type == S_IFDIR else { continue }  // user attributes live on these only
            if type == S_IFREG && st.st_nlink > 1 && !seenLinked.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted { continue }
            damaged += checkAttributes(path, name, relative, codec)
            if type == S_IFREG && st.st_size > 0 { damaged += checkFile(path, name, relative, size: Int(st.st_size), codec) }
        }
        return damaged
    }

    /// Decodes the target of symlink `path`; prints and counts one that does not decode (the
    /// mount answers EIO to readlink).
    private func checkLink(_ path: String, _ name: String, _ lowerName: String, _ codec: Codec) -> Int {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = buffer.withUnsafeMutableBytes { readlink(path, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        guard n >= 0 else {
            print("\(name): symlink target cannot be read (lower file \(lowerName)): \(String(cString: strerror(errno)))")
            return 1
        }
        do {
            _ = try codec.decodeLinkTarget(Array(buffer.prefix(n)))
            return 0
        } catch {
            print("\(name): symlink target (lower file \(lowerName)): \(error)")
            return 1
        }
    }

    private static let userPrefix = Array("user.".utf8)

    /// Decodes the name and value of every user extended attribute of `path` (with a codec that
    /// encodes them); prints and counts those that fail. The mount hides a name that does not
    /// decode and answers EIO for a value that does not.
    private func checkAttributes(_ path: String, _ name: String, _ lowerName: String, _ codec: Codec) -> Int {
        guard !codec.keepsAttributes else { return 0 }
        guard let names = Self.attributeNames(path) else {
            print("\(name): extended attributes cannot be listed (lower file \(lowerName)): \(String(cString: strerror(errno)))")
            return 1
        }
        var damaged = 0
        for stored in names where stored.starts(with: Self.userPrefix) {
            let storedName = String(decoding: stored, as: UTF8.self)
            let plain: [UInt8]
            do {
                plain = Self.userPrefix + (try codec.decodeAttributeName(Array(stored.dropFirst(Self.userPrefix.count))))
            } catch {
                print("\(name): extended attribute \(storedName) (lower file \(lowerName)): its name does not decode, so the mount hides it: \(error)")
                damaged += 1
                continue
            }
            let plainName = String(decoding: plain, as: UTF8.self)
            guard let value = Self.attributeValue(path, storedName) else {
                print("\(name): extended attribute \(plainName) (lower file \(lowerName), \(storedName)) cannot be read: \(String(cString: strerror(errno)))")
                damaged += 1
                continue
            }
            do {
                _ = try codec.decodeAttributeValue(value, name: plain)
            } catch {
                print("\(name): extended attribute \(plainName) (lower file \(lowerName), \(storedName)): \(error)")
                damaged += 1
            }
        }
        return damaged
    }

    /// The attribute names of `path` (a file or directory), nil when they cannot be listed.
    private static func attributeNames(_ path: String) -> [[UInt8]]? {
        while true {
            let size = wrapfs_listxattr(path, nil, 0)
            if size < 0 { return errno == ENOTSUP ? [] : nil }
            var list = [CChar](repeating: 0, count: max(size, 1))
            let n = wrapfs_listxattr(path, &list, size)
            if n < 0 && errno == ERANGE { continue }  // grew in between
            if n < 0 { return nil }
            return list.prefix(n).split(separator: 0).map { $0.map { UInt8(bitPattern: $0) } }
        }
    }

    /// The stored value of attribute `name` of `path`, nil when it cannot be read.
    private static func attributeValue(_ path: String, _ name: String) -> [UInt8]? {
        while true {
            let size = wrapfs_getxattr(path, name, nil, 0)
            if size < 0 { return nil }
            var value = [UInt8](repeating: 0, count: max(size, 1))
            let n = wrapfs_getxattr(path, name, &value, size)
            if n < 0 && errno == ERANGE { continue }
            if n < 0 { return nil }
            return Array(value.prefix(n))
        }
    }

    /// The path as the mount shows it: each lower component decoded (a long name through its
    /// side file); a component the codec cannot decode is shown as it is, marked with "?", and
    /// `decodes` is false (the mount lists no such name).
    private func shown(_ relative: String, _ codec: Codec) -> (path: String, decodes: Bool) {
        var dir = lower
        var parts: [String] = []
        var decodes = true
        for component in relative.split(separator: "/").map(String.init) {
            var encoded = Array(component.utf8)
            if LongNames.isStandIn(encoded), let full = FileManager.default.contents(atPath: dir + "/" + component + ".name") {
                encoded = [UInt8](full)
            }
            if let plain = Layer.upperName(of: encoded, codec) {
                parts.append(String(decoding: plain, as: UTF8.self))
            } else {
                parts.append(component + "?")
                decodes = false
            }
            dir += "/" + component
        }
        return (parts.joined(separator: "/"), decodes)
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
