import Optimizers
import XCTest

/// The step from a carried average u = ḡ + s·b (`MomentumCarrying.step(carriedAverage:)`),
/// which `comm.compress_momentum` takes when the all-reduce leaves s·b on.
final class CarriedAverageTests: XCTestCase {
    static let count = 1000

    /// Seeded values of several magnitudes and both signs.
    static func values(seed: UInt64, scale: Float) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
        return (0 ..< count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) - 0.5) * scale
        }
    }

    /// Property: Adam (and AdamW, AMSGrad) stepping from u takes ḡ = u − s·m off with one fused
    /// multiply-add in its own loop: bit for bit the step from that ḡ.
    func testAdamFromTheCarriedAverageIsTheStepFromTheGradientItLeaves() throws {
        for (decoupled, amsgrad, wd) in [(false, false, 0.0), (false, true, 0.01), (true, false, 0.01)] {
            let fused = try Adam(parameterCount: Self.count, weightDecay: wd, decoupled: decoupled, amsgrad: amsgrad)
            let plain = try Adam(parameterCount: Self.count, weightDecay: wd, decoupled: decoupled, amsgrad: amsgrad)
            var p1 = Self.values(seed: 1, scale: 1), p2 = p1
            for t in 0 ..< 12 {
                let g = Self.values(seed: 10 + UInt64(t), scale: 0.1)
                let carry = try XCTUnwrap(fused.momentumCarry)
                XCTAssertTrue(fused.takesCarriedAverage)
                var u = zip(g, carry.buffer).map { $0.addingProduct($1, carry.scale) }
                // The gradient the ring would have handed over: u − s·m, one fused multiply-add.
                var gBar = zip(u, carry.buffer).map { $0.addingProduct($1, -carry.scale) }
                p1.withUnsafeMutableBufferPointer { pp in u.withUnsafeMutableBufferPointer { fused.step(parameters: pp, carriedAverage: $0, lr: 0.01) } }
                p2.withUnsafeMutableBufferPointer { pp in gBar.withUnsafeMutableBufferPointer { plain.step(parameters: pp, gradients: $0, lr: 0.01) } }
            }
            XCTAssertEqual(p1.map(\.bitPattern), p2.map(\.bitPattern), "decoupled \(decoupled) amsgrad \(amsgrad)")
            XCTAssertNotEqual(p1, Self.values(seed: 1, scale: 1), "it trained")
        }
    }

    /// Property: SGD stepping from u sets b′ = (1−τ)·(u + λ·p) — the rule b′ = μ·b + (1−τ)·(ḡ + λ·p)
    /// with the carry's algebra done — so it ends within rounding of the steps from ḡ, with
    /// dampening and weight decay; Nesterov (which needs ḡ) and the first step do not take it.
    func testSGDFromTheCarriedAverageIsTheStepFromTheGradientUpToRounding() throws {
        XCTAssertFalse(try SGD(parameterCount: 4, momentum: 0.9, nesterov: true).takesCarriedAverage, "Nesterov needs ḡ")
        XCTAssertFalse(try SGD(parameterCount: 4, momentum: 0.9).takesCarriedAverage, "the first step sets b = ḡ")
        for (dampening, wd) in [(0.0, 0.0), (0.5, 0.001)] {
            let fused = try SGD(parameterCount: Self.count, momentum: 0.9, dampening: dampening, weightDecay: wd)
            let plain = try SGD(parameterCount: Self.count, momentum: 0.9, dampening: dampening, weightDecay: wd)
            var p1 = Self.values(seed: 1, scale: 1), p2 = p1
            for t in 0 ..< 12 {
                var g = Self.values(seed: 10 + UInt64(t), scale: 0.1)
                if fused.takesCarriedAverage, let carry = fused.momentumCarry {
                    var u = zip(g, carry.buffer).map { $0.addingProduct($1, carry.scale) }
                    p1.withUnsafeMutableBufferPointer { pp in u.withUnsafeMutableBufferPointer { fused.step(parameters: pp, carriedAverage: $0, lr: 0.01) } }
                } else {
                    var copy = g
                    p1.withUnsafeMutableBufferPointer { pp in copy.withUnsafeMutableBufferPointer { fused.step(parameters: pp, gradients: $0, lr: 0.01) } }
                }
                p2.withUnsafeMutableBufferPointer { pp in g.withUnsafeMutableBufferPointer { plain.step(parameters: pp, gradients: $0, lr: 0.01) } }
            }
            let worst = zip(p1, p2).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-6, "dampening \(dampening) weight decay \(wd): worst \(worst)")
            XCTAssertNotEqual(p1, p2, "the steps from u were taken (bitwise equal would mean they were not)")
        }
    }
}
