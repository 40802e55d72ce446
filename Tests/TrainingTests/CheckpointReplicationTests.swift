import Collectives
import FileFormats
import Foundation
import InProcessTransport
import Training
import XCTest

/// Checkpoints when ranks do not share one run directory (a node-local disk per host), the
/// asynchronous write, a stop requested from outside and `--resume-if-present`: ranks as
/// threads, each given its own directory the way each host would see its own disk.
final class CheckpointReplicationTests: XCTestCase {
    func temporaryDirectory() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-replica-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// Trains with rank r in `dirs[r]`; every rank's summary.
    func train(_ dirs: [String], _ extra: [String] = [], resume: Bool = false, resumeIfPresent: Bool = false,
               stopAfter: Int? = nil, stops: [StopRequest?] = [], continuing: UInt64? = nil, target: TrainingTarget? = nil,
               log: LockedLines? = nil, onLine: ((String) -> Void)? = nil, timeline: String? = nil) throws -> [RunSummary?] {
        let config = try TrainerTests.config(["train.epochs=2"] + extra)   // 48 steps, checkpoints every 8
        return try InProcessCluster.run(size: dirs.count, timeout: 60) { transport in
            let trainer = Trainer(config: config, transport: transport, runDirectory: dirs[transport.rank],
                                  log: { line in log?.append("rank \(transport.rank): \(line)"); if transport.rank == 0 { onLine?(line) } })
            trainer.resumeIfPresent = resumeIfPresent
            trainer.stopRequest = stops.indices.contains(transport.rank) ? stops[transport.rank] : nil
            trainer.continuingRunID = continuing
            trainer.target = target
            trainer.timelinePath = timeline
            trainer.stepLines = onLine == nil ? 0 : 1
            return try trainer.run(resume: resume, stopAfter: stopAfter)
        }
    }

    func checkpoints(_ dir: String) -> [String] {
        CheckpointStore(runDirectory: dir, keep: .max).existing().map { ($0 as NSString).lastPathComponent }
    }

    func newest(_ dir: String) throws -> Checkpoint {
        try XCTUnwrap(try CheckpointStore(runDirectory: dir, keep: .max).loadNewestValid(validate: { _ in }).found).checkpoint
    }

