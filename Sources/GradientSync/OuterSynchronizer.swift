import Foundation
import Optimizers

/// `comm.sync: local_sgd | diloco` (`TrainingConfig+Sync.swift`): what the outer steps do.
public struct OuterSettings: Equatable {
    /// The outer rule on the averaged pseudo-gradient Δ̄: `torch.optim.SGD` with Nesterov
    /// momentum (DiLoCo), with plain momentum, or θ_outer ← θ_outer − Δ̄ (the mean of the
    /// ranks' parameters: local SGD, Stich 2019, arXiv:1805.09767).
    public enum Rule: String { case nesterov, sgd, average }
    /// H: local steps between a fragment's outer steps (`comm.sync_every`).
    public var every: Int
    /// Steps averaged every step before the local steps begin (`comm.sync_warmup_steps`):
    /// DiLoCo starts from a trained model, and these steps make one.
    public var warmupSteps: Int
    public var rule: Rule
    public var lr: Double, momentum: Double
    /// Streaming DiLoCo (`comm.fragments`, `comm.outer_delay`, `comm.outer_mix`): P fragments
    /// synchronised in turn; a fragment's average is applied τ local steps after it started,
    /// mixed into the local parameters with weight 1 − α.
    public var fragments = 1, delay = 0, mix = 0.0

    public init(every: Int, warmupSteps: Int, rule: Rule, lr: Double, momentum: Double, fragments: Int = 1, delay: Int = 0, mix: Double = 0) {
        (self.every, self.warmupSteps, self.rule, self.lr, self.momentum) = (every, warmupSteps, rule, lr, momentum)
        (self.fragments, self.delay, self.mix) = (fragments, delay, mix)
    }

    /// Fragment p's outer steps fall after local steps t ≡ p·H/P (mod H), t ≥ 1 (Streaming
    /// DiLoCo, Douillard et al. 2025, arXiv:2501.18512, §2.2: one fragment at a time, evenly
    /// spread over the H steps).
    public func offset(ofFragment p: Int) -> Int { p * every / fragments }
}

/// A fragment of the parameters: whole layers, contiguous in the flat buffer, whole buckets
/// of the synchronizer's plan.
public struct OuterFragment: Equatable {
    public let range: Range<Int>
    public let buckets: Range<Int>
    public let offset: Int
}

/// The outer loop of local SGD and DiLoCo (Douillard et al., "DiLoCo: Distributed
/// Low-Communication Training of Language Models", 2023, Algorithm 1), and of Streaming
/// DiLoCo (2025, Algorithm 2).
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
/// **Streaming** (P fragments): fragment p's outer step comes after local steps
/// t ≡ p·H/P (mod H), so the link carries 1/P of the model at a time; with a delay τ its
/// average runs on the communication thread while τ more local steps go on, and is then
/// applied: θ̃_p = OuterOpt_p(θ_outer,p, Δ̄_p), θ_outer,p ← θ̃_p, θ_p ← α·θ_p + (1 − α)·θ̃_p
/// (the paper's Algorithm 2, lines 8–12; one outer optimizer per fragment, §2.2).
///
/// Replicas agree on θ_outer and the outer optimizers' state at every moment; the inner
/// parameters and inner optimizer state differ between outer steps by design, so the replica
/// check hashes the former (`outer`, `stateBuffers`).
public final class OuterSynchronizer {
    public let settings: OuterSettings
    public let fragments: [OuterFragment]
    /// One outer optimizer per fragment: `torch.optim.SGD(lr, momentum, nesterov)`, DiLoCo's choice.
    let optimizers: [SGD]
    /// θ_outer.
    public let outer: UnsafeMutableBufferPointer<Float>
    /// Where a streaming fragment's Δ is averaged (its own buffer: local steps use the
    /// gradient buffer meanwhile); nil without a delay (the gradient buffer serves).
    let streamingDelta: UnsafeMutableBufferPointer<Float>?
    /// Whether θ_outer has been taken (at the first local step, or from a checkpoint).
    public private(set) var started = false
    /// Whether the inner parameters equal θ_outer (just after an outer step on every fragment).
    public private(set) var inSync = true
    /// Fragment outer steps taken, and those every rank discarded (non-finite Δ̄).
    public private(set) var steps = 0
    public var discarded = 0
    /// A streaming fragment whose average has started: applied after step `applyAfter`;
    /// `averaged` once the all-reduce is complete (after a wait, or from a checkpoint).
    public struct InFlight: Equatable {
        public let fragment: Int, applyAfter: Int
        public var averaged: Bool
        public init(fragment: Int, applyAfter: Int, averaged: Bool) { (self.fragment, self.applyAfter, self.averaged) = (fragment, applyAfter, averaged) }
    }
    public var inFlight: InFlight?
    /// The inner parameters while an evaluation runs on θ_outer (allocated on first use).
    private var parked: UnsafeMutableBufferPointer<Float>?

