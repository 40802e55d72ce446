/// LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017), in the form of the
/// reference implementations used for large-batch ImageNet (momentum applied after scaling).
///
/// For each layer view ℓ (the flat buffer's per-layer ranges):
///
///     g ← g + λ·θ
///     trust ← η·‖θ‖ / (‖∇‖ + λ‖θ‖)   if ‖θ‖ > 0 and ‖∇‖ > 0, else 1
///     b ← μ·b + trust·g
///     θ ← θ − γ·b
///
/// The learning rate γ multiplies the momentum buffer when θ moves, outside b — the form of
/// NVIDIA apex's LARC and `torchlars` (LARS as a wrapper of torch's SGD). You et al.'s
/// Algorithm 1 (and MLPerf's TensorFlow LARS) keep γ inside b (b ← μ·b + γ·trust·g): the two
/// agree while γ is constant and differ by how a schedule's γ reaches momentum accumulated
/// earlier (here, at once; there, as the buffer decays).
///
/// Norms are taken over the view in the flat buffer, in index order, in Double. A layer in
/// `exempt` (`optimizer.decay: matrices`: biases and norm weights, as the reference
/// implementations' skip list) takes neither weight decay nor the trust ratio: trust 1, λ 0.
public final class LARS: MomentumScheduled {
    /// μ; a schedule may change it per step (see `MomentumScheduled`).
    public private(set) var momentum: Double
    public let weightDecay: Double, trustCoefficient: Double
    public let layers: [Range<Int>]
    /// Per layer: excluded from decay and adaptation (empty: none is).
    public let exempt: [Bool]
    public private(set) var stepCount = 0
    private let buffer: UnsafeMutableBufferPointer<Float>

    public init(parameterCount: Int, layers: [Range<Int>], momentum: Double = 0.9, weightDecay: Double = 0,
                trustCoefficient: Double = 0.001, exempt: [Bool] = []) throws {
        precondition(exempt.isEmpty || exempt.count == layers.count, "one exemption flag per layer")
        if !(momentum >= 0) { throw HyperparameterError("Invalid momentum value: \(momentum)") }
        if !(weightDecay >= 0) { throw HyperparameterError("Invalid weight_decay value: \(weightDecay)") }
        if !(trustCoefficient > 0) { throw HyperparameterError("Invalid trust_coefficient value: \(trustCoefficient)") }
        self.momentum = momentum; self.weightDecay = weightDecay; self.trustCoefficient = trustCoefficient
        self.layers = layers
        self.exempt = exempt
        buffer = allocateState(parameterCount)
    }

    deinit { buffer.deallocate() }

    public var scheduledMomentum: Double {
        get { momentum }
        set { momentum = newValue }
    }

    public var name: String { "lars" }
    public var stateBuffers: [UnsafeMutableBufferPointer<Float>] { [buffer] }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeMutableBufferPointer<Float>, lr: Double) {
        stepCount += 1
        let p = parameters.baseAddress!, g = gradients.baseAddress!, b = buffer.baseAddress!
        let mu = Float(momentum), lrF = Float(lr)
        for (l, layer) in layers.enumerated() {
            let plain = !exempt.isEmpty && exempt[l]
            let wNorm = plain ? 0 : norm(p, layer), gNorm = plain ? 0 : norm(g, layer)
            let trust = wNorm > 0 && gNorm > 0 ? Float(trustCoefficient * wNorm / (gNorm + weightDecay * wNorm)) : 1
            let wd = plain ? 0 : Float(weightDecay)
            for i in layer {
                let d = g[i] + wd * p[i]
                b[i] = mu * b[i] + trust * d
                p[i] -= lrF * b[i]
            }
        }
    }

    public func stateBytes() -> [UInt8] { OptimizerState.encode(kind: name, stepCount: stepCount, buffers: stateBuffers) }
    public func loadState(_ bytes: [UInt8]) throws {
        stepCount = try OptimizerState.decode(bytes, kind: name, into: stateBuffers)
    }
}
