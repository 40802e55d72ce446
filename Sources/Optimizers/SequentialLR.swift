/// `torch.optim.lr_scheduler.SequentialLR`: schedule i runs from milestone i−1 on, seeing
/// its own step count t − milestone[i−1] (PyTorch restarts it with `step(0)` there).
/// Warm-up then cosine: `SequentialLR([LinearLR(…), CosineAnnealingLR(…)], milestones: [w])`.
public struct SequentialLR: LearningRateSchedule {
    public let schedules: [LearningRateSchedule]
    public let milestones: [Int]
    public init(_ schedules: [LearningRateSchedule], milestones: [Int]) throws {
        if schedules.count != milestones.count + 1 {
            throw HyperparameterError("SequentialLR expects \(schedules.count - 1) milestones for \(schedules.count) schedules, got \(milestones.count)")
        }
        if milestones != milestones.sorted() { throw HyperparameterError("SequentialLR milestones must be increasing: \(milestones)") }
        self.schedules = schedules; self.milestones = milestones
    }
    public func learningRate(at t: Int) -> Double {
        let (index, local) = active(at: t)
        return schedules[index].learningRate(at: local)
    }

    public func momentum(at t: Int) -> Double? {
        let (index, local) = active(at: t)
        return schedules[index].momentum(at: local)
    }

    /// The schedule in force at t, and t counted from its milestone.
    private func active(at t: Int) -> (index: Int, local: Int) {
        let index = milestones.lastIndex { $0 <= t }.map { $0 + 1 } ?? 0
        return (index, t - (index == 0 ? 0 : milestones[index - 1]))
    }
}
