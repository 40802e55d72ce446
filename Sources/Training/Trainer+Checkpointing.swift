import Collectives
import FileFormats
import Foundation
import NeuralNet

/// Checkpoints and the replica check.
extension Trainer {
    /// Writes the checkpoint of `step`: the writing ranks (`checkpoint.replicate`: one in each
    /// run directory, or rank 0) the parameters, optimizer state and the sum of the
    /// error-feedback memory; every rank its own memory. With `checkpoint.async` the bytes go
    /// to disk on the writer's thread while the steps go on (`CheckpointWriter`); the next
    /// checkpoint, a stop and the end of the run wait for them and agree on the outcome, so a
    /// failed write (a full disk) is one error on every rank, the previous checkpoint left
    /// intact. `wait`: this write must be on disk before returning (the last one of a run).
    /// `clock`: the training seconds and bytes sent so far (continued by a resume).
    func saveCheckpoint(_ run: TrainingRun, step: Int, clock: (seconds: Double, bytes: Double?), wait: Bool = false) throws {
        transport.setActivity("the checkpoint of step \(step)")
        let spanStart = ContinuousClock.now
        defer { run.recordSpan(.checkpoint, since: spanStart) }
        try broadcastBuffers(run)   // model.batchnorm: broadcast — rank 0's buffers are the model's
        let residualSum = try run.synchronizer.errorFeedbackSum()   // collective
        try settlePendingWrite(run)
        let snapshot = checkpointSnapshot(run, step: step, residualSum: residualSum, clock: clock)
        let store = run.store
        run.checkpointWriter.submit(step: step) { try snapshot.write(to: store) }
        if wait || !config.checkpointAsync { try settlePendingWrite(run) }
    }

    /// Waits for the checkpoint being written (if any) and agrees on its outcome across ranks
    /// (collective; every rank has the same write pending).
    func settlePendingWrite(_ run: TrainingRun) throws {
        guard let step = run.checkpointWriter.pendingStep else { return }
        transport.setActivity("the checkpoint of step \(step) (its write)")
        try Agreement.run("write the checkpoint of step \(step)", over: transport) {
            guard let error = run.checkpointWriter.wait()?.error else { return }
            // A full disk: the previous checkpoint is intact, and where to continue from is known.
            let earlier = run.store.existing().first.map { ", then continue from \(($0 as NSString).lastPathComponent) with 'train … --resume'" } ?? ""
            throw FileError("\(error)\(earlier)")
        }
    }

    /// Copies of what this rank writes for `step` (the step goes on changing the buffers).
    private func checkpointSnapshot(_ run: TrainingRun, step: Int, residualSum: [Float]?,
                                    clock: (seconds: Double, bytes: Double?)) -> CheckpointSnapshot {
        var snapshot = CheckpointSnapshot(step: step, rank: transport.rank, runID: run.runID)
        snapshot.residual = run.synchronizer.memory.map { Array($0.values) }
        // Local SGD, DiLoCo: the checkpoint holds θ_outer; each rank's inner parameters and
        // inner optimizer state (which differ by design) go beside it, one file per rank.
        let outer = run.outer.flatMap { $0.started ? $0 : nil }
        let optimizerState = outer != nil || run.writesCheckpoint ? run.optimizer.stateBytes() : []
        if outer != nil { snapshot.local = (Array(run.parameters.parameters), optimizerState) }
        guard run.writesCheckpoint else { return snapshot }
        let parameters = outer?.sharedParameters(run.parameters.parameters) ?? run.parameters.parameters
        var checkpoint = Checkpoint(worldSize: transport.size, step: step, skippedSteps: run.skipped, config: config.canonicalText,
                                    parameters: Array(parameters), optimizerState: optimizerState,
                                    residualSum: residualSum, powerSGDState: run.synchronizer.powerSGD?.stateBytes(),
                                    model: run.modelDescription, buffers: Array(run.parameters.buffers), outerState: outer?.stateBytes())
        (checkpoint.trainSeconds, checkpoint.bytesSent) = clock
        checkpoint.runID = run.runID
        checkpoint.configChanges = run.configChanges
        if config.codec == "auto" { checkpoint.chosenCodec = run.synchronizer.codecName }
        if run.targetReached != nil { checkpoint.reachedTarget = target?.description }
        if residualSum != nil { checkpoint.residualSharers = run.synchronizer.memory?.sharers }
        snapshot.checkpoint = checkpoint
        return snapshot
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
