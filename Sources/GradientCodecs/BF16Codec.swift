/// bfloat16 on the wire: fp32's exponent with 8 bits of significand — the same range as
/// fp32 (no overflow where fp32 has none) at relative error ≤ 2⁻⁸.
///
/// Encoding rounds to nearest even on the bit pattern: add 0x7FFF plus the lowest kept bit,
/// then keep the top 16 bits (the rounding TensorFlow and PyTorch use); NaN stays a quiet NaN.
public final class BF16Codec: GradientCodec {
    public init() {}
    public var name: String { "bf16" }
    public var isIdentity: Bool { false }
    public func maxEncodedBytes(count: Int) -> Int { count * 2 }

    @inline(__always) static func round(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }
    @inline(__always) static func widen(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    public func encode(_ source: UnsafeMutableBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer,
                       residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) throws -> Int {
        try checkCapacity(destination, count: source.count)
        guard let x = source.baseAddress, let d = destination.baseAddress else { return 0 }
        let h = d.bindMemory(to: UInt16.self, capacity: source.count), n = source.count
        for i in 0 ..< n { h[i] = Self.round(x[i]) }
        if let residual { for i in 0 ..< n { residual[i] = residualScale * (x[i] - Self.widen(h[i])) } }
        if roundTrip { for i in 0 ..< n { x[i] = Self.widen(h[i]) } }
        return n * 2
    }

    public func decode(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try checkLength(payload, count: destination.count, expected: destination.count * 2)
        guard let d = destination.baseAddress, let p = payload.baseAddress else { return }
        let h = p.assumingMemoryBound(to: UInt16.self)
        for i in 0 ..< destination.count { d[i] = Self.widen(h[i]) }
    }

    public func decodeAccumulate(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try checkLength(payload, count: destination.count, expected: destination.count * 2)
        guard let d = destination.baseAddress, let p = payload.baseAddress else { return }
        let h = p.assumingMemoryBound(to: UInt16.self)
        for i in 0 ..< destination.count { d[i] += Self.widen(h[i]) }
    }
}
