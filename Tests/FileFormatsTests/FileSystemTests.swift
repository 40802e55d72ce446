import FileFormats
import Foundation
import XCTest

/// The atomic writes' leftovers: what a writer killed mid-write leaves, and who removes it.
final class FileSystemTests: XCTestCase {
    /// A pid no process has now: a child that has exited (and been reaped).
    static func deadPID() throws -> Int32 {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        return child.processIdentifier
    }

    /// Property: a temporary file of this host whose writer is gone is removed; one of a live
    /// writer (pid 1, this process, a writer holding the file's lock) or of another host (a
    /// writer on a shared file system) stays, as does every other file.
    func testStaleTemporariesOfThisHostAloneAreRemoved() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-tmp-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        let host = FileSystem.hostName, dead = try Self.deadPID()
        let stale = "step-00000008.ckpt.tmp.\(host).\(dead).1f2e"
        let kept = ["step-00000008.ckpt.tmp.\(host).1.ab", "step-00000008.ef-rank-1.tmp.\(host).\(getpid()).cd",
                    "step-00000008.ckpt.tmp.another-host.\(dead).ef", "step-00000008.ckpt", "step-00000008.ef-rank-0"]
        // A writer whose pid this process cannot see (another container with the same host
        // name) but which holds its file's lock, as every writer does: alive.
        let locked = "step-00000016.ckpt.tmp.\(host).\(dead).77"
        for name in [stale, locked] + kept { XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data([1]))) }
        let writer = open(dir + "/" + locked, O_RDONLY)
        XCTAssertEqual(flock(writer, LOCK_EX), 0)
        defer { close(writer) }
        XCTAssertEqual(FileSystem.removeStaleTemporaries(in: dir), 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), (kept + [locked]).sorted())
    }
}
