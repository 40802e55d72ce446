import Collectives
import Foundation
import GradientSync

/// `comm.sync: local_sgd | diloco`: the outer step every H local steps (`OuterSynchronizer`).
///
/// **Non-finite values.** A local step whose gradient is not finite is skipped by its rank
/// alone (the others have nothing to agree on: their replicas differ anyway until the next
/// outer step). The outer step is where ranks must agree, and there the rule of every-step
/// averaging holds again: a non-finite Δ_r poisons Δ̄ on every rank, so every rank sees the
/// same non-finite norm, discards the outer step (the interval's local progress is dropped,
/// every rank back at θ_outer, the error-feedback memory cleared) and counts one skipped step.
extension Trainer {
    /// Averages the pseudo-gradient through the synchronizer (the step's ring, codec and
    /// error feedback; its bucket plan cuts the gradient buffer, which holds Δ), applies the
    /// outer optimizer and puts every rank at the new θ_outer; the time and bytes go to the
    /// epoch's clock.
    func outerStep(_ run: TrainingRun, after step: Int, _ epoch: inout EpochAccumulator) throws {
        guard let outer = run.outer else { return }
        let spanStart = ContinuousClock.now
        defer { run.recordSpan(.outerStep, since: spanStart) }
        let parameters = run.parameters, delta = parameters.gradients, synchronizer = run.synchronizer
        outer.pseudoGradient(of: parameters.parameters, into: delta)
        transport.setActivity("the outer step after step \(step + 1)")
        synchronizer.beginStep(step, gradients: delta)
        for b in synchronizer.plan.buckets.indices { synchronizer.bucketReady(b) }
        try synchronizer.finishStep()
        epoch.clock.comm += synchronizer.lastSeconds
        epoch.clock.codec += synchronizer.lastCodecSeconds
        epoch.clock.exposed += synchronizer.lastExposedSeconds
        epoch.clock.wireBytes = epoch.clock.wireBytes.flatMap { sent in synchronizer.lastBytesSent.map { sent + Double($0) } }
        let norm = globalNorm(delta)
        guard norm.isFinite else {
            run.skipped += 1
            outer.discarded += 1
            synchronizer.discardStep()
            outer.reset(parameters.parameters)
            if transport.rank == 0 {
                log("warning: outer step after step \(step + 1): non-finite pseudo-gradient (norm \(norm)); discarded on every rank, back at θ_outer (\(run.skipped) skipped so far)")
            }
            return
        }
        outer.apply(delta, to: parameters.parameters)
    }
}
