/// RMSProp (Hinton, Coursera lecture 6e; centered variant Graves 2013) — `torch.optim.RMSprop`.
///
///     g ← g + λ·θ                                  (weight_decay)
///     v ← α·v + (1 − α)·g²
///     centered: ḡ ← ḡ + (1 − α)(g − ḡ);  d ← √(v − ḡ²) + ε   else  d ← √v + ε
///     momentum μ > 0: b ← μ·b + g/d;  θ ← θ − γ·b
///     otherwise:      θ ← θ − γ·g/d
///
/// Source: PyTorch docs, torch.optim.RMSprop, "Algorithm"; torch/optim/rmsprop.py.
public final class RMSProp: MomentumScheduled {
    /// μ; a schedule may change it per step. The momentum buffer exists when μ > 0 at construction.
    public private(set) var momentum: Double
    public let alpha: Double, eps: Double, weightDecay: Double, centered: Bool
    public private(set) var stepCount = 0
    private let squareAverage: UnsafeMutableBufferPointer<Float>
    private let gradientAverage: UnsafeMutableBufferPointer<Float>
    private let buffer: UnsafeMutableBufferPointer<Float>

    public init(parameterCount: Int, alpha: Double = 0.99, eps: Double = 1e-8, weightDecay: Double = 0,
                momentum: Double = 0, centered: Bool = false) throws {
        if !(eps > 0) { throw HyperparameterError("Invalid epsilon value: \(eps)") }
        if !(alpha >= 0 && alpha <= 1) { throw HyperparameterError("Invalid alpha value: \(alpha)") }
        if !(momentum >= 0) { throw HyperparameterError("Invalid momentum value: \(momentum)") }
        if !(weightDecay >= 0) { throw HyperparameterError("Invalid weight_decay value: \(weightDecay)") }
        self.alpha = alpha; self.eps = eps; self.weightDecay = weightDecay
        self.momentum = momentum; self.centered = centered
        squareAverage = allocateState(parameterCount)
        gradientAverage = allocateState(centered ? parameterCount : 0)
        buffer = allocateState(momentum > 0 ? parameterCount : 0)
    }

    deinit { squareAverage.deallocate(); gradientAverage.deallocate(); buffer.deallocate() }

    public var scheduledMomentum: Double {
        get { momentum }
        set {
            precondition(buffer.count > 0 || newValue == 0, "RMSProp built with momentum 0 has no momentum buffer to schedule")
            momentum = newValue
        }
    }

    public var name: String { "rmsprop" }
    public var stateBuffers: [UnsafeMutableBufferPointer<Float>] { [squareAverage, gradientAverage, buffer] }

    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeMutableBufferPointer<Float>, lr: Double) {
        stepCount += 1
        let a = Float(alpha), ac = Float(1 - alpha), epsF = Float(eps), wd = Float(weightDecay)
        let mu = Float(momentum), lrF = Float(lr)
        let p = parameters.baseAddress!, g = gradients.baseAddress!, v = squareAverage.baseAddress!
        let gAvg = centered ? gradientAverage.baseAddress : nil, b = momentum > 0 ? buffer.baseAddress : nil
        // Order of operations as torch's CPU kernels compute them (measured bit for bit against
        // torch 2.15): add_(y, alpha) = fma(y, alpha, x); addcmul_(a, b, value=s) =
        // fma(s·a, b, x); addcdiv_(a, b, value=s) = x + (s·a)/b; lerp_ = fma.
        for i in 0 ..< parameters.count {
            let grad = wd != 0 ? g[i].addingProduct(p[i], wd) : g[i]
            v[i] = (v[i] * a).addingProduct(ac * grad, grad)           // mul_, addcmul_
            var average: Float
            if let gAvg {
                gAvg[i] = gAvg[i].addingProduct(ac, grad - gAvg[i])
                average = v[i].addingProduct(-gAvg[i], gAvg[i]).squareRoot()   // addcmul(ḡ, ḡ, value=-1)
            } else {
                average = v[i].squareRoot()
            }
            average += epsF
            if let b {
                b[i] = b[i] * mu + grad / average
                p[i] = p[i].addingProduct(b[i], -lrF)
            } else {
                p[i] = p[i] + (-lrF * grad) / average                    // addcdiv_
            }
        }
    }

    public func stateBytes() -> [UInt8] { OptimizerState.encode(kind: name, stepCount: stepCount, buffers: stateBuffers) }
    public func loadState(_ bytes: [UInt8]) throws {
        stepCount = try OptimizerState.decode(bytes, kind: name, into: stateBuffers)
    }
}