    /// `extents`: the model's units (layers) in the flat buffer, which fragments keep whole;
    /// `plan`: the synchronizer's buckets, cut at `fragmentStarts(...)`.
    public init(settings: OuterSettings, count: Int, extents: [Range<Int>?], plan: BucketPlan) throws {
        self.settings = settings
        let lr = settings.rule == .average ? 1 : settings.lr
        guard lr > 0 else { throw SyncSetupError("comm.outer.lr must be > 0, got \(settings.lr)") }
        let starts = try Self.fragmentStarts(extents: extents, fragments: settings.fragments)
        let parameterised = extents.indices.filter { extents[$0] != nil }
        var fragments: [OuterFragment] = []
        for (p, first) in starts.enumerated() {
            let units = parameterised.filter { $0 >= first && (p + 1 == starts.count || $0 < starts[p + 1]) }
            let range = extents[units.first!]!.lowerBound ..< extents[units.last!]!.upperBound
            let buckets = plan.buckets.indices.filter { range.contains(plan.buckets[$0].lowerBound) }
            guard let low = buckets.min(), let high = buckets.max(), buckets.count == high - low + 1,
                  plan.buckets[low ... high].map(\.count).reduce(0, +) == range.count else {
                throw SyncSetupError("the bucket plan does not cut at fragment \(p)'s layers (an internal error: build it with closeAt)")
            }
            fragments.append(OuterFragment(range: range, buckets: low ..< high + 1, offset: settings.offset(ofFragment: p)))
        }
        self.fragments = fragments
        do {
            optimizers = try fragments.map {
                try SGD(parameterCount: $0.range.count, momentum: settings.rule == .average ? 0 : settings.momentum, nesterov: settings.rule == .nesterov)
            }
        } catch let error as HyperparameterError { throw SyncSetupError("comm.outer: \(error.message)") }
        outer = .allocate(capacity: count)
        outer.initialize(repeating: 0)
        streamingDelta = settings.delay > 0 ? .allocate(capacity: count) : nil
        streamingDelta?.initialize(repeating: 0)
    }

    deinit { outer.deallocate(); parked?.deallocate(); streamingDelta?.deallocate() }

    /// The first layer of each of P fragments: contiguous runs of whole layers with parameters,
    /// as equal in size as whole layers allow (each fragment's end is the layer boundary nearest
    /// to its share of the parameters; every fragment gets at least one layer).
    public static func fragmentStarts(extents: [Range<Int>?], fragments p: Int) throws -> [Int] {
        let units = extents.indices.filter { extents[$0] != nil }
        guard p <= units.count else {
            throw SyncSetupError("comm.fragments \(p) exceeds the model's \(units.count) layers with parameters (fragments are whole layers); choose at most \(units.count)")
        }
        let total = units.map { extents[$0]!.count }.reduce(0, +)
        var starts = [units[0]], seen = 0
        for (k, u) in units.enumerated().dropLast() {
            seen += extents[u]!.count
            let next = starts.count   // the fragment a cut here would start
            guard next < p else { break }
            let left = units.count - (k + 1)   // layers after this one
            // Where the fragments so far would end (in units of total / p): the cut goes at the
            // boundary nearest to it — here, once it is reached, or before it when the next
            // boundary would overshoot it by more than this one falls short — or here when the
            // remaining fragments need every remaining layer.
            let target = next * total, here = seen * p, after = (seen + extents[units[k + 1]]!.count) * p
            if here >= target || (after > target && target - here < after - target) || left == p - next { starts.append(units[k + 1]) }
        }
        return starts
    }

    /// The outer learning rate (1 for `average`).
    public var lr: Double { settings.rule == .average ? 1 : settings.lr }

    /// Whether step `step` (0-based) is a local step: no gradient all-reduce.
    public func isLocal(_ step: Int) -> Bool { step >= settings.warmupSteps }

