import Collectives
import GradientCodecs
import Optimizers

/// `comm.compress_momentum`: the compressed all-reduce carries u = g + s·b, the next momentum
/// scaled (see `MomentumCarrying`: SGD's μ/(1−τ), Adam's β₁/(1−β₁)), and s·b is taken back off
/// its average, so the optimizer still receives an averaged gradient while the codec
/// compresses a momentum-sized, far less noisy vector. b is optimizer state, identical on
/// every rank. The steps after `comm.warmup_steps` carry it (the warm-up's exact average
/// gains nothing from it).
struct MomentumCarry {
    weak var carrier: MomentumCarrying?
    /// The step's optimizer reads its next momentum from the carried average itself
    /// (`MomentumCarrying.takesCarriedAverage`): s·b is not taken back off.
    var staysOn = false

    /// s·b over `range` of the flat buffer, for an all-reduce that folds it (nil without momentum yet).
    func addend(_ range: Range<Int>) -> CarriedAddend? {
        guard let carry = carrier?.momentumCarry else { return nil }
        return CarriedAddend(values: UnsafePointer(carry.buffer.baseAddress! + range.lowerBound), scale: carry.scale, staysOn: staysOn)
    }

    /// Whether a step's average carries s·b (there is momentum to carry).
    var carries: Bool { carrier?.momentumCarry != nil }

    /// values ← values + sign·s·b over `range` of the flat buffer (no-op without momentum yet).
    func add(_ sign: Float, to values: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
        guard let carry = carrier?.momentumCarry else { return }
        FloatKernels.add(UnsafePointer(carry.buffer.baseAddress! + range.lowerBound), times: sign * carry.scale,
                         into: values + range.lowerBound, count: range.count)
    }
}
