import Collectives
import Foundation

/// What averaging the whole gradient costs when nobody waits: the denominator of
/// `comm_hidden_fraction`.
///
/// Why it is measured apart: during training a bucket's all-reduce starts when this rank's
/// backward completes the bucket, and then waits for the slowest peer's backward as well.
/// Timing it from its start therefore counts waiting for peers as communication, and overlap
/// would look better than it is. So before the first step every rank averages every bucket
/// back to back with nobody computing — after a barrier, best of two, on gradient-like data
/// (`GradientLikeData`: what the codecs see), with scratch error-feedback memory — and the
/// slowest rank's time is the cost of a step. Then
///
///     comm_hidden_fraction = 1 − (what the training thread waited after backward) / (cost)
///
/// clamped to [0, 1]: 0 when nothing was hidden (or stragglers made the wait exceed the cost).
struct CommunicationCost {
    private let seconds: [ObjectIdentifier: Double]

    func seconds(of averager: BucketAverager) -> Double { seconds[ObjectIdentifier(averager)] ?? 0 }

    /// Collective. `gradients` is left zeroed; the averagers' own state (PowerSGD's Q's) is the
    /// caller's to put back.
    static func measure(on gradients: UnsafeMutableBufferPointer<Float>, plan: BucketPlan, transport: Transport, seed: UInt64,
                        averagers: [(BucketAverager, keepsErrors: Bool)]) throws -> CommunicationCost {
        guard transport.size > 1, gradients.count > 0 else { return CommunicationCost(seconds: [:]) }
        defer { gradients.update(repeating: 0) }
        let scratch = ErrorFeedbackMemory(count: gradients.count, sharers: transport.size)
        var mine: [Double] = []
        for (averager, keepsErrors) in averagers {
            var best = Double.infinity
            for _ in 0 ..< 2 {
                GradientLikeData.fill(gradients, seed: seed ^ 0xC057, rank: transport.rank)
                try transport.barrier()
                let start = ContinuousClock.now
                for (b, range) in plan.buckets.enumerated() {
                    try averager.average(bucket: b, range, of: gradients, memory: keepsErrors ? scratch : nil)
                }
                best = min(best, (ContinuousClock.now - start).seconds)
            }
            mine.append(best)
        }
        let all = try RingAllGather.gather(mine, over: transport)
        var seconds: [ObjectIdentifier: Double] = [:]
        for (i, (averager, _)) in averagers.enumerated() {
            seconds[ObjectIdentifier(averager)] = (0 ..< transport.size).map { all[$0 * averagers.count + i] }.max()!
        }
        return CommunicationCost(seconds: seconds)
    }
}
