import FileFormats
import Foundation
import Synchronization
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
    /// writer (pid 1, this process, a writer holding the file's lock, a file changed in the last
    /// minute: a writer between its open and its lock) or of another host (a writer on a
    /// shared file system) stays, as does every other file.
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
        let locked = "step-00000016.ckpt.tmp.\(host).\(dead).77", fresh = "step-00000024.ckpt.tmp.\(host).\(dead).5a"
        for name in [stale, locked, fresh] + kept { XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data([1]))) }
        for name in [stale, locked] + kept {
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-120)], ofItemAtPath: dir + "/" + name)
        }
        let writer = open(dir + "/" + locked, O_RDONLY)
        XCTAssertEqual(flock(writer, LOCK_EX), 0)
        defer { close(writer) }
        XCTAssertEqual(FileSystem.removeStaleTemporaries(in: dir), 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), (kept + [locked, fresh]).sorted())
    }
}

/// What a mapped file refuses, and that it refuses without waiting.
final class MappedFileTests: XCTestCase {
    /// Property: a FIFO named as a file to map (`--checkpoint`, a dataset) is refused at once as
    /// not a regular file; opening it for reading must not wait for a writer that never comes.
    func testAFIFOIsRefusedWithoutWaitingForAWriter() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-fifo-\(UUID().uuidString)").path
        XCTAssertEqual(mkfifo(path, 0o600), 0, String(cString: strerror(errno)))
        addTeardownBlock { unlink(path) }
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-cache-\(UUID().uuidString)").path
        // A mapped file (a checkpoint, .npy data), and an IDX file, which reads its magic first.
        let opens: [(String, () throws -> Void)] = [
            ("checkpoint", { _ = try MappedFile(path: path, what: "checkpoint") }),
            ("data.train_images", { _ = try IDXFile(path: path, cacheDirectory: cache, what: "data.train_images") }),
        ]
        for (what, open) in opens {
            let outcome = Mutex<String?>(nil), done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                let text: String
                do { try open(); text = "opened" } catch { text = "\(error)" }
                outcome.withLock { $0 = text }
                done.signal()
            }
            if done.wait(timeout: .now() + 10) == .timedOut {
                // Unblock the reader (a writer arrives) so that the thread ends, then fail.
                let fd = Glibc.open(path, O_WRONLY | O_NONBLOCK)
                if fd >= 0 { close(fd) }
                _ = done.wait(timeout: .now() + 10)
                XCTFail("\(what): opening the FIFO waited for a writer for 10 s")
                continue
            }
            XCTAssertEqual(outcome.withLock { $0 }, "\(what) \(path) is not a regular file")
        }
    }
}
