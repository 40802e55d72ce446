import Foundation

/// `torch.optim.lr_scheduler.OneCycleLR` (Smith & Topin 2018) with PyTorch's defaults:
/// cosine annealing, two phases, div_factor 25, final_div_factor 1e4, pct_start 0.3, and
/// `cycle_momentum=True` with base_momentum 0.85 and max_momentum 0.95.
///
///     initial = max_lr / div_factor,  minimum = initial / final_div_factor
///     phase 1: t ∈ [0, pct·T − 1]        lr initial → max_lr,   momentum max → base
///     phase 2: t ∈ (pct·T − 1, T − 1]    lr max_lr → minimum,   momentum base → max
///     within a phase, v = end + (start − end)·(1 + cos(π·p)) / 2, p the fraction done
///
/// Momentum moves inversely to the learning rate (Smith 2018, "A disciplined approach to
/// neural network hyper-parameters", §4: large steps want less momentum). PyTorch sets it on
/// SGD/RMSProp/LARS as `momentum` and on Adam/LAMB as β₁.
public struct OneCycleLR: LearningRateSchedule {
    public let maxLR: Double, totalSteps: Int, pctStart: Double, divFactor: Double, finalDivFactor: Double
    /// (base, max) momentum when cycled; nil when `cycle_momentum` is off.
    public let momentumRange: (base: Double, max: Double)?

    public init(maxLR: Double, totalSteps: Int, pctStart: Double = 0.3, divFactor: Double = 25,
                finalDivFactor: Double = 1e4, momentumRange: (base: Double, max: Double)? = (0.85, 0.95)) throws {
        if totalSteps < 2 { throw HyperparameterError("Expected positive integer total_steps ≥ 2, but got \(totalSteps)") }
        if !(pctStart >= 0 && pctStart <= 1) { throw HyperparameterError("Expected float between 0 and 1 pct_start, but got \(pctStart)") }
        // Phase 1 ends at pct·T − 1: exactly 0 makes its fraction 0/0 at step 0, a NaN rate
        // that would poison every parameter (PyTorch divides by zero there too).
        if pctStart * Double(totalSteps) - 1 == 0 {
            throw HyperparameterError("pct_start \(pctStart) × total steps \(totalSteps) = 1 leaves the warm-up phase no length (its end, pct_start·T − 1, is step 0); choose another pct_start")
        }
        try checkLearningRate(maxLR)
        if let range = momentumRange, !(range.base >= 0 && range.base <= range.max && range.max < 1) {
            throw HyperparameterError("Expected 0 ≤ base_momentum ≤ max_momentum < 1, but got \(range.base) and \(range.max)")
        }
        self.maxLR = maxLR; self.totalSteps = totalSteps; self.pctStart = pctStart
        self.divFactor = divFactor; self.finalDivFactor = finalDivFactor; self.momentumRange = momentumRange
    }

    public func learningRate(at t: Int) -> Double {
        let initial = maxLR / divFactor
        return anneal(at: t, start: initial, peak: maxLR, end: initial / finalDivFactor)
    }

    public func momentum(at t: Int) -> Double? {
        momentumRange.map { anneal(at: t, start: $0.max, peak: $0.base, end: $0.max) }
    }

    /// Cosine from `start` to `peak` over phase 1, then from `peak` to `end` over phase 2.
    private func anneal(at t: Int, start: Double, peak: Double, end: Double) -> Double {
        let phaseOneEnd = pctStart * Double(totalSteps) - 1, last = Double(totalSteps) - 1
        let (from, to, phaseStart, phaseEnd) = Double(t) <= phaseOneEnd
            ? (start, peak, 0.0, phaseOneEnd) : (peak, end, phaseOneEnd, last)
        let fraction = (Double(t) - phaseStart) / (phaseEnd - phaseStart)
        return to + (from - to) / 2 * (cos(Double.pi * fraction) + 1)
    }
}
