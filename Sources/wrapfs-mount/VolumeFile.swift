// The volume file: what a size-changing codec's lower directory remembers (codec, page size, options).
import Codecs
import Foundation
import Glibc
import Wrapfs

/// `LOWER/.wrapfs.json`, written at the first mount with a codec that changes sizes and read at
/// every later one, so a volume cannot be mounted with another codec or page size by mistake.
/// The layer hides it from the mount.
struct VolumeFile: Codable {
    static let name = ".wrapfs.json"
    var version = 1
    var codec: String
    var options: [String: String]
    /// An encrypted volume's master key, wrapped under its passphrase.
    var key: WrappedMasterKey?

    static func path(in lower: String) -> String { lower + "/" + name }

    static func load(from lower: String) throws -> VolumeFile? {
        let p = path(in: lower)
        guard FileManager.default.fileExists(atPath: p) else { return nil }
        let volume: VolumeFile
        do {
            volume = try JSONDecoder().decode(VolumeFile.self, from: Data(contentsOf: URL(fileURLWithPath: p)))
        } catch {
            throw Failure("volume file \(p) is unreadable or damaged: \(error)", Exit.badOption)
        }
        // Another version's fields may mean something else: refused, not guessed at.
        guard volume.version == 1 else {
            throw Failure("volume file \(p) has version \(volume.version), which this wrapfs-mount does not know (damaged, or made by a newer Wrapfs)", Exit.badOption)
        }
        return volume
    }

    func save(in lower: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            // Written whole under a temporary name, readable by the owner only (it may hold a wrapped key).
            let data = try encoder.encode(self)
            let temporary = Self.path(in: lower) + ".new"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw Errno.current }
            defer { close(fd) }
            let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == data.count, fsync(fd) == 0, rename(temporary, Self.path(in: lower)) == 0 else { throw Errno.current }
        } catch {
            throw Failure("cannot write volume file in \(lower): \(error)", Exit.badLower)
        }
    }

    /// The options to mount with: the volume's, checked against what the user asked for.
    static func reconcile(lower: String, codec: String, asked: [String: String], pageSize: Int?) throws -> [String: String] {
        guard let volume = try load(from: lower) else { return asked }
        guard volume.codec == codec else {
            throw Failure("\(lower) is a \(volume.codec) volume; mount it with --codec \(volume.codec)", Exit.badOption)
        }
        var merged = volume.options
        for (key, value) in asked where key != "level" {
            if let stored = volume.options[key], stored != value {
                throw Failure("\(lower) was created with \(key)=\(stored); it cannot be mounted with \(key)=\(value)", Exit.badOption)
            }
            merged[key] = value
        }
        if let level = asked["level"] { merged["level"] = level }  // the level only affects new writes
        return merged
    }
}
