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

/// The training thread's collectives (a synchronised batch norm's reductions) after one fails.
final class SynchronizerCollectiveFailureTests: XCTestCase {
    struct Failed: Error, Equatable { let what: String }

    /// Property: with and without `comm.overlap`, once a training-thread collective fails, no
    /// later one of the step runs (the failed one may have left receives posted into the scratch
    /// they share: the next batch norm trapped on it) — each rethrows the first failure — and
    /// the step reports it; the next step, after `finishStep` or `abandonStep`, runs them again.
    func testAFailedCollectiveStopsTheStepsLaterOnesAndNotTheNextStep() throws {
        let plan = BucketPlan(extents: [0 ..< 100], bucketBytes: 1 << 20, firstBucketBytes: 1 << 20)
        for overlap in [false, true] {
            let results = try InProcessCluster.run(size: 2) { transport -> [String] in
                var settings = SyncSettings()
                settings.overlap = overlap
                let synchronizer = try GradientSynchronizer(settings: settings, transport: transport, plan: plan)
                var g = [Float](repeating: 1, count: 100), log: [String] = []
                func collective(_ name: String, failing: Bool = false) {
                    do {
                        try synchronizer.runCollective {
                            log.append("ran \(name)")
                            if failing { throw Failed(what: name) }
                        }
                    } catch { log.append("\(name) threw \((error as? Failed)?.what ?? "\(error)")") }
                }
                try g.withUnsafeMutableBufferPointer { buffer in
                    for (step, ending) in ["finish", "abandon"].enumerated() {
                        synchronizer.beginStep(step, gradients: buffer)
                        collective("a\(step)", failing: true)
                        collective("b\(step)")
                        if ending == "finish" {
                            for b in plan.buckets.indices { synchronizer.bucketReady(b) }
                            do { try synchronizer.finishStep(); log.append("step \(step) finished") } catch { log.append("step \(step) threw \((error as? Failed)?.what ?? "\(error)")") }
                        } else {
                            synchronizer.abandonStep()
                        }
                    }
                    synchronizer.beginStep(2, gradients: buffer)
                    collective("c2")
                    for b in plan.buckets.indices { synchronizer.bucketReady(b) }
                    try synchronizer.finishStep()
                }
                return log
            }
            let expected = ["ran a0", "a0 threw a0", "b0 threw a0", "step 0 threw a0",
                            "ran a1", "a1 threw a1", "b1 threw a1", "ran c2"]
            XCTAssertEqual(results[0], expected, "overlap \(overlap)")
            XCTAssertEqual(results[1], expected, "overlap \(overlap)")
        }
    }
}
