import Foundation
import XCTest

/// Faults a real job meets — a rank killed, a rank stalled, a full or read-only disk — under
/// real mpirun through the launcher: the job ends within a bound with one line naming the
/// cause, leaves no process behind and loses no complete checkpoint.
final class FaultTests: XCTestCase {
    static let local = MPIRun.packageRoot.path + "/launch/local.sh"
    var config: String { TrainUnderMPIRunTests.short[1] }


    /// Starts `launch/local.sh 2 train …` into `dir` in the background.
    func start(_ arguments: [String], dir: String) throws -> BackgroundJob {
        try BackgroundJob([Self.local, "2", "train", "--config", config, "--run-dir", dir] + arguments, log: dir + ".log")
    }

    /// Rank 1's pid once the run has written its first checkpoint (≤ 60 s); throws, saying
    /// why, when there is none.
    func rankOne(of job: BackgroundJob, dir: String) throws -> Int32 {
        try job.rank(of: dir, when: "a checkpoint was in \(dir)/checkpoints") {
            ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? []).contains { $0.hasSuffix(".ckpt") }
        }
    }

    func assertNothingLeft(_ dir: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let left = try MPIRun.runProcess(["pgrep", "-f", "--", "--run-dir \(dir)( |$)"], timeout: 10).output.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(left, "", "processes left behind", file: file, line: line)
    }

    /// A rank killed mid-run: the job ends within 30 s naming the lost rank, nothing is left
    /// running, and `--resume` from the newest checkpoint ends bit-identical to a run that
    /// was never interrupted.
    func testAKilledRankEndsTheJobAndResumeMatchesAnUninterruptedRun() throws {
        let steps = ["--set", "train.max_steps=1500", "--set", "checkpoint.every_steps=100", "--set", "train.log_every_steps=500"]
        let whole = temporaryDirectory(), dir = temporaryDirectory()
        let job = try start(steps, dir: dir)
        try BackgroundJob.send(SIGKILL, to: try rankOne(of: job, dir: dir))
        XCTAssertTrue(job.end(within: 30), "the job must end within 30 s of a killed rank")
        XCTAssertNotEqual(job.process.terminationStatus, 0)
        XCTAssertTrue(job.lastLine.contains("rank 1 (on host") && job.lastLine.contains("was killed by signal 9") && job.lastLine.contains("--resume"),
                      "last line: \(job.lastLine)")
        try assertNothingLeft(dir)
        let resumed = try MPIRun.runProcess([Self.local, "2", "train", "--config", config, "--run-dir", dir, "--resume"] + steps, timeout: 180)
        assertSucceeded(resumed, "resume after the kill")
        XCTAssertTrue(resumed.output.contains("resumed at step"), resumed.output)
        assertSucceeded(try MPIRun.runProcess([Self.local, "2", "train", "--config", config, "--run-dir", whole] + steps, timeout: 180), "uninterrupted")
        assertSameParameters(dir, whole)
    }

    /// A stalled rank (SIGSTOP): the others wait no longer than comm.timeout_seconds, say
    /// whom they waited for and in which collective, and the job ends; nothing is left.
    func testAStalledRankEndsTheJobAfterTheDeadline() throws {
        // Our ring, and OpenMPI's MPI_Allreduce (comm.algorithm: mpi), which waited for ever.
        for algorithm in ["ring", "mpi"] {
            let dir = temporaryDirectory()
            let job = try start(["--set", "train.max_steps=100000", "--set", "checkpoint.every_steps=100", "--set", "comm.timeout_seconds=3",
                                 "--set", "comm.algorithm=\(algorithm)"], dir: dir)
            try BackgroundJob.send(SIGSTOP, to: try rankOne(of: job, dir: dir))
            let stopped = Date()
            XCTAssertTrue(job.end(within: 30), "\(algorithm): the job must end within 30 s of a stalled rank")
            XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(stopped), 2.5, "not before the deadline")
            let last = job.lastLine
            XCTAssertTrue(last.hasPrefix("ringsgd: error: rank 0 waited 3 s for rank 1 in ") && last.contains("comm.timeout_seconds is 3"), "\(algorithm): last line: \(last)")
            XCTAssertTrue(last.contains("raise comm.timeout_seconds") && last.contains("--resume"), "the line says what to do next: \(last)")
            try assertNothingLeft(dir)
        }
    }

    /// `check allreduce` with a stalled rank (SIGSTOP) mid-check: the other waits no longer than
    /// `--timeout-seconds`, names whom it waited for, in which check, and the setting to raise;
    /// the job ends and nothing is left running. (Before, the check waited for ever.)
    func testAStalledRankEndsTheAllReduceCheckAfterItsDeadline() throws {
        // Three hundred checks of a million values: minutes of work, unless a rank stops.
        let counts = Array(repeating: "1000081", count: 300).joined(separator: ",")
        let pattern = "^[^ ]*ringsgd check allreduce --counts \(counts.prefix(15))"
        let log = temporaryDirectory() + "/check.log"
        let job = try BackgroundJob([Self.local, "2", "check", "allreduce", "--counts", counts, "--timeout-seconds", "3"], log: log)
        // Once a first check has passed, every rank is past MPI_Init (which no deadline bounds).
        let rank = try job.rank(matching: pattern, when: "a first check passed") { job.output.contains("count=1000081 ") }
        try BackgroundJob.send(SIGSTOP, to: rank)
        let stopped = Date()
        XCTAssertTrue(job.end(within: 30), "the check must end within 30 s of a stalled rank")
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(stopped), 2.5, "not before the deadline")
        XCTAssertNotEqual(job.process.terminationStatus, 0)
        let last = job.lastLine
        XCTAssertTrue(last.hasPrefix("ringsgd: error: rank ") && last.contains(" waited 3 s for rank ") && last.contains(" in the check of 1000081 values; rank "),
                      "last line: \(last)")
        XCTAssertTrue(last.contains("(--timeout-seconds is 3); find the stalled host or rank, or raise --timeout-seconds if it is only slow, then run the check again"),
                      "the line says what to do next: \(last)")
        XCTAssertEqual(try BackgroundJob.rankPIDs(matching: pattern), [], "processes left behind")
    }

    /// A full disk while writing a checkpoint (a 7 MB tmpfs: one 4.3 MB checkpoint fits, the
    /// next does not): one line, non-zero exit, no partial file under a checkpoint's name, and
    /// the earlier checkpoint still loads. A read-only run directory: one line, nothing written.
    func testAFullOrReadOnlyDiskKeepsTheEarlierCheckpoint() throws {
        let mountPoint = temporaryDirectory()
        let mounted = try MPIRun.runProcess(["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", mountPoint], timeout: 10)
        guard mounted.status == 0 else { throw XCTSkip("cannot mount a small tmpfs here (\(mounted.output.trimmingCharacters(in: .whitespacesAndNewlines))): no full-disk test") }
        defer { _ = try? MPIRun.runProcess(["umount", "-l", mountPoint], timeout: 10) }
        let dir = mountPoint + "/run"
        let full = try MPIRun.runProcess([Self.local, "2", "train", "--config", config, "--run-dir", dir,
                                          "--set", "train.max_steps=200", "--set", "checkpoint.every_steps=50"], timeout: 180)
        XCTAssertNotEqual(full.status, 0)
        let last = full.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(last.hasPrefix("ringsgd: error:") && last.contains("No space left on device"), "last line: \(last)\n\(full.output)")
        XCTAssertTrue(last.contains("free space on that file system first, then continue from step-00000050.ckpt with 'train … --resume'"),
                      "the line says what to do next: \(last)")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")
        XCTAssertEqual(files.filter { $0.hasPrefix("step-") }, ["step-00000050.ckpt"], "only the complete checkpoint: \(files)")
        // It still loads: resume elsewhere from a copy.
        let copy = temporaryDirectory() + "/run"
        assertSucceeded(try MPIRun.runProcess(["cp", "-r", dir, copy], timeout: 30), "copy")
        let resumed = try MPIRun.runProcess([Self.local, "2", "train", "--config", config, "--run-dir", copy, "--resume",
                                             "--set", "train.max_steps=200", "--set", "checkpoint.every_steps=50"], timeout: 180)
        assertSucceeded(resumed, "resume from the checkpoint kept on the full disk")
        XCTAssertTrue(resumed.output.contains("resumed at step 50"), resumed.output)

        assertSucceeded(try MPIRun.runProcess(["mount", "-o", "remount,ro", mountPoint], timeout: 10), "remount read-only")
        let readOnly = try MPIRun.runProcess([Self.local, "2", "train", "--config", config, "--run-dir", mountPoint + "/other"], timeout: 120)
        XCTAssertNotEqual(readOnly.status, 0)
        let line = readOnly.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(line.hasPrefix("ringsgd: error: cannot create run directory \(mountPoint)/other: Read-only file system"), "last line: \(line)")
    }
}
