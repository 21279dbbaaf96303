// `wrapfs-mount refresh FILE`: drops the cached pages of a range of FILE (reverse msync).
import ArgumentParser
import Foundation
import Glibc
import Wrapfs

struct RefreshCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refresh",
        abstract: "Drop the cached pages of a range of FILE so the next access reads the lower file.",
        discussion: """
        For files shared across machines: after another machine wrote and msynced a range, \
        refresh that range here (applications call the WRAPFS_IOC_REFRESH ioctl of include/wrapfs.h, \
        or Refresh.range(of:offset:length:) in Swift). Dirty pages of the range are written back first.
        Exit codes: 0 ok, 1 FILE cannot be opened or is not on a Wrapfs mount, 64 bad option.
        """)

    @Argument(help: "A file on a Wrapfs mount.") var file: String
    @Option(help: "First byte of the range.") var offset: UInt64 = 0
    @Option(help: "Bytes in the range (0: to the end of the file).") var length: UInt64 = 0

    func validate() throws {
        if offset > UInt64(Int64.max) || length > UInt64(Int64.max) - offset {
            throw ValidationError("--offset and --length must stay within a file (2^63 - 1 bytes)")
        }
    }

    func run() throws {
        try Failure.reported {
            let fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else { throw Failure("cannot open \(file): \(String(cString: strerror(errno)))", Exit.failure) }
            defer { close(fd) }
            do {
                try Refresh.range(of: fd, offset: offset, length: length)
            } catch let e as Errno where e == .ENOTTY {
                throw Failure("\(file) is not a regular file on a Wrapfs mount", Exit.failure)
            } catch {
                throw Failure("cannot refresh \(file): \(error)", Exit.failure)
            }
        }
    }
}
