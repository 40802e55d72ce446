import FileFormats
import NeuralNet

/// Which samples each rank trains on at each step.
///
/// Epoch e uses a permutation of 0..<N drawn from (seed, e), the same on every rank. The
/// permutation is cut into global batches of B; rank r of n takes slice
/// [⌊r·B/n⌋, ⌊(r+1)·B/n⌋) of each: its shard of the epoch is disjoint from every other rank's,
/// and it samples its own mini-batches from it.
///
/// **Any number of ranks.** When n does not divide B the shares differ by one sample (B = 128
/// on 3 ranks: 42, 43, 43). Each rank's mean gradient is then weighted by `gradientWeight`
/// = n·share/B before the all-reduce averages over n, so the average is the mean over the
/// global batch, whatever n (Σ_r (n·b_r/B)·g_r / n = Σ_r b_r·g_r / B). With equal shares the
/// weight is exactly 1 and is not applied.
///
/// **Drop-last.** An epoch has ⌊N / B⌋ steps; the N mod B samples at the end of each epoch's
/// permutation are not used that epoch (a different few each epoch). Every rank therefore
/// runs the same number of steps by construction — no rank can wait forever on another.
///
/// The global batch of a step does not depend on n, so a run resumed on a different number
/// of ranks trains on exactly the same samples (only the float summation order changes).
public struct DistributedSampler {
    public let datasetSize: Int
    public let globalBatch: Int
    public let worldSize: Int
    public let rank: Int
    public let seed: UInt64

    public init(datasetSize: Int, globalBatch: Int, worldSize: Int, rank: Int, seed: UInt64) throws {
        guard globalBatch >= worldSize else {
            throw DatasetError("train.global_batch \(globalBatch) is smaller than the \(worldSize) ranks: every rank needs at least one sample a step; use at least \(worldSize)")
        }
        guard globalBatch <= datasetSize else {
            throw DatasetError("train.global_batch \(globalBatch) exceeds the \(datasetSize) training samples")
        }
        self.datasetSize = datasetSize
        self.globalBatch = globalBatch
        self.worldSize = worldSize
        self.rank = rank
        self.seed = seed
    }

    /// Where rank r's share of a global batch starts: ⌊r·B/n⌋.
    func shareStart(_ r: Int) -> Int { r * globalBatch / worldSize }
    /// This rank's samples a step: ⌊B/n⌋ or ⌈B/n⌉.
    public var localBatch: Int { shareStart(rank + 1) - shareStart(rank) }
    /// The smallest and largest share (equal when n divides B).
    public var shareRange: ClosedRange<Int> { globalBatch / worldSize ... (globalBatch + worldSize - 1) / worldSize }
    /// n·share/B: the factor that makes the ranks' average of their mean gradients the mean
    /// over the global batch (1 with equal shares).
    public var gradientWeight: Float { globalBatch % worldSize == 0 ? 1 : Float(worldSize * localBatch) / Float(globalBatch) }
    public var stepsPerEpoch: Int { datasetSize / globalBatch }

    /// The epoch's permutation (Fisher–Yates from the (seed, epoch) stream).
    public func permutation(epoch: Int) -> [Int] {
        var generator = SeededGenerator(seed: seed, stream: UInt64(epoch) &+ 0x5EED)
        var order = Array(0 ..< datasetSize)
        for i in stride(from: datasetSize - 1, to: 0, by: -1) {
            let j = Int(generator.next() % UInt64(i + 1))
            order.swapAt(i, j)
        }
        return order
    }

    /// This rank's sample indices for step `stepInEpoch` of an epoch's permutation.
    public func localIndices(_ order: [Int], stepInEpoch: Int) -> ArraySlice<Int> {
        let start = stepInEpoch * globalBatch + shareStart(rank)
        return order[start ..< start + localBatch]
    }
}
