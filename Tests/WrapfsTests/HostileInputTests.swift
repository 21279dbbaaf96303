// Hostile input: decoders and the volume file fed random and mutated bytes; names of every byte, 255-byte names, deep paths.
import Codecs
import Foundation
import Glibc
import Testing
import Wrapfs

/// Rounds of mutation per codec (scripts/stress raises it).
let fuzzRounds = Int(ProcessInfo.processInfo.environment["WRAPFS_FUZZ_ROUNDS"] ?? "") ?? 3000

/// A small seeded generator (tests must be repeatable).
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state ^ (state >> 31)
    }
}

/// Mutations a fuzzer would try: bit flips, byte overwrites, cuts, extensions, splices, noise.
func mutate(_ input: [UInt8], _ rng: inout SeededRandom) -> [UInt8] {
    var b = input
    switch rng.next() % 7 {
    case 0 where !b.isEmpty: b[Int(rng.next() % UInt64(b.count))] ^= UInt8(1 << (rng.next() % 8))
    case 1 where !b.isEmpty:
        for _ in 0..<(1 + rng.next() % 8) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
    case 2: b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1))))
    case 3: b += (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    case 4 where b.count > 8:
        // Interesting integers where length fields live.
        let at = Int(rng.next() % UInt64(b.count - 4))
        let v: UInt32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 65536, 65537, UInt32(b.count)][Int(rng.next() % 8)]
        withUnsafeBytes(of: v.littleEndian) { b.replaceSubrange(at..<at + 4, with: $0) }
    case 5: b = (0..<Int(rng.next() % 256)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    default: b = b.reversed()
    }
    return b
}

@Suite("Hostile input", .onOwnThread)
struct HostileInputTests {
    static func codec(_ spec: String) throws -> Codec {
        BuiltinCodecs.register()
        var options = CodecOptions()
        if spec.contains("aes-") {
            let key = try SecretBytes(count: 32)
            key.withMutableBytes { k in for i in 0..<k.count { k[i] = UInt8(i * 7 & 0xff) } }
            options.masterKey = key
        }
        return try ChainCodec.make(spec, options: options)
    }

