// Codec plugins: the C ABI (include/wrapfs_codec.h), the examples in examples/, and bad plugins.
import Foundation
import Glibc
import Testing

/// Builds the example plugins and test plugins once per test that needs them.
struct Plugins {
    let scratch: Scratch
    init() throws { scratch = try Scratch("plugins") }

    /// Compiles C source (a file of the package, or text) into a shared object; returns its path.
    func build(_ name: String, source: String? = nil, file: String? = nil, libraries: String = "") throws -> String {
        let src = file.map { Build.packageRoot + "/" + $0 } ?? scratch.path + "/\(name).c"
        if let source { try source.write(toFile: src, atomically: true, encoding: .utf8) }
        let out = scratch.path + "/\(name).so"
        try sh("cc -O2 -Wall -shared -fPIC -I '\(Build.packageRoot)/include' '\(src)' \(libraries) -o '\(out)'")
        return out
    }

    var nibble: String { get throws { try build("nibble", file: "examples/c-plugin/nibble.c") } }
    var zstd: String { get throws { try build("zstd", file: "examples/zstd-plugin/zstd_codec.c", libraries: "-lzstd") } }

    /// A plugin whose codec is `nibble` but whose encode or decode misbehaves as `body` says.
    func misbehaving(_ name: String, encode: String, decode: String = "return (long)n;") throws -> String {
        try build(name, source: """
            #include <errno.h>
            #include <string.h>
            #include "wrapfs_codec.h"
            static long enc(void *s, const uint8_t *p, size_t n, uint8_t *o, size_t room, const struct wrapfs_codec_page *w) {
                (void)s; (void)w; (void)room; memmove(o, p, n); if (w->index == 1) { \(encode) } return (long)n; }
            static long dec(void *s, const uint8_t *p, size_t n, uint8_t *o, size_t room, const struct wrapfs_codec_page *w) {
                (void)s; (void)room; memmove(o, p, n); if (w->index == 2) { \(decode) } return (long)n; }
            uint32_t wrapfs_codec_abi_version(void) { return WRAPFS_CODEC_ABI_VERSION; }
            int wrapfs_codec_init(struct wrapfs_codec *c, const char *const *o, char *e, size_t es) {
                (void)o; (void)e; (void)es;
                c->abi_version = WRAPFS_CODEC_ABI_VERSION; c->name = "\(name)"; c->summary = "misbehaves";
                c->page_size = 4096; c->slot_size = 4096; c->encode = enc; c->decode = dec; return 0; }
            """)
    }

    func remove() { scratch.remove() }
}