    /// Property: with `per_host` (the default) every distinct run directory gets the whole
    /// checkpoint — from one rank per directory, found by looking (ranks 1 and 2 share one
    /// and it is written once) — and the copies hold the same parameters and optimizer state;
    /// with `rank0` only rank 0's directory does, and the log says what that risks.
    func testEveryRunDirectoryHoldsTheCheckpointWithPerHost() throws {
        let a = temporaryDirectory(), b = temporaryDirectory()
        let lines = LockedLines()
        _ = try train([a, b, b], stopAfter: 16, log: lines)
        XCTAssertEqual(checkpoints(a), ["step-00000016.ckpt", "step-00000008.ckpt"])
        XCTAssertEqual(checkpoints(b), checkpoints(a))
        let (inA, inB) = (try newest(a), try newest(b))
        XCTAssertEqual(inA.parameters, inB.parameters)
        XCTAssertEqual(inA.optimizerState, inB.optimizerState)
        XCTAssertTrue(lines.all.contains { $0.contains("one copy in each of 2 run directories") && $0.contains("ranks 0, 1") }, "\(lines.all)")
        // A time-boxed run says it is not finished, and how it goes on.
        XCTAssertTrue(lines.all.contains { $0.contains("stopped at step 16 of 48 (--stop-after), with a checkpoint; 'train … --resume' continues") }, "\(lines.all)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: b).filter { $0.contains("probe") }
        XCTAssertEqual(leftovers, [], "probe files are removed")

        let c = temporaryDirectory(), d = temporaryDirectory()
        let warned = LockedLines()
        _ = try train([c, d, d], ["checkpoint.replicate=rank0"], stopAfter: 16, log: warned)
        XCTAssertEqual(checkpoints(c), ["step-00000016.ckpt", "step-00000008.ckpt"])
        XCTAssertEqual(checkpoints(d), [], "rank0: no copy beside rank 0's")
        XCTAssertTrue(warned.all.contains { $0.contains("losing rank 0's host loses every checkpoint") }, "\(warned.all)")

        // A rank that writes no checkpoint keeps its own error feedback for the newest
        // checkpoint.keep steps and one more (here 3 of 5 steps), as the writer prunes its
        // directory: the one more for a resume from the previous checkpoint if the newest failed.
        let e = temporaryDirectory(), f = temporaryDirectory()
        _ = try train([e, f], ["checkpoint.replicate=rank0", "checkpoint.keep=2", "comm.codec=int8", "comm.error_feedback=true"], stopAfter: 40)
        XCTAssertEqual(checkpoints(e), ["step-00000040.ckpt", "step-00000032.ckpt"])
        let own = try FileManager.default.contentsOfDirectory(atPath: f + "/checkpoints").sorted()
        XCTAssertEqual(own, ["step-00000024.ef-rank-1", "step-00000032.ef-rank-1", "step-00000040.ef-rank-1"])
    }

    /// Property: a resume takes the newest valid checkpoint that any rank's directory holds —
    /// rank 0's directory gone entirely (its host lost), or holding an older one than another
    /// rank's, which then keeps a copy — and ends bit-identical to a run that was never interrupted.
    func testResumeTakesTheNewestCheckpointAnySurvivingDirectoryHolds() throws {
        let whole = try train([temporaryDirectory(), temporaryDirectory()])[0]!
        // Rank 0's host lost with its disk: the directory does not exist on rank 0.
        let (a, b) = (temporaryDirectory(), temporaryDirectory())
        _ = try train([a, b], stopAfter: 16)
        try FileManager.default.removeItem(atPath: a)
        let lines = LockedLines()
        let resumed = try train([a, b], resume: true, log: lines)[0]!
        XCTAssertEqual(resumed.resumed_from_step, 16)
        XCTAssertEqual(resumed.param_hash, whole.param_hash)
        XCTAssertTrue(lines.all.contains { $0.hasPrefix("rank 1: resuming from \(b)/checkpoints/step-00000016.ckpt (rank 1's copy") }, "\(lines.all)")

        // Rank 0 holds an older checkpoint than rank 1 (its newest was lost): rank 1's wins;
        // then the other way round.
        // The directory that lacked it keeps a copy at once (before the next periodic checkpoint,
        // 24: stopped at 20 here), so losing the other host now would not lose the run.
        for older in [0, 1] {
            let dirs = [temporaryDirectory(), temporaryDirectory()]
            _ = try train(dirs, stopAfter: 16)
            try FileManager.default.removeItem(atPath: dirs[older] + "/checkpoints/step-00000016.ckpt")
            _ = try train(dirs, resume: true, stopAfter: 20)
            let copy = try Checkpoint(decoding: Array(try Data(contentsOf: URL(fileURLWithPath: dirs[older] + "/checkpoints/step-00000016.ckpt"))))
            XCTAssertEqual(copy.step, 16)
            // Resumed from the copy alone: the other directory lost, and this one's step 20 with it.
            try FileManager.default.removeItem(atPath: dirs[1 - older])
            try FileManager.default.removeItem(atPath: dirs[older] + "/checkpoints/step-00000020.ckpt")
            let again = try train(dirs, resume: true)[0]!
            XCTAssertEqual(again.resumed_from_step, 16, "rank \(older) held only step 8")
            XCTAssertEqual(again.param_hash, whole.param_hash)
        }
    }

    /// Property: a stop requested on one rank only (SIGUSR1's effect; here rank 1, after step
    /// 12, while the checkpoint of step 8 may still be being written) stops every rank at the
    /// next checkpoint (16), with it on disk, and the resumed run ends bit-identical to an
    /// uninterrupted one — with the write asynchronous and synchronous alike.
    func testAStopRequestStopsAtTheNextCheckpointAndResumesBitIdentically() throws {
        for async in [true, false] {
            let extra = ["checkpoint.async=\(async)", "comm.codec=int8"]
            let whole = try train([temporaryDirectory(), temporaryDirectory()], extra)[0]!
            let dir = temporaryDirectory()
            let stop = StopRequest()
            let stopped = try train([dir, dir], extra, stops: [nil, stop], onLine: { if $0 == "ringsgd: at step 12" { stop.request() } })
            XCTAssertEqual(stopped.map { $0?.steps }, [16, 16], "async \(async): every rank stops at the checkpoint after the request")
            XCTAssertEqual(checkpoints(dir), ["step-00000016.ckpt", "step-00000008.ckpt"])
            // The epoch's steps so far are on record, marked partial (steps 0 … 16 of 24).
            let records = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
                .map { try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
            XCTAssertEqual(records.count, 1, "async \(async): \(records)")
            XCTAssertEqual(records.last?["step"] as? Int, 16, "\(records)")
            XCTAssertEqual(records.last?["partial"] as? Bool, true, "\(records)")
            let resumed = try train([dir, dir], extra, resume: true)[0]!
            XCTAssertEqual(resumed.resumed_from_step, 16)
            XCTAssertEqual(resumed.param_hash, whole.param_hash, "async \(async)")
        }
    }

    /// Property: without periodic checkpoints (checkpoint.every_steps 0) a stop requested on one
    /// rank after step 10 stops every rank at the next replica check (12, every 4) — without
    /// replica checks either, at the epoch's end (24) — with the checkpoint of that step, and
    /// the resumed run ends bit-identical to an uninterrupted one.
    func testAStopRequestWithoutPeriodicCheckpointsStopsAtTheNextReplicaCheck() throws {
        // Without replica checks either, at the epoch's end (24 steps an epoch).
        for (extra, stopsAt) in [(["checkpoint.every_steps=0"], 12), (["checkpoint.every_steps=0", "consistency.check_every_steps=0"], 24)] {
            let whole = try train([temporaryDirectory(), temporaryDirectory()], extra)[0]!
            let dir = temporaryDirectory()
            let stop = StopRequest()
            let stopped = try train([dir, dir], extra, stops: [stop, nil], onLine: { if $0 == "ringsgd: at step 10" { stop.request() } })
            XCTAssertEqual(stopped.map { $0?.steps }, [stopsAt, stopsAt], "\(extra)")
            XCTAssertEqual(checkpoints(dir), [String(format: "step-%08d.ckpt", stopsAt)])
            let resumed = try train([dir, dir], extra, resume: true)[0]!
            XCTAssertEqual(resumed.resumed_from_step, stopsAt)
            XCTAssertEqual(resumed.param_hash, whole.param_hash, "\(extra)")
        }
    }

    /// Property: a checkpoint write removes the temporary file a killed writer on this host
    /// left in the checkpoint directory (model-sized: relaunch after relaunch would fill the disk).
    func testACheckpointWriteRemovesAKilledWritersTemporaryFile() throws {
        let dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/checkpoints", withIntermediateDirectories: true)
        let host = FileSystem.hostName
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        let stale = dir + "/checkpoints/step-00000024.ckpt.tmp.\(host).\(child.processIdentifier).9a"
        XCTAssertTrue(FileManager.default.createFile(atPath: stale, contents: Data(count: 64)))
        // Left by a writer killed two minutes ago (a fresher one may be a live writer's).
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-120)], ofItemAtPath: stale)
        _ = try train([dir, dir], stopAfter: 8)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    /// Property: a stop agreed at the very evaluation that reaches --target (evaluations are
    /// stop points) ends the run complete, its target reached — not "stopped on request", which
    /// a supervisor would relaunch past its target.
    func testAStopAtTheEvaluationThatReachesTheTargetEndsTheRunComplete() throws {
        let dir = temporaryDirectory(), stop = StopRequest(), lines = LockedLines()
        let summaries = try train([dir, dir], ["checkpoint.every_steps=0", "consistency.check_every_steps=0", "train.eval_every_steps=4"],
                                  stops: [stop, nil], target: try TrainingTarget(parsing: "test_accuracy=0.01"), log: lines,
                                  onLine: { if $0 == "ringsgd: at step 2" { stop.request() } })
        XCTAssertEqual(summaries[0]?.target_step, 4)
        XCTAssertEqual(summaries[0]?.steps, 4)
        XCTAssertFalse(lines.all.contains { $0.contains("on request") }, "\(lines.all)")
    }

