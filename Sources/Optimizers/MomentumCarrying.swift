/// An optimizer whose first moment is a linear recurrence in the gradient, b' = μ·b + c·g, so
/// that averaging u = g + (μ/c)·b across ranks averages the *next momentum* (scaled by 1/c):
/// avg(u) = ḡ + (μ/c)·b = b'/c. A compressed all-reduce of u compresses a momentum-sized,
/// far less noisy vector than a gradient — what 1-bit Adam (Tang et al., ICML 2021) does with
/// Adam's m, and Signum (Bernstein et al., ICML 2018) with sign of momentum — and subtracting
/// (μ/c)·b after the all-reduce hands the optimizer a gradient, so its rule is unchanged.
/// `b` is the optimizer's state, identical on every rank, as the all-reduce needs it to be.
public protocol MomentumCarrying: Optimizer {
    /// The momentum buffer b and μ/c, or nil while the optimizer has no momentum to carry
    /// (SGD with μ = 0 or dampening 1).
    var momentumCarry: (buffer: UnsafeMutableBufferPointer<Float>, scale: Float)? { get }

    /// Whether its next step can be taken from the carried average u = ḡ + (μ/c)·b itself, so
    /// that the all-reduce need not take (μ/c)·b back off (two reads of b fewer): SGD's u is
    /// b'/c with the weight decay left out (its step then does not read b either); Adam takes
    /// ḡ = u − (μ/c)·b off in its own loop, which reads m anyway, bit for bit as the ring did.
    var takesCarriedAverage: Bool { get }

    /// The step from the carried average `average` (u) instead of the averaged gradient.
    func step(parameters: UnsafeMutableBufferPointer<Float>, carriedAverage average: UnsafeMutableBufferPointer<Float>, lr: Double)
}

extension MomentumCarrying {
    public var takesCarriedAverage: Bool { false }
    public func step(parameters: UnsafeMutableBufferPointer<Float>, carriedAverage average: UnsafeMutableBufferPointer<Float>, lr: Double) {
        preconditionFailure("\(name) takes its step from an averaged gradient, not from a carried average")
    }
}
