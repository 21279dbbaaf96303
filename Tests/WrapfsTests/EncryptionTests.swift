// The encrypting codecs: volumes and passphrases, the checker, no plaintext below, tampering.
import CFuse
import Foundation
import Glibc
import Testing

/// An encrypted volume's passphrase in a file (tests never use the terminal).
struct TestVolume {
    let passfile: String
    /// Cheap scrypt for tests (the default, 2^16, is for users).
    static let cost = ["--scrypt-logn", "10"]

    init(_ scratch: Scratch, passphrase: String = "correct horse battery staple") throws {
        passfile = scratch.path + "/pass-\(UUID().uuidString.prefix(6))"
        try writeFile(passfile, Array((passphrase + "\n").utf8))
    }

    func create(_ lower: String, codec: String, plaintextNames: Bool = false) throws {
        let r = try run(Build.mountTool, ["init", lower, "--codec", codec, "--passfile", passfile] + Self.cost
                        + (plaintextNames ? ["--plaintext-names"] : []))
        if r.status != 0 { throw MountFailure(description: "init failed (\(r.status)): \(r.output)") }
    }

    /// Mounts a fresh volume of `codec` and runs `body` on it.
    func with<R>(_ codec: String, plaintextNames: Bool = false, _ body: (_ top: String, _ lower: String, _ mounts: [Mounted]) throws -> R) throws -> R {
        try withLayers([codec], extra: ["--passfile", passfile], prepareLower: { try create($0, codec: codec, plaintextNames: plaintextNames) }, body)
    }
}

/// The checker on encrypted volumes: a suite of its own so that it runs beside the other
/// encryption tests (each suite runs its tests one at a time, and suites run side by side).
@Suite("Encryption: differential checker", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct EncryptionCheckerTests {
    @Test("differential checker", .timeLimit(.minutes(10)), arguments: ["aes-gcm", "aes-ctr", "gzip,aes-gcm"], DifferentialTests.seeds)
    func checker(codec: String, seed: UInt64) throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        try TestVolume(s).with(codec) { top, _, _ in
            let checker = DifferentialChecker(subject: top, reference: try s.dir("plain"), seed: seed)
            try checker.run(operations: DifferentialTests.operationsPerSeed)
        }
    }

    @Test("differential checker with plaintext names", .timeLimit(.minutes(10)), arguments: DifferentialTests.seeds.prefix(1))
    func checkerPlaintextNames(seed: UInt64) throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        try TestVolume(s).with("aes-gcm", plaintextNames: true) { top, _, _ in
            let checker = DifferentialChecker(subject: top, reference: try s.dir("plain"), seed: seed)
            try checker.run(operations: DifferentialTests.operationsPerSeed)
        }
    }
}

