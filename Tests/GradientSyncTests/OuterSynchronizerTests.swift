import GradientSync
import XCTest

/// The outer step of local SGD and DiLoCo against a reference written here in Double:
/// `torch.optim.SGD` semantics on the averaged pseudo-gradient Δ̄ (Douillard et al. 2023,
/// Algorithm 1) and Streaming DiLoCo's mix θ ← α·θ + (1 − α)·θ̃ (2025, Algorithm 2).
final class OuterSynchronizerTests: XCTestCase {
    /// Property: two outer steps move θ_outer as torch.optim.SGD(lr, momentum, nesterov) would
    /// with Δ̄ as its gradient — buf ← μ·buf + Δ̄ (buf = Δ̄ at the first step), the step Δ̄ + μ·buf
    /// with Nesterov and buf without, θ_outer ← θ_outer − lr·step — and `average` moves it by
    /// −Δ̄ whatever lr; the local parameters become α·θ + (1 − α)·θ_outer.
    func testOuterStepsFollowTorchSGDAndMixTheLocalParameters() throws {
        let start: [Float] = [1, -2, 0.5, 3], local: [Float] = [0.9, -1.7, 0.6, 2.5]
        let deltas: [[Float]] = [[0.1, -0.3, -0.1, 0.5], [0.2, 0.1, -0.4, -0.05]]
        for (rule, mix) in [(OuterSettings.Rule.nesterov, 0.0), (.sgd, 0.25), (.average, 0.0)] {
            let (lr, mu) = (0.7, 0.9)
            let outer = try OuterSynchronizer(settings: OuterSettings(every: 4, warmupSteps: 0, rule: rule, lr: lr, momentum: mu, mix: mix),
                                              count: 4, extents: [0 ..< 4], plan: BucketPlan(extents: [0 ..< 4], bucketBytes: 1 << 20))
            var theta = start
            theta.withUnsafeMutableBufferPointer { outer.start(from: $0) }
            var expected = start.map(Double.init), buffer = [Double](repeating: 0, count: 4)
            for (k, delta) in deltas.enumerated() {
                var parameters = local, averaged = delta
                parameters.withUnsafeMutableBufferPointer { p in averaged.withUnsafeMutableBufferPointer { outer.apply(0, averaged: $0, to: p) } }
                for i in 0 ..< 4 {
                    let g = Double(delta[i])
                    switch rule {
                    case .average: expected[i] -= g
                    case .sgd, .nesterov:
                        buffer[i] = k == 0 ? g : mu * buffer[i] + g
                        expected[i] -= lr * (rule == .nesterov ? g + mu * buffer[i] : buffer[i])
                    }
                }
                for i in 0 ..< 4 {
                    XCTAssertEqual(Double(outer.outer[i]), expected[i], accuracy: 1e-6, "\(rule) step \(k) θ_outer[\(i)]")
                    XCTAssertEqual(Double(parameters[i]), mix * Double(local[i]) + (1 - mix) * expected[i], accuracy: 1e-6,
                                   "\(rule) step \(k): local parameter \(i) mixed with α = \(mix)")
                }
            }
        }
    }

    /// Property: an outer synchronizer restored from `stateBytes()` and θ_outer continues
    /// bit-identically (its outer momentum included), and state with bytes past its end, or
    /// cut short, is refused — not read as far as it fits.
    func testRestoredStateContinuesBitIdenticallyAndDamageIsRefused() throws {
        let settings = OuterSettings(every: 4, warmupSteps: 0, rule: .nesterov, lr: 0.7, momentum: 0.9)
        func make() throws -> OuterSynchronizer {
            try OuterSynchronizer(settings: settings, count: 4, extents: [0 ..< 4], plan: BucketPlan(extents: [0 ..< 4], bucketBytes: 1 << 20))
        }
        let deltas: [[Float]] = [[0.1, -0.3, -0.1, 0.5], [0.2, 0.1, -0.4, -0.05]]
        func step(_ outer: OuterSynchronizer, _ delta: [Float]) -> [Float] {
            var parameters: [Float] = [0.9, -1.7, 0.6, 2.5], averaged = delta
            parameters.withUnsafeMutableBufferPointer { p in averaged.withUnsafeMutableBufferPointer { outer.apply(0, averaged: $0, to: p) } }
            return parameters
        }
        let original = try make()
        var theta: [Float] = [1, -2, 0.5, 3]
        theta.withUnsafeMutableBufferPointer { original.start(from: $0) }
        _ = step(original, deltas[0])
        let bytes = original.stateBytes(), values = Array(original.outer)
        let restored = try make()
        try restored.restore(bytes, outer: values, step: 4)
        XCTAssertEqual(step(restored, deltas[1]).map(\.bitPattern), step(original, deltas[1]).map(\.bitPattern))
        XCTAssertEqual(Array(restored.outer).map(\.bitPattern), Array(original.outer).map(\.bitPattern), "θ_outer after the second outer step")
        for damaged in [bytes + [0], Array(bytes.dropLast())] {
            XCTAssertThrowsError(try make().restore(damaged, outer: values, step: 4)) {
                XCTAssertTrue("\($0)".contains("does not fit this model"), "\($0)")
            }
        }
    }

    /// Property: a streaming fragment in flight in the checkpoint of step D restores only when
    /// it could have been: started at most comm.outer_delay steps before D and due after D.
    /// One due at or before D (or further off than the delay) is damage — restored, it would
    /// never be applied and the next fragment's start would find it still in flight.
    func testAFragmentInFlightOutsideTheDelayIsRefused() throws {
        let settings = OuterSettings(every: 8, warmupSteps: 0, rule: .sgd, lr: 0.7, momentum: 0.9, fragments: 2, delay: 2)
        func make() throws -> OuterSynchronizer {
            try OuterSynchronizer(settings: settings, count: 4, extents: [0 ..< 2, 2 ..< 4],
                                  plan: BucketPlan(extents: [0 ..< 2, 2 ..< 4], bucketBytes: 8, closeAt: [1]))
        }
        let writer = try make()
        var theta: [Float] = [1, -2, 0.5, 3]
        theta.withUnsafeMutableBufferPointer { writer.start(from: $0) }
        writer.inFlight = .init(fragment: 1, applyAfter: 10, averaged: true)
        let bytes = writer.stateBytes(), values = Array(writer.outer)
        for step in [8, 9] {
            let restored = try make()
            try restored.restore(bytes, outer: values, step: step)
            XCTAssertEqual(restored.inFlight?.applyAfter, 10, "due after step 10, checkpoint of step \(step)")
        }
        for step in [7, 10, 11] {
            XCTAssertThrowsError(try make().restore(bytes, outer: values, step: step), "due after step 10, checkpoint of step \(step)") {
                XCTAssertTrue("\($0)".contains("does not fit this model"), "\($0)")
            }
        }
    }
}
