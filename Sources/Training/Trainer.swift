import Collectives
import Foundation
import GradientCodecs
import NeuralNet
import Optimizers

/// Data-parallel training on every rank of a `Transport`.
///
/// ## The step (`trainStep`)
///
/// 1. forward and backward on this rank's B/n samples → the local mean-loss gradient;
/// 2. ring all-reduce (average) of the flat gradient, compressed by `comm.codec`;
/// 3. the global norm of the averaged gradient — identical on every rank — which both
///    detects non-finite values and clips (`train.clip_grad_norm`);
/// 4. the optimizer update with the schedule's learning rate for this step.
///
/// **Non-finite steps are skipped by all ranks together.** A rank whose loss is not finite
/// poisons its gradient with a NaN; NaN and ±Inf survive averaging, so every rank sees a
/// non-finite norm in the *same* averaged gradient and skips the same step: the all-reduce
/// itself is the all-reduced flag, and costs no extra message.
///
/// **Replicas are proven identical.** Every `consistency.check_every_steps` steps and at the
/// end, ranks all-gather a 64-bit hash of parameters and optimizer state; any difference
/// stops the run on every rank, naming the step and the ranks.
public final class Trainer {
    public let config: TrainingConfig
    public let transport: Transport
    public let runDirectory: String
    /// If set, rank 0 writes the last step's averaged gradient here (raw Float32, little-endian):
    /// real gradients for `bench allreduce --gradient`.
    public var gradientDumpPath: String?
    let log: (String) -> Void
    let isTerminal: Bool

    public init(config: TrainingConfig, transport: Transport, runDirectory: String,
                isTerminal: Bool = false, log: @escaping (String) -> Void) {
        self.config = config
        self.transport = transport
        self.runDirectory = runDirectory
        self.isTerminal = isTerminal
        self.log = log
    }

    /// Trains to the configured end, or stops after global step `stopAfter` (with a
    /// checkpoint) as an interrupted job would; `resume` continues from the newest checkpoint.
    public func run(resume: Bool, stopAfter: Int? = nil) throws -> RunSummary {
        let n = transport.size, rank = transport.rank
        try RingAllGather.requireAgreement(config.hash, on: "the config hash (start every rank with the same config and --set)", over: transport)

        // Data: loaded on every rank; a failure anywhere stops every rank with the message.
        let (train, test) = try agreeOn("load the dataset") { try loadData() }
        // On one host the gradient buffer lives in a shared-memory window, so the fp32 ring's
        // steps are loads from the peers' buffers (RingAllReduce+ZeroCopy.swift).
        let sharing = config.sharedMemory && n > 1 ? transport as? SharedMemoryTransport : nil
        // If the window cannot be had (e.g. a small /dev/shm), this rank keeps private memory:
        // the ring agrees on its path every call, so every rank then uses messages.
        let model = try config.modelSpec.build(inputShape: train.inputShape, classes: train.classes, seed: config.seed,
                                               gradientStorage: sharing.map { shared in { count in
            do { return try shared.allocateShared(count: max(1, count))?.local } catch {
                self.log("warning: rank \(rank): no shared-memory window for the gradients (\(error)); the all-reduce uses messages")
                return nil
            }
        } })
        let parameters = model.parameters
        try RingAllGather.requireAgreement(Int64(parameters.count), on: "the parameter count", over: transport)
        let sampler = try agreeOn("shard the dataset") {
            try DistributedSampler(datasetSize: train.count, globalBatch: config.globalBatch, worldSize: n, rank: rank, seed: config.seed)
        }
        let stepsPerEpoch = sampler.stepsPerEpoch
        let totalSteps = config.maxSteps > 0 ? min(config.maxSteps, config.epochs * stepsPerEpoch) : config.epochs * stepsPerEpoch
        let epochs = (totalSteps + stepsPerEpoch - 1) / stepsPerEpoch
        let perEpoch = config.scheduleInterval == "epoch"
        let schedule = try config.makeSchedule(total: perEpoch ? epochs : totalSteps, worldSize: n)
        let optimizer = try config.makeOptimizer(parameters: parameters)
        let segmentBytes = config.segmentBytes > 0 ? config.segmentBytes : nil
        let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(config.codec), segmentBytes: segmentBytes)
        let fp32Ring = RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        var residual: UnsafeMutableBufferPointer<Float>? = nil
        if config.errorFeedback && !ring.codec.isIdentity {
            residual = .allocate(capacity: parameters.count)
            residual!.initialize(repeating: 0)
        }
        defer { residual?.deallocate() }

