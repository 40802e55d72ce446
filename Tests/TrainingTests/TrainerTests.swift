import Collectives
import Datasets
import Foundation
import GradientSync
import InProcessTransport
import Training
import XCTest

/// The whole trainer on the in-process transport (ranks as threads) and synthetic data: the
/// properties that do not need separate processes, in seconds and without mpirun.
final class TrainerTests: XCTestCase {
    /// A small synthetic problem: 256 features × 4 classes, 24 steps of global batch 24.
    /// SGD with momentum 0.9 unless `extra` names another optimizer (whose own defaults then hold:
    /// momentum is refused for the Adam family) or OneCycle (which sets the momentum itself).
    static func config(_ extra: [String] = []) throws -> TrainingConfig {
        let otherOptimizer = extra.contains { ($0.hasPrefix("optimizer.name=") && $0 != "optimizer.name=sgd") || $0 == "schedule.name=onecycle" }
        return try TrainingConfig(yaml: nil, source: "test", overrides: [
            "model.kind=linear", "data.dataset=synthetic", "data.synthetic.features=256", "data.synthetic.classes=4",
            "data.synthetic.train_size=576", "data.synthetic.test_size=96", "train.global_batch=24", "train.epochs=1",
            "train.eval_batch=48", "optimizer.name=sgd", "optimizer.lr=0.05",
            "consistency.check_every_steps=4", "checkpoint.every_steps=8",
        ] + (otherOptimizer ? [] : ["optimizer.momentum=0.9"]) + extra)
    }

    func temporaryDirectory() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-trainer-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// Trains on `ranks` threads; returns every rank's summary (nil: nothing left to do).
    /// `lines` receives rank 0's log.
    func train(ranks: Int, _ config: TrainingConfig, dir: String, resume: Bool = false, stopAfter: Int? = nil,
               sends: SendMode = .buffered, lines: LockedLines? = nil) throws -> [RunSummary?] {
        try InProcessCluster.run(size: ranks, timeout: 60, sends: sends) { transport in
            try Trainer(config: config, transport: transport, runDirectory: dir,
                        log: { line in if transport.rank == 0 { lines?.append(line) } })
                .run(resume: resume, stopAfter: stopAfter)
        }
    }

