import Foundation
import GradientSync
import InProcessTransport
import Training
import XCTest

/// `comm.sync: local_sgd | diloco` and `train --target` on the in-process transport: the
/// outer step's algebra, replicas identical where they must be, resume between outer steps.
final class LocalStepsTests: XCTestCase {
    func temporaryDirectory() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-local-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func train(ranks: Int, _ extra: [String], dir: String, resume: Bool = false, stopAfter: Int? = nil,
               target: String? = nil) throws -> [RunSummary] {
        let config = try TrainerTests.config(extra)
        let goal = try target.map(TrainingTarget.init(parsing:))
        return try InProcessCluster.run(size: ranks, timeout: 60, sends: .rendezvous) { transport in
            let trainer = Trainer(config: config, transport: transport, runDirectory: dir, log: { _ in })
            trainer.target = goal
            return try trainer.run(resume: resume, stopAfter: stopAfter)!
        }
    }

    /// The final checkpoint's parameters (θ_outer with local steps).
    func finalParameters(_ dir: String) throws -> [Float] {
        try Checkpoint.locate(file: nil, runDirectory: dir).checkpoint.parameters
    }

    /// Property: with H = 1, the `average` outer rule and plain SGD inside, local SGD is
    /// every-step averaging of gradients. Exactly: θ' = θ − mean_r(θ − (θ − γ·g_r)) against
    /// θ' = θ − γ·mean_r(g_r) — equal in real arithmetic, so equal here up to the rounding of
    /// the pseudo-gradient θ − θ_r (24 steps: every parameter within 2e-6, while the steps move
    /// them by over 1000 times as much).
    func testOneLocalStepWithAveragingIsEveryStepAveraging() throws {
        let plain = ["optimizer.momentum=0", "schedule.name=constant"]
        let everyStep = temporaryDirectory(), local = temporaryDirectory()
        _ = try train(ranks: 2, plain, dir: everyStep)
        let summaries = try train(ranks: 2, plain + ["comm.sync=local_sgd", "comm.sync_every=1"], dir: local)
        XCTAssertEqual(summaries[0].outer_steps, 24, "one outer step per step")
        let a = try finalParameters(everyStep), b = try finalParameters(local)
        XCTAssertEqual(a.count, b.count)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(worst, 2e-6, "H = 1 local SGD departs from every-step averaging by \(worst)")
        // For scale: the last 16 steps moved the parameters by far more than that.
        let earlier = try Checkpoint.locate(file: CheckpointStore(runDirectory: everyStep, keep: 3).path(step: 8), runDirectory: everyStep)
        let moved = zip(a, earlier.checkpoint.parameters).map { abs($0 - $1) }.max() ?? 0
        XCTAssertGreaterThan(moved, 1000 * worst)
        XCTAssertGreaterThan(zip(a, b).filter { $0 != $1 }.count, 0, "the two paths round differently; an exact match would mean the test compares a run with itself")
    }

