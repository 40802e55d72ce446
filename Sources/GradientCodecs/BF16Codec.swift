/// bfloat16 on the wire: fp32's exponent with 8 bits of significand — fp32's range at relative
/// error ≤ 2⁻⁸. Only values within half a bf16 step of fp32's largest (|x| ≥ 0x7F7F8000, about
/// 3.39e38) round up to ±Inf, as round-to-nearest-even must.
///
/// Encoding rounds to nearest even on the bit pattern: add 0x7FFF plus the lowest kept bit,
/// then keep the top 16 bits (the rounding TensorFlow and PyTorch use); NaN stays a quiet NaN.
public final class BF16Codec: TiledCodec {
    public init() {}
    public var name: String { "bf16" }
    public var isIdentity: Bool { false }
    public let layout = FixedRateLayout(blockSize: nil, bitsPerValue: 16)

    @inline(__always) static func round(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }
    @inline(__always) static func widen(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    public func encodeTile(_ x: UnsafeMutablePointer<Float>, count n: Int, into tile: PayloadTile,
                           residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) {
        let h = tile.body.assumingMemoryBound(to: UInt16.self)
        for i in 0 ..< n { h[i] = Self.round(x[i]) }
        if let residual { for i in 0 ..< n { residual[i] = residualScale * (x[i] - Self.widen(h[i])) } }
        if roundTrip { for i in 0 ..< n { x[i] = Self.widen(h[i]) } }
    }

    public func decodeTile(_ tile: PayloadTile, count n: Int, into d: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let h = tile.body.assumingMemoryBound(to: UInt16.self)
        if accumulate { for i in 0 ..< n { d[i] += Self.widen(h[i]) } } else { for i in 0 ..< n { d[i] = Self.widen(h[i]) } }
    }

}