    /// Property: with every codec (lossy ones with error feedback) all ranks end with the same
    /// parameters (the trainer's replica checks pass, and the summaries agree), and the model
    /// learns (the synthetic classes are separable).
    func testEveryCodecKeepsReplicasBitIdenticalAndLearns() throws {
        for codec in ["none", "fp16", "bf16", "int8", "int8sr+zstd", "sign"] {
            let config = try Self.config(["comm.codec=\(codec)", "comm.error_feedback=\(codec != "none")"])
            let summaries = try train(ranks: 3, config, dir: temporaryDirectory(), sends: .rendezvous).map { $0! }
            XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1, "\(codec): \(summaries.map(\.param_hash))")
            XCTAssertGreaterThan(summaries[0].test_accuracy, 0.6, "\(codec) learns")
            XCTAssertEqual(summaries[0].skipped_steps, 0)
        }
    }

    /// Property: each epoch's samples/s in metrics.jsonl counts the seconds summary.json counts —
    /// evaluations inside the epoch (`train.eval_every_steps`) and checkpoint writes excluded
    /// from both, the second epoch's without the first's. Here an evaluation of 6000 samples
    /// after every 24-sample step is most of the wall time: counting it makes an epoch's figure
    /// many times lower than the summary's, and subtracting the first epoch's evaluations from
    /// the second's time (its exclusions not counted from its own start) many times higher.
    func testAnEpochsThroughputExcludesItsEvaluationsAsTheSummarysDoes() throws {
        let dir = temporaryDirectory()
        let config = try Self.config(["train.eval_every_steps=1", "data.synthetic.test_size=6000", "train.eval_batch=600", "train.epochs=2"])
        let summary = try XCTUnwrap(try train(ranks: 1, config, dir: dir)[0])
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        for line in lines {
            let epoch = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let ratio = try XCTUnwrap(epoch["samples_per_second"] as? Double) / summary.samples_per_second
            XCTAssertGreaterThan(ratio, 0.3, "epoch \(epoch["epoch"]!): \(epoch["samples_per_second"]!) against the summary's \(summary.samples_per_second) samples/s")
            XCTAssertLessThan(ratio, 3, "epoch \(epoch["epoch"]!): \(epoch["samples_per_second"]!) against the summary's \(summary.samples_per_second) samples/s")
        }
        // …and the summary's own figure leaves them out: evaluating 6000 samples after every
        // 24-sample step is most of the wall time, so counting it would make the figure a few
        // times the samples over the wall time at most, not many times more.
        let overWall = Double(summary.steps * 24) / summary.wall_seconds
        XCTAssertGreaterThan(summary.samples_per_second, 3 * overWall, "\(summary.samples_per_second) samples/s against \(overWall) over the wall time")
    }

    /// Property: a batch norm that would normalise one value per channel in training (a
    /// batchnorm1d after a linear layer, one sample a forward pass) is refused before the run,
    /// naming the layer and the remedy — under `local`, and on one rank — while under `sync` on
    /// two ranks, where the count is summed over them, the same batch trains.
    func testABatchNormOfOneValuePerChannelIsRefused() throws {
        func config(_ mode: String, _ extra: [String]) throws -> TrainingConfig {
            try TrainingConfig(yaml: "model: {batchnorm: \(mode), layers: [linear: {out: 8}, batchnorm1d, relu, linear]}\n", source: "test", overrides: [
                "data.dataset=synthetic", "data.synthetic.features=16", "data.synthetic.classes=4", "data.synthetic.train_size=64",
                "data.synthetic.test_size=16", "train.epochs=1", "train.max_steps=2", "train.eval_batch=16", "optimizer.lr=0.05",
            ] + extra)
        }
        let refusals: [(String, Int, [String], String)] = [
            ("local", 2, ["train.global_batch=2"], "give each rank at least 2 samples a forward pass (train.global_batch ≥ 4 with train.accumulate_steps 1) or use model.batchnorm: sync"),
            ("local", 2, ["train.global_batch=8", "train.accumulate_steps=4"], "(train.global_batch ≥ 16 with train.accumulate_steps 4)"),
            ("sync", 1, ["train.global_batch=1"], "use a batch of at least 2 samples a forward pass (train.global_batch ≥ 2 with train.accumulate_steps 1)"),
        ]
        for (mode, ranks, extra, remedy) in refusals {
            XCTAssertThrowsError(try train(ranks: ranks, try config(mode, extra), dir: temporaryDirectory()), "\(mode) \(ranks) \(extra)") {
                XCTAssertTrue("\($0)".contains("BatchNorm1d(8) would normalise 1 value per channel (a forward pass of 1 sample of 1 value each)"), "\($0)")
                XCTAssertTrue("\($0)".contains(remedy), "\($0)")
            }
        }
        let summaries = try train(ranks: 2, try config("sync", ["train.global_batch=2"]), dir: temporaryDirectory())
        XCTAssertEqual(summaries.compactMap { $0 }.count, 2)
        XCTAssertNoThrow(try train(ranks: 2, try config("local", ["train.global_batch=4"]), dir: temporaryDirectory()))
    }

    /// Property: a skipped step leaves the batch norms' buffers as they were before it — its
    /// forward's update of the running statistics and of num_batches_tracked undone — on every
    /// `model.batchnorm` mode: the last of four steps skipped, the checkpoint after it holds the
    /// buffers of the checkpoint before it, three batches tracked. With train.accumulate_steps K
    /// every micro-batch's forward is one batch tracked (as PyTorch counts), and the skipped
    /// step undoes all K.
    func testASkippedStepLeavesTheRunningStatisticsAsTheyWere() throws {
        for (mode, k) in [("sync", 1), ("local", 1), ("broadcast", 1), ("sync", 2), ("local", 2)] {
            let dir = temporaryDirectory()
            let config = try TrainingConfig(yaml: "model: {batchnorm: \(mode), layers: [linear: {out: 8}, batchnorm1d, relu, linear]}\n", source: "test", overrides: [
                "data.dataset=synthetic", "data.synthetic.features=16", "data.synthetic.classes=4", "data.synthetic.train_size=64",
                "data.synthetic.test_size=16", "train.global_batch=8", "train.epochs=1", "train.max_steps=4", "train.eval_batch=16",
                "optimizer.lr=0.05", "checkpoint.every_steps=1", "consistency.inject_nonfinite_at=[3]", "train.accumulate_steps=\(k)",
            ])
            let summary = try XCTUnwrap(try train(ranks: 2, config, dir: dir)[0])
            XCTAssertEqual(summary.skipped_steps, 1, "\(mode), K \(k)")
            let checkpoint = try XCTUnwrap(try CheckpointStore(runDirectory: dir, keep: 3).loadNewestValid(validate: { _ in }).found).checkpoint
            XCTAssertEqual(checkpoint.step, 4, mode)
            let before = try Checkpoint(decoding: Array(try Data(contentsOf: URL(fileURLWithPath: CheckpointStore(runDirectory: dir, keep: 3).path(step: 3)))))
            XCTAssertEqual(checkpoint.buffers, before.buffers, "\(mode): the skipped step changed no buffer")
            // running_mean [8], running_var [8] (each view padded to 16 floats), num_batches_tracked.
            XCTAssertEqual(checkpoint.buffers.count, 33, mode)
            XCTAssertEqual(checkpoint.buffers.last, Float(3 * k), "\(mode), K \(k): num_batches_tracked counts the applied steps' micro-batches only")
        }
    }

    /// Property: the modes' running statistics, one step in (the same parameters in every mode
    /// at that forward), with momentum 1 so that running_mean is the batch's mean: `sync`'s is
    /// the global batch's mean; `local`'s, the ranks' averaged by their share of the global
    /// batch, is that same mean — also with unequal shares (25 samples over 2 ranks: 13 and
    /// 12); `broadcast` keeps rank 0's batch's mean, which is not. And `broadcast` evaluates
    /// every rank's shard with rank 0's buffers: the test loss it reports is that of its
    /// checkpoint (which holds them) evaluated in one process.
    func testLocalAveragesByShareAndBroadcastEvaluatesWithRankZerosBuffers() throws {
        var means: [String: [Float]] = [:]
        for mode in ["sync", "local", "broadcast"] {
            let dir = temporaryDirectory()
            let config = try TrainingConfig(yaml: "model: {batchnorm: \(mode), layers: [linear: {out: 8}, batchnorm1d: {momentum: 1.0}, relu, linear]}\n", source: "test", overrides: [
                "data.dataset=synthetic", "data.synthetic.features=16", "data.synthetic.classes=4", "data.synthetic.train_size=100",
                "data.synthetic.test_size=40", "train.global_batch=25", "train.epochs=1", "train.max_steps=1", "train.eval_batch=8",
                "optimizer.lr=0.05",
            ])
            let summary = try XCTUnwrap(try train(ranks: 2, config, dir: dir)[0])
            let checkpoint = try XCTUnwrap(try CheckpointStore(runDirectory: dir, keep: 3).loadNewestValid(validate: { _ in }).found).checkpoint
            means[mode] = Array(checkpoint.buffers[0 ..< 8])
            guard mode == "broadcast" else { continue }
            let loss = try InProcessCluster.run(size: 1, timeout: 60) { transport -> Double in
                let test = try config.loadDatasets().test
                let model = try config.makeModel(for: test)
                _ = model.parameters.parameters.update(fromContentsOf: checkpoint.parameters)
                _ = model.parameters.buffers.update(fromContentsOf: checkpoint.buffers)
                return try Evaluation.run(model, on: test, over: transport, batch: 8).loss
            }[0]
            XCTAssertEqual(try XCTUnwrap(summary.test_loss), loss, accuracy: 1e-6 * loss, "broadcast: the reported test loss is rank 0's buffers' on every shard")
        }
        let sync = try XCTUnwrap(means["sync"]), local = try XCTUnwrap(means["local"]), broadcast = try XCTUnwrap(means["broadcast"])
        let scale = sync.map(abs).max()!
        for c in 0 ..< 8 { XCTAssertEqual(local[c], sync[c], accuracy: 1e-5 * scale, "local, channel \(c): \(local) against \(sync)") }
        XCTAssertGreaterThan(zip(broadcast, sync).map { abs($0 - $1) }.max()!, 1e-3 * scale, "broadcast holds rank 0's batch's mean, not the global one")
        // Rank 0's batch's mean itself: the first linear layer's outputs, at the initial
        // parameters, over the samples rank 0 draws at step 0 (its share: 12 of the 25).
        let config = try TrainingConfig(yaml: "model: {layers: [linear: {out: 8}, batchnorm1d: {momentum: 1.0}, relu, linear]}\n", source: "test", overrides: [
            "data.dataset=synthetic", "data.synthetic.features=16", "data.synthetic.classes=4", "data.synthetic.train_size=100",
            "data.synthetic.test_size=40"])
        let train = try config.loadDatasets().train
        let sampler = try DistributedSampler(datasetSize: train.count, globalBatch: 25, worldSize: 2, rank: 0, seed: config.seed)
        let indices = sampler.localIndices(sampler.permutation(epoch: 0), stepInEpoch: 0)
        XCTAssertEqual(indices.count, sampler.localBatch)
        var x = [Float](repeating: 0, count: indices.count * 16), labels = [Int32](repeating: 0, count: indices.count)
        x.withUnsafeMutableBufferPointer { xs in labels.withUnsafeMutableBufferPointer { train.fill(indices, input: xs.baseAddress!, labels: $0.baseAddress!) } }
        let model = try config.makeModel(for: train)
        model.initialize(seed: config.seed)
        let views = model.parameters.views
        let weight = Array(model.parameters.parameters(of: try XCTUnwrap(views.first { $0.name == "0.weight" })))
        let bias = Array(model.parameters.parameters(of: try XCTUnwrap(views.first { $0.name == "0.bias" })))
        for c in 0 ..< 8 {
            var sum = 0.0
            for i in 0 ..< indices.count {
                var output = Double(bias[c])
                for f in 0 ..< 16 { output += Double(weight[c * 16 + f]) * Double(x[i * 16 + f]) }
                sum += output
            }
            let mean = sum / Double(indices.count)
            XCTAssertEqual(Double(broadcast[c]), mean, accuracy: 1e-5 * Double(scale), "broadcast, channel \(c): rank 0's batch's mean")
        }
    }

    /// Property: stopping after step 8 and resuming ends bit-identical to an uninterrupted run,
    /// error-feedback memory included.
    func testResumeIsBitIdentical() throws {
        // OneCycle cycles the momentum a carried sign all-reduce is scaled by (it must be the step's own).
        for extra in [[String](), ["comm.codec=int8", "comm.error_feedback=true"], ["train.accumulate_steps=3", "comm.overlap=true"],
                      ["schedule.name=onecycle", "comm.codec=sign", "comm.error_feedback=true", "comm.compress_momentum=true"]] {
            let config = try Self.config(extra)
            let whole = try train(ranks: 2, config, dir: temporaryDirectory())[0]!
            let dir = temporaryDirectory()
            _ = try train(ranks: 2, config, dir: dir, stopAfter: 8)
            let resumed = try train(ranks: 2, config, dir: dir, resume: true)[0]!
            XCTAssertEqual(resumed.resumed_from_step, 8)
            XCTAssertEqual(resumed.param_hash, whole.param_hash, "\(extra)")
        }
    }

    /// Property: `comm.codec: auto` chooses once per run: its checkpoints record the choice, and
    /// a resume keeps it whatever the probe picks then — here the checkpoint is rewritten to say
    /// fp16, a codec the probe never picks (its candidates are none, bf16, int8 and int8+zstd),
    /// so today's probe surely differs: the resumed run averages with fp16 and says so. A name
    /// this build has no codec for (a newer build's) is refused in one line naming it.
    func testAnAutomaticCodecIsKeptOnResume() throws {
        let config = try Self.config(["comm.codec=auto"])
        let dir = temporaryDirectory()
        let first = try train(ranks: 2, config, dir: dir, stopAfter: 8)[0]!
        let path = dir + "/checkpoints/step-00000008.ckpt"
        var checkpoint = try Checkpoint(decoding: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        XCTAssertEqual(checkpoint.chosenCodec, first.codec, "the checkpoint records the probe's choice")
        let kept = "fp16"
        checkpoint.chosenCodec = kept
        try Data(checkpoint.encoded()).write(to: URL(fileURLWithPath: path))
        let lines = LockedLines()
        let resumed = try train(ranks: 2, config, dir: dir, resume: true, lines: lines)[0]!
        XCTAssertEqual(resumed.resumed_from_step, 8)
        XCTAssertEqual(resumed.codec, kept, "the resumed run averages with the run's codec")
        XCTAssertTrue(lines.all.contains { $0.hasPrefix("comm.codec: auto: the run keeps \(kept), its codec since its start") }, lines.all.joined(separator: "\n"))
        // A world of no ranks (a crafted file: the checksum is no secret) is refused, not divided by.
        var empty = checkpoint
        empty.worldSize = 0
        XCTAssertThrowsError(try Checkpoint(decoding: empty.encoded())) { XCTAssertTrue("\($0)".contains("its world size is 0"), "\($0)") }
        let other = temporaryDirectory()
        _ = try train(ranks: 2, config, dir: other, stopAfter: 8)
        checkpoint = try Checkpoint(decoding: Array(try Data(contentsOf: URL(fileURLWithPath: other + "/checkpoints/step-00000008.ckpt"))))
        checkpoint.chosenCodec = "int4"
        try Data(checkpoint.encoded()).write(to: URL(fileURLWithPath: other + "/checkpoints/step-00000008.ckpt"))
        XCTAssertThrowsError(try train(ranks: 2, config, dir: other, resume: true)) {
            XCTAssertTrue("\($0)".contains("the run chose the codec int4 at its start, which this ringsgd does not have"), "\($0)")
        }
    }

    /// Property: per-rank files (error-feedback residuals) are named in the checkpoint
    /// directory whatever the run directory's own path holds — ".ckpt" in it broke their names
    /// (an edit of the whole path) — and a resume from them is bit-identical.
    func testPerRankFilesLiveBesideTheirCheckpointWhateverThePath() throws {
        let config = try Self.config(["comm.codec=int8", "comm.error_feedback=true"])
        let whole = try train(ranks: 2, config, dir: temporaryDirectory())[0]!
        let dir = temporaryDirectory() + "/models.ckpts/run.ckpt"
        _ = try train(ranks: 2, config, dir: dir, stopAfter: 8)
        for rank in 0 ..< 2 {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000008.ef-rank-\(rank)"), "rank \(rank)'s residual beside its checkpoint")
        }
        let resumed = try train(ranks: 2, config, dir: dir, resume: true)[0]!
        XCTAssertEqual(resumed.param_hash, whole.param_hash)
    }

    /// Property: a non-finite gradient on one rank is skipped by every rank at the same step,
    /// and with error feedback the run trains on afterwards.
    func testANonFiniteStepIsSkippedByEveryRankAndTrainingGoesOn() throws {
        let config = try Self.config(["comm.codec=int8", "comm.error_feedback=true", "consistency.inject_nonfinite_at=[5]"])
        let summaries = try train(ranks: 3, config, dir: temporaryDirectory()).map { $0! }
        XCTAssertEqual(summaries.map(\.skipped_steps), [1, 1, 1])
        XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1)
        XCTAssertGreaterThan(summaries[0].test_accuracy, 0.6, "trains on after the skipped step")
    }

    /// Property: averaging buckets on the communication thread while backward runs gives the
    /// same bits as averaging them after backward, for every codec and bucket size (the same
    /// calls on the same values; only when they run differs).
    func testOverlapIsBitIdenticalToAveragingAfterBackward() throws {
        let mlp = ["model.kind=mlp", "model.hidden=[32, 16]"]
        let powerSGD = ["comm.compressor=powersgd", "comm.powersgd.rank=2", "comm.powersgd.start_step=2", "comm.powersgd.min_compression_rate=0"]
        for codec in [[String](), ["comm.codec=int8", "comm.error_feedback=true"], ["comm.codec=int8sr+zstd", "comm.error_feedback=true"], powerSGD] {
            for bucketBytes in [0, 256, 2048] {
                var hashes: [String] = []
                for overlap in [true, false] {
                    let config = try Self.config(mlp + codec + ["comm.bucket_bytes=\(bucketBytes)", "comm.overlap=\(overlap)"])
                    let summaries = try train(ranks: 3, config, dir: temporaryDirectory(), sends: .rendezvous).map { $0! }
                    XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1)
                    hashes.append(summaries[0].param_hash)
                }
                XCTAssertEqual(hashes[0], hashes[1], "\(codec) bucket_bytes \(bucketBytes): overlap changed the result")
            }
        }
    }

    /// Property: K micro-batches of B/K accumulated before one all-reduce give the
    /// parameters of one batch of B up to float rounding. The two sum each gradient element
    /// in a different order (per micro-batch, then across them), which changes it by a few
    /// ulps (≈ 1e-7 relative); 24 SGD steps with lr 0.05 and momentum 0.9 carry that to at
    /// most ~1e-5 of a parameter's scale. A wrong mean (e.g. a missing 1/K) is off by O(1).
    func testAccumulatingMicroBatchesMatchesOneBatch() throws {
        let mlp = ["model.kind=mlp", "model.hidden=[32]", "comm.bucket_bytes=256"]
        func finalParameters(_ extra: [String]) throws -> [Float] {
            let dir = temporaryDirectory()
            _ = try train(ranks: 2, try Self.config(mlp + extra), dir: dir)
            let store = CheckpointStore(runDirectory: dir, keep: 3)
            return try XCTUnwrap(try store.loadNewestValid(validate: { _ in }).found).checkpoint.parameters
        }
        let one = try finalParameters([])
        for k in [2, 3] {
            let accumulated = try finalParameters(["train.accumulate_steps=\(k)"])
            let scale = one.map { abs($0) }.max()!
            let worst = zip(one, accumulated).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-5 * (1 + scale), "K = \(k): worst parameter difference \(worst)")
            XCTAssertNotEqual(one, accumulated, "K = \(k) ran as micro-batches (bitwise equal would mean it did not)")
        }
        // The per-rank batch (24 / 2 = 12) must divide into K micro-batches.
        XCTAssertThrowsError(try train(ranks: 2, try Self.config(mlp + ["train.accumulate_steps=5"]), dir: temporaryDirectory())) {
            XCTAssertTrue("\($0)".contains("train.accumulate_steps 5 does not divide the per-rank batch"), "\($0)")
        }
        XCTAssertThrowsError(try Self.config(["train.accumulate_steps=0"])) { XCTAssertTrue("\($0)".contains("train.accumulate_steps"), "\($0)") }
        XCTAssertThrowsError(try Self.config(["comm.bucket_bytes=-1"])) { XCTAssertTrue("\($0)".contains("comm.bucket_bytes"), "\($0)") }
    }

    /// Property: PowerSGD at full rank (r ≥ min(n, m)) projects onto the whole column space,
    /// so it reproduces the exact average up to rounding: the run ends where the fp32 run does.
    /// At rank 2 every rank stays bit-identical and a resume ends bit-identical (Q's and
    /// residuals are checkpointed). A model with no matrix worth compressing is an error that
    /// says so.
    func testPowerSGD() throws {
        let mlp = ["model.kind=mlp", "model.hidden=[32]"], everyStep = ["comm.powersgd.start_step=0", "comm.powersgd.min_compression_rate=0"]
        func parameters(_ extra: [String], ranks: Int = 2) throws -> (hash: String, values: [Float]) {
            let dir = temporaryDirectory()
            let summaries = try train(ranks: ranks, try Self.config(mlp + (extra.contains("comm.compressor=powersgd") ? everyStep : []) + extra), dir: dir).map { $0! }
            XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1, "replicas differ with \(extra)")
            let values = try XCTUnwrap(try CheckpointStore(runDirectory: dir, keep: 3).loadNewestValid(validate: { _ in }).found).checkpoint.parameters
            return (summaries[0].param_hash, values)
        }
        let exact = try parameters([]).values
        let fullRank = try parameters(["comm.compressor=powersgd", "comm.powersgd.rank=32"]).values
        let scale = exact.map { abs($0) }.max()!
        let worst = zip(exact, fullRank).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, 1e-4 * (1 + scale), "full-rank PowerSGD must be the exact average up to rounding (worst \(worst))")
        for ranks in [2, 3, 4] {
            let low = try parameters(["comm.compressor=powersgd", "comm.powersgd.rank=2", "comm.codec=int8", "comm.error_feedback=true"], ranks: ranks)
            XCTAssertNotEqual(low.values, exact, "rank 2 compresses")
        }
        // (The low-rank result itself is checked against a reference in GradientSyncTests.)
        // Resume: Q's and residuals come back from the checkpoint.
        let config = try Self.config(mlp + everyStep + ["comm.compressor=powersgd", "comm.powersgd.rank=2"])
        let whole = try train(ranks: 2, config, dir: temporaryDirectory())[0]!
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, config, dir: dir, stopAfter: 8)
        let resumed = try train(ranks: 2, config, dir: dir, resume: true)[0]!
        XCTAssertEqual(resumed.resumed_from_step, 8)
        XCTAssertEqual(resumed.param_hash, whole.param_hash, "PowerSGD resume")
        XCTAssertThrowsError(try train(ranks: 2, try Self.config(["comm.compressor=powersgd"]), dir: temporaryDirectory())) {
            XCTAssertTrue("\($0)".contains("no weight matrix of this model compresses"), "\($0)")
        }
    }

    /// Property: one skipped (non-finite) step costs PowerSGD one step, not the run: the Q's the
    /// step poisoned are put back, so the run learns as well as the same run without the fault
    /// (accuracy within 0.05, loss within 20 %). Before the fix every later gradient was zero.
    func testPowerSGDTrainsOnAfterANonFiniteStep() throws {
        let base = ["model.kind=mlp", "model.hidden=[32]", "comm.compressor=powersgd", "comm.powersgd.rank=2",
                    "comm.powersgd.start_step=0", "comm.powersgd.min_compression_rate=0"]
        let clean = try train(ranks: 2, try Self.config(base), dir: temporaryDirectory())[0]!
        for overlap in [true, false] {
            let faulty = try train(ranks: 2, try Self.config(base + ["consistency.inject_nonfinite_at=[2]", "comm.overlap=\(overlap)"]),
                                   dir: temporaryDirectory())[0]!
            XCTAssertEqual(faulty.skipped_steps, 1)
            XCTAssertGreaterThan(clean.test_accuracy, 0.6, "the clean run learns")
            XCTAssertEqual(faulty.test_accuracy, clean.test_accuracy, accuracy: 0.05, "overlap \(overlap)")
            XCTAssertEqual(faulty.train_loss!, clean.train_loss!, accuracy: 0.2 * clean.train_loss!, "overlap \(overlap)")
        }
    }

    /// Property: a resume with other PowerSGD settings (here rank 2 → 1) restarts PowerSGD's
    /// state explicitly — a warning names both layouts — and the run goes on learning.
    func testResumingWithOtherPowerSGDSettingsRestartsItsStateAndSaysSo() throws {
        let base = ["model.kind=mlp", "model.hidden=[32]", "comm.compressor=powersgd", "comm.powersgd.start_step=0",
                    "comm.powersgd.min_compression_rate=0"]
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, try Self.config(base + ["comm.powersgd.rank=2"]), dir: dir, stopAfter: 8)
        let lines = LockedLines()
        let resumed = try InProcessCluster.run(size: 2, timeout: 60) { transport in
            try Trainer(config: try Self.config(base + ["comm.powersgd.rank=1"]), transport: transport, runDirectory: dir,
                        log: { line in if transport.rank == 0 { lines.append(line) } }).run(resume: true)
        }
        XCTAssertTrue(lines.all.contains { $0.contains("PowerSGD state is for powersgd rank 2") && $0.contains("restarts from fresh Q's") },
                      lines.all.joined(separator: "\n"))
        XCTAssertGreaterThan(resumed[0]!.test_accuracy, 0.6, "the resumed run learns")
    }

    /// Property: a resume whose run keeps no error feedback (here int8 with it → fp32) says that
    /// the checkpoint's residuals are dropped, instead of dropping them silently.
    func testResumingWithoutErrorFeedbackSaysTheResidualsAreDropped() throws {
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, try Self.config(["comm.codec=int8", "comm.error_feedback=true"]), dir: dir, stopAfter: 8)
        let lines = LockedLines()
        _ = try InProcessCluster.run(size: 2, timeout: 60) { transport in
            try Trainer(config: try Self.config(["comm.codec=none"]), transport: transport, runDirectory: dir,
                        log: { line in if transport.rank == 0 { lines.append(line) } }).run(resume: true)
        }
        XCTAssertEqual(lines.all.filter { $0.contains("the checkpoint holds error-feedback residuals, but this run keeps none") }.count, 1,
                       lines.all.joined(separator: "\n"))
    }

    /// Property: with comm.compress_momentum the all-reduce carries g + s·b (the next momentum)
    /// and hands the optimizer ĝ = avg − s·b: with an exact all-reduce that is the plain average
    /// up to rounding, so SGD and Adam end where plain averaging does (plain SGD taking its
    /// step from the carried average itself within rounding of the step from ḡ); with sign + error
    /// feedback every rank stays bit-identical, the run learns, and a resume ends bit-identical
    /// (the momentum is optimizer state, the residual EF memory: both checkpointed). An optimizer
    /// without momentum is refused with what to do.
    func testCompressedMomentum() throws {
        func run(_ extra: [String], ranks: Int = 2) throws -> (hash: String, accuracy: Double, values: [Float]) {
            let dir = temporaryDirectory()
            let summaries = try train(ranks: ranks, try Self.config(extra), dir: dir).map { $0! }
            XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1, "replicas differ with \(extra)")
            let values = try XCTUnwrap(try CheckpointStore(runDirectory: dir, keep: 3).loadNewestValid(validate: { _ in }).found).checkpoint.parameters
            return (summaries[0].param_hash, summaries[0].test_accuracy, values)
        }
        for optimizer in [["optimizer.name=sgd"], ["optimizer.name=sgd", "optimizer.nesterov=true"], ["optimizer.name=adam", "optimizer.lr=0.01"]] {
            let plain = try run(optimizer).values
            let carried = try run(optimizer + ["comm.compress_momentum=true"]).values
            let scale = plain.map { abs($0) }.max()!
            let worst = zip(plain, carried).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-4 * (1 + scale), "\(optimizer): carried momentum must average like plain gradients (worst \(worst))")
            XCTAssertNotEqual(plain, carried, "\(optimizer): the momentum was carried (bitwise equal would mean it was not)")
        }
        // Plain SGD takes its step from the carried average itself (the carry stays on): the
        // same rule with the carry's algebra moved, so within rounding of the step from ḡ —
        // which a clipping threshold never reached forces — and not bitwise equal to it.
        // Dampening and weight decay (both terms of the rule), warm-up steps, overlap and
        // micro-batches, and a lossy codec with error feedback (the ring's own passes).
        for extra in [[], ["optimizer.dampening=0.5", "optimizer.weight_decay=0.001"],
                      ["comm.warmup_steps=2", "comm.overlap=true", "train.accumulate_steps=3"],
                      ["comm.codec=bf16", "comm.error_feedback=true", "optimizer.weight_decay=0.001"]] {
            let base = ["optimizer.name=sgd", "comm.compress_momentum=true"] + extra
            let fused = try run(base).values
            let unfused = try run(base + ["train.clip_grad_norm=1e9"]).values
            let worst = zip(fused, unfused).map { abs($0 - $1) }.max()!
            let bound: Float = extra.contains("comm.codec=bf16") ? 1e-3 : 1e-5   // bf16 rounds u to 8 bits: a last-bit flip is 2⁻⁸
            XCTAssertLessThan(worst, bound * (1 + unfused.map { abs($0) }.max()!), "\(extra): the step from the carried average (worst \(worst))")
            XCTAssertNotEqual(fused, unfused, "\(extra): the step from the carried average was taken")
        }
        // Adam takes ḡ = u − s·m off in its own loop with the ring's fused multiply-add: the
        // same bits as the step from ḡ, exact and lossy codec alike. (That the step from u is
        // taken is SGD's inequality above — the trainer's choice is the same for both — and
        // CarriedAverageTests checks Adam's step from u itself.)
        for extra in [[String](), ["comm.codec=bf16", "comm.error_feedback=true"]] {
            let base = ["optimizer.name=adam", "optimizer.lr=0.01", "comm.compress_momentum=true"] + extra
            XCTAssertEqual(try run(base).values, try run(base + ["train.clip_grad_norm=1e9"]).values, "adam \(extra): bit for bit")
        }
        let sign = ["comm.codec=sign", "comm.error_feedback=true", "comm.compress_momentum=true"]
        for ranks in [2, 3] { XCTAssertGreaterThan(try run(sign, ranks: ranks).accuracy, 0.6, "sign with carried momentum learns at np \(ranks)") }
        let config = try Self.config(sign)
        let whole = try train(ranks: 2, config, dir: temporaryDirectory())[0]!
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, config, dir: dir, stopAfter: 8)
        let resumed = try train(ranks: 2, config, dir: dir, resume: true)[0]!
        XCTAssertEqual(resumed.resumed_from_step, 8)
        XCTAssertEqual(resumed.param_hash, whole.param_hash, "resume")
        XCTAssertThrowsError(try train(ranks: 2, try Self.config(["optimizer.momentum=0", "comm.compress_momentum=true"]), dir: temporaryDirectory())) {
            XCTAssertTrue("\($0)".contains("comm.compress_momentum needs an optimizer with a momentum to carry"), "\($0)")
        }
        XCTAssertThrowsError(try Self.config(["comm.compressor=powersgd", "comm.compress_momentum=true"])) {
            XCTAssertTrue("\($0)".contains("comm.compress_momentum applies to comm.codec"), "\($0)")
        }
    }

    /// Property: a run stopped mid-epoch writes that epoch's record marked partial (steps 0–8),
    /// and the resumed run writes the rest of it (steps 8–24), unmarked: each record says which
    /// steps it covers, so no two describe the same steps.
    func testAStoppedEpochIsRecordedAsPartial() throws {
        let dir = temporaryDirectory(), config = try Self.config()
        _ = try train(ranks: 2, config, dir: dir, stopAfter: 8)
        _ = try train(ranks: 2, config, dir: dir, resume: true)
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(records.count, 2, "\(lines)")
        XCTAssertEqual(records.map { $0["epoch"] as? Int }, [1, 1])
        XCTAssertEqual(records.map { $0["from_step"] as? Int }, [0, 8])
        XCTAssertEqual(records.map { $0["step"] as? Int }, [8, 24])
        XCTAssertEqual(records.map { $0["partial"] as? Bool }, [true, nil])
    }

    /// Property: a resume from a checkpoint older than metrics.jsonl's last record (a crash
    /// after an epoch ended but before the next checkpoint) drops the records that end past the
    /// checkpoint, so the records still cover disjoint steps: here the stop at 32 wrote epoch 2's
    /// partial record (24–32); its checkpoint is lost, the resume from 24 runs 24–48 again.
    func testAResumeFromAnOlderCheckpointDropsTheRecordsPastIt() throws {
        let dir = temporaryDirectory(), config = try Self.config(["train.epochs=2"])
        _ = try train(ranks: 2, config, dir: dir, stopAfter: 32)
        try FileManager.default.removeItem(atPath: dir + "/checkpoints/step-00000032.ckpt")
        _ = try train(ranks: 2, config, dir: dir, resume: true)
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(records.map { $0["epoch"] as? Int }, [1, 2], "\(lines)")
        XCTAssertEqual(records.map { $0["from_step"] as? Int }, [0, 24])
        XCTAssertEqual(records.map { $0["step"] as? Int }, [24, 48])
    }

    /// Property: a config change made at one resume stays in summary.json's
    /// config_changes_on_resume after later resumes with that same config (each resume compares
    /// with its checkpoint alone; the checkpoint carries the earlier changes).
    func testConfigChangesOnResumeOutliveTheNextResume() throws {
        let dir = temporaryDirectory()
        _ = try train(ranks: 2, try Self.config(), dir: dir, stopAfter: 8)
        let changed = try Self.config(["optimizer.lr=0.04"])
        let first = try XCTUnwrap(try train(ranks: 2, changed, dir: dir, resume: true, stopAfter: 16)[0])
        let second = try XCTUnwrap(try train(ranks: 2, changed, dir: dir, resume: true)[0])
        XCTAssertEqual(first.config_changes_on_resume?.count, 1)
        XCTAssertTrue(first.config_changes_on_resume?.first?.hasPrefix("optimizer.lr") ?? false, "\(String(describing: first.config_changes_on_resume))")
        XCTAssertEqual(second.config_changes_on_resume, first.config_changes_on_resume)
    }

    /// Property: --overwrite removes, with the earlier run's checkpoints, the evaluation and
    /// exports written of it into the run directory, and nothing else there.
    func testOverwriteRemovesTheEarlierRunsResults() throws {
        let dir = temporaryDirectory(), config = try Self.config()
        _ = try train(ranks: 2, config, dir: dir, stopAfter: 8)
        for name in ["evaluation.json", "model.safetensors", "model.npz", "notes.txt"] {
            XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data("old".utf8)))
        }
        _ = try InProcessCluster.run(size: 2, timeout: 60) { transport in
            try Trainer(config: config, transport: transport, runDirectory: dir, log: { _ in }).run(resume: false, stopAfter: 8, overwrite: true)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertEqual(Set(left).intersection(["evaluation.json", "model.safetensors", "model.npz"]), [], "\(left)")
        XCTAssertTrue(left.contains("notes.txt"), "a file ringsgd did not write stays")
    }

    /// Property: --overwrite of a run that fails to start — weights from --init-from that do
    /// not exist, or a global batch larger than the data — deletes nothing of the earlier run:
    /// its checkpoints and results are removed only once every check has passed.
    func testAnOverwriteThatFailsToStartKeepsTheEarlierRun() throws {
        let dir = temporaryDirectory(), config = try Self.config()
        _ = try train(ranks: 2, config, dir: dir, stopAfter: 8)
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/model.safetensors", contents: Data("old".utf8)))
        let before = Set(try FileManager.default.subpathsOfDirectory(atPath: dir))
        XCTAssertTrue(before.contains { $0.hasSuffix(".ckpt") }, "\(before)")
        for (failing, initFrom, cause) in [(config, Optional(dir + "/missing.safetensors"), "missing.safetensors"),
                                           (try Self.config(["train.global_batch=1000"]), nil, "train.global_batch 1000")] {
            let outcomes = try InProcessCluster.run(size: 2, timeout: 60) { transport -> String in
                let trainer = Trainer(config: failing, transport: transport, runDirectory: dir, log: { _ in })
                trainer.initFromPath = initFrom
                do { _ = try trainer.run(resume: false, stopAfter: 8, overwrite: true); return "no error" } catch { return "\(error)" }
            }
            // The run's own failure, past the run directory's checks (not "holds checkpoints of an earlier run").
            XCTAssertTrue(outcomes.allSatisfy { $0.contains(cause) }, "\(outcomes)")
            XCTAssertEqual(Set(try FileManager.default.subpathsOfDirectory(atPath: dir)), before, "after: \(outcomes[0])")
        }
        // The same overwrite that starts does replace it.
        _ = try InProcessCluster.run(size: 2, timeout: 60) { transport in
            try Trainer(config: config, transport: transport, runDirectory: dir, log: { _ in }).run(resume: false, stopAfter: 8, overwrite: true)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/model.safetensors"))
    }

    /// Property: the replica check catches a replica that diverged — here one parameter of the
    /// last rank moved by one ulp after step 7 — at the check right after it (step 8), on every
    /// rank, naming the ranks on each side; with local steps, a moved θ_outer likewise. (Injected
    /// just before a check: an ulp can be rounded away by later updates — here it was by step 8
    /// when injected at 5 — and then the replicas are identical again.)
    func testTheReplicaCheckCatchesADivergedReplica() throws {
        for extra in [[String](), ["comm.sync=diloco", "comm.sync_every=2"]] {
            XCTAssertThrowsError(try train(ranks: 3, try Self.config(["consistency.inject_divergence_at=[7]"] + extra), dir: temporaryDirectory())) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("after step 8 (replicas diverged)"), message)
                XCTAssertTrue(message.contains("ranks 0,1: ") && message.contains("ranks 2: "), message)
            }
        }
        // Without the fault the same runs pass every check.
        XCTAssertNotNil(try train(ranks: 3, try Self.config(), dir: temporaryDirectory())[0])
    }

    /// Property: a global batch the ranks do not divide (25 over 2 and 3 ranks: shares 12/13 and
    /// 8/8/9) trains like one process with the whole batch, up to float rounding: each rank's
    /// mean gradient is weighted by n·share/B before the average.
    func testAGlobalBatchTheRanksDoNotDivideTrainsLikeOneProcess() throws {
        func finalParameters(ranks: Int) throws -> [Float] {
            let dir = temporaryDirectory()
            let summaries = try train(ranks: ranks, try Self.config(["train.global_batch=25", "model.kind=mlp", "model.hidden=[32]"]), dir: dir).map { $0! }
            XCTAssertEqual(Set(summaries.map(\.param_hash)).count, 1, "replicas identical at np \(ranks)")
            return try XCTUnwrap(try CheckpointStore(runDirectory: dir, keep: 3).loadNewestValid(validate: { _ in }).found).checkpoint.parameters
        }
        let one = try finalParameters(ranks: 1)
        let scale = one.map { abs($0) }.max()!
        for ranks in [2, 3] {
            let worst = zip(one, try finalParameters(ranks: ranks)).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-5 * (1 + scale), "np \(ranks): worst parameter difference \(worst) (an unweighted average is off by ~5e-3)")
        }
    }

    /// Property: the world size changes only the summation order: the same run on 1 and on 3
    /// ranks sees the same samples, so the losses are close.
    func testTheGlobalBatchDoesNotDependOnTheWorldSize() throws {
        let config = try Self.config()
        let one = try train(ranks: 1, config, dir: temporaryDirectory())[0]!
        let three = try train(ranks: 3, config, dir: temporaryDirectory())[0]!
        XCTAssertEqual(one.train_loss!, three.train_loss!, accuracy: 1e-3 * max(1, abs(one.train_loss!)))
    }
}

/// Log lines gathered from a rank's thread.
final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}
