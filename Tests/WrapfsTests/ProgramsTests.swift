// Real programs on a layer: tar, sqlite3 (rollback and WAL), git, rsync and cp -a round trips.
import Foundation
import Glibc
import Testing

/// Runs a shell script, failing the test with its output when it fails.
@discardableResult
func sh(_ script: String, timeout: Double = 300) throws -> String {
    let r = try run("/bin/bash", ["-c", "set -euo pipefail; " + script], timeout: timeout)
    if r.status != 0 { throw MountFailure(description: "script failed (\(r.status)): \(script)\n\(r.output)") }
    return r.output
}

/// A tree of 2,100 files of varied sizes in 30 directories, a symlink, and one 3 MiB file.
func makeTree(_ root: String) throws {
    try sh("""
        mkdir -p '\(root)'; cd '\(root)'
        for d in $(seq 0 29); do mkdir -p "dir $d/sub"; done
        for i in $(seq 0 2099); do
          d=$((i % 30)); n=$(( (i * 7919) % 20000 ))
          head -c $n /dev/urandom > "dir $d/sub/file-$i.dat"
        done
        head -c 3145728 /dev/urandom > big.bin
        printf 'plain text\\n' > Notes.txt; chmod 0640 Notes.txt
        ln -s 'dir 1/sub/file-1.dat' link
        touch -d '2001-02-03 04:05:06' Notes.txt
        """)
}

/// Names, types, modes, sizes, mtimes and content hashes of a tree, one line each.
/// With `fileTimesOnly`, directory and symlink times are left out (rsync's generator and
/// receiver race on them even between two plain directories).
/// With `noTimes`, no times at all.
func manifest(_ root: String, fileTimesOnly: Bool = false, noTimes: Bool = false) throws -> String {
    let format = fileTimesOnly || noTimes ? "%P %y %m %s %l\\n" : "%P %y %m %s %T@ %l\\n"
    let times = fileTimesOnly && !noTimes ? " && find . -type f -printf '%P %T@\\n' | LC_ALL=C sort" : ""
    return try sh("cd '\(root)' && find . -printf '\(format)' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum" + times)
}

/// Expects two trees to have the same manifest; shows the first differing lines if not.
func expectSameTree(_ a: String, _ b: String, fileTimesOnly: Bool = false, noTimes: Bool = false,
                    sourceLocation: SourceLocation = #_sourceLocation) throws {
    let ma = try manifest(a, fileTimesOnly: fileTimesOnly, noTimes: noTimes)
    let mb = try manifest(b, fileTimesOnly: fileTimesOnly, noTimes: noTimes)
    if ma != mb {
        let la = ma.split(separator: "\n"), lb = mb.split(separator: "\n")
        let diff = zip(la, lb).filter { $0 != $1 }.prefix(4).map { "  \($0)\n  \($1)" }.joined(separator: "\n")
        Issue.record("trees differ: \(a) vs \(b) (\(la.count) vs \(lb.count) lines)\n\(diff)", sourceLocation: sourceLocation)
    }
}

@Suite("Programs", .serialized, .onOwnThread, .enabled(if: Fuse.required, "needs /dev/fuse"))
struct ProgramsTests {
    static let stacks = [["identity"], ["rot"], ["rot", "rot"], ["gzip"], ["aes-gcm"]]

    @Test("tar round trip of a 2,100-file tree", .timeLimit(.minutes(5)), arguments: stacks)
    func tarRoundTrip(codecs: [String]) throws {
        let s = try Scratch("tar")
        defer { s.remove() }
        try makeTree(s.path + "/src")
        try sh("tar -C '\(s.path)/src' -cf '\(s.path)/src.tar' .")
        // The same extraction on a plain directory is the reference (tar keeps whole seconds).
        try sh("mkdir '\(s.path)/plain' && tar -C '\(s.path)/plain' -xpf '\(s.path)/src.tar'")
        try withLayers(codecs) { top, _, _ in
            try sh("mkdir '\(top)/x' && tar -C '\(top)/x' -xpf '\(s.path)/src.tar'")
            try expectSameTree(top + "/x", s.path + "/plain")
            try sh("tar -C '\(top)/x' -cf '\(s.path)/back.tar' . && mkdir '\(s.path)/back' && tar -C '\(s.path)/back' -xpf '\(s.path)/back.tar'")
            try expectSameTree(s.path + "/back", s.path + "/plain")
        }
    }