    /// Property: with local steps, θ_outer and the outer optimizer's state are identical on every
    /// rank after every outer step (the trainer checks after each; the summaries' hashes agree),
    /// at 2, 3 and 4 ranks, for exact and compressed pseudo-gradients, and the model learns.
    func testReplicasAgreeAtOuterStepsAndTheModelLearns() throws {
        for (ranks, codec) in [(2, "none"), (3, "int8"), (4, "sign")] {
            for mode in ["local_sgd", "diloco"] {
                let extra = ["comm.sync=\(mode)", "comm.sync_every=5", "comm.codec=\(codec)", "comm.error_feedback=\(codec != "none")"]
                    + (mode == "diloco" ? ["comm.outer.lr=0.5"] : [])
                let summaries = try train(ranks: ranks, extra, dir: temporaryDirectory())
                XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1, "\(mode) \(codec) np \(ranks)")
                XCTAssertEqual(summaries[0].outer_steps, 5, "outer steps after 5, 10, 15, 20 and the last (24)")
                XCTAssertGreaterThan(summaries[0].test_accuracy, 0.6, "\(mode) \(codec) np \(ranks) learns")
                XCTAssertEqual(summaries[0].sync, mode)
            }
        }
    }

    /// Property: only outer steps communicate — bytes sent with H = 6 are a sixth of every-step's
    /// (the same ring and codec carry the same number of values per all-reduce).
    func testOnlyOuterStepsSendBytes() throws {
        let every = try train(ranks: 2, [], dir: temporaryDirectory())[0]
        let local = try train(ranks: 2, ["comm.sync=diloco", "comm.sync_every=6"], dir: temporaryDirectory())[0]
        let a = try XCTUnwrap(every.bytes_sent), b = try XCTUnwrap(local.bytes_sent)
        XCTAssertGreaterThan(b, 0)
        XCTAssertEqual(a / b, 6, accuracy: 1e-9, "24 all-reduces against 4")
    }

    /// Property: stopping between outer steps (inner parameters and optimizer state differ per
    /// rank, error feedback pending) and resuming ends bit-identical to the uninterrupted run —
    /// also when the stop falls inside the every-step warm-up, or right at an outer step.
    func testResumeBetweenOuterStepsIsBitIdentical() throws {
        let base = ["comm.sync=diloco", "comm.sync_every=5", "comm.codec=int8", "comm.error_feedback=true", "optimizer.name=adamw", "optimizer.lr=0.01"]
        for (extra, stop) in [([String](), 8), (["comm.sync_warmup_steps=6"], 4), (["comm.sync_warmup_steps=6"], 9), ([String](), 10)] {
            let whole = try train(ranks: 3, base + extra, dir: temporaryDirectory())[0]
            let dir = temporaryDirectory()
            _ = try train(ranks: 3, base + extra, dir: dir, stopAfter: stop)
            let resumed = try train(ranks: 3, base + extra, dir: dir, resume: true)[0]
            XCTAssertEqual(resumed.resumed_from_step, stop)
            XCTAssertEqual(resumed.param_hash, whole.param_hash, "\(extra) stopped after \(stop)")
        }
    }

    /// Property: a non-finite local gradient (injected on rank 5 mod 3 = 2 at step 5) is skipped
    /// by that rank alone — no step is skipped by all — the outer steps go on and replicas agree.
    func testANonFiniteLocalStepIsSkippedByItsRankAlone() throws {
        let summaries = try train(ranks: 3, ["comm.sync=diloco", "comm.sync_every=4", "consistency.inject_nonfinite_at=[5]"],
                                  dir: temporaryDirectory())
        XCTAssertEqual(summaries.map(\.skipped_steps), [0, 0, 0])
        XCTAssertEqual(summaries.map(\.locally_skipped_steps), [0, 0, 1])
        XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1)
        XCTAssertGreaterThan(summaries[0].test_accuracy, 0.6)
    }

    /// Property: a non-finite pseudo-gradient on one rank (injected at the outer step after step 7)
    /// makes every rank discard that outer step — one skipped step everywhere, replicas identical
    /// — and training goes on to learn; whole and with streaming fragments.
    func testANonFiniteOuterStepIsDiscardedByEveryRank() throws {
        for streaming in [[String](), ["model.kind=mlp", "model.hidden=[32, 16]", "comm.fragments=2", "comm.outer_delay=1"]] {
            let summaries = try train(ranks: 3, ["comm.sync=diloco", "comm.sync_every=4", "comm.codec=int8", "comm.error_feedback=true",
                                                 "consistency.inject_nonfinite_outer_at=[7]"] + streaming, dir: temporaryDirectory())
            XCTAssertEqual(summaries.map(\.skipped_steps), [1, 1, 1], "\(streaming)")
            XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1)
            XCTAssertGreaterThan(summaries[0].test_accuracy, 0.6, "trains on after the discarded outer step")
        }
    }

    /// Property: `--target` stops every rank at the first evaluation that reaches it and records
    /// the step, the training time and the bytes to it; a run between outer steps ends on the
    /// θ_outer it evaluated (replicas identical).
    func testATargetStopsTheRunWhereItIsReached() throws {
        for extra in [["train.eval_every_steps=3"], ["train.eval_every_steps=3", "comm.sync=diloco", "comm.sync_every=4"]] {
            let summaries = try train(ranks: 2, extra, dir: temporaryDirectory(), target: "test_accuracy=0.5")
            let s = summaries[0]
            let step = try XCTUnwrap(s.target_step, "\(extra): reached")
            XCTAssertEqual(step % 3, 0)
            XCTAssertLessThan(step, 24, "\(extra): a separable problem reaches 0.5 before the end")
            XCTAssertEqual(s.steps, step, "the run stops there")
            XCTAssertGreaterThanOrEqual(s.test_accuracy, 0.5)
            XCTAssertGreaterThan(try XCTUnwrap(s.time_to_target_seconds), 0)
            XCTAssertNotNil(s.bytes_to_target)
            XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1)
        }
        let unreachable = try train(ranks: 2, ["train.eval_every_steps=6"], dir: temporaryDirectory(), target: "test_loss=1e-9")[0]
        XCTAssertNil(unreachable.target_step)
        XCTAssertEqual(unreachable.steps, 24, "an unreached target lets the run end as configured")
    }

    /// Property: the evaluation that reaches `--target` is curve.jsonl's last point, also when
    /// it is an epoch end's (24 steps an epoch, a curve point every 30: the first evaluation is
    /// the epoch end's), so a reader of the curve finds the target where summary.json says.
    func testTheEvaluationThatReachesTheTargetIsTheCurvesLastPoint() throws {
        let dir = temporaryDirectory()
        let s = try train(ranks: 2, ["train.epochs=2", "train.eval_every_steps=30"], dir: dir, target: "test_accuracy=0.3")[0]
        XCTAssertEqual(s.target_step, 24, "reached at the first epoch's end")
        let points = try String(contentsOfFile: dir + "/curve.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(CurvePoint.self, from: Data($0.utf8)) }
        XCTAssertEqual(points.map(\.step), [24])
        XCTAssertEqual(points.last?.test_accuracy, s.test_accuracy)
    }

    /// Property: between outer steps the evaluation is of θ_outer, and leaves the ranks' inner
    /// parameters as they were. At step 3 of H = 4 no outer step has run, so θ_outer is the
    /// initial model: the curve's loss there is that of a run whose steps do not move (lr 0).
    /// And a run evaluating mid-round ends on the same bits as one that does not.
    func testTheEvaluationBetweenOuterStepsIsOfThetaOuterAndPutsTheInnerModelBack() throws {
        func curveLoss(_ extra: [String]) throws -> (Double, String) {
            let dir = temporaryDirectory()
            let s = try train(ranks: 2, ["comm.sync=diloco", "comm.sync_every=4", "train.eval_every_steps=3"] + extra, dir: dir)[0]
            let line = try XCTUnwrap(try String(contentsOfFile: dir + "/curve.jsonl", encoding: .utf8).split(separator: "\n").first)
            let point = try JSONDecoder().decode(CurvePoint.self, from: Data(line.utf8))
            XCTAssertEqual(point.step, 3)
            return (point.test_loss, s.param_hash)
        }
        let (learning, hash) = try curveLoss([])
        let (initial, _) = try curveLoss(["optimizer.lr=0"])
        XCTAssertEqual(learning, initial, "step 3 evaluates θ_outer, the initial model")
        let unevaluated = try train(ranks: 2, ["comm.sync=diloco", "comm.sync_every=4"], dir: temporaryDirectory())[0]
        XCTAssertEqual(unevaluated.param_hash, hash, "the evaluations changed nothing the run goes on from")
    }

    /// Property: streaming fragments (P of them in turn, each applied τ local steps after its
    /// all-reduce starts on the communication thread, with and without mixing) keep θ_outer
    /// identical on every rank, learn, differ from the same fragments without a delay, and
    /// resume bit-identically from a checkpoint taken while a fragment was in flight.
    func testStreamingFragments() throws {
        // An mlp has three layers with parameters: three fragments of whole layers.
        let mlp = ["model.kind=mlp", "model.hidden=[32, 16]"]
        for streaming in [["comm.fragments=3", "comm.sync_every=6", "comm.outer_delay=1"],
                          ["comm.fragments=2", "comm.sync_every=8", "comm.outer_delay=3", "comm.outer_mix=0.25"]] {
            // No replica checks or checkpoints between outer steps: nothing but the schedule waits for a fragment.
            let extra = mlp + streaming + ["comm.sync=diloco", "comm.codec=int8", "comm.error_feedback=true", "comm.outer.lr=0.5",
                                           "consistency.check_every_steps=0", "checkpoint.every_steps=0"]
            let whole = try train(ranks: 3, extra, dir: temporaryDirectory())
            XCTAssertEqual(Set(whole.map(\.param_hash)).count, 1, "\(streaming)")
            XCTAssertGreaterThan(whole[0].test_accuracy, 0.6, "\(streaming) learns")
            // The same fragments without a delay: a different algorithm, different bits (the delay is real).
            let blocking = try train(ranks: 3, extra + ["comm.outer_delay=0"], dir: temporaryDirectory())[0]
            XCTAssertNotEqual(blocking.param_hash, whole[0].param_hash, "\(streaming)")
            if streaming.contains("comm.outer_mix=0.25") {
                // Mixing is applied: without it (α = 0), other bits. (The mix's formula, α·θ +
                // (1 − α)·θ_outer, is checked against a reference in OuterSynchronizerTests.)
                let unmixed = try train(ranks: 3, extra + ["comm.outer_mix=0"], dir: temporaryDirectory())[0]
                XCTAssertNotEqual(unmixed.param_hash, whole[0].param_hash)
            }
            // Offsets: P = 3, H = 6 → fragments start after local steps ≡ 0, 2, 4 (mod 6); the one
            // started after step 8 (≡ 2) is in flight at step 8 (delay 1). P = 2, H = 8 → ≡ 0, 4;
            // the one started after step 4 is applied after step 7: in flight at 5 and 6.
            let stop = streaming.contains("comm.fragments=3") ? 8 : 6
            let dir = temporaryDirectory()
            _ = try train(ranks: 3, extra, dir: dir, stopAfter: stop)
            let resumed = try train(ranks: 3, extra, dir: dir, resume: true)[0]
            XCTAssertEqual(resumed.resumed_from_step, stop, "\(streaming)")
            XCTAssertEqual(resumed.param_hash, whole[0].param_hash, "\(streaming): resumed after step \(stop) with a fragment in flight")
        }
    }

    /// Property: a run that ends partway through an outer round ends on the mean of the replicas,
    /// without an outer-optimizer step. Resumed after a whole round (step 12, H = 4) with a
    /// learning rate of 0, its one more local step changes nothing, so Δ̄ = 0 and the final model
    /// is step 12's θ_outer bit for bit — where an outer step would have added 0.7 · 0.9² of the
    /// Nesterov buffer — and that last synchronisation counts as an outer step.
    func testARunEndingPartwayThroughARoundEndsOnTheReplicasMean() throws {
        let extra = ["comm.sync=diloco", "comm.sync_every=4", "train.max_steps=13", "schedule.name=constant"]
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, extra, dir: dir, stopAfter: 12)
        let store = CheckpointStore(runDirectory: dir, keep: 3)
        let atTwelve = try Checkpoint.locate(file: store.path(step: 12), runDirectory: dir).checkpoint.parameters
        let summaries = try train(ranks: 2, extra + ["optimizer.lr=0"], dir: dir, resume: true)
        XCTAssertEqual(summaries[0].outer_steps, 4, "after steps 4, 8, 12 and the last (13)")
        let final = try Checkpoint.locate(file: nil, runDirectory: dir).checkpoint
        XCTAssertEqual(final.step, 13)
        XCTAssertEqual(final.parameters, atTwelve, "a step of no progress at the run's end moved the model")
        // For scale: the rounds before moved the model (the momentum an outer step would apply is not 0).
        let atEight = try Checkpoint.locate(file: store.path(step: 8), runDirectory: dir).checkpoint.parameters
        XCTAssertGreaterThan(zip(atEight, atTwelve).map { abs($0 - $1) }.max() ?? 0, 1e-3)
    }

    /// Property: a resume whose `comm.outer` no longer fits the checkpoint's outer optimizer state
    /// (momentum 0 kept no buffer, 0.9 needs one) is refused in one line that names comm.outer,
    /// not in the inner optimizer's words.
    func testAResumeWithAnotherOuterMomentumIsRefusedNamingCommOuter() throws {
        let extra = ["comm.sync=diloco", "comm.sync_every=4", "comm.outer.optimizer=sgd"]
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, extra + ["comm.outer.momentum=0"], dir: dir, stopAfter: 8)
        XCTAssertThrowsError(try train(ranks: 2, extra + ["comm.outer.momentum=0.9"], dir: dir, resume: true)) {
            XCTAssertTrue("\($0)".contains("the checkpoint's outer optimizer state does not fit comm.outer (optimizer sgd, momentum 0.9)"), "\($0)")
            XCTAssertTrue("\($0)".contains("resume with the comm.outer settings it was written with"), "\($0)")
            XCTAssertFalse("\($0)".contains("\n"), "\($0)")
        }
    }

    /// Property: a discarded streaming outer step clears the error-feedback memory of its own
    /// fragment only; the other fragment keeps what its encodings have not yet delivered. P = 2,
    /// H = 4, τ = 1: fragment 1 (the mlp's last two layers, values 8224 ..< 8820: 400 values
    /// over the half-way share against 3814 for the other boundary) starts after local step 6
    /// with an infinite Δ on one rank (injected after step index 5) and is discarded after
    /// step 7, where the run stops; fragment 0's int8 error from its outer step after step 4
    /// is still in the checkpoint's sum of the ranks' memories.
    func testADiscardedFragmentClearsOnlyItsOwnErrorFeedback() throws {
        let extra = ["model.kind=mlp", "model.hidden=[32, 16]", "comm.sync=diloco", "comm.sync_every=4", "comm.fragments=2",
                     "comm.outer_delay=1", "comm.codec=int8", "comm.error_feedback=true", "consistency.inject_nonfinite_outer_at=[5]"]
        let dir = temporaryDirectory()
        let summaries = try train(ranks: 2, extra, dir: dir, stopAfter: 7)
        XCTAssertEqual(summaries.map(\.skipped_steps), [1, 1], "fragment 1's outer step is discarded on both ranks")
        let checkpoint = try Checkpoint.locate(file: nil, runDirectory: dir).checkpoint
        XCTAssertEqual(checkpoint.step, 7)
        let sum = try XCTUnwrap(checkpoint.residualSum)
        XCTAssertEqual(sum.count, 8820)
        XCTAssertEqual(sum[8224...].filter { $0 != 0 }.count, 0, "the discarded fragment's memory is cleared")
        XCTAssertGreaterThan(sum[..<8224].filter { $0 != 0 }.count, 1000, "the other fragment's memory is kept")
    }

    /// Property: a checkpoint written at a step where a streaming fragment starts (the
    /// checkpoint comes first, the fragment starts after it) resumes bit-identically: the resumed
    /// run starts that fragment as the uninterrupted one did. (P = 3, H = 6: a fragment starts
    /// after local step 8 ≡ 2; the periodic checkpoint of step 8 is resumed from.)
    func testResumeFromACheckpointWhereAFragmentStarts() throws {
        let extra = ["model.kind=mlp", "model.hidden=[32, 16]", "comm.sync=diloco", "comm.sync_every=6", "comm.fragments=3",
                     "comm.outer_delay=1", "comm.codec=int8", "comm.error_feedback=true", "checkpoint.every_steps=8"]
        let whole = try train(ranks: 2, extra, dir: temporaryDirectory())[0]
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, extra, dir: dir, stopAfter: 10)
        for name in try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints") where name.hasPrefix("step-00000010") {
            try FileManager.default.removeItem(atPath: dir + "/checkpoints/" + name)
        }
        let resumed = try train(ranks: 2, extra, dir: dir, resume: true)[0]
        XCTAssertEqual(resumed.resumed_from_step, 8)
        XCTAssertEqual(resumed.param_hash, whole.param_hash)
    }

    /// Property: each fragment ends at the layer boundary nearest to its share of the
    /// parameters: layers of 400, 300 and 300 in two fragments are 400 | 600 (share 500: 100
    /// short against 200 over), not 700 | 300; of 100, 700 and 200, 800 | 200 (300 over against
    /// 400 short).
    func testFragmentsEndAtTheBoundaryNearestTheirShare() throws {
        XCTAssertEqual(try OuterSynchronizer.fragmentStarts(extents: [0 ..< 400, 400 ..< 700, 700 ..< 1000], fragments: 2), [0, 1])
        XCTAssertEqual(try OuterSynchronizer.fragmentStarts(extents: [0 ..< 100, 100 ..< 800, 800 ..< 1000], fragments: 2), [0, 2])
        XCTAssertEqual(try OuterSynchronizer.fragmentStarts(extents: [0 ..< 300, nil, 300 ..< 800, 800 ..< 1000], fragments: 2), [0, 2])
        XCTAssertEqual(try OuterSynchronizer.fragmentStarts(extents: [0 ..< 10, 10 ..< 20, 20 ..< 1000], fragments: 3), [0, 1, 2], "every fragment gets a layer")
    }

    /// Property: with P fragments and H local steps between a fragment's outer steps, fragment
    /// p's outer steps start after local steps t ≡ ⌊p·H/P⌋ (mod H), t ≥ 1 (Streaming DiLoCo's
    /// staggered schedule): P = 3, H = 6 → fragment 0 after steps 6, 12, 18, 24; 1 after 2, 8,
    /// 14, 20; 2 after 4, 10, 16, 22 — and after a warm-up of W averaged steps, W later.
    func testStreamingFragmentsStartAtTheirOffsets() throws {
        let extents: [Range<Int>?] = [0 ..< 100, 100 ..< 200, 200 ..< 300]
        for warmup in [0, 5] {
            let plan = BucketPlan(extents: extents, bucketBytes: 0, closeAt: Set(try OuterSynchronizer.fragmentStarts(extents: extents, fragments: 3)))
            let outer = try OuterSynchronizer(settings: OuterSettings(every: 6, warmupSteps: warmup, rule: .nesterov, lr: 0.7, momentum: 0.9, fragments: 3),
                                              count: 300, extents: extents, plan: plan)
            var parameters = [Float](repeating: 0, count: 300)
            parameters.withUnsafeMutableBufferPointer { outer.start(from: $0) }
            var starts: [Int: [Int]] = [:]
            for step in 0 ..< 24 + warmup {
                for p in outer.fragmentsStarting(after: step) { starts[p, default: []].append(step + 1 - warmup) }
            }
            XCTAssertEqual(starts, [0: [6, 12, 18, 24], 1: [2, 8, 14, 20], 2: [4, 10, 16, 22]], "warm-up \(warmup)")
        }
    }

    /// Property: P fragments tile the parameters — every value in exactly one fragment, each
    /// fragment whole layers and whole buckets — for every P up to the layer count, with buckets
    /// of any size; more fragments than layers is refused.
    func testFragmentsCoverEveryParameterOnce() throws {
        let extents: [Range<Int>?] = [0 ..< 300, nil, 300 ..< 310, nil, 310 ..< 5000, 5000 ..< 5040, nil, 5040 ..< 5050]
        for p in 1 ... 5 {
            for bucketBytes in [0, 64, 4096] {
                let starts = try OuterSynchronizer.fragmentStarts(extents: extents, fragments: p)
                XCTAssertEqual(starts.count, p)
                let plan = BucketPlan(extents: extents, bucketBytes: bucketBytes, closeAt: Set(starts))
                let outer = try OuterSynchronizer(settings: OuterSettings(every: 10, warmupSteps: 0, rule: .nesterov, lr: 0.7, momentum: 0.9, fragments: p),
                                                  count: 5050, extents: extents, plan: plan)
                var covered = [Int](repeating: 0, count: 5050)
                for f in outer.fragments {
                    for i in f.range { covered[i] += 1 }
                    XCTAssertEqual(plan.buckets[f.buckets].map(\.count).reduce(0, +), f.range.count, "whole buckets")
                    XCTAssertTrue(extents.contains { $0?.lowerBound == f.range.lowerBound }, "starts at a layer")
                }
                XCTAssertEqual(Set(covered), [1], "P = \(p), buckets of \(bucketBytes) B")
            }
        }
        XCTAssertThrowsError(try OuterSynchronizer.fragmentStarts(extents: extents, fragments: 6)) { error in
            XCTAssertTrue("\(error)".contains("comm.fragments 6 exceeds the model's 5 layers with parameters"), "\(error)")
        }
    }
}