        // Start: rank 0's initial parameters everywhere (the seeded init already agrees; the
        // broadcast makes it a guarantee), or the newest valid checkpoint.
        model.initialize(seed: config.seed)
        try transport.broadcast(UnsafeMutableRawBufferPointer(parameters.parameters), root: 0)
        let store = CheckpointStore(runDirectory: runDirectory, keep: config.checkpointKeep)
        var startStep = 0, skipped = 0
        if resume {
            let found = store.loadNewestValid { c in
                guard c.parameters.count == parameters.count else {
                    throw Checkpoint.Corrupt(reason: "holds \(c.parameters.count) parameters, this model has \(parameters.count)")
                }
                try optimizer.loadState(c.optimizerState)
            }
            if rank == 0 { for note in found?.skipped ?? [] { log("warning: skipping checkpoint \(note)") } }
            guard let (checkpoint, path, _) = found else {
                throw AgreedError("--resume: no valid checkpoint in \(store.directory); start without --resume")
            }
            _ = parameters.parameters.update(fromContentsOf: checkpoint.parameters)
            if let residual {
                if checkpoint.worldSize == n, let mine = store.loadResidual(step: checkpoint.step, rank: rank), mine.count == residual.count {
                    _ = residual.update(fromContentsOf: mine)          // same ranks: exactly this rank's memory
                } else if let sum = checkpoint.residualSum, sum.count == residual.count {
                    // Re-sharded: each rank takes an equal share; the sum is what EF preserves.
                    for i in 0 ..< residual.count { residual[i] = sum[i] / Float(n) }
                }
            }
            startStep = checkpoint.step
            skipped = checkpoint.skippedSteps
            try RingAllGather.requireAgreement(Int64(startStep), on: "the checkpoint step to resume from", over: transport)
            if rank == 0 { log("resumed from \(path) at step \(startStep) (written by \(checkpoint.worldSize) ranks, now \(n))") }
        }

        let endStep = min(totalSteps, stopAfter ?? totalSteps)
        let localBatch = sampler.localBatch
        model.reserve(batch: max(localBatch, min(config.evalBatch, max(1, test.count / n + 1))))
        let input = UnsafeMutableBufferPointer<Float>.allocate(capacity: localBatch * train.inputSize)
        let labels = UnsafeMutableBufferPointer<Int32>.allocate(capacity: localBatch)
        defer { input.deallocate(); labels.deallocate() }
        let metricsPath = (runDirectory as NSString).appendingPathComponent("metrics.jsonl")
        if rank == 0 {
            try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
            if !resume { FileManager.default.createFile(atPath: metricsPath, contents: nil) }
            let zeroCopy = (transport as? SharedMemoryTransport)?.sharedSegment(containing: parameters.gradients) != nil
            log("ringsgd train: \(n) ranks, model \(model.summary), \(config.optimizer) lr \(config.lr), codec \(config.codec)"
                + (zeroCopy ? " (gradients in shared memory: fp32 ring steps are direct loads)" : "") + ", "
                + "global batch \(config.globalBatch) (\(localBatch) per rank), \(stepsPerEpoch) steps/epoch, \(totalSteps) steps")
        }

