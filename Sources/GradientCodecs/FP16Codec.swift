/// IEEE-754 binary16 on the wire: half the bytes of fp32, relative error ≤ 2⁻¹¹ for values in
/// fp16's normal range (|x| ∈ [6.1e-5, 65504]); smaller values lose relative precision
/// gradually (subnormals), larger ones become ±Inf — and a non-finite gradient is exactly what
/// the trainer detects and skips on every rank.
///
/// Conversion rounds to nearest even (F16C's `vcvtps2ph`, which LLVM emits for these loops).
public final class FP16Codec: GradientCodec {
    public init() {}
    public var name: String { "fp16" }
    public var isIdentity: Bool { false }
    public func maxEncodedBytes(count: Int) -> Int { count * 2 }

    public func encode(_ source: UnsafeMutableBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer,
                       residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) throws -> Int {
        try checkCapacity(destination, count: source.count)
        guard let x = source.baseAddress, let d = destination.baseAddress else { return 0 }
        let h = d.bindMemory(to: Float16.self, capacity: source.count), n = source.count
        for i in 0 ..< n { h[i] = Float16(x[i]) }
        if let residual { for i in 0 ..< n { residual[i] = residualScale * (x[i] - Float(h[i])) } }
        if roundTrip { for i in 0 ..< n { x[i] = Float(h[i]) } }
        return n * 2
    }

    public func decode(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try checkLength(payload, count: destination.count, expected: destination.count * 2)
        guard let d = destination.baseAddress, let p = payload.baseAddress else { return }
        let h = p.assumingMemoryBound(to: Float16.self)
        for i in 0 ..< destination.count { d[i] = Float(h[i]) }
    }

    public func decodeAccumulate(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try checkLength(payload, count: destination.count, expected: destination.count * 2)
        guard let d = destination.baseAddress, let p = payload.baseAddress else { return }
        let h = p.assumingMemoryBound(to: Float16.self)
        for i in 0 ..< destination.count { d[i] += Float(h[i]) }
    }
}