    @Test("rsync -a and cp -a round trips keep content, modes and times", .timeLimit(.minutes(5)), arguments: [["identity"], ["rot"]])
    func rsyncAndCp(codecs: [String]) throws {
        let s = try Scratch("cp")
        defer { s.remove() }
        try makeTree(s.path + "/src")
        // The same copies between plain directories are the reference.
        try sh("rsync -a '\(s.path)/src/' '\(s.path)/r-plain/' && cp -a '\(s.path)/src' '\(s.path)/c-plain'")
        try withLayers(codecs) { top, _, _ in
            try sh("rsync -a '\(s.path)/src/' '\(top)/r/' && rsync -a '\(top)/r/' '\(s.path)/r-back/'")
            try expectSameTree(top + "/r", s.path + "/r-plain", fileTimesOnly: true)
            try expectSameTree(s.path + "/r-back", s.path + "/r-plain", fileTimesOnly: true)
            // A second rsync finds nothing to do: times and sizes agree.
            #expect(try sh("rsync -a --itemize-changes '\(s.path)/src/' '\(top)/r/'").isEmpty)
            try sh("cp -a '\(s.path)/src' '\(top)/c' && cp -a '\(top)/c' '\(s.path)/c-back'")
            try expectSameTree(top + "/c", s.path + "/c-plain")
            try expectSameTree(s.path + "/c-back", s.path + "/c-plain")
        }
    }

    @Test("sqlite3 in rollback and WAL modes passes integrity_check", .timeLimit(.minutes(5)), arguments: stacks)
    func sqlite(codecs: [String]) throws {
        try withLayers(codecs) { top, _, _ in
            for mode in ["DELETE", "WAL"] {
                let db = "\(top)/db-\(mode).sqlite"
                var sql = "PRAGMA journal_mode=\(mode); CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB);"
                for batch in 0..<20 {
                    sql += "BEGIN;"
                    for i in 0..<100 { sql += "INSERT INTO t(v, b) VALUES('row \(batch)-\(i)', randomblob(\(100 + (i * 37) % 3000)));" }
                    sql += "COMMIT;"
                }
                sql += "UPDATE t SET v = v || '!' WHERE id % 3 = 0; DELETE FROM t WHERE id % 7 = 0; VACUUM;"
                _ = try sqlite3(db, sql)
                let out = try sqlite3(db, "PRAGMA integrity_check; SELECT count(*) FROM t; SELECT count(*) FROM t WHERE v LIKE '%!';")
                #expect(out.split(separator: "\n") == ["ok", "1715", "571"], "\(mode): \(out)")
            }
        }
    }

    func sqlite3(_ db: String, _ sql: String) throws -> String {
        let file = "/tmp/wrapfs-sql-\(UUID().uuidString).sql"
        try sql.write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        return try sh("sqlite3 -batch '\(db)' < '\(file)'").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("git init, add, commit, fsck", .timeLimit(.minutes(5)), arguments: [["identity"], ["rot"], ["aes-gcm"]])
    func git(codecs: [String]) throws {
        try withLayers(codecs) { top, _, _ in
            let out = try sh("""
                export HOME='\(top)' GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e
                cd '\(top)' && git init -q repo && cd repo
                for i in $(seq 1 200); do echo "line $i" > "file$i.txt"; done
                mkdir -p sub && head -c 200000 /dev/urandom > sub/blob.bin
                git add -A && git commit -qm first
                sed -i 's/line/LINE/' file1*.txt && git commit -qam second
                git gc -q && git fsck --full --strict && git log --oneline | wc -l && git status --porcelain | wc -l
                """)
            #expect(out.split(separator: "\n").suffix(2) == ["2", "0"], "\(out)")
        }
    }
}
