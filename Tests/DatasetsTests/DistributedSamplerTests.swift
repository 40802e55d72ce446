import Datasets
import XCTest

/// The sampler's promise: each step's global batch is split into disjoint per-rank shards,
/// and an epoch's batches cover distinct samples.
final class DistributedSamplerTests: XCTestCase {
    func testShardsAreDisjointAndCoverTheEpochWithoutRepeats() throws {
        for (n, b) in [(1, 48), (2, 48), (3, 48), (4, 48), (3, 47), (4, 50), (5, 48)] {
            let samplers = try (0 ..< n).map { try DistributedSampler(datasetSize: 1000, globalBatch: b, worldSize: n, rank: $0, seed: 7) }
            // Shares differ by at most one sample; the gradient weights n·share/B average to 1.
            XCTAssertLessThanOrEqual(samplers.map(\.localBatch).max()! - samplers.map(\.localBatch).min()!, 1, "np \(n), B \(b)")
            XCTAssertEqual(samplers.map(\.localBatch).reduce(0, +), b)
            XCTAssertEqual(samplers.map { Double($0.gradientWeight) }.reduce(0, +) / Double(n), 1, accuracy: 1e-6)
            if b % n == 0 { XCTAssertTrue(samplers.allSatisfy { $0.gradientWeight == 1 }, "equal shares are not reweighted") }
            for epoch in 0 ..< 2 {
                let order = samplers[0].permutation(epoch: epoch)
                XCTAssertEqual(Set(order), Set(0 ..< 1000), "a permutation")
                var seen = Set<Int>()
                for step in 0 ..< samplers[0].stepsPerEpoch {
                    var batch: [Int] = []
                    for sampler in samplers {
                        XCTAssertEqual(sampler.permutation(epoch: epoch), order, "every rank draws the same permutation")
                        batch += sampler.localIndices(order, stepInEpoch: step)
                    }
                    XCTAssertEqual(batch, Array(order[step * b ..< (step + 1) * b]), "np \(n): the ranks' shards tile the global batch")
                    XCTAssertTrue(seen.isDisjoint(with: batch), "no sample twice in an epoch")
                    seen.formUnion(batch)
                }
                XCTAssertEqual(seen.count, 1000 / b * b, "drop-last: ⌊N/B⌋ full batches")
            }
            XCTAssertNotEqual(samplers[0].permutation(epoch: 0), samplers[0].permutation(epoch: 1), "a new order each epoch")
        }
    }

    /// Property: a global batch smaller than the ranks is one line saying so.
    func testEveryRankNeedsASample() {
        XCTAssertThrowsError(try DistributedSampler(datasetSize: 100, globalBatch: 2, worldSize: 3, rank: 0, seed: 0)) {
            XCTAssertTrue("\($0)".contains("train.global_batch 2 is smaller than the 3 ranks"), "\($0)")
        }
    }
}
