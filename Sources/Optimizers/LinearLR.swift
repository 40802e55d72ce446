/// `torch.optim.lr_scheduler.LinearLR`: the factor moves linearly from `startFactor` to
/// `endFactor` over `totalIters` steps, then stays: lr = base·(s + (e − s)·min(t, T)/T).
/// With its defaults (1/3 → 1 over 5 steps) it is the usual linear warm-up.
public struct LinearLR: LearningRateSchedule {
    public let base: Double, startFactor: Double, endFactor: Double, totalIters: Int
    public init(base: Double, startFactor: Double = 1.0 / 3, endFactor: Double = 1, totalIters: Int = 5) throws {
        if !(startFactor > 0 && startFactor <= 1) {
            throw HyperparameterError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1, got \(startFactor)")
        }
        if !(endFactor >= 0 && endFactor <= 1) {
            throw HyperparameterError("Ending multiplicative factor expected to be between 0 and 1, got \(endFactor)")
        }
        if totalIters < 1 { throw HyperparameterError("Invalid total_iters for LinearLR: \(totalIters)") }
        self.base = base; self.startFactor = startFactor; self.endFactor = endFactor; self.totalIters = totalIters
    }
    public func learningRate(at t: Int) -> Double {
        base * (startFactor + (endFactor - startFactor) * Double(min(t, totalIters)) / Double(totalIters))
    }
}