        var clock = StepClock(), runClock = StepClock()   // this epoch's, and the run's so far
        var epochLoss = 0.0, epochCorrect = 0, epochSamples = 0
        var order: [Int] = [], orderEpoch = -1
        var lastTestAccuracy = 0.0, lastTrainLoss = Double.nan
        let wallStart = ContinuousClock.now
        var evalSeconds = 0.0   // excluded from training throughput, as the peer excludes it
        var epochStart = ContinuousClock.now, epochStartStep = startStep
        for step in startStep ..< max(startStep, endStep) {
            let epoch = step / stepsPerEpoch, stepInEpoch = step % stepsPerEpoch
            if epoch != orderEpoch { order = sampler.permutation(epoch: epoch); orderEpoch = epoch }

            // 1. Local gradient.
            var t0 = ContinuousClock.now
            train.fill(sampler.localIndices(order, stepInEpoch: stepInEpoch), input: input.baseAddress!, labels: labels.baseAddress!)
            reseedDropout(model, step: step)
            let local = try model.computeGradients(input: UnsafeBufferPointer(input), labels: UnsafeBufferPointer(labels), batch: localBatch)
            // Fault injection (consistency.inject_nonfinite_at): one rank, step mod n, gets an
            // infinite gradient; the test suite checks that every rank skips that step.
            if config.injectNonFiniteAt.contains(step) && step % n == rank { parameters.gradients[parameters.count / 2] = .infinity }
            if !local.loss.isFinite { parameters.gradients[0] = .nan }
            clock.compute += (ContinuousClock.now - t0).seconds

            // 2. Average across ranks (uncompressed during comm.warmup_steps).
            t0 = ContinuousClock.now
            let active = step < config.uncompressedWarmupSteps ? fp32Ring : ring
            // Stochastic rounding draws from (seed, rank, step): resumable without state.
            // (Round-to-nearest int8 never draws, so reseeding it changes nothing.)
            ring.codec.int8Base?.reseed(config.seed &+ UInt64(rank) << 40 &+ UInt64(step) &* 0x9E37_79B9)
            try active.average(parameters.gradients, residual: active === ring ? residual : nil)
            clock.comm += (ContinuousClock.now - t0).seconds
            clock.codec += active.lastCodecSeconds
            if let gradientDumpPath, rank == 0, step == endStep - 1 {
                try Data(buffer: UnsafeBufferPointer(parameters.gradients)).write(to: URL(fileURLWithPath: gradientDumpPath), options: .atomic)
            }

            // 3–4. Norm (non-finite → skip everywhere), clip, update.
            let norm = globalNorm(parameters.gradients)
            let lr = schedule.learningRate(at: perEpoch ? epoch : step)
            if !norm.isFinite {
                skipped += 1
                if rank == 0 { log("warning: step \(step): non-finite gradient (norm \(norm)); skipped on every rank (\(skipped) so far)") }
            } else {
                if config.clipGradNorm > 0 && norm > config.clipGradNorm {
                    let scale = Float(config.clipGradNorm / (norm + 1e-6))   // torch.nn.utils.clip_grad_norm_
                    for i in 0 ..< parameters.count { parameters.gradients[i] *= scale }
                }
                optimizer.step(parameters: parameters.parameters, gradients: parameters.gradients, lr: lr)
                epochLoss += local.loss * Double(localBatch)
                epochCorrect += local.correct
                epochSamples += localBatch
            }

            let done = step + 1
            if config.checkEverySteps > 0 && done % config.checkEverySteps == 0 { try checkReplicas(model, optimizer, step: done) }
            if config.checkpointEverySteps > 0 && done % config.checkpointEverySteps == 0 && done < totalSteps {
                try saveCheckpoint(store, model, optimizer, residual: residual, sumRing: fp32Ring, step: done, skipped: skipped)
            }
            if rank == 0 && (done % config.logEverySteps == 0 || isTerminal) {
                progress(epoch: epoch, epochs: epochs, step: done, total: totalSteps, loss: local.loss, lr: lr,
                         samplesPerSecond: Double((done - epochStartStep) * config.globalBatch) / max((ContinuousClock.now - epochStart).seconds, 1e-9),
                         wall: (ContinuousClock.now - wallStart).seconds, startStep: startStep)
            }

            // End of an epoch (or of the run): global train metrics and test accuracy.
            if stepInEpoch == stepsPerEpoch - 1 || done == endStep {
                let elapsed = (ContinuousClock.now - epochStart).seconds
                let sums = try RingAllGather.sum([epochLoss, Double(epochCorrect), Double(epochSamples)], over: transport)
                lastTrainLoss = sums[2] > 0 ? sums[0] / sums[2] : .nan
                let evalStart = ContinuousClock.now
                lastTestAccuracy = try evaluate(model, test)
                evalSeconds += (ContinuousClock.now - evalStart).seconds
                let metrics = EpochMetrics(epoch: epoch + 1, step: done, lr: lr, train_loss: lastTrainLoss,
                                           train_accuracy: sums[2] > 0 ? sums[1] / sums[2] : 0,
                                           test_accuracy: lastTestAccuracy,
                                           samples_per_second: Double((done - epochStartStep) * config.globalBatch) / max(elapsed, 1e-9),
                                           compute_seconds: clock.compute, comm_seconds: clock.comm, codec_seconds: clock.codec,
                                           skipped_steps: skipped)
                if rank == 0 {
                    if isTerminal { print("") }
                    log(String(format: "epoch %d/%d  step %d  train loss %.4f  train acc %.4f  test acc %.4f  %.0f samples/s  compute %.1fs comm %.1fs",
                               epoch + 1, epochs, done, metrics.train_loss, metrics.train_accuracy, metrics.test_accuracy,
                               metrics.samples_per_second, clock.compute, clock.comm))
                    try appendLine(try JSONEncoder.sorted.encode(metrics), to: metricsPath)
                }
                epochLoss = 0; epochCorrect = 0; epochSamples = 0
                epochStart = ContinuousClock.now
                epochStartStep = done
                runClock.add(clock)
                clock = StepClock()
            }
        }
        runClock.add(clock)   // steps after the last epoch boundary (none unless stopped early)
        let wall = (ContinuousClock.now - wallStart).seconds
        let hash = try checkReplicas(model, optimizer, step: endStep)
        if endStep > startStep || !resume {
            try saveCheckpoint(store, model, optimizer, residual: residual, sumRing: fp32Ring, step: endStep, skipped: skipped)
        }
        let rss = try RingAllGather.gather(peakResidentMegabytes(), over: transport).max() ?? 0
        let summary = RunSummary(test_accuracy: lastTestAccuracy,
                                 samples_per_second: Double((endStep - startStep) * config.globalBatch) / max(wall - evalSeconds, 1e-9),
                                 steps: endStep, wall_seconds: wall, skipped_steps: skipped,
                                 param_hash: String(format: "%016llx", hash), peak_rss_mb: rss, world_size: n,
                                 codec: config.codec, train_loss: lastTrainLoss, compute_seconds: runClock.compute,
                                 comm_seconds: runClock.comm, codec_seconds: runClock.codec, resumed_from_step: startStep)
        if rank == 0 {
            let data = try JSONEncoder.sorted.encode(summary)
            try data.write(to: URL(fileURLWithPath: (runDirectory as NSString).appendingPathComponent("summary.json")), options: .atomic)
        }
        return summary
    }

    // MARK: - Pieces of the loop

    private func loadData() throws -> (Dataset, Dataset) {
        if config.dataset == "synthetic" {
            let train = try SyntheticDataset(count: config.syntheticTrainSize, features: config.syntheticFeatures,
                                             classes: config.syntheticClasses, seed: config.seed)
            let test = try SyntheticDataset(count: max(config.syntheticTestSize, 1), features: config.syntheticFeatures,
                                            classes: config.syntheticClasses, seed: config.seed, firstIndex: config.syntheticTrainSize)
            return (train, test)
        }
        let cache = config.resolvedCacheDirectory
        return (try FashionMNIST(directory: config.dataDirectory, split: "train", cacheDirectory: cache),
                try FashionMNIST(directory: config.dataDirectory, split: "t10k", cacheDirectory: cache))
    }

    /// Runs `body` on every rank; if it throws on any, every rank throws together (rank 0
    /// reports its own message, or names the ranks that failed), so no rank is left waiting.
    func agreeOn<T>(_ what: String, _ body: () throws -> T) throws -> T {
        var result: T?, failure: Error?
        do { result = try body() } catch { failure = error }
        let verdicts = try RingAllGather.gather(failure == nil ? Int32(1) : 0, over: transport)
        if let failure { throw AgreedError("\(failure)") }
        if verdicts.contains(0) {
            let failed = verdicts.enumerated().filter { $0.element == 0 }.map { "\($0.offset)" }.joined(separator: ", ")
            throw AgreedError("rank(s) \(failed) could not \(what); see their messages")
        }
        return result!
    }

    /// Dropout masks are a function of (seed, rank, step): nothing to checkpoint.
    private func reseedDropout(_ model: Sequential, step: Int) {
        for case let dropout as Dropout in model.layers {
            dropout.generator = SeededGenerator(seed: config.seed &+ UInt64(transport.rank) << 40, stream: UInt64(step))
        }
    }

    /// ‖g‖₂ in Double, in index order: identical on every rank for identical g.
    private func globalNorm(_ g: UnsafeMutableBufferPointer<Float>) -> Double {
        var lanes = SIMD8<Double>()
        var i = 0
        let p = g.baseAddress!
        while i + 8 <= g.count {
            let v = SIMD8<Double>(SIMD8<Float>(UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)))
            lanes += v * v
            i += 8
        }
        var sum = lanes.sum()
        while i < g.count { sum += Double(g[i]) * Double(g[i]); i += 1 }
        return sum.squareRoot()
    }

    @discardableResult
    private func checkReplicas(_ model: Sequential, _ optimizer: Optimizer, step: Int) throws -> UInt64 {
        let hash = FastHash.hash([model.parameters.parameters] + optimizer.stateBuffers)
        let all = try RingAllGather.gather(hash, over: transport)
        if all.contains(where: { $0 != all[0] }) {
            let groups = Dictionary(grouping: all.indices, by: { all[$0] })
            let detail = groups.map { "ranks \($0.value.map(String.init).joined(separator: ",")): \(String(format: "%016llx", $0.key))" }
            throw CollectiveError.disagreement(rank: transport.rank, what: "parameters and optimizer state after step \(step) (replicas diverged)",
                                               values: detail.sorted())
        }
        return hash
    }

    private func saveCheckpoint(_ store: CheckpointStore, _ model: Sequential, _ optimizer: Optimizer,
                                residual: UnsafeMutableBufferPointer<Float>?, sumRing: RingAllReduce,
                                step: Int, skipped: Int) throws {
        var residualSum: [Float]? = nil
        if let residual {
            var values = Array(residual)
            try store.writeResidual(values, step: step, rank: transport.rank)
            // The error-feedback memory that matters is the sum over ranks (see RingAllReduce):
            // the fp32 ring's average times n.
            try sumRing.average(&values)
            let n = Float(transport.size)
            for i in values.indices { values[i] *= n }
            residualSum = values
        }
        if transport.rank == 0 {
            try store.write(Checkpoint(worldSize: transport.size, step: step, skippedSteps: skipped, config: config.canonicalText,
                                       parameters: Array(model.parameters.parameters), optimizerState: optimizer.stateBytes(),
                                       residualSum: residualSum))
        }
        try transport.barrier()   // no rank goes on before the checkpoint is in place
    }

    /// Test accuracy, evaluation sharded across ranks and reduced.
    private func evaluate(_ model: Sequential, _ test: Dataset) throws -> Double {
        let n = transport.size, rank = transport.rank
        let range = (rank * test.count / n) ..< ((rank + 1) * test.count / n)
        let batch = max(1, min(config.evalBatch, model.reservedBatch))
        let x = UnsafeMutableBufferPointer<Float>.allocate(capacity: batch * test.inputSize)
        let y = UnsafeMutableBufferPointer<Int32>.allocate(capacity: batch)
        defer { x.deallocate(); y.deallocate() }
        let indices = Array(range)
        var correct = 0
        var start = 0
        while start < indices.count {
            let count = min(batch, indices.count - start)
            test.fill(indices[start ..< start + count], input: x.baseAddress!, labels: y.baseAddress!)
            let r = try model.evaluate(input: UnsafeBufferPointer(rebasing: x[0 ..< count * test.inputSize]),
                                       labels: UnsafeBufferPointer(rebasing: y[0 ..< count]), batch: count)
            correct += r.correct
            start += count
        }
        let sums = try RingAllGather.sum([Double(correct), Double(indices.count)], over: transport)
        return sums[1] > 0 ? sums[0] / sums[1] : 0
    }

    private func progress(epoch: Int, epochs: Int, step: Int, total: Int, loss: Double, lr: Double,
                          samplesPerSecond: Double, wall: Double, startStep: Int) {
        let remaining = Double(total - step) * wall / Double(max(step - startStep, 1))
        let line = String(format: "epoch %d/%d  step %d/%d  loss %.4f  lr %.5f  %.0f samples/s  ETA %@",
                          epoch + 1, epochs, step, total, loss, lr, samplesPerSecond, formatDuration(remaining))
        if isTerminal {
            print("\r" + line, terminator: "")
            fflush(stdout)
        } else {
            log(line)
        }
    }

    private func appendLine(_ data: Data, to path: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) else {
            FileManager.default.createFile(atPath: path, contents: data + Data("\n".utf8))
            return
        }
        handle.seekToEndOfFile()
        handle.write(data + Data("\n".utf8))
        try handle.close()
    }
}

/// Seconds spent per kind of work.
struct StepClock {
    var compute = 0.0, comm = 0.0, codec = 0.0

    mutating func add(_ other: StepClock) {
        compute += other.compute; comm += other.comm; codec += other.codec
    }
}

/// An error every rank raises at the same point; reported once by rank 0.
public struct AgreedError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : "\(s / 60)m\(String(format: "%02d", s % 60))s"
}

/// Peak resident set size of this process in MB (getrusage's ru_maxrss is in KB on Linux).
func peakResidentMegabytes() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_maxrss) / 1024
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
