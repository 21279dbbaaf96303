// Small file helpers for tests that work through a mount.
import Foundation
import Glibc
import Testing

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

func statOf(_ path: String) throws -> stat {
    var st = stat()
    guard lstat(path, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
    return st
}

func pattern(_ n: Int, seed: UInt8 = 1) -> [UInt8] {
    (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ Int(seed) &+ ($0 >> 12)) }
}

/// Appends with one write(2) on an existing file (no rename, no truncation).
func appendFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_APPEND)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
    defer { close(fd) }
    guard write(fd, bytes, bytes.count) == bytes.count else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
}
