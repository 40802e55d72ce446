import Foundation

/// `torch.optim.lr_scheduler.ExponentialLR`: lr = base · γ^t.
public struct ExponentialLR: LearningRateSchedule {
    public let base: Double, gamma: Double
    public init(base: Double, gamma: Double) throws {
        if !(gamma > 0) { throw HyperparameterError("Invalid gamma for ExponentialLR: \(gamma)") }
        self.base = base; self.gamma = gamma
    }
    public func learningRate(at t: Int) -> Double { base * pow(gamma, Double(t)) }
}