    /// The fragments whose outer step starts after step `step` (0-based).
    public func fragmentsStarting(after step: Int) -> [Int] {
        let t = step + 1 - settings.warmupSteps   // local steps done
        guard started, t >= 1 else { return [] }
        return fragments.indices.filter { (t - fragments[$0].offset) % settings.every == 0 && t >= fragments[$0].offset }
    }

    /// θ_outer ← θ (before the first local step).
    public func start(from parameters: UnsafeMutableBufferPointer<Float>) {
        _ = outer.update(fromContentsOf: parameters)
        (started, inSync) = (true, true)
    }

    /// A local step changed the inner parameters.
    public func tookLocalStep() { inSync = false }

    /// Where fragment p's Δ is averaged: its own buffer when streaming, else `gradients`.
    public func deltaBuffer(gradients: UnsafeMutableBufferPointer<Float>) -> UnsafeMutableBufferPointer<Float> {
        streamingDelta ?? gradients
    }

    /// Δ_r = θ_outer − θ_r on fragment p's range of `delta`.
    public func pseudoGradient(_ p: Int, of parameters: UnsafeMutableBufferPointer<Float>, into delta: UnsafeMutableBufferPointer<Float>) {
        let o = outer.baseAddress!, q = parameters.baseAddress!, d = delta.baseAddress!
        for i in fragments[p].range { d[i] = o[i] - q[i] }
    }

    /// Fragment p's outer update with its averaged Δ̄ (in `delta`), then the local parameters
    /// of the fragment ← θ̃ (α = 0) or α·θ + (1 − α)·θ̃.
    public func apply(_ p: Int, averaged delta: UnsafeMutableBufferPointer<Float>, to parameters: UnsafeMutableBufferPointer<Float>) {
        let range = fragments[p].range
        optimizers[p].step(parameters: UnsafeMutableBufferPointer(rebasing: outer[range]),
                           gradients: UnsafeMutableBufferPointer(rebasing: delta[range]), lr: lr)
        steps += 1
        reset(p, parameters)
    }

    /// Fragment p's θ_outer ← θ_outer − Δ̄, the mean of the ranks' parameters, without the outer
    /// optimizer (its state untouched), and every rank's fragment at it: the end of a run partway
    /// through the fragment's round (`Trainer.finishOuterSteps` says why). Counted as an outer step.
    public func average(_ p: Int, averaged delta: UnsafeMutableBufferPointer<Float>, to parameters: UnsafeMutableBufferPointer<Float>) {
        let o = outer.baseAddress!, d = delta.baseAddress!
        for i in fragments[p].range { o[i] -= d[i] }
        steps += 1
        reset(p, parameters, mixing: false)
    }

    /// Fragment p of every rank back at θ_outer (α = 0), or mixed into it (α > 0): after its
    /// outer step, or when it is discarded (non-finite Δ̄, always α = 0).
    public func reset(_ p: Int, _ parameters: UnsafeMutableBufferPointer<Float>, mixing: Bool = true) {
        let range = fragments[p].range, alpha = Float(settings.mix)
        if mixing && alpha > 0 {
            let o = outer.baseAddress!, q = parameters.baseAddress!
            for i in range { q[i] = alpha * q[i] + (1 - alpha) * o[i] }
        } else {
            _ = UnsafeMutableBufferPointer(rebasing: parameters[range]).update(fromContentsOf: UnsafeMutableBufferPointer(rebasing: outer[range]))
        }
        // In sync again once every fragment equals θ_outer (only possible without mixing).
        if fragments.count == 1 && !(mixing && alpha > 0) { inSync = true }
    }

    /// The parameters every rank agrees on: θ_outer once local steps have begun.
    public func sharedParameters(_ parameters: UnsafeMutableBufferPointer<Float>) -> UnsafeMutableBufferPointer<Float> {
        started ? outer : parameters
    }

    /// Every fragment back at θ_outer: a run that stops at its target ends on the model it evaluated.
    public func resetAll(_ parameters: UnsafeMutableBufferPointer<Float>) {
        _ = parameters.update(fromContentsOf: outer)
        inSync = true
    }

    /// Runs `body` with θ_outer in `parameters` (an evaluation of the model the ranks agree on
    /// between outer steps — the paper's best choice, Streaming DiLoCo Table 3), then puts the
    /// inner parameters back.
    public func withSharedParameters<T>(in parameters: UnsafeMutableBufferPointer<Float>, _ body: () throws -> T) rethrows -> T {
        guard started, !inSync else { return try body() }
        if parked == nil { parked = .allocate(capacity: parameters.count) }
        _ = parked!.update(fromContentsOf: parameters)
        _ = parameters.update(fromContentsOf: outer)
        defer { _ = parameters.update(fromContentsOf: parked!) }
        return try body()
    }

