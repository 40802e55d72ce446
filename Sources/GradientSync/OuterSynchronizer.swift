import Foundation
import Optimizers

/// `comm.sync: local_sgd | diloco` (`TrainingConfig+Sync.swift`): what the outer step does.
public struct OuterSettings: Equatable {
    /// The outer rule on the averaged pseudo-gradient Δ̄: `torch.optim.SGD` with Nesterov
    /// momentum (DiLoCo), with plain momentum, or θ_outer ← θ_outer − Δ̄ (the mean of the
    /// ranks' parameters: local SGD, Stich 2019, arXiv:1805.09767).
    public enum Rule: String { case nesterov, sgd, average }
    /// H: local steps between outer steps (`comm.sync_every`).
    public var every: Int
    /// Steps averaged every step before the local steps begin (`comm.sync_warmup_steps`):
    /// DiLoCo starts from a trained model, and these steps make one.
    public var warmupSteps: Int
    public var rule: Rule
    public var lr: Double, momentum: Double

    public init(every: Int, warmupSteps: Int, rule: Rule, lr: Double, momentum: Double) {
        (self.every, self.warmupSteps, self.rule, self.lr, self.momentum) = (every, warmupSteps, rule, lr, momentum)
    }
}

/// The outer loop of local SGD and DiLoCo (Douillard et al., "DiLoCo: Distributed
/// Low-Communication Training of Language Models", 2023, Algorithm 1).
///
/// Every rank takes H inner steps on its own (its own optimizer state, no communication) from
/// θ_outer, the parameters every rank agrees on. Then each rank's pseudo-gradient
/// Δ_r = θ_outer − θ_r goes through the run's `GradientSynchronizer` — our ring with
/// `comm.codec` and its error feedback, flat or hierarchical, exactly as a gradient would —
/// and the outer optimizer, identical on every rank, moves θ_outer with the mean Δ̄. Every
/// rank continues from the new θ_outer.
///
/// Why the pseudo-gradient and not the parameters: it is what the outer optimizer needs, it
/// is small and centred (a codec's scale fits it; parameters' would waste bits on their
/// magnitude), and error feedback keeps what one outer step's encoding dropped for the next.
///
/// Replicas agree on θ_outer and the outer optimizer's state at every moment; the inner
/// parameters and inner optimizer state differ between outer steps by design, so the replica
/// check hashes the former (`sharedParameters`, `optimizer.stateBuffers`).
public final class OuterSynchronizer {
    public let settings: OuterSettings
    /// The outer optimizer: `torch.optim.SGD(lr, momentum, nesterov)`, DiLoCo's choice.
    public let optimizer: SGD
    /// θ_outer.
    public let outer: UnsafeMutableBufferPointer<Float>
    /// Whether θ_outer has been taken (at the first local step, or from a checkpoint).
    public private(set) var started = false
    /// Whether the inner parameters equal θ_outer (just after an outer step or the start).
    public private(set) var inSync = true
    /// Outer steps taken, and those every rank discarded (non-finite Δ̄).
    public private(set) var steps = 0
    public var discarded = 0
    /// The inner parameters while an evaluation runs on θ_outer (allocated on first use).
    private var parked: UnsafeMutableBufferPointer<Float>?

    public init(settings: OuterSettings, count: Int) throws {
        self.settings = settings
        let lr = settings.rule == .average ? 1 : settings.lr
        guard lr > 0 else { throw SyncSetupError("comm.outer.lr must be > 0, got \(settings.lr)") }
        do {
            optimizer = try SGD(parameterCount: count, momentum: settings.rule == .average ? 0 : settings.momentum,
                                nesterov: settings.rule == .nesterov)
        } catch let error as HyperparameterError { throw SyncSetupError("comm.outer: \(error.message)") }
        outer = .allocate(capacity: count)
        outer.initialize(repeating: 0)
    }

    deinit { outer.deallocate(); parked?.deallocate() }

    /// The outer learning rate (1 for `average`).
    public var lr: Double { settings.rule == .average ? 1 : settings.lr }

