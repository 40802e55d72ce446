import FileFormats
import Foundation
import GradientCodecs
import NeuralNet
import Optimizers

/// What one step did, for the epoch's bookkeeping.
struct StepOutcome {
    var loss: Double, correct: Int, samples: Int
    /// False when every rank skipped the step (non-finite averaged gradient).
    var applied: Bool
    var lr: Double
    var clock: StepClock
}

/// The training step: local gradient, average, norm, update.
extension Trainer {
    func trainStep(_ step: Int, _ run: TrainingRun) throws -> StepOutcome {
        let parameters = run.parameters, rank = transport.rank, n = transport.size
        let batch = run.sampler.localBatch
        var clock = StepClock()

        // 1–2. Local gradient; each bucket is handed to the synchronizer as soon as backward
        // has finished it (with comm.overlap its average starts while backward goes on).
        // With train.accumulate_steps K the rank's batch runs as K micro-batches: the first
        // K − 1 gradients are summed locally (no communication: DDP's no_sync), and the last
        // micro-batch's backward completes each bucket with the sum, divided by K — the mean
        // over the rank's whole batch, as one batch would give up to float rounding.
        let start = ContinuousClock.now
        if !run.buffersBeforeStep.isEmpty { _ = run.buffersBeforeStep.withUnsafeMutableBufferPointer { $0.update(fromContentsOf: parameters.buffers) } }
        run.fillBatch(step: step)
        // The schedule's momentum (OneCycle's) for this step, set before the all-reduce: with
        // comm.compress_momentum the carry added as a bucket is encoded and taken off after it
        // is decoded is scaled by it, so both must be this step's μ — and a resumed run, whose
        // optimizer starts with the constructed momentum, then carries what an uninterrupted one does.
        let unit = run.perEpoch ? step / run.stepsPerEpoch : step
        if let momentum = run.schedule.momentum(at: unit), let scheduled = run.optimizer as? MomentumScheduled {
            scheduled.scheduledMomentum = momentum
        }
        let plan = run.synchronizer.plan
        let injectHere = config.injectNonFiniteAt.contains(step) && step % n == rank
        let k = run.microBatches
        // comm.sync: local_sgd | diloco — a local step: this rank's own mean gradient, no all-reduce.
        let localStep = run.outer?.isLocal(step) ?? false
        if localStep, let outer = run.outer, !outer.started {
            outer.start(from: parameters.parameters)
            // The memory held gradient residuals (the every-step warm-up); from now on it holds
            // the pseudo-gradient's, in other units.
            run.synchronizer.memory?.clear()
        }
        let weight = localStep ? 1 : run.sampler.gradientWeight
        var lossSum = 0.0, correct = 0
        for micro in 0 ..< k {
            run.model.reseedDropout(seed: config.seed, rank: rank, step: step * k + micro)
            let (input, labels) = run.microBatch(micro)
            var mark = ContinuousClock.now
            let forwardDone = { run.timeline.map { $0.record(.forward, micro, from: mark, to: .now, on: $0.training) }; mark = .now }
            if micro < k - 1 {
                let local = try run.model.computeGradients(input: input, labels: labels, batch: run.microBatch, forwardDone: forwardDone) { layer, _ in
                    run.timeline.map { $0.record(.backward, layer, from: mark, to: .now, on: $0.training) }; mark = .now
                }
                let sum = run.accumulated!
                if micro == 0 { _ = sum.update(fromContentsOf: parameters.gradients) }
                else { FloatKernels.add(parameters.gradients.baseAddress!, into: sum.baseAddress!, count: sum.count) }
                lossSum += local.loss; correct += local.correct
                continue
            }
            if !localStep {
                run.synchronizer.carryStaysOn = takesCarriedAverage(run, step: step)
                run.synchronizer.beginStep(step, gradients: parameters.gradients)
            }
            // A failed pass (a synchronised batch norm's collective) may leave buckets in flight on
            // the communication thread: drain it before the error ends the job.
            let local: SoftmaxCrossEntropy.Result
            do { local = try run.model.computeGradients(input: input, labels: labels, batch: run.microBatch, forwardDone: forwardDone) { layer, loss in
                run.timeline.map { $0.record(.backward, layer, from: mark, to: .now, on: $0.training) }; mark = .now
                guard let b = plan.completedBy[layer] else { return }
                let bucket = plan.buckets[b]
                if let sum = run.accumulated {
                    let g = parameters.gradients.baseAddress! + bucket.lowerBound
                    FloatKernels.add(sum.baseAddress! + bucket.lowerBound, into: g, count: bucket.count)
                    FloatKernels.scale(g, by: 1 / Float(k), count: bucket.count)
                }
                // Unequal shares of the global batch: the rank's mean gradient weighted by
                // n·share/B, so that the all-reduce's average is the global batch's mean.
                if weight != 1 { FloatKernels.scale(parameters.gradients.baseAddress! + bucket.lowerBound, by: weight, count: bucket.count) }
                // Fault injection (consistency.inject_nonfinite_at): one rank, step mod n, gets
                // an infinite gradient; the test suite checks that every rank skips that step.
                if injectHere && bucket.contains(parameters.count / 2) { parameters.gradients[parameters.count / 2] = .infinity }
                // A non-finite loss poisons the gradient, so that every rank skips the step.
                if !(lossSum + loss.loss).isFinite && bucket.contains(0) { parameters.gradients[0] = .nan }
                if !localStep { run.synchronizer.bucketReady(b) }
            } } catch {
                run.synchronizer.abandonStep()
                throw error
            }
            lossSum += local.loss; correct += local.correct
        }
        let result = (loss: lossSum / Double(k), correct: correct)
        let backwardEnd = ContinuousClock.now
        clock.compute = (backwardEnd - start).seconds
        if !localStep {
            try run.synchronizer.finishStep()
            try averageBuffers(run)     // model.batchnorm: local
            clock.comm = run.synchronizer.lastSeconds
            clock.exposed = run.synchronizer.lastExposedSeconds
            clock.isolated = run.synchronizer.lastIsolatedSeconds
            clock.codec = run.synchronizer.lastCodecSeconds
            clock.wireBytes = run.synchronizer.lastBytesSent.map(Double.init)
        }
        if let gradientDumpPath, rank == 0, step == run.endStep - 1 {
            try FileSystem.writeAtomically(Array(UnsafeRawBufferPointer(parameters.gradients)), to: gradientDumpPath, what: "gradient dump")
            // Its layout (each view's name, offset and shape), for `bench allreduce --compressor powersgd`.
            try FileSystem.writeAtomically(Array(try JSONEncoder.sorted.encode(parameters.views)), to: gradientDumpPath + ".views.json",
                                           what: "gradient dump layout")
        }

        // 3–4. Norm (non-finite → skip everywhere), clip, update.
        // The norm: taken by the ring as it decoded (a lossy codec), else a pass of its own.
        let norm = (localStep ? nil : run.synchronizer.lastSquaredNorm).map { $0.squareRoot() } ?? globalNorm(parameters.gradients)
        let lr = run.schedule.learningRate(at: unit)
        guard norm.isFinite else {
            // The forward updated the running statistics from this batch (non-finite, likely):
            // the step did not happen, so neither did that update, nor num_batches_tracked's.
            // Under `sync` and `local` the same values on every rank (they were equal before the
            // step); under `broadcast` each rank's own, of which only rank 0's are ever read.
            _ = parameters.buffers.update(fromContentsOf: run.buffersBeforeStep)
            if localStep {
                run.locallySkipped += 1
                log("warning: rank \(rank) step \(step): non-finite local gradient (norm \(norm)); skipped on this rank (\(run.locallySkipped) so far; the outer step agrees on the rest)")
            } else {
                run.skipped += 1
                run.synchronizer.discardStep()
                if rank == 0 { log("warning: step \(step): non-finite gradient (norm \(norm)); skipped on every rank (\(run.skipped) so far)") }
            }
            return StepOutcome(loss: result.loss, correct: 0, samples: 0, applied: false, lr: lr, clock: clock)
        }
        if config.clipGradNorm > 0 && norm > config.clipGradNorm {
            let scale = Float(config.clipGradNorm / (norm + 1e-6))   // torch.nn.utils.clip_grad_norm_
            for i in 0 ..< parameters.count { parameters.gradients[i] *= scale }
        }
        let optimizerStart = ContinuousClock.now
        if run.synchronizer.lastAverageCarried && !localStep, let carrying = run.optimizer as? MomentumCarrying {
            carrying.step(parameters: parameters.parameters, carriedAverage: parameters.gradients, lr: lr)
        } else {
            run.optimizer.step(parameters: parameters.parameters, gradients: parameters.gradients, lr: lr)
        }
        if localStep { run.outer?.tookLocalStep() }
        // Fault injection (`consistency.inject_divergence_at`): one value of what the replica
        // check hashes moves by one ulp on the last rank — a silent fault, which the next check
        // must name (the check is otherwise only ever seen passing).
        if config.injectDivergenceAt.contains(step) && rank == transport.size - 1 && transport.size > 1 {
            let shared = run.outer.flatMap { $0.started ? $0.outer : nil } ?? parameters.parameters
            shared[0] = shared[0].nextUp
        }
        run.timeline.map { $0.record(.optimizer, from: optimizerStart, to: .now, on: $0.training) }
        return StepOutcome(loss: result.loss, correct: result.correct, samples: batch, applied: true, lr: lr, clock: clock)
    }

    /// Whether this step's update can be taken from the carried average itself
    /// (`MomentumCarrying.takesCarriedAverage`), so that the all-reduce leaves the carry on: not
    /// when the averaged gradient itself is wanted — clipping scales ḡ, a momentum schedule
    /// changes μ between the carry and the step, the gradient dump (the last step's) writes ḡ.
    func takesCarriedAverage(_ run: TrainingRun, step: Int) -> Bool {
        guard let carrying = run.optimizer as? MomentumCarrying, carrying.takesCarriedAverage,
              config.clipGradNorm == 0, gradientDumpPath == nil || step != run.endStep - 1 else { return false }
        return run.schedule.momentum(at: run.perEpoch ? step / run.stepsPerEpoch : step) == nil
    }

    /// ‖g‖₂ in Double, in index order: identical on every rank for identical g.
    func globalNorm(_ g: UnsafeMutableBufferPointer<Float>) -> Double {
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
}
