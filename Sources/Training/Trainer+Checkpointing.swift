import Collectives
import FileFormats
import Foundation
import NeuralNet

/// Checkpoints and the replica check.
extension Trainer {
    /// Writes the checkpoint of `step`: rank 0 the parameters, optimizer state and the sum of
    /// the error-feedback memory; every rank its own memory. The agreement that closes it is
    /// also the barrier: no rank goes on before the checkpoint is in place, and a failed write
    /// (a full disk) is one error on every rank, the previous checkpoint left intact.
    /// `clock`: the training seconds and bytes sent so far (continued by a resume).
    func saveCheckpoint(_ run: TrainingRun, step: Int, clock: (seconds: Double, bytes: Double?)) throws {
        transport.setActivity("the checkpoint of step \(step)")
        let spanStart = ContinuousClock.now
        defer { run.recordSpan(.checkpoint, since: spanStart) }
        try broadcastBuffers(run)   // model.batchnorm: broadcast — rank 0's buffers are the model's
        let residualSum = try run.synchronizer.errorFeedbackSum()   // collective
        try Agreement.run("write the checkpoint of step \(step)", over: transport) {
            do { try writeCheckpoint(run, step: step, residualSum: residualSum, clock: clock) } catch {
                // A full disk: the previous checkpoint is intact, and where to continue from is known.
                let earlier = run.store.existing().first.map { ", then continue from \(($0 as NSString).lastPathComponent) with 'train … --resume'" } ?? ""
                throw FileError("\(error)\(earlier)")
            }
        }
    }

    /// This rank's error-feedback memory; on rank 0 the checkpoint itself.
    private func writeCheckpoint(_ run: TrainingRun, step: Int, residualSum: [Float]?, clock: (seconds: Double, bytes: Double?)) throws {
        if let memory = run.synchronizer.memory {
            try run.store.writeResidual(UnsafeBufferPointer(memory.values), step: step, rank: transport.rank)
        }
        // Local SGD, DiLoCo: the checkpoint holds θ_outer; each rank's inner parameters and
        // inner optimizer state (which differ by design) go beside it, one file per rank.
        let outer = run.outer.flatMap { $0.started ? $0 : nil }
        if outer != nil {
            try run.store.writeLocalState(parameters: UnsafeBufferPointer(run.parameters.parameters), optimizerState: run.optimizer.stateBytes(),
                                          step: step, rank: transport.rank)
        }
        guard transport.rank == 0 else { return }
        let parameters = outer?.sharedParameters(run.parameters.parameters) ?? run.parameters.parameters
        var checkpoint = Checkpoint(worldSize: transport.size, step: step, skippedSteps: run.skipped, config: config.canonicalText,
                                    parameters: Array(parameters), optimizerState: run.optimizer.stateBytes(),
                                    residualSum: residualSum, powerSGDState: run.synchronizer.powerSGD?.stateBytes(),
                                    model: run.modelDescription, buffers: Array(run.parameters.buffers), outerState: outer?.stateBytes())
        (checkpoint.trainSeconds, checkpoint.bytesSent) = clock
        try run.store.write(checkpoint)
    }

    /// Compares a 64-bit hash of parameters and optimizer state across ranks; a difference
    /// stops every rank, naming the ranks and their hashes. With local steps (local SGD,
    /// DiLoCo) the state that must agree is θ_outer and the outer optimizer's; the inner
    /// parameters and optimizer state differ by design.
    @discardableResult
    func checkReplicas(_ run: TrainingRun, step: Int) throws -> UInt64 {
        transport.setActivity("the replica check after step \(step)")
        let spanStart = ContinuousClock.now
        defer { run.recordSpan(.replicaCheck, since: spanStart) }
        try broadcastBuffers(run)
        // Buffers only when there are any: the hash of a model without them stays what it was.
        let buffers = run.parameters.buffers.isEmpty ? [] : [run.parameters.buffers]
        let shared: [UnsafeMutableBufferPointer<Float>]
        if let outer = run.outer, outer.started {
            shared = [outer.outer] + buffers + outer.stateBuffers
        } else {
            shared = [run.parameters.parameters] + buffers + run.optimizer.stateBuffers
        }
        let hash = FastHash.hash(shared)
        let all = try RingAllGather.gather(hash, over: transport)
        if all.contains(where: { $0 != all[0] }) {
            let groups = Dictionary(grouping: all.indices, by: { all[$0] })
            let detail = groups.map { "ranks \($0.value.map(String.init).joined(separator: ",")): \(String(format: "%016llx", $0.key))" }
            throw CollectiveError.disagreement(rank: transport.rank, what: "parameters, buffers and optimizer state after step \(step) (replicas diverged)",
                                               values: detail.sorted())
        }
        return hash
    }
}
