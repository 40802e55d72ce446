import Collectives
import Foundation
import GradientCodecs

/// Which codec and all-reduce the steps after the warm-up run, and what they cost.
extension GradientSynchronizer {
    /// Makes `name` the codec of the steps after the warm-up, with a fresh error-feedback memory.
    func use(codec name: String) throws {
        let codec = try CodecRegistry.make(name)
        codecName = name
        int8 = codec.int8Base
        configured = AllReduceBuckets(choice.allReduce(codec: codec))
        configuredKeepsErrors = settings.errorFeedback && !codec.isIdentity
        memory = configuredKeepsErrors || powerSGD != nil ? choice.errorFeedbackMemory(count: count, plan: plan) : nil
        connectPhases()
    }

    /// `comm.codec: auto`: measures the candidates on the all-reduce that will run, on
    /// `gradients` (left zeroed), and uses the fastest on every rank. Collective.
    public func chooseCodecIfAutomatic(probing gradients: UnsafeMutableBufferPointer<Float>) throws {
        guard settings.codec == "auto" else { return }
        let probe = try CodecProbe.run(on: gradients, transport: transport, errorFeedback: settings.errorFeedback) { choice.allReduce(codec: $0) }
        try use(codec: probe.choice)
        self.probe = probe
    }

    /// Uses `name` in place of the codec the probe chose — the one a resumed run chose at its
    /// start — and measures its cost again. Collective.
    public func keepCodec(_ name: String, probing gradients: UnsafeMutableBufferPointer<Float>) throws {
        try use(codec: name)
        try measureIsolatedCost(probing: gradients)
    }

    /// Measures what averaging the gradient costs when nobody waits (collective; `gradients`
    /// left zeroed, every state of the synchronizer as it was).
    public func measureIsolatedCost(probing gradients: UnsafeMutableBufferPointer<Float>) throws {
        let averagers = (settings.warmupSteps > 0 ? [exact] : []) + [configured] + (powerSGD.map { [$0] } ?? [])
        let state = powerSGD?.stateBytes()
        defer { _ = state.map { powerSGD?.restore(stateBytes: $0) } }
        cost = try CommunicationCost.measure(on: gradients, plan: plan, transport: transport, seed: settings.seed,
                                             averagers: averagers.map { ($0, keepsErrors($0)) })
    }

    /// Whether `averager` takes the error-feedback memory.
    func keepsErrors(_ averager: BucketAverager) -> Bool {
        averager === powerSGD || (averager === configured && configuredKeepsErrors)
    }
}