    /// Every Float the ranks agree on besides θ_outer: the outer optimizers' momenta.
    public var stateBuffers: [UnsafeMutableBufferPointer<Float>] { optimizers.flatMap(\.stateBuffers) }

    // MARK: - Checkpointed state

    /// Counters, the fragment in flight (its averaged Δ̄ — the checkpoint waits for it) and the
    /// outer optimizers' states; θ_outer is the checkpoint's parameters.
    public func stateBytes() -> [UInt8] {
        var bytes: [UInt8] = []
        func put(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        put(UInt64(steps)); put(UInt64(discarded)); put(UInt64(optimizers.count))
        if let inFlight, let streamingDelta {
            precondition(inFlight.averaged, "a checkpoint waits for the fragment in flight")
            put(1); put(UInt64(inFlight.fragment)); put(UInt64(inFlight.applyAfter))
            bytes += Array(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(streamingDelta)[fragments[inFlight.fragment].range.lowerBound * 4 ..< fragments[inFlight.fragment].range.upperBound * 4]))
        } else {
            put(0)
        }
        for optimizer in optimizers {
            let state = optimizer.stateBytes()
            put(UInt64(state.count))
            bytes += state
        }
        return bytes
    }

    /// Restores `stateBytes()` of the checkpoint of `step` and θ_outer; the inner parameters
    /// are the caller's (each rank's own file, or θ_outer).
    public func restore(_ bytes: [UInt8], outer values: [Float], step: Int) throws {
        let bad = SyncSetupError("the checkpoint's outer state does not fit this model and comm.fragments / comm.outer_delay; resume with the config it was written with")
        guard values.count == outer.count else { throw bad }
        // The layout is read whole — every length, nothing past the end — before any of it loads.
        var offset = 0
        func get() throws -> Int {
            guard offset + 8 <= bytes.count else { throw bad }
            defer { offset += 8 }
            // A count that does not fit an Int, or is negative as one, is damage, not a trap.
            guard let value = Int(exactly: UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) })) else { throw bad }
            return value
        }
        func take(_ count: Int) throws -> Range<Int> {
            guard count <= bytes.count - offset else { throw bad }
            defer { offset += count }
            return offset ..< offset + count
        }
        let (steps, discarded, count) = (try get(), try get(), try get())
        guard count == optimizers.count else { throw bad }
        var inFlight: (state: InFlight, bytes: Range<Int>)?
        if try get() == 1 {
            let (p, after) = (try get(), try get())
            // In flight at the checkpoint: started at most comm.outer_delay steps before it, and
            // not yet applied (a fragment due at or before it would never be applied, and the
            // next start would find it still in flight).
            guard p >= 0, p < fragments.count, streamingDelta != nil, after > step, after - step <= settings.delay else { throw bad }
            inFlight = (InFlight(fragment: p, applyAfter: after, averaged: true), try take(4 * fragments[p].range.count))
        }
        let states = try optimizers.map { _ in try take(try get()) }
        guard offset == bytes.count else { throw bad }   // bytes past the state: not this layout
        if let (state, stored) = inFlight, let streamingDelta {
            let range = fragments[state.fragment].range
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(streamingDelta)[range.lowerBound * 4 ..< range.upperBound * 4])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[stored]))
            }
        }
        // Its shape follows comm.outer (momentum 0 keeps no buffer), which may change on resume:
        // a state that does not fit is that change, named as such, not the inner optimizer's.
        for (optimizer, stored) in zip(optimizers, states) {
            do { try optimizer.loadState(Array(bytes[stored])) } catch {
                throw SyncSetupError("--resume: the checkpoint's outer optimizer state does not fit comm.outer (optimizer \(settings.rule.rawValue), momentum \(settings.momentum)): \(error); resume with the comm.outer settings it was written with, or start a new run")
            }
        }
        (self.steps, self.discarded, self.inFlight) = (steps, discarded, inFlight?.state)
        _ = outer.update(fromContentsOf: values)
        started = true
    }

    /// The inner parameters differ from θ_outer (a checkpoint between outer steps).
    public func resumedBetweenOuterSteps() { inSync = false }
}
