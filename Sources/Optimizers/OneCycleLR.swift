import Foundation

/// `torch.optim.lr_scheduler.OneCycleLR` (Smith & Topin 2018) with PyTorch's defaults:
/// cosine annealing, two phases, div_factor 25, final_div_factor 1e4, pct_start 0.3.
///
///     initial = max_lr / div_factor,  minimum = initial / final_div_factor
///     phase 1: t ∈ [0, pct·T − 1]        initial → max_lr
///     phase 2: t ∈ (pct·T − 1, T − 1]    max_lr → minimum
///     within a phase, lr = end + (start − end)·(1 + cos(π·p)) / 2, p the fraction done
public struct OneCycleLR: LearningRateSchedule {
    public let maxLR: Double, totalSteps: Int, pctStart: Double, divFactor: Double, finalDivFactor: Double

    public init(maxLR: Double, totalSteps: Int, pctStart: Double = 0.3, divFactor: Double = 25,
                finalDivFactor: Double = 1e4) throws {
        if totalSteps < 2 { throw HyperparameterError("Expected positive integer total_steps ≥ 2, but got \(totalSteps)") }
        if !(pctStart >= 0 && pctStart <= 1) { throw HyperparameterError("Expected float between 0 and 1 pct_start, but got \(pctStart)") }
        self.maxLR = maxLR; self.totalSteps = totalSteps; self.pctStart = pctStart
        self.divFactor = divFactor; self.finalDivFactor = finalDivFactor
    }

    public func learningRate(at t: Int) -> Double {
        let initial = maxLR / divFactor, minimum = initial / finalDivFactor
        let phases: [(end: Double, start: Double, finish: Double)] = [
            (pctStart * Double(totalSteps) - 1, initial, maxLR),
            (Double(totalSteps) - 1, maxLR, minimum),
        ]
        var phaseStart = 0.0
        for (i, phase) in phases.enumerated() {
            if Double(t) <= phase.end || i == phases.count - 1 {
                let fraction = (Double(t) - phaseStart) / (phase.end - phaseStart)
                return phase.finish + (phase.start - phase.finish) / 2 * (cos(Double.pi * fraction) + 1)
            }
            phaseStart = phase.end
        }
        return minimum
    }
}
