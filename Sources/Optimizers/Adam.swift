import Foundation

/// Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019) — `torch.optim.Adam` and
/// `torch.optim.AdamW`'s single-tensor rules, with amsgrad.
///
///     t ← t + 1
///     AdamW: θ ← θ·(1 − γλ)                  (decoupled weight decay)
///     Adam:  g ← g + λ·θ                     (L2 penalty in the gradient)
///     m ← m + (1 − β₁)(g − m)                (torch: exp_avg.lerp_(g, 1 − β₁))
///     v ← β₂·v + (1 − β₂)·g²
///     v̂max ← max(v̂max, v)                    (amsgrad; then v stands for v̂max below)
///     θ ← θ − (γ / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
///
/// Source: PyTorch docs, torch.optim.Adam / AdamW, "Algorithm"; torch/optim/adam.py,
/// `_single_tensor_adam` for the order of operations (bias corrections in float64).
public final class Adam: MomentumScheduled, MomentumCarrying {
    /// β₁; a schedule may change it per step (OneCycleLR), and the bias correction then uses
    /// the current β₁, as torch.optim.Adam does.
    public private(set) var beta1: Double
    public let beta2: Double, eps: Double, weightDecay: Double
    public let decoupled: Bool, amsgrad: Bool
    public private(set) var stepCount = 0
    /// Ranges of the flat buffer with no weight decay, sorted and disjoint: nanoGPT's
    /// parameter groups (`optimizer.decay: matrices` exempts biases and norm weights, the
    /// tensors of fewer than two dimensions — `configure_optimizers` in nanoGPT's model.py).
    public var exemptFromDecay: [Range<Int>] = []
    private let m: UnsafeMutableBufferPointer<Float>, v: UnsafeMutableBufferPointer<Float>
    private let vMax: UnsafeMutableBufferPointer<Float>

    /// `decoupled: true` is AdamW (torch default weight_decay 0.01 there; 0 for Adam).
    public init(parameterCount: Int, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8,
                weightDecay: Double = 0, decoupled: Bool = false, amsgrad: Bool = false) throws {
        if !(eps > 0) { throw HyperparameterError("Invalid epsilon value: \(eps)") }
        if !(beta1 >= 0 && beta1 < 1) { throw HyperparameterError("Invalid beta parameter at index 0: \(beta1)") }
        if !(beta2 >= 0 && beta2 < 1) { throw HyperparameterError("Invalid beta parameter at index 1: \(beta2)") }
        if !(weightDecay >= 0) { throw HyperparameterError("Invalid weight_decay value: \(weightDecay)") }
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
        self.decoupled = decoupled; self.amsgrad = amsgrad
        m = allocateState(parameterCount)
        v = allocateState(parameterCount)
        vMax = allocateState(amsgrad ? parameterCount : 0)
    }

    deinit { m.deallocate(); v.deallocate(); vMax.deallocate() }

    public var scheduledMomentum: Double {
        get { beta1 }
        set { beta1 = newValue }
    }

    public var name: String { decoupled ? "adamw" : "adam" }
    public var stateBuffers: [UnsafeMutableBufferPointer<Float>] { [m, v, vMax] }

    /// m' = β₁·m + (1 − β₁)·g: β₁/(1 − β₁).
    public var momentumCarry: (buffer: UnsafeMutableBufferPointer<Float>, scale: Float)? {
        beta1 > 0 ? (m, Float(beta1 / (1 - beta1))) : nil
    }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeMutableBufferPointer<Float>, lr: Double) {
        step(parameters, gradients, carried: nil, lr: lr)
    }

    /// Adam needs ḡ itself (for v), and reads m anyway: it takes ḡ = u − s·m off the carried
    /// average in its own loop, with the fused multiply-add the all-reduce would have used —
    /// so the step is bit-identical to the one from ḡ, and the all-reduce skips two reads of m.
    public var takesCarriedAverage: Bool { momentumCarry != nil }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, carriedAverage average: UnsafeMutableBufferPointer<Float>, lr: Double) {
        guard let carry = momentumCarry else { preconditionFailure("Adam takes a carried average only with β₁ > 0") }
        step(parameters, average, carried: -carry.scale, lr: lr)
    }

    /// `carried`: −s when `gradients` holds the carried average u = ḡ + s·m.
    private func step(_ parameters: UnsafeMutableBufferPointer<Float>, _ gradients: UnsafeMutableBufferPointer<Float>, carried: Float?, lr: Double) {
        stepCount += 1
        let t = Double(stepCount)
        let bias1 = 1 - pow(beta1, t), bias2Sqrt = (1 - pow(beta2, t)).squareRoot()
        let stepSize = Float(lr / bias1), bias2SqrtF = Float(bias2Sqrt)
        let b1c = Float(1 - beta1), b2 = Float(beta2), b2c = Float(1 - beta2), epsF = Float(eps)
        let p = parameters.baseAddress!, g = gradients.baseAddress!
        let m = m.baseAddress!, v = v.baseAddress!, vMax = amsgrad ? vMax.baseAddress : nil
        // Order of operations as torch's CPU kernels compute them (measured bit for bit against
        // torch 2.15): add_(y, alpha) = fma(y, alpha, x); addcmul_(a, b, value=s) =
        // fma(s·a, b, x); addcdiv_(a, b, value=s) = x + (s·a)/b; lerp_ = fma.
        func update(_ range: Range<Int>, weightDecay: Double) {
            let wd = Float(weightDecay), decay = Float(1 - lr * weightDecay)
            for i in range {
                var grad = carried.map { g[i].addingProduct(m[i], $0) } ?? g[i]
                if decoupled { p[i] *= decay } else if wd != 0 { grad = grad.addingProduct(p[i], wd) }
                m[i] = m[i].addingProduct(b1c, grad - m[i])
                v[i] = (v[i] * b2).addingProduct(b2c * grad, grad)   // mul_, addcmul_
                var second = v[i]
                if let vMax { vMax[i] = max(vMax[i], v[i]); second = vMax[i] }
                let denominator = second.squareRoot() / bias2SqrtF + epsF
                p[i] = p[i] + (-stepSize * m[i]) / denominator       // addcdiv_
            }
        }
        var cursor = 0
        for exempt in exemptFromDecay {
            update(cursor ..< exempt.lowerBound, weightDecay: weightDecay)
            update(exempt, weightDecay: 0)
            cursor = exempt.upperBound
        }
        update(cursor ..< parameters.count, weightDecay: weightDecay)
    }

    public func stateBytes() -> [UInt8] { OptimizerState.encode(kind: name, stepCount: stepCount, buffers: stateBuffers) }
    public func loadState(_ bytes: [UInt8]) throws {
        stepCount = try OptimizerState.decode(bytes, kind: name, into: stateBuffers)
    }
}