    /// Whether step `step` (0-based) is a local step: no gradient all-reduce.
    public func isLocal(_ step: Int) -> Bool { step >= settings.warmupSteps }

    /// Whether an outer step follows step `step` (0-based): every H local steps, and after the
    /// run's last step, so that the run ends on parameters every rank agrees on.
    public func isDue(after step: Int, lastStep: Int) -> Bool {
        let done = step + 1
        return started && done > settings.warmupSteps && ((done - settings.warmupSteps) % settings.every == 0 || done == lastStep)
    }

    /// θ_outer ← θ (before the first local step).
    public func start(from parameters: UnsafeMutableBufferPointer<Float>) {
        _ = outer.update(fromContentsOf: parameters)
        (started, inSync) = (true, true)
    }

    /// A local step changed the inner parameters.
    public func tookLocalStep() { inSync = false }

    /// Δ_r = θ_outer − θ_r into `delta` (the buffer the synchronizer's plan cuts).
    public func pseudoGradient(of parameters: UnsafeMutableBufferPointer<Float>, into delta: UnsafeMutableBufferPointer<Float>) {
        let o = outer.baseAddress!, p = parameters.baseAddress!, d = delta.baseAddress!
        for i in 0 ..< outer.count { d[i] = o[i] - p[i] }
    }

    /// The outer update with the averaged Δ̄, then every rank's inner parameters ← θ_outer.
    public func apply(_ averaged: UnsafeMutableBufferPointer<Float>, to parameters: UnsafeMutableBufferPointer<Float>) {
        optimizer.step(parameters: outer, gradients: averaged, lr: lr)
        steps += 1
        reset(parameters)
    }

    /// Every rank back at θ_outer: a discarded outer step (non-finite Δ̄), or a run that ends
    /// between outer steps on the model it evaluated.
    public func reset(_ parameters: UnsafeMutableBufferPointer<Float>) {
        _ = parameters.update(fromContentsOf: outer)
        inSync = true
    }

    /// The parameters every rank agrees on: θ_outer once local steps have begun.
    public func sharedParameters(_ parameters: UnsafeMutableBufferPointer<Float>) -> UnsafeMutableBufferPointer<Float> {
        started ? outer : parameters
    }

    /// Runs `body` with θ_outer in `parameters` (an evaluation of the model the ranks agree on
    /// between outer steps), then puts the inner parameters back.
    public func withSharedParameters<T>(in parameters: UnsafeMutableBufferPointer<Float>, _ body: () throws -> T) rethrows -> T {
        guard started, !inSync else { return try body() }
        if parked == nil { parked = .allocate(capacity: parameters.count) }
        _ = parked!.update(fromContentsOf: parameters)
        _ = parameters.update(fromContentsOf: outer)
        defer { _ = parameters.update(fromContentsOf: parked!) }
        return try body()
    }

    // MARK: - Checkpointed state

    /// The outer optimizer's state and counters (θ_outer is the checkpoint's parameters).
    public func stateBytes() -> [UInt8] {
        var bytes: [UInt8] = []
        for v in [UInt64(steps), UInt64(discarded)] { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        return bytes + optimizer.stateBytes()
    }

    /// Restores `stateBytes()` and θ_outer; the inner parameters are the caller's (each
    /// rank's own file, or θ_outer).
    public func restore(_ bytes: [UInt8], outer values: [Float]) throws {
        guard bytes.count >= 16, values.count == outer.count else { throw SyncSetupError("the outer optimizer's state does not fit this model") }
        let counters = bytes.withUnsafeBytes { (UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)),
                                                UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))) }
        try optimizer.loadState(Array(bytes[16...]))
        (steps, discarded) = (Int(counters.0), Int(counters.1))
        _ = outer.update(fromContentsOf: values)
        started = true
    }

    /// The inner parameters differ from θ_outer (a checkpoint between outer steps).
    public func resumedBetweenOuterSteps() { inSync = false }
}
