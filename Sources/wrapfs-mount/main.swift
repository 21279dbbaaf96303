// wrapfs-mount: mounts, unmounts and inspects Wrapfs layers.
import ArgumentParser

struct WrapfsMount: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wrapfs-mount",
        abstract: "A stackable file system that passes file content through page codecs.",
        subcommands: [MountCommand.self, InitCommand.self, PasswdCommand.self, FsckCommand.self, UnmountCommand.self, RefreshCommand.self, StatusCommand.self, CodecsCommand.self],
        defaultSubcommand: MountCommand.self)
}

WrapfsMount.main()