@Suite("Encryption", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct EncryptionTests {
    @Test("a marker in contents, names, symlink targets and user extended attributes appears nowhere in the lower tree",
          arguments: ["aes-gcm", "aes-ctr", "gzip,aes-gcm"])
    func noPlaintextBelow(codec: String) throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        try TestVolume(s).with(codec) { top, lower, _ in
            try sh("mkdir '\(top)/dir-WRAPFS-MARKER-4711-' && echo x > '\(top)/dir-WRAPFS-MARKER-4711-/file-WRAPFS-MARKER-4711-' && ln -s target-WRAPFS-MARKER-4711- '\(top)/link'")
            let names = try sh("find '\(lower)' -printf '%f %l\\n'")
            #expect(!names.contains("WRAPFS-MARKER"), "\(names)")
            #expect(try sh("ls '\(top)/dir-WRAPFS-MARKER-4711-'").contains("file-WRAPFS-MARKER-4711-"))
            #expect(try sh("readlink '\(top)/link'") == "target-WRAPFS-MARKER-4711-\n")
            let marker = Array("WRAPFS-MARKER-4711-".utf8)
            try writeFile(top + "/small", marker)
            try writeFile(top + "/big", Array((0..<3000).flatMap { _ in marker }))
            try sh("cp /etc/services '\(top)/services' && echo WRAPFS-MARKER-4711- >> '\(top)/services'")
            #expect(try readFile(top + "/small") == marker)
            let found = try run("/bin/grep", ["-rl", "WRAPFS-MARKER-4711", lower])
            #expect(found.status == 1, "grep found the marker below: \(found.output)")
            let services = try run("/bin/grep", ["-rl", "Internet services", lower])  // a phrase of /etc/services
            #expect(services.status == 1, "plain text of a copied file below: \(services.output)")
            // User attributes, on a file and a directory: names and values (gocryptfs encrypts both).
            for path in [top + "/small", top + "/dir-WRAPFS-MARKER-4711-"] {
                #expect(setxattr(path, "user.WRAPFS-MARKER-4711-name", "WRAPFS-MARKER-4711-value", 24, 0) == 0, "\(SysError.current)")
                #expect(setxattr(path, "user.empty", "", 0, 0) == 0)
            }
            // Every attribute name and value of every lower file, as bytes.
            var attributes: [UInt8] = []
            for path in [lower] + (FileManager.default.subpaths(atPath: lower) ?? []).map({ lower + "/" + $0 }) {
                var list = [CChar](repeating: 0, count: 65536)
                let n = llistxattr(path, &list, list.count)
                for name in list.prefix(max(n, 0)).split(separator: 0).map({ Array($0) + [0] }) {
                    var value = [UInt8](repeating: 0, count: 65536)
                    let got = lgetxattr(path, name, &value, value.count)
                    attributes += name.map { UInt8(bitPattern: $0) } + value.prefix(max(got, 0))
                }
            }
            let text = String(decoding: attributes, as: UTF8.self)
            #expect(text.contains("user.") && !text.contains("WRAPFS-MARKER"), "\(text)")
            let shown = try sh("getfattr --absolute-names -d -e text '\(top)/small'")
            #expect(shown.contains("user.WRAPFS-MARKER-4711-name=\"WRAPFS-MARKER-4711-value\"") && shown.contains("user.empty"), "\(shown)")
        }
    }

    @Test("user extended attributes of an encrypted volume: set, get, list, remove, flags, limits and tampering as on ext4, but encrypted")
    func encryptedAttributes() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let plain = try s.dir("plain")
        let volume = try TestVolume(s)
        try volume.with("aes-gcm") { top, lower, mounts in
            // The same calls on the mount and on a plain directory give the same results.
            func outcome(_ dir: String) throws -> [String] {
                try writeFile(dir + "/f", [1, 2, 3])
                mkdir(dir + "/d", 0o755)
                var lines: [String] = []
                func call(_ what: String, _ r: Int) { lines.append("\(what): " + (r < 0 ? "errno \(errno)" : "\(r)")) }
                for path in [dir + "/f", dir + "/d"] {
                    call("set", Int(setxattr(path, "user.a", "one", 3, 0)))
                    call("create again", Int(setxattr(path, "user.a", "two", 3, Int32(XATTR_CREATE))))
                    call("replace", Int(setxattr(path, "user.a", "three", 5, Int32(XATTR_REPLACE))))
                    call("replace missing", Int(setxattr(path, "user.b", "x", 1, Int32(XATTR_REPLACE))))
                    call("set 170-byte name", Int(setxattr(path, "user." + String(repeating: "n", count: 170), "v", 1, 0)))
                    call("set empty", Int(setxattr(path, "user.e", "", 0, 0)))
                    var value = [UInt8](repeating: 0, count: 64)
                    call("size of a", getxattr(path, "user.a", nil, 0))
                    call("get a", getxattr(path, "user.a", &value, 64))
                    lines.append(String(decoding: value.prefix(5), as: UTF8.self))
                    call("get a into 2 bytes", getxattr(path, "user.a", &value, 2))
                    call("get missing", getxattr(path, "user.zz", &value, 64))
                    var list = [CChar](repeating: 0, count: 1024)
                    let n = listxattr(path, &list, 1024)
                    lines.append("list " + list.prefix(max(n, 0)).split(separator: 0).map { String(cString: Array($0) + [0]) }.sorted().joined(separator: ","))
                    call("size of list", listxattr(path, nil, 0))
                    call("list into 3 bytes", listxattr(path, &list, 3))
                    call("remove", Int(removexattr(path, "user.a")))
                    call("remove again", Int(removexattr(path, "user.a")))
                    call("get removed", getxattr(path, "user.a", &value, 64))
                }
                return lines
            }
            #expect(try outcome(top) == (try outcome(plain)))
            // 171 bytes of name still fit encrypted; past that the lower name would exceed 255 bytes.
            #expect(setxattr(top + "/f", "user." + String(repeating: "m", count: 200), "v", 1, 0) == -1 && errno == ERANGE)
            // A value moved to another name, or altered, does not decode: EIO, never its bytes.
            #expect(setxattr(top + "/f", "user.x", "secret", 6, 0) == 0 && setxattr(top + "/f", "user.y", "other", 5, 0) == 0)
            var st = stat()
            let file = try FileManager.default.contentsOfDirectory(atPath: lower).map { lower + "/" + $0 }
                .first { lstat($0, &st) == 0 && st.st_mode & S_IFMT == S_IFREG && !$0.hasSuffix(".wrapfs.json") }!
            var storedList = [CChar](repeating: 0, count: 4096)
            let n = listxattr(file, &storedList, 4096)
            let lowerNames = storedList.prefix(max(n, 0)).split(separator: 0).map { String(cString: Array($0) + [0]) }
            // user.e (empty), the 170-byte name ("v"), user.x ("secret"), user.y ("other"): none in plain.
            #expect(lowerNames.count == 4 && lowerNames.allSatisfy { $0.hasPrefix("user.") && !["user.x", "user.y", "user.e"].contains($0) },
                    "\(lowerNames)")
            func stored(_ lowerName: String) -> [UInt8] {
                var v = [UInt8](repeating: 0, count: 256)
                return Array(v.prefix(max(0, getxattr(file, lowerName, &v, 256))))
            }
            // A value is 16 bytes of IV, the ciphertext and a 16-byte tag: 32 bytes more than its plain one.
            let byLength = Dictionary(lowerNames.map { (stored($0).count, $0) }, uniquingKeysWith: { a, _ in a })
            guard let x = byLength[38], let y = byLength[37], let v = byLength[33] else {
                Issue.record("stored value lengths: \(lowerNames.map { stored($0).count })")
                return
            }
            let (xValue, yValue) = (stored(x), stored(y))
            #expect(setxattr(file, x, yValue, yValue.count, 0) == 0 && setxattr(file, y, xValue, xValue.count, 0) == 0)
            var buf = [UInt8](repeating: 0, count: 64)
            #expect(getxattr(top + "/f", "user.x", &buf, 64) == -1 && errno == EIO, "a value moved to another name")
            #expect(getxattr(top + "/f", "user.y", &buf, 64) == -1 && errno == EIO, "a value moved to another name")
            var flipped = stored(v)
            flipped[20] ^= 1
            #expect(setxattr(file, v, flipped, flipped.count, 0) == 0)
            #expect(getxattr(top + "/f", "user." + String(repeating: "n", count: 170), &buf, 64) == -1 && errno == EIO, "an altered value")
            #expect(getxattr(top + "/f", "user.e", &buf, 64) == 0, "the others still read")
            #expect(mounts[0].log.contains("extended attribute user.x"), "\(mounts[0].log)")
            // A plain user attribute set below (not made by this key) is not listed.
            #expect(setxattr(file, "user.plain", "p", 1, 0) == 0)
            var list = [CChar](repeating: 0, count: 1024)
            let listed = listxattr(top + "/f", &list, 1024)
            #expect(listed > 0 && !String(decoding: list.prefix(listed).map { UInt8(bitPattern: $0) }, as: UTF8.self).contains("plain"))
            // fsck names each: the two moved values, the altered one and the name not made by this key.
            let fsck = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile])
            let lines = fsck.output.split(separator: "\n").filter { $0.contains("extended attribute") }
            #expect(fsck.status == 72 && lines.count == 4, "\(fsck.output)")
            #expect(lines.contains { $0.hasPrefix("f: extended attribute user.x ") } && lines.contains { $0.hasPrefix("f: extended attribute user.y ") }
                    && lines.contains { $0.hasPrefix("f: extended attribute user.nnnn") } && lines.contains { $0.contains("user.plain") && $0.contains("mount hides it") },
                    "\(fsck.output)")
            #expect(fsck.output.contains("4 damaged"), "\(fsck.output)")
        }
    }

    @Test("a volume made before attributes were encrypted keeps them in plain, as they were written")
    func plainAttributesOfOlderVolumes() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let volume = try TestVolume(s)
        try withLayers(["aes-gcm"], extra: ["--passfile", volume.passfile], prepareLower: { lower in
            try volume.create(lower, codec: "aes-gcm")
            // Such a volume file has no "xattrs" option.
            try sh("sed -i '/\"xattrs\"/d; s/\"plaintext-names\" : \"false\",/\"plaintext-names\" : \"false\"/' '\(lower)/.wrapfs.json'")
        }) { top, lower, _ in
            #expect(setxattr(top, "user.old", "kept", 4, 0) == 0)
            var v = [UInt8](repeating: 0, count: 16)
            #expect(getxattr(lower, "user.old", &v, 16) == 4 && Array(v.prefix(4)) == Array("kept".utf8))
        }
    }

    @Test("names of 255 bytes: stored under a hash with the full name beside it; list, rename, unlink")
    func longNames() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        try TestVolume(s).with("aes-gcm") { top, lower, _ in
            let long = String(repeating: "n", count: 250) + "-long", other = String(repeating: "o", count: 255)
            try writeFile(top + "/" + long, Array("content".utf8))
            try sh("mkdir '\(top)/\(String(repeating: "d", count: 255))'")
            let listing = try FileManager.default.contentsOfDirectory(atPath: top).sorted()
            #expect(listing == [String(repeating: "d", count: 255), long].sorted())
            #expect(try readFile(top + "/" + long) == Array("content".utf8))
            let below = try FileManager.default.contentsOfDirectory(atPath: lower)
            #expect(below.allSatisfy { $0.utf8.count <= 255 })
            #expect(below.filter { $0.hasPrefix("wrapfs.long.") && $0.hasSuffix(".name") }.count == 2, "\(below)")
            #expect(rename(top + "/" + long, top + "/" + other) == 0)
            #expect(try readFile(top + "/" + other) == Array("content".utf8))
            #expect(unlink(top + "/" + other) == 0 && rmdir(top + "/" + String(repeating: "d", count: 255)) == 0)
            #expect(try FileManager.default.contentsOfDirectory(atPath: lower) == [".wrapfs.json"])
            #expect(open(top + "/" + String(repeating: "z", count: 256), O_CREAT | O_WRONLY, 0o644) == -1 && errno == ENAMETOOLONG)
        }
    }

    @Test("symlink targets up to 4,095 bytes of path work as on ext4 (deflated, then encrypted); short targets keep their form",
          arguments: ["aes-gcm", "gzip,aes-gcm"])
    func longLinkTargets(codec: String) throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        try TestVolume(s).with(codec) { top, lower, _ in
            // pjdfstest symlink/03.t: a path of 127-character hex names, PATH_MAX less one long.
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15
            let hex = Array("0123456789abcdef")
            var path = ""
            while path.count < 4095 {
                if !path.isEmpty { path += "/" }
                for _ in 0..<127 {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    path.append(hex[Int(state >> 60)])
                }
            }
            let target = String(path.prefix(4095))
            #expect(symlink(target, top + "/long") == 0, "errno \(errno)")
            #expect(symlink("short/target", top + "/short") == 0)
            func readTarget(_ p: String) -> String? {
                var buf = [CChar](repeating: 0, count: 8192)
                let n = readlink(p, &buf, buf.count)
                return n < 0 ? nil : String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            #expect(readTarget(top + "/long") == target)
            #expect(try statOf(top + "/long").st_size == 4095)
            #expect(readTarget(top + "/short") == "short/target")
            // Below: the long one deflated and marked, within the lower's limit; the short one as before.
            let below = try FileManager.default.contentsOfDirectory(atPath: lower).compactMap { readTarget(lower + "/" + $0) }
            #expect(below.count == 2)
            #expect(below.filter { $0.hasPrefix("~") && $0.utf8.count <= 4095 }.count == 1, "\(below.map { $0.prefix(20) })")
            #expect(below.filter { !$0.hasPrefix("~") }.count == 1)
            // Bytes that do not compress cannot fit once encrypted: the lower's ENAMETOOLONG, as gocryptfs.
            let noise = String((0..<4000).map { i -> Character in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Character(UnicodeScalar(UInt8(33 + (state >> 33) % 94)))
            }).replacingOccurrences(of: "/", with: "x")
            #expect(symlink(noise, top + "/noise") == -1 && errno == ENAMETOOLONG)
        }
    }

    @Test("fsck of a volume with encrypted names: long-name side files are not damage; a damaged page is named by its shown path, once for a file of two names; so are a name made below that the mount hides and an altered symlink target")
    func fsckNames() throws {
        let s = try Scratch("fsck")
        defer { s.remove() }
        let volume = try TestVolume(s)
        let long = String(repeating: "L", count: 240)
        let lower = try volume.with("aes-gcm") { top, lower, _ -> String in
            try writeFile(top + "/" + long, pattern(9000))
            #expect(symlink("dir/file", top + "/link") == 0)
            try sh("mkdir '\(top)/dir'")
            try writeFile(top + "/dir/file", pattern(9000))
            #expect(link(top + "/dir/file", top + "/dir/second name") == 0)
            // Keep the lower tree past the unmount: copy it out.
            try sh("cp -a '\(lower)' '\(s.path)/copy'")
            return s.path + "/copy"
        }
        var fsck = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile])
        #expect(fsck.status == 0 && fsck.output.contains("every page checks out"), "\(fsck.output)")
        var isDirectory: ObjCBool = false
        let dir = try FileManager.default.contentsOfDirectory(atPath: lower).first {
            FileManager.default.fileExists(atPath: lower + "/" + $0, isDirectory: &isDirectory) && isDirectory.boolValue
        }!
        let file = try FileManager.default.contentsOfDirectory(atPath: lower + "/" + dir)[0]  // either name of the one file
        var bytes = try readFile(lower + "/" + dir + "/" + file)
        bytes[20 + 4128 + 50] ^= 0x80  // page 1
        try writeFile(lower + "/" + dir + "/" + file, bytes)
        fsck = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile])
        #expect(fsck.status == 72, "\(fsck.output)")
        #expect(fsck.output.contains("page 1 (lower file \(dir)/"), "\(fsck.output)")
        // The file has two names: it is checked, and its damage named, once.
        #expect(fsck.output.split(separator: "\n").filter { $0.contains(": page ") }.count == 1, "\(fsck.output)")
        // Names made below, not by this key, are hidden by the mount: fsck names them (a
        // directory once, not what it holds).
        try writeFile(lower + "/not-encrypted", [1])
        try sh("mkdir -p '\(lower)/plain dir/inside'; echo x > '\(lower)/plain dir/inside/f'")
        fsck = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile])
        let hidden = fsck.output.split(separator: "\n").filter { $0.contains("does not decode, so the mount hides it") }
        #expect(fsck.status == 72 && hidden.count == 2 && hidden.contains { $0.hasPrefix("not-encrypted?: ") }
                && hidden.contains { $0.hasPrefix("plain dir?: ") }, "\(fsck.output)")
        #expect(fsck.output.contains("3 damaged"), "\(fsck.output)")
        // A symlink whose target was altered below: readlink through the mount says EIO, fsck names it.
        var st = stat()
        let linkName = try FileManager.default.contentsOfDirectory(atPath: lower).first { lstat(lower + "/" + $0, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK }!
        var target = Array(try FileManager.default.destinationOfSymbolicLink(atPath: lower + "/" + linkName).utf8)
        target[5] = target[5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(unlink(lower + "/" + linkName) == 0 && symlink(String(decoding: target, as: UTF8.self), lower + "/" + linkName) == 0)
        fsck = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile])
        #expect(fsck.output.contains("link: symlink target (lower file \(linkName))") && fsck.output.contains("4 damaged"), "\(fsck.output)")
    }

    @Test("a volume mounts without --codec: the volume file names it")
    func codecFromVolume() throws {
        let s = try Scratch("nocodec")
        defer { s.remove() }
        let volume = try TestVolume(s)
        let lower = try s.dir("lower"), point = try s.dir("mnt")
        try volume.create(lower, codec: "aes-gcm")
        let mount = try Mounted(point: point, lower: lower, arguments: [lower, point, "--passfile", volume.passfile, "-f"])
        defer { mount.unmount() }
        try writeFile(point + "/plain.txt", Array("secret marker".utf8))
        #expect(try readFile(point + "/plain.txt") == Array("secret marker".utf8))
        let below = try FileManager.default.contentsOfDirectory(atPath: lower).filter { !$0.hasPrefix(".") }
        #expect(below.count == 1 && below[0] != "plain.txt", "\(below)")
        #expect(try readFile(lower + "/" + below[0]).count == 20 + 16 + 13 + 16)
    }

    @Test("a wrong passphrase mounts nothing and exits 71; passwd changes it without touching data")
    func passphrases() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let right = try TestVolume(s), wrong = try TestVolume(s, passphrase: "not it"), newer = try TestVolume(s, passphrase: "a new one")
        let lower = try s.dir("lower"), point = try s.dir("mnt")
        try right.create(lower, codec: "aes-gcm", plaintextNames: true)
        #expect(try statOf(lower + "/.wrapfs.json").st_mode & 0o777 == 0o600)
        do {
            let m = try Mounted(lower: lower, point: point, codec: "aes-gcm", extra: ["--passfile", right.passfile])
            try writeFile(point + "/kept", Array("still here".utf8))
            m.unmount()
        }
        let refused = try run(Build.mountTool, [lower, point, "--codec", "aes-gcm", "--passfile", wrong.passfile])
        #expect(refused.status == 71, "\(refused.output)")
        #expect(refused.output.contains("wrong passphrase"))
        #expect(!MountTable.isMounted(point))
        let changed = try run(Build.mountTool, ["passwd", lower, "--passfile", right.passfile, "--new-passfile", newer.passfile])
        #expect(changed.status == 0, "\(changed.output)")
        #expect(try run(Build.mountTool, [lower, point, "--codec", "aes-gcm", "--passfile", right.passfile]).status == 71)
        let m = try Mounted(lower: lower, point: point, codec: "aes-gcm", extra: ["--passfile", newer.passfile])
        defer { m.unmount() }
        #expect(try readFile(point + "/kept") == Array("still here".utf8))
        // The keys sit in locked memory (root has no RLIMIT_MEMLOCK limit to stop it).
        let status = try String(contentsOfFile: "/proc/\(m.daemon.pid)/status", encoding: .utf8)
        let locked = status.split(separator: "\n").first { $0.hasPrefix("VmLck:") }.map { Int($0.split(separator: " ")[1]) ?? 0 } ?? 0
        #expect(locked >= 4, "\(status.split(separator: "\n").filter { $0.hasPrefix("VmLck") })")
    }

    @Test("the passphrase is asked on the terminal without echo (twice at init) and unlocks the volume")
    func terminalPassphrase() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let lower = try s.dir("lower"), point = try s.dir("mnt")
        // script(1) gives the command a terminal; the two lines answer the two prompts.
        let r = try run("/bin/bash", ["-c", "(sleep 0.5; echo 'tty secret 1'; sleep 0.5; echo 'tty secret 1') | script -qec '\(Build.mountTool) init \(lower) --scrypt-logn 10' /dev/null"], timeout: 60)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("New passphrase:") && r.output.contains("Repeat the passphrase:"))
        #expect(!r.output.contains("tty secret"), "the passphrase was echoed: \(r.output)")
        let v = try TestVolume(s, passphrase: "tty secret 1")
        let m = try Mounted(lower: lower, point: point, codec: "aes-gcm", extra: ["--passfile", v.passfile])
        m.unmount()
    }

    @Test("--extpass runs a command for the passphrase; a failing command mounts nothing")
    func externalPassphrase() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let lower = try s.dir("lower"), point = try s.dir("mnt")
        let made = try run(Build.mountTool, ["init", lower, "--extpass", "echo from a command", "--scrypt-logn", "10"])
        #expect(made.status == 0, "\(made.output)")
        // The command gets standard input, output and error only (as gocryptfs's extpass does):
        // ls shows those and its own listing of /proc/self/fd.
        let listing = s.path + "/descriptors"
        let m = try Mounted(lower: lower, point: point, codec: "aes-gcm",
                            extra: ["--extpass", "ls /proc/self/fd > \(listing); echo from a command"])
        #expect(try String(contentsOfFile: listing, encoding: .utf8).split(separator: "\n") == ["0", "1", "2", "3"])
        m.unmount()
        let failed = try run(Build.mountTool, [lower, point, "--codec", "aes-gcm", "--extpass", "false"])
        #expect(failed.status == 64 && failed.output.contains("--extpass"), "\(failed.output)")
        let wrong = try run(Build.mountTool, [lower, point, "--codec", "aes-gcm", "--extpass", "echo other"])
        #expect(wrong.status == 71)
        #expect(!MountTable.isMounted(point))
    }

    @Test("a damaged volume file is refused with a clear message")
    func damagedConfig() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let v = try TestVolume(s)
        let lower = try s.dir("lower"), point = try s.dir("mnt")
        try v.create(lower, codec: "aes-gcm")
        let config = lower + "/.wrapfs.json"
        // One character of the wrapped key changed: it no longer authenticates.
        var text = try String(contentsOfFile: config, encoding: .utf8)
        let keyLine = text.split(separator: "\n").first { $0.contains("\"key\" : \"") }!
        let value = keyLine.split(separator: "\"")[3]
        let altered = String(value.first == "A" ? "B" : "A") + value.dropFirst()
        text = text.replacingOccurrences(of: String(value), with: altered)
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        let r = try run(Build.mountTool, [lower, point, "--codec", "aes-gcm", "--passfile", v.passfile])
        #expect(r.status == 71 && r.output.contains("damaged"), "\(r.status): \(r.output)")
        // Not JSON at all.
        try "{ not json".write(toFile: config, atomically: true, encoding: .utf8)
        let r2 = try run(Build.mountTool, [lower, point, "--codec", "aes-gcm", "--passfile", v.passfile])
        #expect(r2.status == 64 && r2.output.contains("damaged"), "\(r2.status): \(r2.output)")
        #expect(!MountTable.isMounted(point))
    }

    /// Slots are 4,096 + 32 bytes after a 20-byte file header.
    /// IVs come from a per-thread reserve of random bytes: none may be handed out twice, whether a
    /// page is appended (chunks encoded on both cores) or rewritten in place.
    @Test("every page write draws a fresh IV: no IV repeats across pages, rewrites and files", arguments: ["aes-gcm", "aes-ctr"])
    func freshIVs(codec: String) throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let header = 20, slot = 4096 + (codec == "aes-gcm" ? 32 : 16), pages = 256
        try TestVolume(s).with(codec, plaintextNames: true) { top, lower, _ in
            var ivs: [[UInt8]] = []
            func collect(_ name: String) throws {
                let bytes = try readFile(lower + "/" + name)
                #expect(bytes.count == header + pages * slot)
                for p in 0..<pages { ivs.append(Array(bytes[(header + p * slot)..<(header + p * slot + 16)])) }
            }
            let data = pattern(pages * 4096)
            try writeFile(top + "/a", data)  // one 1 MiB append
            try collect("a")
            try writeFile(top + "/b", data)
            try collect("b")
            let fd = open(top + "/a", O_WRONLY)  // the same bytes again, over the old pages
            #expect(fd >= 0)
            #expect(data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == data.count)
            close(fd)
            try collect("a")
            #expect(Set(ivs).count == 3 * pages, "\(3 * pages - Set(ivs).count) IVs repeat")
            #expect(try readFile(top + "/a") == data && readFile(top + "/b") == data)
        }
    }

    @Test("tampering reads as EIO and fsck names it: a flipped byte, pages swapped between files, a page moved within a file, a truncated slot")
    func tampering() throws {
        let s = try Scratch("enc")
        defer { s.remove() }
        let header = 20, slot = 4096 + 32
        let volume = try TestVolume(s)
        try volume.with("aes-gcm", plaintextNames: true) { top, lower, mounts in
            let pages = (0..<4).map { p in [UInt8](repeating: UInt8(0x41 + p), count: 4096) }
            try writeFile(top + "/a", pages.flatMap { $0 })
            try writeFile(top + "/b", pages.flatMap { $0 })
            try writeFile(top + "/c", pages.flatMap { $0 })
            try writeFile(top + "/d", pages.flatMap { $0 } + [1, 2, 3])
            // Work on the lower files directly, then have the layer read them afresh.
            func patch(_ name: String, _ change: (inout [UInt8]) -> Void) throws {
                var bytes = try readFile(lower + "/" + name)
                change(&bytes)
                try writeFile(lower + "/" + name, bytes)
            }
            try patch("a") { $0[header + slot + 100] ^= 0x01 }  // page 1
            let bSlot2 = Array(try readFile(lower + "/b")[(header + 2 * slot)..<(header + 3 * slot)])
            try patch("c") { $0.replaceSubrange((header + 2 * slot)..<(header + 3 * slot), with: bSlot2) }  // c's page 2 from b
            try patch("b") { b in let s0 = Array(b[(header)..<(header + slot)]); b.replaceSubrange((header + 3 * slot)..<(header + 4 * slot), with: s0) }  // b's page 0 over its page 3
            try patch("d") { $0.removeLast(2) }  // the last slot loses bytes
            try sh("echo 3 > /proc/sys/vm/drop_caches")
            func readPage(_ name: String, _ page: Int) -> Int32 {
                let fd = open(top + "/" + name, O_RDONLY)
                defer { close(fd) }
                var buf = [UInt8](repeating: 0, count: 4096)
                return pread(fd, &buf, 4096, off_t(page * 4096)) < 0 ? errno : 0
            }
            #expect(readPage("a", 1) == EIO)
            #expect(readPage("a", 0) == 0 && readPage("a", 2) == 0)
            #expect(readPage("c", 2) == EIO)
            #expect(readPage("c", 1) == 0)
            #expect(readPage("b", 3) == EIO)
            #expect(readPage("b", 0) == 0)
            #expect(readPage("d", 4) == EIO)
            #expect(readPage("d", 0) == 0)
            let log = mounts[0].log
            #expect(log.contains("authentication failed"), "log: \(log.suffix(2000))")
            // fsck names exactly the damaged pages.
            let fsck = try run(Build.mountTool, ["fsck", lower, "--passfile", volume.passfile])
            #expect(fsck.status == 72, "\(fsck.output)")
            for damaged in ["a: page 1 ", "b: page 3 ", "c: page 2 ", "d: page 4 "] {
                #expect(fsck.output.contains(damaged), "fsck output: \(fsck.output)")
            }
            #expect(fsck.output.split(separator: "\n").filter { $0.contains(": page ") }.count == 4, "\(fsck.output)")
        }
    }
}