    @Test("every decoder survives random and mutated slots, headers, names and link targets",
          arguments: ["identity", "rot", "gzip", "aes-gcm", "aes-ctr", "gzip,aes-gcm", "rot,gzip"])
    func decoders(spec: String) throws {
        let codec = try Self.codec(spec)
        var rng = SeededRandom(state: 42)
        var header = [UInt8](repeating: 0, count: codec.headerSize)
        try header.withUnsafeMutableBytes { try codec.makeHeader($0) }
        // Valid slots to start from: text (gzip shrinks it), noise (stored raw), zeros and a short page.
        let plains: [[UInt8]] = [Array(String(repeating: "hostile input ", count: codec.pageSize / 14 + 1).utf8.prefix(codec.pageSize)),
                                 (0..<codec.pageSize).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
                                 [UInt8](repeating: 0, count: codec.pageSize), Array("short".utf8)]
        var slots: [[UInt8]] = []
        var page = [UInt8](repeating: 0, count: codec.pageSize)
        for plain in plains {
            var slot = [UInt8](repeating: 0, count: codec.slotSize)
            let n = try header.withUnsafeBytes { h in
                try plain.withUnsafeBytes { p in
                    try slot.withUnsafeMutableBytes { try codec.encode(p, into: $0, context: PageContext(index: 3, header: h)) }
                }
            }
            slots.append(Array(slot[0..<n]))
            // The untouched slot decodes to what went in.
            let m = try header.withUnsafeBytes { h in
                try slots.last!.withUnsafeBytes { s in try page.withUnsafeMutableBytes { try codec.decode(s, into: $0, context: PageContext(index: 3, header: h)) } }
            }
            #expect(Array(page[0..<m]) == plain)
        }
        var authenticatedRejections = 0, mutatedSlots = 0
        for round in 0..<fuzzRounds {
            let original = slots[round % slots.count]
            // The engine never hands a codec more than a slot: that much is contract, the bytes are not.
            let slot = Array(mutate(original, &rng).prefix(codec.slotSize))
            // Throwing is fine; crashing, overrunning or hanging is not.
            let decoded: Int? = header.withUnsafeBytes { h in
                slot.withUnsafeBytes { s in
                    page.withUnsafeMutableBytes { p in try? codec.decode(s, into: p, context: PageContext(index: 3, header: h)) }
                }
            }
            if let decoded { #expect(decoded >= 0 && decoded <= codec.pageSize) }
            if slot != original {
                mutatedSlots += 1
                if decoded == nil { authenticatedRejections += 1 }
            }
            _ = header.withUnsafeBytes { h in
                slot.withUnsafeBytes { s in try? codec.plainLength(ofLastSlot: s, context: PageContext(index: 3, header: h)) }
            }
            let badHeader = mutate(header, &rng)
            if badHeader.count == codec.headerSize {
                _ = badHeader.withUnsafeBytes { h in
                    slots[0].withUnsafeBytes { s in
                        page.withUnsafeMutableBytes { p in try? codec.decode(s, into: p, context: PageContext(index: 3, header: h)) }
                    }
                }
            }
            if badHeader.count == codec.headerSize { _ = badHeader.withUnsafeBytes { try? codec.checkHeader($0) } }
            let name = mutate(try codec.encodeName(Array("name-\(round)".utf8)), &rng)
            _ = try? codec.decodeName(name)
            _ = try? codec.decodeLinkTarget(name)
            // A 4,095-byte path, which aes codecs deflate before they encrypt it.
            let longTarget = Array(String(repeating: "0123456789abcdef/\(round % 7)", count: 230).utf8.prefix(4095))
            _ = try? codec.decodeLinkTarget(mutate(try codec.encodeLinkTarget(longTarget), &rng))
        }
        if spec == "aes-gcm" {
            // Authenticated: every changed slot is refused. (In a chain the bytes past the
            // recorded length are slack that nothing reads.)
            #expect(authenticatedRejections == mutatedSlots, "\(mutatedSlots - authenticatedRejections) altered slots decoded")
        }
    }

    @Test("damaged volume files: a clear message and a documented exit code, never a crash", .timeLimit(.minutes(30)))
    func volumeFiles() throws {
        let s = try Scratch("volfile")
        defer { s.remove() }
        let volume = try TestVolume(s)
        let lower = try s.dir("lower")
        try volume.create(lower, codec: "aes-gcm")
        let good = try readFile(lower + "/.wrapfs.json")
        // A key section of a version this tool does not know: exit 71, said as such (was exit 1).
        var parsed = try #require(try JSONSerialization.jsonObject(with: Data(good)) as? [String: Any])
        var key = try #require(parsed["key"] as? [String: Any])
        key["version"] = 2
        parsed["key"] = key
        try writeFile(lower + "/.wrapfs.json", [UInt8](try JSONSerialization.data(withJSONObject: parsed)))
        let newer = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile], timeout: 60)
        #expect(newer.status == 71 && newer.output.contains("key section has version 2"), "exit \(newer.status): \(newer.output)")
        // A volume file of another version: exit 64, said as such (was read as version 1).
        parsed = try #require(try JSONSerialization.jsonObject(with: Data(good)) as? [String: Any])
        parsed["version"] = 3
        try writeFile(lower + "/.wrapfs.json", [UInt8](try JSONSerialization.data(withJSONObject: parsed)))
        let newerFile = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile], timeout: 60)
        #expect(newerFile.status == 64 && newerFile.output.contains("has version 3"), "exit \(newerFile.status): \(newerFile.output)")
        var rng = SeededRandom(state: 7)
        let rounds = max(150, fuzzRounds / 20)
        var seen: [Int32: Int] = [:]
        for _ in 0..<rounds {
            var bad = mutate(good, &rng)
            if rng.next() % 3 == 0 { bad = mutate(bad, &rng) }
            try writeFile(lower + "/.wrapfs.json", bad)
            let r = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile], timeout: 60)
            seen[r.status, default: 0] += 1
            // 0: the change did not matter (whitespace, a key order); 64/66: damaged; 65: it names no
            // codec there is; 71: the key does not unwrap.
            #expect([0, 64, 65, 66, 71].contains(r.status), "exit \(r.status) for \(String(decoding: bad, as: UTF8.self)): \(r.output)")
            if r.status != 0 { #expect(r.output.contains("wrapfs-mount: "), "\(r.output)") }
            if seen.values.reduce(0, +) % 5 == 0 {
                // Mounting reads the same file.
                let point = try s.dir("mnt")
                let m = try run(Build.mountTool, [lower, point, "--passfile", volume.passfile], timeout: 60)
                if m.status == 0 { _ = try run("/usr/bin/fusermount3", ["-u", point]) }
                #expect([0, 64, 65, 66, 71].contains(m.status), "mount: exit \(m.status) for \(String(decoding: bad, as: UTF8.self)): \(m.output)")
            }
        }
        #expect(seen.keys.contains { $0 != 0 }, "\(seen)")
    }
}

