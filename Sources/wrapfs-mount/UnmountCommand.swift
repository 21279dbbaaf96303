// `wrapfs-mount unmount MOUNTPOINT` and `wrapfs-mount codecs`.
import ArgumentParser
import Foundation
import Glibc
import Wrapfs
import Codecs

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount", abstract: "Unmount a layer (fusermount3 -u).",
        discussion: "A dead daemon's mount (\"Transport endpoint is not connected\") is unmounted too; while programs still hold files there it is detached lazily, as with -z.")
    @Argument(help: "The mount point.") var mountpoint: String
    @Flag(name: [.customShort("z"), .long], help: "Detach now even if busy.") var lazy = false

    func run() throws {
        try Failure.reported {
            if try fusermount(lazy ? ["-u", "-z"] : ["-u"]) == 0 { return }
            // A mount whose daemon died answers ENOTCONN; nothing can serve it again, so detach it.
            var st = stat()
            if stat(mountpoint, &st) != 0 && errno == ENOTCONN, try fusermount(["-u", "-z"]) == 0 {
                FileHandle.standardError.write("wrapfs-mount: \(mountpoint): the daemon was gone; detached\n".data(using: .utf8)!)
                return
            }
            throw Exit.failure
        }
    }

    private func fusermount(_ arguments: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        p.arguments = arguments + [mountpoint]
        do { try p.run() } catch { throw Failure("cannot run fusermount3: \(error)", Exit.failure) }
        p.waitUntilExit()
        return p.terminationStatus
    }
}

struct CodecsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "codecs", abstract: "List the built-in codecs and those of --codec-plugin shared objects.")

    @Option(name: .customLong("codec-plugin"), help: ArgumentHelp("Load a codec plugin first (repeatable).", valueName: "PATH.so"))
    var codecPlugins: [String] = []

    func run() throws { try Failure.reported(list) }

    private func list() throws {
        BuiltinCodecs.register()
        try PluginLoading.load(codecPlugins)
        func col(_ s: String, _ w: Int) -> String { s.padding(toLength: w, withPad: " ", startingAt: 0) }
        print(col("NAME", 12) + "PAGE    SLOT    HEADER  SIZE         SUMMARY")
        for d in CodecRegistry.shared.all {
            // An encrypting codec is made with a throwaway key, only to show its layout.
            let key = BuiltinCodecs.encrypting.contains(d.name) ? try SecretBytes(count: 32) : nil
            guard let c = try? d.make(CodecOptions(masterKey: key)) else { continue }
            print(col(d.name, 12) + col("\(c.pageSize)", 8) + col("\(c.slotSize)", 8) + col("\(c.headerSize)", 8)
                  + col(c.preservesSize ? "preserved" : "changes", 13) + d.summary)
        }
    }
}

/// Loading `--codec-plugin`s for a command; a plugin that does not load is a codec error (exit 65).
enum PluginLoading {
    static func load(_ paths: [String]) throws {
        for path in paths {
            do {
                try CodecPlugin.load(path)
            } catch {
                throw Failure("\(error)", Exit.unknownCodec)
            }
        }
    }
}
