import Collectives
import Foundation
import GradientSync

/// `comm.sync: local_sgd | diloco`: the outer steps (`OuterSynchronizer`), whole or, with
/// `comm.fragments`, one fragment at a time, each started and applied where its schedule says.
///
/// **Non-finite values.** A local step whose gradient is not finite is skipped by its rank
/// alone (the others have nothing to agree on: their replicas differ anyway until the next
/// outer step). The outer step is where ranks must agree, and there the rule of every-step
/// averaging holds again: a non-finite Δ_r poisons Δ̄ on every rank, so every rank sees the
/// same non-finite norm, discards that outer step (the fragment's local progress since its
/// last outer step is dropped, every rank back at θ_outer on it, the error-feedback memory
/// of its entries cleared) and counts one skipped step.
///
/// **One collective at a time.** A streaming fragment's all-reduce runs on the communication
/// thread while local steps go on (MPI is at THREAD_SERIALIZED); anything the training thread
/// does with the other ranks — evaluation, replica check, checkpoint, an epoch's sums — first
/// waits for it (`drainOuterStep`), which changes when the wait happens, never a value.
extension Trainer {
    /// The outer updates due after step `step`: the fragment in flight applied, fragments whose
    /// outer step starts now synchronised whole (without a delay), and after the run's last step
    /// every other fragment averaged over the ranks, so that the run ends on parameters every
    /// rank agrees on. Returns whether the shared state changed (the replica check runs then).
    ///
    /// Why an average and not an outer step at the end: the run stops partway through those
    /// fragments' rounds, and the outer optimizer's momentum would add most of a whole round's
    /// step (at lr 0.7 and momentum 0.9, 0.57 of the momentum buffer) to the few local steps'
    /// progress since — the final model would then swing with `train.max_steps` mod H. DiLoCo's
    /// rounds are whole (Douillard et al. 2023, Algorithm 1); the mean of the replicas keeps
    /// every local step's progress and adds nothing to it.
    /// Streaming fragments start afterwards (`startOuterSteps`), behind the step's other
    /// collectives, so that their all-reduce overlaps the next local steps.
    func finishOuterSteps(_ run: TrainingRun, after step: Int, _ epoch: inout EpochAccumulator) throws -> Bool {
        guard let outer = run.outer, outer.started else { return false }
        let done = step + 1, last = done == run.totalSteps
        var touched: Set<Int> = []
        if let flight = outer.inFlight, flight.applyAfter == done || last {
            try completeInFlight(run, &epoch)
            touched.insert(flight.fragment)
        }
        if outer.settings.delay == 0 || last {
            for p in outer.fragmentsStarting(after: step) {
                try synchronizeFragment(p, run, step: step, &epoch)
                touched.insert(p)
            }
        }
        if last {
            for p in outer.fragments.indices where !touched.contains(p) {
                try synchronizeFragment(p, run, step: step, &epoch, partialRound: true)
                touched.insert(p)
            }
        }
        return !touched.isEmpty
    }

    /// Streaming (`comm.outer_delay` > 0): the fragments whose outer step starts after step
    /// `step`, started on the communication thread.
    func startOuterSteps(_ run: TrainingRun, after step: Int) {
        guard let outer = run.outer, outer.started, outer.settings.delay > 0, step + 1 < run.totalSteps else { return }
        for p in outer.fragmentsStarting(after: step) { startFragment(p, run, step: step) }
    }

    /// Fragment p's outer step from start to end: Δ, its average, the update — or, for a round
    /// the run's end cuts short, the replicas' mean (`OuterSynchronizer.average`).
    private func synchronizeFragment(_ p: Int, _ run: TrainingRun, step: Int, _ epoch: inout EpochAccumulator,
                                     partialRound: Bool = false) throws {
        let outer = run.outer!, delta = outer.deltaBuffer(gradients: run.parameters.gradients)
        let spanStart = ContinuousClock.now
        defer { run.recordSpan(.outerStep, since: spanStart) }
        pseudoGradient(p, run, step: step, into: delta)
        run.synchronizer.beginBuckets(step, of: delta, buckets: outer.fragments[p].buckets,
                                      what: "the pseudo-gradient all-reduce of the outer step after step \(step + 1)")
        try run.synchronizer.finishBuckets()
        account(run.synchronizer, &epoch)
        applyOrDiscard(p, run, averaged: delta, step: step, partialRound: partialRound)
    }

