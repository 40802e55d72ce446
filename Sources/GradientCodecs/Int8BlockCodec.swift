/// Blockwise absmax int8 (as in 8-bit optimizers and QSGD-style gradient compression):
/// values are cut into blocks of `blockSize` (default 256); each block stores one fp32 scale
/// s = max|x| / 127 and the integers q = round(x / s) ∈ [−127, 127]. Decoding is q·s, so the
/// error of every value is at most half a quantisation step of its block, s/2.
///
/// Payload: ⌈n/B⌉ scales (Float32) then n Int8 — 0.2539 of fp32's bytes at B = 256.
/// A block holding a NaN or ±Inf gets a NaN scale, so the non-finite gradient survives
/// compression and the trainer skips the step on every rank.
///
/// Stochastic rounding (optional): q = ⌊x/s + u⌋ with u uniform in [0, 1) from a seeded
/// generator, which makes the quantiser unbiased (E[q·s] = x). The generator is counter-based
/// (`centredUniform(key:counter:)`): each value's u is a hash of its position in the stream, not the next state
/// of a sequential generator, so the rounding loop has no carried dependence and vectorises.
public final class Int8BlockCodec: TiledCodec {
    public let blockSize: Int
    public let stochasticRounding: Bool
    /// The stream's key (from the seed) and the position of the next value in it.
    private var key: UInt32
    private var position: UInt32 = 0

    public init(blockSize: Int = 256, stochasticRounding: Bool = false, seed: UInt64 = 0x1B8) {
        precondition(blockSize >= 1)
        self.blockSize = blockSize
        self.layout = FixedRateLayout(blockSize: blockSize, bitsPerValue: 8)
        self.stochasticRounding = stochasticRounding
        self.key = Self.streamKey(seed)
    }

    public var name: String { (stochasticRounding ? "int8sr" : "int8") + (blockSize == 256 ? "" : ":\(blockSize)") }
    public var isIdentity: Bool { false }
    public let layout: FixedRateLayout

    /// Re-seeds the stochastic rounding stream (the trainer derives it from seed, rank, step).
    public func reseed(_ seed: UInt64) { key = Self.streamKey(seed); position = 0 }

    /// All 64 bits of the seed folded into the 32-bit key (SplitMix64's finaliser, Steele et al.
    /// 2014), so seeds that differ in any bit give unrelated streams.
    static func streamKey(_ seed: UInt64) -> UInt32 {
        var z = seed &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt32(truncatingIfNeeded: z ^ (z >> 31))
    }

    /// u − ½ ∈ [−½, ½) on a 2⁻²⁴ grid for stream position `counter`: murmur3's 32-bit
    /// finaliser (Appleby) of key ⊕ counter, its top 24 bits read as a signed integer. The
    /// finaliser is a bijection with full avalanche, so the 2³² positions of one key give every
    /// grid point exactly 256 times; and 32-bit multiplies are single AVX2 instructions
    /// (`vpmulld`), unlike SplitMix64's 64-bit ones.
    @inline(__always) static func centredUniform(key: UInt32, counter: UInt32) -> Float {
        var h = key ^ counter
        h = (h ^ (h >> 16)) &* 0x85EB_CA6B
        h = (h ^ (h >> 13)) &* 0xC2B2_AE35
        h ^= h >> 16
        return Float(Int32(bitPattern: h) >> 8) * 0x1p-24
    }

    /// Round to nearest even and convert, without branches or traps (so LLVM vectorises it):
    /// after clamping to ±127, adding 1.5·2²³ leaves the rounded integer in the low mantissa
    /// bits (IEEE addition rounds to nearest even), and its low byte is the two's-complement Int8.
    /// Stochastic rounding passes x/s + (u − ½), whose nearest integer is ⌊x/s + u⌋ (ties aside).
    @inline(__always) static func toInt8(_ v: Float) -> Int8 {
        let clamped = Swift.min(Swift.max(v, -127), 127)
        return Int8(truncatingIfNeeded: (clamped + 12_582_912).bitPattern)
    }

    public func encodeTile(_ x: UnsafeMutablePointer<Float>, count n: Int, into tile: PayloadTile,
                           residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) {
        let scales = tile.scales, q = tile.body.assumingMemoryBound(to: Int8.self)
        // The stream as locals (the loops then vectorise); value i takes position base + i.
        let key = self.key, base = position
        for b in 0 ..< layout.blocks(n) {
            let start = b * blockSize
            let end = min(n, start + blockSize)
            // absmax as an integer reduction (vectorises, unlike a float max/sum chain): the bit
            // patterns of |x| order as the values do, and a pattern ≥ 0x7F800000 is Inf or NaN.
            var largest: UInt32 = 0
            for i in start ..< end { largest = Swift.max(largest, x[i].bitPattern & 0x7FFF_FFFF) }
            let m = Float(bitPattern: largest)
            // At least the least subnormal: below absmax 127·2⁻¹⁵⁰ (≈ 8.9e-44), m / 127 rounds
            // to 0, and x / 0 would clamp every value to ±127 steps of nothing.
            let scale = largest >= 0x7F80_0000 ? Float.nan : m > 0 ? Swift.max(m / 127, .leastNonzeroMagnitude) : 0
            scales[b] = scale
            let inverse: Float = m > 0 && m.isFinite ? 127 / m : 0
            if !inverse.isFinite {
                // absmax below 127/Float.greatestFiniteMagnitude (≈ 3.7e-37): 127/m overflows,
                // and x·∞ would clamp every nonzero value to ±127. Divided by the (subnormal)
                // scale instead, so the error stays within half a step here too — but for the
                // rounding of a subnormal scale below m/127 (absmax in [127, 190)·2⁻¹⁴⁹), which
                // clamps the largest values at ±127 steps: at most 127·2⁻¹⁵⁰ more.
                for i in start ..< end {
                    let v = x[i] / scale
                    q[i] = Self.toInt8(stochasticRounding ? Self.centredUniform(key: key, counter: base &+ UInt32(truncatingIfNeeded: i)) + v : v)
                }
            } else if stochasticRounding {
                for i in start ..< end {
                    let u = Self.centredUniform(key: key, counter: base &+ UInt32(truncatingIfNeeded: i))
                    q[i] = Self.toInt8(u.addingProduct(x[i], inverse))
                }
            } else {
                for i in start ..< end { q[i] = Self.toInt8(x[i] * inverse) }
            }
            if let residual { for i in start ..< end { residual[i] = residualScale * (x[i] - Float(q[i]) * scale) } }
            if roundTrip { for i in start ..< end { x[i] = Float(q[i]) * scale } }
        }
        if stochasticRounding { position = base &+ UInt32(truncatingIfNeeded: n) }
    }

    public func decodeTile(_ tile: PayloadTile, count n: Int, into d: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let scales = tile.scales, q = tile.body.assumingMemoryBound(to: Int8.self)
        for b in 0 ..< layout.blocks(n) {
            let start = b * blockSize
            let s = scales[b], end = min(n, start + blockSize)
            if accumulate { for i in start ..< end { d[i] += Float(q[i]) * s } } else { for i in start ..< end { d[i] = Float(q[i]) * s } }
        }
    }

}

extension GradientCodec {
    /// The int8 quantiser of this codec, alone or under the zstd stage (nil for the others):
    /// what callers need to reseed its stochastic-rounding stream or read its block size.
    public var int8Base: Int8BlockCodec? {
        (self as? Int8BlockCodec) ?? ((self as? ZstdStage)?.inner as? Int8BlockCodec)
    }
}
