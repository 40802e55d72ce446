import Foundation

/// `torch.optim.lr_scheduler.CosineAnnealingLR` (SGDR without restarts, Loshchilov & Hutter
/// 2017): lr = η_min + (base − η_min)·(1 + cos(π·t / T_max)) / 2 — the closed form PyTorch
/// documents; past T_max it continues the cosine, as PyTorch's recursion does.
public struct CosineAnnealingLR: LearningRateSchedule {
    public let base: Double, tMax: Int, etaMin: Double
    public init(base: Double, tMax: Int, etaMin: Double = 0) throws {
        if tMax < 1 { throw HyperparameterError("Invalid T_max for CosineAnnealingLR: \(tMax) (must be ≥ 1)") }
        self.base = base; self.tMax = tMax; self.etaMin = etaMin
    }
    public func learningRate(at t: Int) -> Double {
        etaMin + (base - etaMin) * (1 + cos(Double.pi * Double(t) / Double(tMax))) / 2
    }
}
