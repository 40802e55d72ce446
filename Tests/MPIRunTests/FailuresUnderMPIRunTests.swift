import Foundation
import XCTest

/// What a user meets when something is wrong on one rank, in a file, or in the run
/// directory: one line naming it, on every rank's behalf, a non-zero exit, nothing lost, no
/// hang — each under real mpirun, each bounded.
final class FailuresUnderMPIRunTests: XCTestCase {
    var short: [String] { TrainUnderMPIRunTests.short }

    func train(_ extra: [String], dir: String, np: Int = 2) throws -> MPIRun.Outcome {
        try MPIRun.run(np: np, ["train"] + short + ["--run-dir", dir] + extra, timeout: 180)
    }

    // MARK: - One rank alone

    /// Property: a failure that only one rank meets ends every rank within seconds, and the
    /// message is that rank's, reported once.
    func testAFailureOnOneRankOnlyEndsEveryRankWithItsMessage() throws {
        let dir = temporaryDirectory()
        let good = ["train"] + short + ["--run-dir", dir]
        var badConfig = good
        badConfig[badConfig.firstIndex(of: "--config")! + 1] = "/nonexistent/fashion.yaml"
        assertOneLineError(try MPIRun.runRanks([(good, []), (badConfig, [])]),
                           "rank 1: cannot read config file /nonexistent/fashion.yaml: it does not exist", within: 30)
        // The dataset cache (under $HOME by default) cannot be created on rank 1 only.
        assertOneLineError(try MPIRun.runRanks([(good, []), (good, ["HOME=/proc/ringsgd-no-home"])]),
                           "rank 1: cannot create dataset cache /proc/ringsgd-no-home", within: 30)
        // --resume given to one rank only (an MPMD launch): agreed before any other collective.
        assertOneLineError(try MPIRun.runRanks([(good + ["--resume"], []), (good, [])]),
                           "ranks disagree on --resume (given to rank 0 only)", within: 30)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/summary.json"), "no training may happen")
    }

