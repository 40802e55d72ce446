import Collectives
import Foundation

/// The timeline's hooks and the state a checkpoint carries.
extension GradientSynchronizer {
    /// Points the all-reduces' per-segment phases at `onSpan` (once, not per call).
    func connectPhases() {
        let onPhase = onSpan.map { onSpan in { (phase: RingAllReduce.Phase, from: ContinuousClock.Instant, to: ContinuousClock.Instant) in
            onSpan(.phase(phase), from, to)
        } }
        for case let averager as AllReduceBuckets in [configured, exact] {
            (averager.allReduce as? RingAllReduce)?.onPhase = onPhase
            (averager.allReduce as? HierarchicalAllReduce)?.onPhase = onPhase
        }
    }

    // MARK: - Checkpointed state

    /// The sum over ranks of the error-feedback memory, or nil without one (collective).
    public func errorFeedbackSum() throws -> [Float]? { try memory?.sum(over: transport) }

    /// Restores the error-feedback memory (`own`: this rank's file, exact on the same ranks;
    /// `sum`: the checkpoint's, re-sharded) and PowerSGD's Q's. Returns warnings.
    public func restore(ownErrorFeedback own: [Float]?, errorFeedbackSum sum: [Float]?, writtenBy worldSize: Int, errorFeedbackSharers: Int? = nil,
                        step: Int, powerSGDState: [UInt8]?) -> [String] {
        var warnings: [String] = []
        if let memory, let warning = memory.restore(own: own, sum: sum, writtenBy: worldSize, writerSharers: errorFeedbackSharers,
                                                    worldSize: transport.size, rank: transport.rank, step: step) {
            warnings.append(warning)
        } else if memory == nil, sum != nil, transport.rank == 0 {
            // The checkpoint kept error feedback, this run keeps none (a codec chosen again by
            // comm.codec: auto, or settings changed): what it held is dropped, and said so.
            warnings.append("the checkpoint holds error-feedback residuals, but this run keeps none (its codec is lossless or comm.error_feedback is off): they are dropped")
        }
        if let powerSGD, let warning = powerSGD.restore(stateBytes: powerSGDState), transport.rank == 0 { warnings.append(warning) }
        return warnings
    }
}

/// A span the synchronizer reports: one bucket's all-reduce, or a phase inside the ring.
public enum SyncSpan {
    case allReduce(bucket: Int)
    case phase(RingAllReduce.Phase)
}
