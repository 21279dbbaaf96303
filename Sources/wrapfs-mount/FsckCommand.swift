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
        let stored: [UInt8]
        do {
            let link = try FileDescriptor.open(path, wrapfs_O_PATH | O_NOFOLLOW)
            defer { link.close() }
            stored = try link.readLink()
        } catch {
            print("\(name): symlink target cannot be read (lower file \(lowerName)): \(error)")
            return 1
        }
        do {
            _ = try codec.decodeLinkTarget(stored)
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
        let names: [ArraySlice<UInt8>]
        do {
            names = try ExtendedAttributes.list(path).split(separator: 0)
        } catch let e as Errno where e == .EOPNOTSUPP {
            return 0  // a lower file system without extended attributes
        } catch {
            print("\(name): extended attributes cannot be listed (lower file \(lowerName)): \(error)")
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
            let value: [UInt8]
            do {
                value = try ExtendedAttributes.value(path, storedName)
            } catch {
                print("\(name): extended attribute \(plainName) (lower file \(lowerName), \(storedName)) cannot be read: \(error)")
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
