import Datasets
import XCTest

/// The sampler's promise: each step's global batch is split into disjoint per-rank shards,
/// and an epoch's batches cover distinct samples.
final class DistributedSamplerTests: XCTestCase {
    func testShardsAreDisjointAndCoverTheEpochWithoutRepeats() throws {
        for n in [1, 2, 3, 4] {
            let samplers = try (0 ..< n).map { try DistributedSampler(datasetSize: 1000, globalBatch: 48, worldSize: n, rank: $0, seed: 7) }
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
                    XCTAssertEqual(batch, Array(order[step * 48 ..< (step + 1) * 48]), "np \(n): the ranks' shards tile the global batch")
                    XCTAssertTrue(seen.isDisjoint(with: batch), "no sample twice in an epoch")
                    seen.formUnion(batch)
                }
                XCTAssertEqual(seen.count, 1000 / 48 * 48, "drop-last: ⌊N/B⌋ full batches")
            }
            XCTAssertNotEqual(samplers[0].permutation(epoch: 0), samplers[0].permutation(epoch: 1), "a new order each epoch")
        }
    }
}
