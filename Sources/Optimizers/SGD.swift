/// Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay —
/// `torch.optim.SGD`'s rule (not Sutskever's: the learning rate multiplies the whole step).
///
///     g ← ∇ + λ·θ                          (weight_decay λ ≠ 0)
///     if μ ≠ 0:
///         b ← g                            (first step)
///         b ← μ·b + (1 − τ)·g              (later steps; dampening τ)
///         g ← g + μ·b  if nesterov  else  b
///     θ ← θ − γ·g
///
/// Source: PyTorch docs, torch.optim.SGD, "Algorithm" section.
public final class SGD: MomentumScheduled, MomentumCarrying {
    /// μ; a schedule may change it per step (see `MomentumScheduled`). The momentum buffer
    /// exists when μ ≠ 0 at construction.
    public private(set) var momentum: Double
    public let dampening: Double, weightDecay: Double, nesterov: Bool
    public private(set) var stepCount = 0
    private let buffer: UnsafeMutableBufferPointer<Float>

    public init(parameterCount: Int, momentum: Double = 0, dampening: Double = 0,
                weightDecay: Double = 0, nesterov: Bool = false) throws {
        if !(momentum >= 0) { throw HyperparameterError("Invalid momentum value: \(momentum)") }
        if !(weightDecay >= 0) { throw HyperparameterError("Invalid weight_decay value: \(weightDecay)") }
        if !(dampening >= 0 && dampening <= 1) { throw HyperparameterError("Invalid dampening value: \(dampening)") }
        if nesterov && (momentum <= 0 || dampening != 0) {
            throw HyperparameterError("Nesterov momentum requires a momentum and zero dampening (momentum \(momentum), dampening \(dampening))")
        }
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        buffer = allocateState(momentum != 0 ? parameterCount : 0)
    }

    deinit { buffer.deallocate() }

    public var scheduledMomentum: Double {
        get { momentum }
        set {
            precondition(buffer.count > 0 || newValue == 0, "SGD built with momentum 0 has no momentum buffer to schedule")
            momentum = newValue
        }
    }

    /// b' = μ·b + (1 − τ)·g: μ/(1 − τ). (The first step sets b = g; b is then zero, so the
    /// carried momentum is nothing, as it should be.)
    public var momentumCarry: (buffer: UnsafeMutableBufferPointer<Float>, scale: Float)? {
        guard buffer.count > 0, momentum > 0, dampening < 1 else { return nil }
        return (buffer, Float(momentum / (1 - dampening)))
    }

    /// Plain momentum (not Nesterov's, which needs ḡ itself) after the first step (which sets
    /// b = ḡ): b' = μ·b + (1−τ)·(ḡ + λ·p) = (1−τ)·(u + λ·p) with u = ḡ + μ/(1−τ)·b.
    public var takesCarriedAverage: Bool { momentumCarry != nil && !nesterov && stepCount > 0 }

    /// b ← (1−τ)·(u + λ·p); p ← p − lr·b. The same rule as `step` with the carry's algebra done
    /// in the all-reduce: the result differs from `step` on ḡ = u − μ/(1−τ)·b by rounding only.
    public func step(parameters: UnsafeMutableBufferPointer<Float>, carriedAverage average: UnsafeMutableBufferPointer<Float>, lr: Double) {
        precondition(takesCarriedAverage, "SGD takes a carried average only with momentum, without Nesterov, after its first step")
        let p = parameters.baseAddress!, u = average.baseAddress!, b = buffer.baseAddress!, n = parameters.count
        let lr = Float(lr), wd = Float(weightDecay), damp = 1 - Float(dampening)
        for i in 0 ..< n {
            let d = wd != 0 ? u[i].addingProduct(p[i], wd) : u[i]
            let m = damp == 1 ? d : d * damp
            b[i] = m
            p[i] = p[i].addingProduct(m, -lr)
        }
        stepCount += 1
    }

    public var name: String { "sgd" }
    public var stateBuffers: [UnsafeMutableBufferPointer<Float>] { [buffer] }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeMutableBufferPointer<Float>, lr: Double) {
        let p = parameters.baseAddress!, g = gradients.baseAddress!, n = parameters.count
        let lr = Float(lr), wd = Float(weightDecay), mu = Float(momentum), damp = 1 - Float(dampening)
        // Each `x.addingProduct(y, a)` is one fused multiply-add, as PyTorch's vectorised
        // `x.add_(y, alpha=a)` computes it; keeping its order of operations keeps us within
        // an ulp of torch.optim instead of drifting apart over many steps.
        if momentum == 0 {
            for i in 0 ..< n {
                let d = wd != 0 ? g[i].addingProduct(p[i], wd) : g[i]
                p[i] = p[i].addingProduct(d, -lr)
            }
        } else {
            let b = buffer.baseAddress!, first = stepCount == 0
            for i in 0 ..< n {
                let d = wd != 0 ? g[i].addingProduct(p[i], wd) : g[i]
                let m = first ? d : (b[i] * mu).addingProduct(d, damp)
                b[i] = m
                p[i] = p[i].addingProduct(nesterov ? d.addingProduct(m, mu) : m, -lr)
            }
        }
        stepCount += 1
    }

    public func stateBytes() -> [UInt8] { OptimizerState.encode(kind: name, stepCount: stepCount, buffers: stateBuffers) }
    public func loadState(_ bytes: [UInt8]) throws {
        stepCount = try OptimizerState.decode(bytes, kind: name, into: stateBuffers)
    }
}