@Suite("Hostile names", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct HostileNameTests {
    /// Names made of every byte but '/' and NUL, 255-byte names (ASCII and not UTF-8), and
    /// the lower answering the same for each: created, listed, read back, renamed, removed.
    @Test("names of every byte but '/' and NUL, 255-byte names", arguments: ["identity", "rot", "aes-gcm", "gzip,aes-gcm"])
    func everyByte(codec: String) throws {
        try withLayers([codec]) { top, _, _ in
            var names: [[UInt8]] = []
            let bytes = (1...255).map(UInt8.init).filter { $0 != UInt8(ascii: "/") }
            for start in stride(from: 0, to: bytes.count, by: 25) { names.append(Array(bytes[start..<min(start + 25, bytes.count)])) }
            names.append(Array(bytes.prefix(255)))  // every byte in one name (254 bytes)
            names.append([UInt8](repeating: 0xff, count: 255))
            names.append([UInt8](repeating: UInt8(ascii: "x"), count: 255))
            names.append([UInt8]("...".utf8))
            names.append([0x0a, 0x0d, 0x09, 0x20])
            let dir = open(top, O_RDONLY | O_DIRECTORY)
            #expect(dir >= 0)
            defer { close(dir) }
            for (i, name) in names.enumerated() {
                let c = name.map { CChar(bitPattern: $0) } + [0]
                let fd = openat(dir, c, O_WRONLY | O_CREAT | O_EXCL, 0o644)
                #expect(fd >= 0, "create \(name.count)-byte name #\(i): \(SysError.current)")
                let content = pattern(1000 + i, seed: UInt8(i))
                #expect(write(fd, content, content.count) == content.count)
                close(fd)
            }
            // A 256-byte name is refused as on ext4.
            let tooLong = [CChar](repeating: CChar(UInt8(ascii: "y")), count: 256) + [0]
            #expect(openat(dir, tooLong, O_WRONLY | O_CREAT, 0o644) == -1 && errno == ENAMETOOLONG)
            let listed = try listNames(top)
            #expect(Set(listed) == Set(names), "listing differs")
            for (i, name) in names.enumerated() {
                let c = name.map { CChar(bitPattern: $0) } + [0]
                let fd = openat(dir, c, O_RDONLY)
                var back = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &back, back.count)
                close(fd)
                #expect(n == 1000 + i && Array(back[0..<max(n, 0)]) == pattern(1000 + i, seed: UInt8(i)), "content of name #\(i)")
                let renamed = Array(name.reversed()).map { CChar(bitPattern: $0) } + [0]
                #expect(renameat(dir, c, dir, renamed) == 0, "rename #\(i): \(SysError.current)")
                #expect(unlinkat(dir, renamed, 0) == 0, "unlink #\(i): \(SysError.current)")
            }
            let left = try listNames(top)
            #expect(left.isEmpty)
        }
    }

    /// A path far longer than PATH_MAX, walked a directory at a time as `*at()` calls allow.
    @Test("deep paths: 40 levels of 200-byte names (8,000+ bytes) through the layer", arguments: ["identity", "aes-gcm"])
    func deepPaths(codec: String) throws {
        try withLayers([codec]) { top, _, _ in
            var fds = [open(top, O_RDONLY | O_DIRECTORY)]
            defer { fds.forEach { close($0) } }
            for level in 0..<40 {
                let name = Array(String(repeating: Character(UnicodeScalar(UInt8(97 + level % 26))), count: 200).utf8CString)
                #expect(mkdirat(fds.last!, name, 0o755) == 0, "mkdir level \(level): \(SysError.current)")
                let fd = openat(fds.last!, name, O_RDONLY | O_DIRECTORY)
                #expect(fd >= 0, "open level \(level): \(SysError.current)")
                fds.append(fd)
            }
            let data = pattern(70_000)
            let f = openat(fds.last!, "leaf", O_RDWR | O_CREAT, 0o644)
            #expect(f >= 0 && write(f, data, data.count) == data.count)
            var back = [UInt8](repeating: 0, count: data.count)
            #expect(pread(f, &back, back.count, 0) == data.count && back == data)
            close(f)
            // The whole tree goes with rm -rf, as on the lower directory.
            _ = try sh("rm -rf '\(top)'/*")
            #expect(try listNames(top).isEmpty)
        }
    }
}

/// A directory's entries as raw bytes (no "." or "..").
func listNames(_ path: String) throws -> [[UInt8]] {
    guard let d = opendir(path) else { throw SysError.current }
    defer { closedir(d) }
    var out: [[UInt8]] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
        if name != [46] && name != [46, 46] { out.append(name) }
    }
    return out
}
