import Foundation

/// LAMB: layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep
/// Learning: Training BERT in 76 minutes", Algorithm 2), with Adam's bias correction.
///
/// For each layer view ℓ:
///
///     m ← β₁·m + (1 − β₁)·g;   v ← β₂·v + (1 − β₂)·g²
///     r ← (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε) + λ·θ
///     trust ← ‖θ‖ / ‖r‖   if both > 0, else 1
///     θ ← θ − γ·trust·r
///
/// A layer in `exempt` (`optimizer.decay: matrices`: biases and norm weights, BERT's
/// `exclude_from_weight_decay` and `exclude_from_layer_adaptation`) takes λ 0 and trust 1.
public final class LAMB: MomentumScheduled {
    /// β₁; a schedule may change it per step (see `MomentumScheduled`).
    public private(set) var beta1: Double
    public let beta2: Double, eps: Double, weightDecay: Double
    public let layers: [Range<Int>]
    /// Per layer: excluded from decay and adaptation (empty: none is).
    public let exempt: [Bool]
    public private(set) var stepCount = 0
    private let m: UnsafeMutableBufferPointer<Float>, v: UnsafeMutableBufferPointer<Float>
    private let update: UnsafeMutableBufferPointer<Float>   // scratch r, one layer at a time

    public init(parameterCount: Int, layers: [Range<Int>], beta1: Double = 0.9, beta2: Double = 0.999,
                eps: Double = 1e-6, weightDecay: Double = 0, exempt: [Bool] = []) throws {
        precondition(exempt.isEmpty || exempt.count == layers.count, "one exemption flag per layer")
        if !(eps > 0) { throw HyperparameterError("Invalid epsilon value: \(eps)") }
        if !(beta1 >= 0 && beta1 < 1) { throw HyperparameterError("Invalid beta parameter at index 0: \(beta1)") }
        if !(beta2 >= 0 && beta2 < 1) { throw HyperparameterError("Invalid beta parameter at index 1: \(beta2)") }
        if !(weightDecay >= 0) { throw HyperparameterError("Invalid weight_decay value: \(weightDecay)") }
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
        self.layers = layers
        self.exempt = exempt
        m = allocateState(parameterCount)
        v = allocateState(parameterCount)
        update = allocateState(layers.map(\.count).max() ?? 0)
    }

    deinit { m.deallocate(); v.deallocate(); update.deallocate() }

    public var scheduledMomentum: Double {
        get { beta1 }
        set { beta1 = newValue }
    }

    public var name: String { "lamb" }
    public var stateBuffers: [UnsafeMutableBufferPointer<Float>] { [m, v] }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeMutableBufferPointer<Float>, lr: Double) {
        stepCount += 1
        let t = Double(stepCount)
        let bias1 = Float(1 - pow(beta1, t)), bias2 = Float(1 - pow(beta2, t))
        let b1 = Float(beta1), b2 = Float(beta2), b1c = Float(1 - beta1), b2c = Float(1 - beta2)
        let epsF = Float(eps)
        let p = parameters.baseAddress!, g = gradients.baseAddress!, m = m.baseAddress!, v = v.baseAddress!
        let r = update.baseAddress!
        for (l, layer) in layers.enumerated() {
            let plain = !exempt.isEmpty && exempt[l], wd = plain ? 0 : Float(weightDecay)
            for i in layer {
                m[i] = m[i] * b1 + b1c * g[i]
                v[i] = v[i] * b2 + b2c * g[i] * g[i]
                r[i - layer.lowerBound] = (m[i] / bias1) / ((v[i] / bias2).squareRoot() + epsF) + wd * p[i]
            }
            let wNorm = plain ? 0 : norm(p, layer), rNorm = plain ? 0 : norm(r, 0 ..< layer.count)
            let scale = Float(lr * (wNorm > 0 && rNorm > 0 ? wNorm / rNorm : 1))
            for i in layer { p[i] -= scale * r[i - layer.lowerBound] }
        }
    }

    public func stateBytes() -> [UInt8] { OptimizerState.encode(kind: name, stepCount: stepCount, buffers: stateBuffers) }
    public func loadState(_ bytes: [UInt8]) throws {
        stepCount = try OptimizerState.decode(bytes, kind: name, into: stateBuffers)
    }
}
