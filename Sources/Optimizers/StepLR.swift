/// `torch.optim.lr_scheduler.StepLR`: lr = base · γ^⌊t / step_size⌋.
public struct StepLR: LearningRateSchedule {
    public let base: Double, stepSize: Int, gamma: Double
    public init(base: Double, stepSize: Int, gamma: Double = 0.1) throws {
        if stepSize < 1 { throw HyperparameterError("Invalid step_size for StepLR: \(stepSize) (must be ≥ 1)") }
        self.base = base; self.stepSize = stepSize; self.gamma = gamma
    }
    public func learningRate(at t: Int) -> Double { base * pow(gamma, Double(t / stepSize)) }
}

/// `torch.optim.lr_scheduler.MultiStepLR`: lr = base · γ^(number of milestones ≤ t).
public struct MultiStepLR: LearningRateSchedule {
    public let base: Double, milestones: [Int], gamma: Double
    public init(base: Double, milestones: [Int], gamma: Double = 0.1) throws {
        if milestones != milestones.sorted() { throw HyperparameterError("MultiStepLR milestones must be increasing: \(milestones)") }
        self.base = base; self.milestones = milestones; self.gamma = gamma
    }
    public func learningRate(at t: Int) -> Double {
        base * pow(gamma, Double(milestones.filter { $0 <= t }.count))
    }
}

import Foundation
