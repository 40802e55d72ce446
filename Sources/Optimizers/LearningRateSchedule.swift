import Foundation

/// A learning-rate schedule as a pure function of the step (or epoch) index t = 0, 1, 2, …
///
/// PyTorch's schedulers are stateful objects stepped in a loop; ours return the value that
/// loop would have produced after t calls to `step()`. A pure function needs no state in a
/// checkpoint and lets every rank compute the same rate without talking. Values match
/// PyTorch's to ~1e-12 (PyTorch updates some recursively; the closed forms agree up to the
/// rounding of that recursion).
public protocol LearningRateSchedule {
    func learningRate(at t: Int) -> Double
    /// The momentum coefficient (or β₁) for step t, for schedules that cycle it (OneCycleLR);
    /// nil leaves the optimizer's own.
    func momentum(at t: Int) -> Double?
}

extension LearningRateSchedule {
    public func momentum(at t: Int) -> Double? { nil }
}

/// The base rate, unchanged.
public struct ConstantLR: LearningRateSchedule {
    public let base: Double
    public init(base: Double) { self.base = base }
    public func learningRate(at t: Int) -> Double { base }
}

