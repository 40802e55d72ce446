import Collectives
import GradientSync
import InProcessTransport
import XCTest

/// The norm the synchronizer hands the trainer.
final class SynchronizerNormTests: XCTestCase {
    /// Property: with a lossy codec on the flat ring, after a step the synchronizer holds the
    /// squared norm of the whole averaged gradient — every bucket's, identical on every rank,
    /// equal to Σ x² of the result up to Double rounding — and nil where any bucket's
    /// all-reduce took none (the exact warm-up, fp32), so that the trainer takes its own pass.
    func testTheNormComesFromTheRingOnlyWhenEveryBucketTookIt() throws {
        let extents: [Range<Int>?] = [0 ..< 10_000, 10_000 ..< 10_013, 10_013 ..< 30_000]
        let plan = BucketPlan(extents: extents, bucketBytes: 4, firstBucketBytes: 4)   // a bucket a layer
        XCTAssertEqual(plan.buckets.count, 3)
        for (codec, warmup, expectNorm) in [("int8", 0, true), ("sign", 0, true), ("int8", 1, false), ("none", 0, false)] {
            for overlap in [false, true] {
                let results = try InProcessCluster.run(size: 3) { transport -> (norm: Double?, direct: Double) in
                    var settings = SyncSettings()
                    (settings.codec, settings.errorFeedback, settings.warmupSteps, settings.overlap) = (codec, true, warmup, overlap)
                    let synchronizer = try GradientSynchronizer(settings: settings, transport: transport, plan: plan)
                    var g = (0 ..< 30_000).map { Float(($0 * 7 + transport.rank * 13) % 101) * 0.01 - 0.5 }
                    try g.withUnsafeMutableBufferPointer { buffer in
                        synchronizer.beginStep(0, gradients: buffer)
                        for b in plan.buckets.indices { synchronizer.bucketReady(b) }
                        try synchronizer.finishStep()
                    }
                    return (synchronizer.lastSquaredNorm, g.reduce(0.0) { $0 + Double($1) * Double($1) })
                }
                let label = "\(codec) warm-up \(warmup) overlap \(overlap)"
                for (rank, result) in results.enumerated() {
                    if expectNorm {
                        let norm = try XCTUnwrap(result.norm, "\(label): rank \(rank) has no norm from the ring")
                        XCTAssertEqual(norm, result.direct, accuracy: 1e-12 * result.direct, "\(label): rank \(rank)")
                        XCTAssertEqual(norm.bitPattern, results[0].norm?.bitPattern, "\(label): rank \(rank)'s norm differs from rank 0's")
                    } else {
                        XCTAssertNil(result.norm, "\(label): rank \(rank) has a norm the ring did not take")
                    }
                }
            }
        }
    }
}
