import Collectives
import GradientSync
import Foundation
import NeuralNet

/// `model.batchnorm`: the question data parallelism asks of batch normalisation. Each rank
/// sees its own share of the batch, and the running statistics are buffers that no gradient
/// all-reduce touches, so without an answer the replicas would drift apart.
///
/// - `sync` (PyTorch's `SyncBatchNorm`): every batch norm sums its per-channel statistics over
///   the ranks — Σx, Σx² and the count in forward, Σdy and Σdy·x̂ in backward — so a step on n
///   ranks is a step of one process on the global batch, and the running statistics are the
///   same everywhere. With `comm.overlap` the reductions take their turn among the buckets
///   (`GradientSynchronizer.runCollective`): behind those still in flight on the communication
///   thread, or in place when it is idle (always in forward).
/// - `local`: each rank normalises with its own batch; the running buffers are then averaged
///   over the ranks after every step, each weighted by its rank's share of the global batch
///   (one small all-reduce), so evaluation, checkpoints and the replica hash see one model and
///   a resumed run continues bit-identically.
/// - `broadcast` (DDP's default, `broadcast_buffers=True`): rank 0's buffers are the model's,
///   copied to every rank wherever they are read — evaluation, checkpoints, the replica
///   check. DDP copies them before every forward; here that copy would change nothing: a
///   training forward normalises with its batch's statistics and never reads the buffers, and
///   rank 0's own buffers evolve from its own batches whatever the others hold. So one
///   collective a step is saved, for the same buffers at every read.
extension Trainer {
    /// Every batch norm of the model, nested ones (residual blocks) included.
    static func batchNorms(of model: Model) -> [BatchNorm] {
        func collect(_ layer: Layer) -> [BatchNorm] {
            if let norm = layer as? BatchNorm { return [norm] }
            if let block = layer as? Residual { return (block.layers + block.shortcut).flatMap(collect) }
            return []
        }
        return (model as? Sequential)?.layers.flatMap(collect) ?? []
    }

    /// `sync`: installs the reducers (with one rank there is nothing to sum); `weight` is the
    /// rank's share of the global batch's mean gradient (unequal shares: see `BatchNorm.gradientWeight`).
    func installBatchNormSync(_ model: Model, synchronizer: GradientSynchronizer, weight: Double) {
        guard config.batchNorm == "sync", transport.size > 1 else { return }
        let transport = self.transport, norms = Self.batchNorms(of: model)
        // Every reduction sums a batch norm's 2C + 1 values (Σ, Σ of squares or products, the
        // count), one at a time on the training thread's turn: one scratch for the widest
        // serves them all, with no buffer allocated a pass (only the small closure that carries
        // each reduction to `runCollective`).
        let scratch = RingAllGather.SumScratch(count: 2 * (norms.map(\.channels).max() ?? 0) + 1, ranks: transport.size)
        for norm in norms {
            norm.gradientWeight = weight
            // What a stall message names: this reduction, not the last bucket's all-reduce.
            let activity = "the synchronised statistics of \(norm.summary)"
            norm.statisticsReducer = { sums in
                try synchronizer.runCollective {
                    transport.setActivity(activity)
                    try RingAllGather.sum(sums, scratch: scratch, over: transport)
                }
            }
        }
    }

    /// Refuses a batch norm that would normalise a single value per channel in training: its
    /// variance is 0, so its output is β whatever its input, no gradient passes through it, and
    /// its running variance decays towards 0 (evaluation then divides by √eps). PyTorch refuses
    /// it too ("Expected more than 1 value per channel when training"). `smallestMicroBatch` is
    /// the fewest samples a rank's forward sees; under `sync` on several ranks every rank's
    /// values are counted together, so there it is never one.
    func checkBatchNormsSeeMoreThanOneValue(_ model: Model, smallestMicroBatch: Int) throws {
        guard config.batchNorm != "sync" || transport.size == 1 else { return }
        for norm in Self.batchNorms(of: model) where smallestMicroBatch * norm.valuesPerSample < 2 {
            let remedy = transport.size > 1
                ? "give each rank at least 2 samples a forward pass (train.global_batch ≥ \(2 * transport.size * config.accumulateSteps) with train.accumulate_steps \(config.accumulateSteps)) or use model.batchnorm: sync"
                : "use a batch of at least 2 samples a forward pass (train.global_batch ≥ \(2 * config.accumulateSteps) with train.accumulate_steps \(config.accumulateSteps))"
            throw ConfigError("\(norm.summary) would normalise 1 value per channel (a forward pass of \(smallestMicroBatch) sample\(smallestMicroBatch == 1 ? "" : "s") of \(norm.valuesPerSample) value\(norm.valuesPerSample == 1 ? "" : "s") each): its output would be its bias whatever its input; \(remedy)")
        }
    }

    /// `broadcast`: rank 0's buffers everywhere, wherever they are read (evaluation,
    /// checkpoints, the replica check).
    func broadcastBuffers(_ run: TrainingRun) throws {
        guard config.batchNorm == "broadcast", transport.size > 1, !run.parameters.buffers.isEmpty else { return }
        transport.setActivity("the broadcast of rank 0's batch-norm statistics")
        try transport.broadcast(UnsafeMutableRawBufferPointer(run.parameters.buffers), root: 0)
    }

    /// `local`: the ranks' running buffers averaged, after the step, each weighted by its
    /// rank's share of the global batch (equal shares: the plain mean) — as `sync` counts each
    /// sample once: with unequal shares a plain mean would give the smaller share's statistics
    /// more than their samples' weight.
    func averageBuffers(_ run: TrainingRun) throws {
        guard config.batchNorm == "local", transport.size > 1, !run.parameters.buffers.isEmpty else { return }
        let buffers = run.parameters.buffers, share = Double(run.sampler.localBatch) / Double(config.globalBatch)
        transport.setActivity("the average of the batch norms' running statistics")
        if run.bufferAverage == nil {
            run.bufferAverage = (.allocate(capacity: buffers.count), RingAllGather.SumScratch(count: buffers.count, ranks: transport.size))
        }
        let (sums, scratch) = run.bufferAverage!
        for i in buffers.indices { sums[i] = Double(buffers[i]) * share }
        try RingAllGather.sum(sums, scratch: scratch, over: transport)
        for i in buffers.indices { buffers[i] = Float(sums[i]) }
    }
}