@Suite("Plugins", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct PluginTests {
    @Test("codecs lists built-in and loaded codecs with page size, slot size and whether they change size")
    func listing() throws {
        let p = try Plugins()
        defer { p.remove() }
        let r = try run(Build.mountTool, ["codecs", "--codec-plugin", try p.nibble, "--codec-plugin", try p.zstd])
        #expect(r.status == 0, "\(r.output)")
        let lines = r.output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        func row(_ name: String) -> [String]? { lines.first { $0.first == name } }
        #expect(row("nibble").map { Array($0[1...4]) } == ["4096", "4096", "0", "preserved"])
        #expect(row("zstd").map { [$0[1], $0[4]] } == ["65536", "changes"])
        for builtIn in ["identity", "rot", "gzip", "aes-gcm", "aes-ctr"] { #expect(row(builtIn) != nil, "\(builtIn) missing: \(r.output)") }
    }

    @Test("the differential checker on the example plugins (C nibble, zstd)", .timeLimit(.minutes(8)), arguments: ["nibble", "zstd"])
    func checker(codec: String) throws {
        let p = try Plugins()
        defer { p.remove() }
        let plugin = codec == "nibble" ? try p.nibble : try p.zstd
        try withLayers([codec], extra: ["--codec-plugin", plugin]) { top, lower, _ in
            try DifferentialChecker(subject: top, reference: try p.scratch.dir("reference"), seed: 31).run(operations: 3000)
            // The codec really ran: what the lower tree holds is not what the mount shows.
            try writeFile(top + "/text", Array(String(repeating: "plugin codecs work\n", count: 4000).utf8))
            #expect(try readFile(lower + "/text") != (try readFile(top + "/text")))
            if codec == "zstd" { #expect(try statOf(lower + "/text").st_blocks * 512 < 16_384) }
        }
    }

    @Test("a plugin that does not load is refused at mount with a clear message: no file, not a plugin, wrong ABI, init error")
    func badPlugins() throws {
        let p = try Plugins()
        defer { p.remove() }
        let noInit = try p.build("noinit", source: "#include <stdint.h>\nuint32_t wrapfs_codec_abi_version(void) { return 1; }\n")
        let oldABI = try p.build("oldabi", source: "#include <stdint.h>\nuint32_t wrapfs_codec_abi_version(void) { return 99; }\nint wrapfs_codec_init(void *c, void *o, char *e, unsigned long n) { return 0; }\n")
        let notPlugin = try p.build("notplugin", source: "int answer(void) { return 42; }\n")
        let lower = try p.scratch.dir("lower"), point = try p.scratch.dir("mnt")
        func mount(_ plugin: String, _ extra: [String] = []) throws -> CommandResult {
            try run(Build.mountTool, [lower, point, "--codec-plugin", plugin, "-f"] + extra, timeout: 20)
        }
        var r = try mount(p.scratch.path + "/missing.so")
        #expect(r.status == 65 && r.output.contains("cannot load codec plugin"), "\(r.output)")
        r = try mount(notPlugin)
        #expect(r.status == 65 && r.output.contains("no wrapfs_codec_abi_version symbol"), "\(r.output)")
        r = try mount(noInit)
        #expect(r.status == 65 && r.output.contains("no wrapfs_codec_init symbol"), "\(r.output)")
        r = try mount(oldABI)
        #expect(r.status == 65 && r.output.contains("ABI version 99"), "\(r.output)")
        r = try mount(try p.nibble, ["--codec", "nibble", "--codec-option", "page-size=3"])
        #expect(r.status != 0 && r.output.contains("page-size must be a power of two"), "\(r.output)")
        #expect(!MountTable.isMounted(point))
    }

    @Test("a codec whose slots are smaller than its pages mounts, and pages that fit their slot round-trip")
    func slotsSmallerThanPages() throws {
        let p = try Plugins()
        defer { p.remove() }
        // It stores a page as it is when it fits in 256 bytes (a short last page), else fails it.
        let plugin = try p.build("small", source: """
            #include <errno.h>
            #include <string.h>
            #include "wrapfs_codec.h"
            static long copy(void *s, const uint8_t *p, size_t n, uint8_t *o, size_t room, const struct wrapfs_codec_page *w) {
                (void)s; (void)w; if (n > room) return -EIO; memmove(o, p, n); return (long)n; }
            uint32_t wrapfs_codec_abi_version(void) { return WRAPFS_CODEC_ABI_VERSION; }
            int wrapfs_codec_init(struct wrapfs_codec *c, const char *const *o, char *e, size_t es) {
                (void)o; (void)e; (void)es;
                c->abi_version = WRAPFS_CODEC_ABI_VERSION; c->name = "small"; c->summary = "256-byte slots";
                c->page_size = 4096; c->slot_size = 256; c->encode = copy; c->decode = copy; return 0; }
            """)
        // Its largest file (pages times the page size) once overflowed while the mount started.
        try withLayers(["small"], extra: ["--codec-plugin", plugin]) { top, _, mounts in
            try writeFile(top + "/f", pattern(200))
            #expect(try readFile(top + "/f") == pattern(200))
            #expect(truncate(top + "/f", 1 << 62) == -1 && errno == EIO, "a padded page does not fit its slot")
            #expect(truncate(top + "/f", .max) == -1 && errno == EFBIG)
            #expect(try readFile(top + "/f") == pattern(200))
            #expect(mounts[0].daemonAlive)
        }
    }

    @Test("a codec that errs or returns more bytes than its buffer fails that page with EIO; the daemon lives on",
          arguments: [("liar", "return (long)room + 100;", "return (long)room + 100;"), ("failing", "return -EIO;", "return -EIO;")])
    func misbehavingCodec(name: String, encode: String, decode: String) throws {
        let p = try Plugins()
        defer { p.remove() }
        let plugin = try p.misbehaving(name, encode: encode, decode: decode)
        try withLayers([name], extra: ["--codec-plugin", plugin]) { top, lower, mounts in
            let fd = open(top + "/f", O_CREAT | O_RDWR, 0o644)
            defer { close(fd) }
            let page = [UInt8](repeating: 7, count: 4096)
            #expect(pwrite(fd, page, 4096, 0) == 4096)
            #expect(pwrite(fd, page, 4096, 4096) == -1 && errno == EIO, "page 1 cannot be encoded")
            #expect(pwrite(fd, page, 4096, 8192) == 4096)
            // Page 2 is on the lower file; reading it again needs decode, which misbehaves.
            #expect(try run("/bin/sh", ["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"]).status == 0)
            let again = open(top + "/f", O_RDONLY)
            defer { close(again) }
            var buf = [UInt8](repeating: 0, count: 4096)
            #expect(pread(again, &buf, 4096, 8192) == -1 && errno == EIO, "page 2 cannot be decoded")
            #expect(mounts[0].daemonAlive)
            #expect(mounts[0].log.contains("page 1") && mounts[0].log.contains("page 2"), "\(mounts[0].log)")
            try writeFile(top + "/other", [1, 2, 3])
            #expect(try readFile(top + "/other") == [1, 2, 3])
        }
    }

    @Test("examples/xor-swift: a package that depends on Wrapfs by path builds its own mount program; the checker runs on it",
          .timeLimit(.minutes(10)))
    func swiftExample() throws {
        let package = Build.packageRoot + "/examples/xor-swift"
        // The whole log stays in the package's .build; a failure shows its errors, not only its last lines.
        try sh("""
            log='\(package)/.build/wrapfs-test-build.log'; mkdir -p '\(package)/.build'
            swift build --package-path '\(package)' > "$log" 2>&1 || { status=$?; grep -i -E 'error|fatal|killed|signal' "$log" | head -20; tail -5 "$log"; exit $status; }
            """, timeout: 900)
        let tool = package + "/.build/debug/xor-mount"
        let s = try Scratch("xor")
        defer { s.remove() }
        let lower = try s.dir("lower"), point = try s.dir("mnt")
        let xor = try Mounted(point: point, lower: lower, tool: tool, arguments: [lower, point, "key=77"])
        defer { xor.unmount() }
        try writeFile(point + "/hello", Array("hello".utf8))
        #expect(try readFile(lower + "/hello") == Array("hello".utf8).map { $0 ^ 77 })
        try DifferentialChecker(subject: point, reference: try s.dir("reference"), seed: 32).run(operations: 2000)
    }
}

extension Mounted {
    var daemonAlive: Bool { daemon.isRunning }
}