    /// Property: comm.timeout_seconds bounds every wait from the first collective on. A rank
    /// stuck before the ranks agree on the config — here in `open` of a FIFO nobody writes to,
    /// as on a hung filesystem — is named by rank 0 once the deadline has passed, and the job
    /// ends (before, rank 0 waited in that agreement for ever: the deadline was set after it).
    func testARankStuckBeforeTheConfigAgreementIsNamedAfterTheDeadline() throws {
        let dir = temporaryDirectory(), fifo = temporaryDirectory() + "/config.yaml"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0, "mkfifo \(fifo)")
        let good = ["train"] + short + ["--run-dir", dir, "--set", "comm.timeout_seconds=3"]
        var stuck = good
        stuck[stuck.firstIndex(of: "--config")! + 1] = fifo
        let outcome = try MPIRun.runRanks([(good, []), (stuck, [])], timeout: 90)
        assertOneLineError(outcome, "rank 0 waited 3 s for rank 1 in start-up (reading the config); rank 1 is stalled or gone", within: 60)
        XCTAssertGreaterThanOrEqual(outcome.seconds, 3, "not before the deadline")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/summary.json"), "no training may happen")
    }

    /// Each host may have its own disk: a rank whose run directory is empty still resumes,
    /// from the checkpoint rank 0 reads and sends, and ends bit-identical to an uninterrupted run.
    func testARankWithAnEmptyRunDirectoryResumesFromRankZerosCheckpoint() throws {
        let whole = temporaryDirectory(), split = temporaryDirectory(), elsewhere = temporaryDirectory()
        assertSucceeded(try train([], dir: whole), "uninterrupted")
        assertSucceeded(try train(["--stop-after", "20"], dir: split), "first half")
        let rank0 = ["train"] + short + ["--run-dir", split, "--resume"]
        let rank1 = ["train"] + short + ["--run-dir", elsewhere, "--resume"]
        let resumed = try MPIRun.runRanks([(rank0, []), (rank1, [])], timeout: 180)
        assertSucceeded(resumed, "resume with rank 1's directory empty")
        assertResumed(resumed, dir: split, from: 20)
        assertSameParameters(split, whole, resumed.output)
    }

    // MARK: - A diverged replica

    /// Property: under mpirun (shared-memory gradients, real messages) a replica that moved —
    /// one parameter of rank 2 by one ulp after step 7 — ends the job at the replica check
    /// right after it with one line naming the ranks on each side, and exit 1 (the line
    /// "replicas identical" is otherwise only ever seen after checks that passed).
    func testADivergedReplicaEndsTheJobNamingTheRanks() throws {
        let outcome = try train(["--set", "consistency.inject_divergence_at=[7]", "--set", "consistency.check_every_steps=4"],
                                dir: temporaryDirectory(), np: 3)
        assertOneLineError(outcome, "after step 8 (replicas diverged)")
        XCTAssertTrue(outcome.output.contains("ranks 0,1: ") && outcome.output.contains("ranks 2: "), outcome.output)
        XCTAssertFalse(outcome.output.contains("replicas identical"), outcome.output)
    }

    // MARK: - Error feedback and non-finite steps

    /// Property: with error feedback on, one non-finite step is skipped and the run trains on
    /// (the codec's NaN residual once made every later step non-finite too).
    func testErrorFeedbackTrainsOnAfterANonFiniteStep() throws {
        let dir = temporaryDirectory()
        let outcome = try train(["--set", "comm.codec=int8", "--set", "comm.error_feedback=true",
                                 "--set", "consistency.inject_nonfinite_at=[5]"], dir: dir)
        assertSucceeded(outcome, "EF + injected non-finite step")
        let s = try summary(dir)
        XCTAssertEqual(s["skipped_steps"] as? Int, 1, outcome.output)
        XCTAssertGreaterThan(s["test_accuracy"] as? Double ?? 0, 0.6, "the run keeps learning after the skipped step")
    }

    // MARK: - Files

    /// An IDX file with a wrong magic number is a one-line error (it once crashed both ranks
    /// reading the header after unmapping it).
    func testBadIDXHeadersAreOneLineErrors() throws {
        for magic: [UInt8] in [[0xde, 0xad, 0xbe, 0xef], [0x00, 0x00, 0x0d, 0x03], [0x12, 0x34, 0x56, 0x78]] {
            let data = temporaryDirectory(), cache = temporaryDirectory()
            let raw = data + "/train-images-idx3-ubyte"
            XCTAssertTrue(FileManager.default.createFile(atPath: raw, contents: Data(magic + [UInt8](repeating: 0, count: 64))))
            assertSucceeded(try MPIRun.runProcess(["gzip", raw], timeout: 30), "gzip")
            let hex = magic.map { String(format: "%02x", $0) }.joined()
            // A known IDX element type other than unsigned byte (0x0d: float) is named as such.
            let why = magic[2] == 0x0d ? "element type 0x0d; ringsgd reads unsigned-byte (0x08) IDX files" : "bad magic \(hex)"
            assertOneLineError(try train(["--set", "data.dir=\(data)", "--set", "data.cache_dir=\(cache)"], dir: temporaryDirectory()),
                               "train-images-idx3-ubyte.gz is not an unsigned-byte IDX file (\(why)", within: 30)
        }
    }

    /// A full disk where metrics are written (here /dev/full) is a one-line error on every
    /// rank, not a trap in a file-handle write.
    func testAFullDiskIsAOneLineError() throws {
        let dir = temporaryDirectory()
        try FileManager.default.createSymbolicLink(atPath: dir + "/metrics.jsonl", withDestinationPath: "/dev/full")
        assertOneLineError(try train(["--set", "train.max_steps=5"], dir: dir),
                           "cannot write metrics to \(dir)/metrics.jsonl: No space left on device", within: 60)
    }

    /// A run directory that cannot be created (no such parent, or a file of that name) is a
    /// one-line error saying why.
    func testARunDirectoryThatCannotBeCreatedIsOneLine() throws {
        assertOneLineError(try train([], dir: "/proc/ringsgd-run"), "cannot create run directory /proc/ringsgd-run: No such file or directory")
        let file = temporaryDirectory() + "/a-file"
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data()))
        assertOneLineError(try train([], dir: file), "cannot create run directory \(file): a file of that name exists")
    }

    // MARK: - Run directories and resume

    /// A fresh run never silently mixes with an earlier run's checkpoints: it refuses, or
    /// with --overwrite deletes them; a later --resume then continues the new run.
    func testAFreshRunRefusesAnEarlierRunsCheckpointsUnlessOverwriting() throws {
        let dir = temporaryDirectory()
        assertSucceeded(try train(["--stop-after", "30"], dir: dir), "first run")
        assertOneLineError(try train([], dir: dir), "holds checkpoints of an earlier run (newest: step-00000030.ckpt); continue it with --resume")
        assertSucceeded(try train(["--stop-after", "10", "--overwrite"], dir: dir), "overwrite")
        let resumed = try train(["--resume"], dir: dir)
        assertSucceeded(resumed, "resume after overwrite")
        XCTAssertTrue(resumed.output.contains("resumed at step 10"), resumed.output)
    }

    /// A job script that always passes --resume: a finished run has nothing left to do,
    /// exits 0 and keeps its summary.
    func testResumingAFinishedRunHasNothingLeftToDo() throws {
        let dir = temporaryDirectory()
        assertSucceeded(try train([], dir: dir), "run")
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))
        let again = try train(["--resume"], dir: dir)
        assertSucceeded(again, "resume of a finished run")
        XCTAssertTrue(again.output.contains("nothing left to do"), again.output)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")), before, "summary kept as it was")
    }

    /// Resuming with a changed config: a change that keeps the checkpoint meaningful is
    /// warned about and recorded; one that does not (another model) is refused.
    func testResumingWithAChangedConfigWarnsOrRefuses() throws {
        let dir = temporaryDirectory()
        assertSucceeded(try train(["--stop-after", "20"], dir: dir), "first half")
        assertOneLineError(try train(["--resume", "--set", "model.hidden=[64]"], dir: dir),
                           "--resume: the checkpoint was written with a different model.hidden: [512, 256] → [64]")
        // Without --config the default config is read, whose model is seldom the run's: the
        // refusal says where the config it compared came from.
        let other = temporaryDirectory()
        assertSucceeded(try train(["--set", "model.hidden=[64]", "--stop-after", "10"], dir: other), "a run of another model")
        let defaulted = try MPIRun.run(np: 2, ["train", "--run-dir", other, "--resume"], timeout: 180)
        assertOneLineError(defaulted, "--resume: the checkpoint was written with a different model.hidden: [64] → [512, 256] (no --config was given, so this resume read configs/fashion-mlp.yaml); resume with the config it was written with")
        // A change that reshapes the optimizer's state (no momentum buffer) is named, not taken
        // for a damaged checkpoint ("no valid checkpoint").
        let reshaped = try train(["--resume", "--set", "optimizer.momentum=0"], dir: dir)
        assertOneLineError(reshaped, "--resume: the checkpoint's optimizer state does not fit this optimizer (")
        XCTAssertTrue(reshaped.output.contains("after changing optimizer.momentum: 0.9 → 0"), reshaped.output)
        let changed = try train(["--resume", "--set", "train.max_steps=50"], dir: dir)
        assertSucceeded(changed, "resume with a longer run")
        XCTAssertTrue(changed.output.contains("warning: resuming with a changed config (train.max_steps: 40 → 50)"), changed.output)
        XCTAssertEqual(try summary(dir)["config_changes_on_resume"] as? [String], ["train.max_steps: 40 → 50"])
        XCTAssertEqual(try summary(dir)["steps"] as? Int, 50)
    }

    /// When no checkpoint fits, the message says why for each one.
    func testNoFittingCheckpointSaysWhy() throws {
        let dir = temporaryDirectory()
        assertSucceeded(try train(["--stop-after", "10"], dir: dir), "run")
        let path = dir + "/checkpoints/step-00000010.ckpt"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        assertOneLineError(try train(["--resume"], dir: dir),
                           "--resume: no valid checkpoint in \(dir)/checkpoints (step-00000010.ckpt: checksum mismatch (truncated or damaged))")
        // A checkpoint of 0 bytes (a write cut short) is called empty, not a bad magic number.
        try Data().write(to: URL(fileURLWithPath: path))
        assertOneLineError(try train(["--resume"], dir: dir), "step-00000010.ckpt: empty (0 bytes: its write never completed)")
        // A run directory that does not exist is named as such (and is not created).
        let missing = temporaryDirectory() + "/no-such-run"
        assertOneLineError(try train(["--resume"], dir: missing), "--resume: the run directory \(missing) does not exist")
        XCTAssertFalse(FileManager.default.fileExists(atPath: missing), "a failed --resume creates no run directory")
    }

    // MARK: - Through the launchers

    /// Through launch/local.sh the user's last line is ours: mpirun's notes are silenced, and
    /// after a killed rank a line says so and how to continue.
    func testTheLaunchersLastLineIsTheError() throws {
        _ = try MPIRun.built("ringsgd")   // local.sh runs .build/release/ringsgd as it is
        let local = MPIRun.packageRoot.path + "/launch/local.sh"
        let bad = try MPIRun.runProcess([local, "2", "train", "--config", "/nonexistent.yaml"], timeout: 120)
        XCTAssertNotEqual(bad.status, 0)
        let last = bad.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(last.hasPrefix("ringsgd: error: cannot read config file /nonexistent.yaml"), "last line: \(last)\n\(bad.output)")
        XCTAssertFalse(bad.output.contains("Primary job"), bad.output)

        // mpirun that cannot start the job (a host it cannot resolve): no rank ran, so the last
        // line says so and where to look — not that a rank was killed, nor how to resume.
        let hostfile = temporaryDirectory() + ".hosts"
        try "nosuchhost.invalid slots=1\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        let unreachable = try MPIRun.runProcess([MPIRun.packageRoot.path + "/launch/hostfile.sh", hostfile, "1", "train", "--config", "/nonexistent.yaml"], timeout: 120)
        XCTAssertNotEqual(unreachable.status, 0)
        let line = unreachable.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(line.hasPrefix("ringsgd: error: mpirun could not start the job") && line.contains("check the hostfile"), "last line: \(line)\n\(unreachable.output)")

        // A rank killed mid-run: the job ends, and the last line says how to continue.
        let dir = temporaryDirectory()
        let job = try BackgroundJob([local, "2", "train"] + short + ["--set", "train.max_steps=100000", "--run-dir", dir], log: dir + ".log")
        let victim = try job.rank(of: dir, when: "the job printed 'ringsgd train:'") { job.output.contains("ringsgd train:") }
        try BackgroundJob.send(SIGKILL, to: victim)
        XCTAssertTrue(job.end(within: 30), "the job must end within 30 s of a killed rank")
        let output = job.output, lastLine = job.lastLine
        XCTAssertTrue(lastLine.contains("the job ended abnormally") && lastLine.contains("--resume"), "last line: \(lastLine)\n\(output)")
    }

    /// Property: SIGKILL to the launcher's process group — which no trap sees (`kill -9` of the
    /// group, `timeout -s KILL`), and which does not reach mpirun's own group — still stops every
    /// rank within seconds (the launcher's guard, in a session of its own), also when it comes
    /// right after a SIGTERM the launcher passed on (a supervisor's terminate-then-kill), and
    /// the launcher's temporary files go with them.
    func testAKilledLauncherLeavesNoRankRunning() throws {
        let local = MPIRun.packageRoot.path + "/launch/local.sh"
        for terminatedFirst in [false, true] {
            let dir = temporaryDirectory(), label = terminatedFirst ? "SIGTERM then SIGKILL" : "SIGKILL"
            // Long enough that only a stop ends it before the checks below.
            let job = try BackgroundJob([local, "2", "train"] + short + ["--set", "train.max_steps=1000000", "--set", "train.epochs=1000", "--run-dir", dir],
                                        log: dir + ".log")
            _ = try job.rank(of: dir, when: "the job printed 'ringsgd train:'") { job.output.contains("ringsgd train:") }
            let launcher = job.launcherPID
            let mpirun = try MPIRun.runProcess(["pgrep", "-f", "^mpirun .*--run-dir \(dir)( |$)"], timeout: 10).output
                .split(separator: "\n").compactMap { Int32($0) }.first ?? 0
            // Whatever happens below, nothing of this job outlives the test (the ranks have
            // process groups of their own).
            defer {
                for rank in (try? BackgroundJob.rankPIDs(runDirectory: dir)) ?? [] { kill(rank, SIGKILL) }
                if mpirun > 1, getpgid(mpirun) == mpirun { kill(-mpirun, SIGKILL) }
            }
            XCTAssertGreaterThan(launcher, 1, "\(label): the launcher, setsid's child, leading its process group")
            XCTAssertGreaterThan(mpirun, 1, "\(label): mpirun")
            guard launcher > 1, mpirun > 1 else { continue }
            // The launcher's log of mpirun's stderr: one of the files it would have removed.
            let log = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(mpirun)/fd/2")
            XCTAssertTrue(FileManager.default.fileExists(atPath: log), log)
            let group = launcher   // its own group's leader (`launcherPID`)
            if terminatedFirst {
                XCTAssertEqual(kill(launcher, SIGTERM), 0, "SIGTERM to the launcher")
                usleep(100_000)
            }
            XCTAssertEqual(kill(-group, SIGKILL), 0, "\(label): SIGKILL to the launcher's group")
            // The launcher is gone once `setsid`, its parent, has reaped it.
            var waited = 0
            while kill(launcher, 0) == 0 && waited < 100 { usleep(100_000); waited += 1 }
            XCTAssertNotEqual(kill(launcher, 0), 0, "\(label): the launcher must die at once")
            let deadline = Date().addingTimeInterval(20)
            while try !BackgroundJob.rankPIDs(runDirectory: dir).isEmpty || kill(mpirun, 0) == 0, Date() < deadline { usleep(200_000) }
            XCTAssertTrue(try BackgroundJob.rankPIDs(runDirectory: dir).isEmpty, "\(label): no rank left running 20 s after the launcher was killed")
            XCTAssertNotEqual(kill(mpirun, 0), 0, "\(label): mpirun stopped")
            usleep(1_500_000)   // the guard removes the files once mpirun is gone and the display ended
            XCTAssertFalse(FileManager.default.fileExists(atPath: log), "\(label): the launcher's log \(log) removed")
        }
    }

    /// Property: SIGTERM (or Ctrl-C's SIGINT) to the job's process group — what a scheduler,
    /// `timeout` or a terminal sends — or to the launcher alone (`kill PID`, a supervisor's
    /// terminate()) ends every rank before the launcher exits, and the launcher says it was
    /// interrupted and how to continue, exiting 143 (130) as shells and schedulers expect.
    func testAnInterruptedJobSaysSoAndExitsAsShellsExpect() throws {
        let local = MPIRun.packageRoot.path + "/launch/local.sh"
        for (signal, status, name, toGroup) in [(SIGTERM, Int32(143), "SIGTERM", true), (SIGINT, Int32(130), "SIGINT", true),
                                                (SIGTERM, Int32(143), "SIGTERM", false)] {
            let dir = temporaryDirectory()
            let job = try BackgroundJob([local, "2", "train"] + short + ["--set", "train.max_steps=100000", "--run-dir", dir], log: dir + ".log")
            _ = try job.rank(of: dir, when: "the job printed 'ringsgd train:'") { job.output.contains("ringsgd train:") }
            // The launcher and its process group (mpirun and the ranks have their own).
            let launcher = job.launcherPID
            let command = (try? String(contentsOfFile: "/proc/\(launcher)/cmdline", encoding: .utf8))?.replacingOccurrences(of: "\0", with: " ") ?? ""
            XCTAssertTrue(command.hasPrefix("bash \(local) 2 train "), "the launcher is setsid's child: \(command)")
            let group = launcher
            XCTAssertGreaterThan(group, 1, "the launcher's process group (launcher pid \(launcher))")
            guard group > 1 else { continue }
            XCTAssertEqual(kill(toGroup ? -group : launcher, signal), 0, toGroup ? "signal the job's process group" : "signal the launcher alone")
            XCTAssertTrue(job.end(within: 30), "the job must end within 30 s of \(name) (to the \(toGroup ? "group" : "launcher alone"))")
            XCTAssertEqual(job.process.terminationStatus, status, "\(name): exit status\n\(job.output)")
            XCTAssertTrue(job.lastLine.hasPrefix("ringsgd: interrupted (\(name))") && job.lastLine.contains("--resume"), "last line: \(job.lastLine)\n\(job.output)")
            XCTAssertTrue(try BackgroundJob.rankPIDs(runDirectory: dir).isEmpty, "no rank left running after \(name)")
        }
    }
}