    /// Streaming: fragment p's Δ into the outer synchronizer's own buffer and its average
    /// started on the communication thread; applied `comm.outer_delay` steps later.
    private func startFragment(_ p: Int, _ run: TrainingRun, step: Int) {
        let outer = run.outer!, delta = outer.deltaBuffer(gradients: run.parameters.gradients)
        precondition(outer.inFlight == nil, "comm.outer_delay ≤ H/P: one fragment in flight at a time")
        pseudoGradient(p, run, step: step, into: delta)
        run.synchronizer.beginBuckets(step, of: delta, buckets: outer.fragments[p].buckets,
                                      what: "the pseudo-gradient all-reduce of fragment \(p)'s outer step after step \(step + 1)")
        outer.inFlight = .init(fragment: p, applyAfter: step + 1 + outer.settings.delay, averaged: false)
    }

    /// Fragment p's Δ — with the fault injection `consistency.inject_nonfinite_outer_at`: after
    /// the listed steps, rank step mod n sends an infinite Δ (the test suite checks that every
    /// rank then discards that outer step).
    private func pseudoGradient(_ p: Int, _ run: TrainingRun, step: Int, into delta: UnsafeMutableBufferPointer<Float>) {
        let outer = run.outer!
        outer.pseudoGradient(p, of: run.parameters.parameters, into: delta)
        if config.injectNonFiniteOuterAt.contains(step) && step % transport.size == transport.rank {
            delta[outer.fragments[p].range.lowerBound] = .infinity
        }
    }

    /// Waits for a streaming fragment's all-reduce, if one is running (before any other collective).
    func drainOuterStep(_ run: TrainingRun, _ epoch: inout EpochAccumulator) throws {
        guard let outer = run.outer, var flight = outer.inFlight, !flight.averaged else { return }
        try run.synchronizer.finishBuckets()
        account(run.synchronizer, &epoch)
        flight.averaged = true
        outer.inFlight = flight
    }

    /// The fragment in flight: its average awaited (if not yet) and applied.
    private func completeInFlight(_ run: TrainingRun, _ epoch: inout EpochAccumulator) throws {
        try drainOuterStep(run, &epoch)
        let outer = run.outer!, flight = outer.inFlight!
        outer.inFlight = nil
        applyOrDiscard(flight.fragment, run, averaged: outer.deltaBuffer(gradients: run.parameters.gradients), step: flight.applyAfter - 1)
    }

    /// The outer update of fragment p (the mean of the replicas for a `partialRound`) — or, for a
    /// non-finite Δ̄, the same discard on every rank.
    private func applyOrDiscard(_ p: Int, _ run: TrainingRun, averaged delta: UnsafeMutableBufferPointer<Float>, step: Int,
                                partialRound: Bool = false) {
        let outer = run.outer!, range = outer.fragments[p].range
        let norm = globalNorm(UnsafeMutableBufferPointer(rebasing: delta[range]))
        guard norm.isFinite else {
            run.skipped += 1
            outer.discarded += 1
            run.synchronizer.discardStep(range: range)
            outer.reset(p, run.parameters.parameters, mixing: false)
            if transport.rank == 0 {
                log("warning: outer step\(outer.fragments.count > 1 ? " of fragment \(p)" : "") after step \(step + 1): non-finite pseudo-gradient (norm \(norm)); discarded on every rank, back at θ_outer (\(run.skipped) skipped so far)")
            }
            return
        }
        if partialRound { outer.average(p, averaged: delta, to: run.parameters.parameters) }
        else { outer.apply(p, averaged: delta, to: run.parameters.parameters) }
    }

    /// The averaging's time and bytes, into the epoch's clock. Not into `exposed`: its
    /// counterpart `isolated` is the cost of one step's gradient, so an outer step's wait there
    /// would make `comm_hidden_fraction` compare unlike things (`RunSummary`); it is in `comm`.
    private func account(_ synchronizer: GradientSynchronizer, _ epoch: inout EpochAccumulator) {
        epoch.clock.comm += synchronizer.lastSeconds
        epoch.clock.codec += synchronizer.lastCodecSeconds
        epoch.clock.wireBytes = epoch.clock.wireBytes.flatMap { sent in synchronizer.lastBytesSent.map { sent + Double($0) } }
    }
}
