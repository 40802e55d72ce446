/// IEEE-754 binary16 on the wire: half the bytes of fp32, relative error ≤ 2⁻¹¹ for values in
/// fp16's normal range (|x| ∈ [6.1e-5, 65504]); smaller values lose relative precision
/// gradually (subnormals), larger ones become ±Inf — and a non-finite gradient is exactly what
/// the trainer detects and skips on every rank. The ring's reduce-scatter hops carry partial
/// *sums* of up to n − 1 ranks (divided by n only at the chunk's owner), so the range that
/// holds is |x| ≲ 65504 / (n − 1) per rank: 21834 at n = 4. (bf16 keeps fp32's range.)
///
/// Conversion rounds to nearest even (F16C's `vcvtps2ph`, which LLVM emits for these loops).
public final class FP16Codec: TiledCodec {
    public init() {}
    public var name: String { "fp16" }
    public var isIdentity: Bool { false }
    public let layout = FixedRateLayout(blockSize: nil, bitsPerValue: 16)

    public func encodeTile(_ x: UnsafeMutablePointer<Float>, count n: Int, into tile: PayloadTile,
                           residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) {
        let h = tile.body.assumingMemoryBound(to: Float16.self)
        for i in 0 ..< n { h[i] = Float16(x[i]) }
        if let residual { for i in 0 ..< n { residual[i] = residualScale * (x[i] - Float(h[i])) } }
        if roundTrip { for i in 0 ..< n { x[i] = Float(h[i]) } }
    }

    public func decodeTile(_ tile: PayloadTile, count n: Int, into d: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let h = tile.body.assumingMemoryBound(to: Float16.self)
        if accumulate { for i in 0 ..< n { d[i] += Float(h[i]) } } else { for i in 0 ..< n { d[i] = Float(h[i]) } }
    }

}
