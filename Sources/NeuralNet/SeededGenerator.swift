import Foundation
/// A small, fast, seedable generator (xoshiro256**, Blackman & Vigna 2018), seeded through
/// SplitMix64 as its authors recommend.
///
/// Everything random in ringsgd — initial weights, dropout masks, the sampler's epoch
/// permutation, stochastic rounding — draws from one of these with an explicit seed, so a run
/// is reproducible and every rank can compute the same permutation without talking.
public struct SeededGenerator: RandomNumberGenerator, Equatable {
    public var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    /// Restores a generator from its four state words (checkpoints).
    public init(state: (UInt64, UInt64, UInt64, UInt64)) { self.state = state }

    /// A generator for a sub-stream, e.g. (seed, epoch): independent of the parent's position.
    public init(seed: UInt64, stream: UInt64) {
        self.init(seed: seed ^ (stream &* 0xD134_2543_DE82_EF95) ^ 0x5851_F42D_4C95_7F2D)
    }

    @inlinable
    public mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 24 bits, as a Float.
    @inlinable
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in [low, high).
    @inlinable
    public mutating func uniform(_ low: Float, _ high: Float) -> Float { low + (high - low) * nextUnitFloat() }

    /// A standard normal draw (Box–Muller on two uniform draws in (0, 1]), as `torch.nn.init.normal_`
    /// draws (not its bits: the distribution).
    public mutating func normal() -> Float {
        let u1 = 1 - Double(next() >> 11) * 0x1p-53, u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
    }

    public static func == (a: SeededGenerator, b: SeededGenerator) -> Bool {
        a.state.0 == b.state.0 && a.state.1 == b.state.1 && a.state.2 == b.state.2 && a.state.3 == b.state.3
    }
}

extension SeededGenerator {
    /// PyTorch's default initialisation of a weight/bias pair (`nn.Linear` and `nn.Conv2d`
    /// `reset_parameters`): kaiming_uniform_(a=√5) gives the bound gain·√(3/fan_in) with
    /// gain = √(2/(1+a²)) = √(1/3), i.e. 1/√fan_in, and the bias is uniform in ±1/√fan_in too.
    /// Weight first, then bias, in index order: the same seed gives the same layer everywhere.
    mutating func initializePyTorchDefault(weight: UnsafeMutablePointer<Float>, weightCount: Int,
                                           bias: UnsafeMutablePointer<Float>, biasCount: Int, fanIn: Int) {
        let bound = 1 / Float(fanIn).squareRoot()
        for i in 0 ..< weightCount { weight[i] = uniform(-bound, bound) }
        for i in 0 ..< biasCount { bias[i] = uniform(-bound, bound) }
    }
}