    /// Property: a run that stopped at its --target is complete for that target — a resume
    /// with the same target has nothing left to do and keeps its summary (a job script that
    /// always passes --resume, elastic.sh's relaunch), while a resume with none trains on to
    /// the run's end, saying so.
    func testAResumeOfARunThatReachedItsTargetDoesNotTrainPastIt() throws {
        let dir = temporaryDirectory(), target = try TrainingTarget(parsing: "test_accuracy=0.01")
        let extra = ["train.eval_every_steps=4"]
        let reached = try train([dir, dir], extra, target: target)
        XCTAssertEqual(reached[0]?.target_step, 4)
        var written = try newest(dir)
        XCTAssertEqual(written.reachedTarget, "test_accuracy=0.01")
        written.reachedTarget = ""
        XCTAssertThrowsError(try Checkpoint(decoding: written.encoded())) { XCTAssertTrue("\($0)".contains("reached target (TRGT)"), "\($0)") }
        let summary = try Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))
        let again = LockedLines()
        XCTAssertEqual(try train([dir, dir], extra, resume: true, target: target, log: again).compactMap { $0 }.count, 0)
        XCTAssertTrue(again.all.contains { $0.contains("nothing left to do") && $0.contains("reached its target test_accuracy=0.01 there") }, "\(again.all)")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")), summary, "summary.json kept")
        let onward = LockedLines()
        let finished = try train([dir, dir], extra, resume: true, log: onward)
        XCTAssertEqual(finished[0]?.steps, 48)
        XCTAssertTrue(onward.all.contains { $0.contains("stopped at its target test_accuracy=0.01 at step 4; training on to the run's end") }, "\(onward.all)")
        XCTAssertNil(try newest(dir).reachedTarget, "the run's end is not a target's")
    }

    /// Property: without a run id to continue, run directories holding the checkpoints of two
    /// different runs are refused on every rank, naming them (before, the newest step won,
    /// whichever run it was); with RINGSGD_RUN_ID the named run's checkpoint is taken.
    func testAResumeAcrossCheckpointsOfTwoRunsIsRefusedWithoutARunID() throws {
        let (ours, stale) = (temporaryDirectory(), temporaryDirectory())
        _ = try train([ours, ours], stopAfter: 8)
        _ = try train([stale, stale], ["seed=7"], stopAfter: 16)
        let id = try XCTUnwrap(try newest(ours).runID)
        XCTAssertThrowsError(try train([ours, stale], resume: true)) { error in
            XCTAssertTrue("\(error)".contains("hold the checkpoints of different runs (rank 0: run \(String(format: "%016llx", id)) at step 8, rank 1: run"), "\(error)")
            XCTAssertTrue("\(error)".contains("set RINGSGD_RUN_ID"), "\(error)")
        }
        let resumed = try train([ours, stale], resume: true, continuing: id)
        XCTAssertEqual(resumed[0]?.resumed_from_step, 8)
    }

    /// Property: a periodic checkpoint at an evaluation step is written after that step's
    /// evaluation — so a crash between the two cannot lose the evaluation (and a target reached
    /// there): a run resumed from the checkpoint starts after it. By the timeline's spans.
    func testTheCheckpointOfAnEvaluationStepFollowsTheEvaluation() throws {
        let dir = temporaryDirectory(), timeline = dir + ".timeline.json"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: timeline) }
        _ = try train([dir, dir], ["train.eval_every_steps=8", "checkpoint.every_steps=8"], stopAfter: 16, timeline: timeline)
        let trace = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: timeline))) as? [String: Any])
        let events = try XCTUnwrap(trace["traceEvents"] as? [[String: Any]]).filter { ($0["pid"] as? Int) == 0 }
        func spans(_ name: String) -> [(start: Double, end: Double)] {
            events.filter { ($0["name"] as? String) == name }
                .map { (($0["ts"] as? Double) ?? 0, (($0["ts"] as? Double) ?? 0) + (($0["dur"] as? Double) ?? 0)) }
                .sorted { $0.start < $1.start }
        }
        let (evaluations, checkpoints) = (spans("evaluate"), spans("checkpoint"))
        XCTAssertGreaterThanOrEqual(evaluations.count, 2, "evaluations at steps 8 and 16")
        XCTAssertGreaterThanOrEqual(checkpoints.count, 2, "checkpoints at steps 8 and 16")
        XCTAssertGreaterThanOrEqual(checkpoints[0].start, evaluations[0].end, "step 8: the checkpoint after the evaluation")
    }

    /// Property: a per-rank file carries its run's identity, and a resume loads only its own
    /// run's — an earlier run's error-feedback file at the same step and path is refused with a
    /// warning (the rank takes an equal share of the summed residual), as the checkpoint of
    /// another run is; a file written before files carried their run is read as it is, and the
    /// resume is then bit-identical.
    func testPerRankFilesOfAnotherRunAreNotLoaded() throws {
        let extra = ["comm.codec=int8", "comm.error_feedback=true"]
        let whole = try train([temporaryDirectory(), temporaryDirectory()], extra)[0]!
        let (ours, other) = (temporaryDirectory(), temporaryDirectory())
        _ = try train([ours, ours], extra, stopAfter: 16)
        _ = try train([other, other], extra + ["seed=7"], stopAfter: 16)
        let file = "/checkpoints/step-00000016.ef-rank-1"
        let saved = try Data(contentsOf: URL(fileURLWithPath: ours + file))
        XCTAssertEqual(Array(saved.prefix(8)), Array("RSGDRNK1".utf8))
        try FileManager.default.removeItem(atPath: ours + file)
        try FileManager.default.copyItem(atPath: other + file, toPath: ours + file)
        let copy = temporaryDirectory()
        try FileManager.default.copyItem(atPath: ours, toPath: copy)
        let lines = LockedLines()
        _ = try train([ours, ours], extra, resume: true, log: lines)
        XCTAssertTrue(lines.all.contains { $0.contains("rank 1: its own error-feedback file for step 16 is missing, damaged or another run's") }, "\(lines.all)")
        // Our own file as the format before it named its run: payload and hash only.
        var legacy = Array(saved.dropFirst(16).dropLast(8))
        withUnsafeBytes(of: FastHash.hash(legacy).littleEndian) { legacy += $0 }
        try Data(legacy).write(to: URL(fileURLWithPath: copy + file))
        let resumed = try train([copy, copy], extra, resume: true)[0]!
        XCTAssertEqual(resumed.param_hash, whole.param_hash)
    }

    /// Property: with the run's identity to continue (RINGSGD_RUN_ID, set by the supervisor), a
    /// resume skips a newer checkpoint of another run left in one rank's directory under the
    /// same path, and continues its own; without it, the newest checkpoint wins.
    func testAResumeContinuesOnlyItsOwnRunWhenToldWhichOne() throws {
        let whole = try train([temporaryDirectory(), temporaryDirectory()])[0]!
        let (a, b) = (temporaryDirectory(), temporaryDirectory())
        _ = try train([a, b], stopAfter: 16)
        let ours = try XCTUnwrap(try newest(a).runID)
        let other = temporaryDirectory()
        _ = try train([other, other], stopAfter: 24)
        XCTAssertNotEqual(try newest(other).runID, ours, "a fresh run has an identity of its own")
        try FileManager.default.copyItem(atPath: other + "/checkpoints/step-00000024.ckpt", toPath: b + "/checkpoints/step-00000024.ckpt")
        let untold = temporaryDirectory()
        try FileManager.default.copyItem(atPath: b, toPath: untold)
        let lines = LockedLines()
        let resumed = try train([a, b], resumeIfPresent: true, continuing: ours, log: lines)[0]!
        XCTAssertEqual(resumed.resumed_from_step, 16)
        XCTAssertEqual(resumed.param_hash, whole.param_hash)
        XCTAssertTrue(lines.all.contains { $0.contains("skipping checkpoint step-00000024.ckpt: belongs to another run") }, "\(lines.all)")
        XCTAssertEqual(try newest(a).runID, ours, "the resumed run keeps its identity")
        let newestWins = try train([temporaryDirectory(), untold], resume: true)[0]!
        XCTAssertEqual(newestWins.resumed_from_step, 24)
    }

    /// Property: another run's checkpoints of later steps left in a rank's directory (a host's
    /// disk from an earlier, longer run) do not make this run prune its own: each write counts
    /// only the checkpoints up to its step, so the directory ends holding this run's newest
    /// (with `keep` 3, counting the three foreign ones would delete each checkpoint as it is written).
    func testAnotherRunsLaterCheckpointsDoNotPruneThisRunsOwn() throws {
        let (a, b) = (temporaryDirectory(), temporaryDirectory())
        _ = try train([a, b], stopAfter: 16)
        let ours = try XCTUnwrap(try newest(a).runID)
        let other = temporaryDirectory()
        _ = try train([other, other], stopAfter: 8)
        for step in [100, 200, 300] {
            try FileManager.default.copyItem(atPath: other + "/checkpoints/step-00000008.ckpt", toPath: b + "/checkpoints/step-00000\(step).ckpt")
        }
        _ = try train([a, b], resumeIfPresent: true, continuing: ours)
        XCTAssertEqual(checkpoints(b), ["step-00000300.ckpt", "step-00000200.ckpt", "step-00000100.ckpt",
                                        "step-00000048.ckpt", "step-00000040.ckpt", "step-00000032.ckpt"])
        XCTAssertEqual(checkpoints(a), ["step-00000048.ckpt", "step-00000040.ckpt", "step-00000032.ckpt"])
    }

    /// Property: checkpoints are ordered by their step's number, also past the names' eight
    /// digits (step 100 000 000 is newer than 99 999 999, though its name sorts first as text).
    func testCheckpointsAreOrderedByStepNumber() throws {
        let store = CheckpointStore(runDirectory: temporaryDirectory(), keep: 3)
        try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
        for step in [99_999_999, 100_000_000, 8] { _ = FileManager.default.createFile(atPath: store.path(step: step), contents: Data()) }
        _ = FileManager.default.createFile(atPath: store.directory + "/step-00000009.ckpt.tmp", contents: Data())
        XCTAssertEqual(store.existing().map { ($0 as NSString).lastPathComponent },
                       ["step-100000000.ckpt", "step-99999999.ckpt", "step-00000008.ckpt"])
    }

    /// Property: `--resume-if-present` starts a fresh run where no rank's directory holds a
    /// checkpoint, and resumes where any does (here only rank 1's).
    func testResumeIfPresentStartsOrResumes() throws {
        let (a, b) = (temporaryDirectory(), temporaryDirectory())
        let first = try train([a, b], resumeIfPresent: true, stopAfter: 16)[0]!
        XCTAssertEqual(first.resumed_from_step, 0)
        try FileManager.default.removeItem(atPath: a)
        let second = try train([a, b], resumeIfPresent: true)[0]!
        XCTAssertEqual(second.resumed_from_step, 16)
    }
}
