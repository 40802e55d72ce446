/// The uncompressed wire format: IEEE-754 binary32, native (little-endian) byte order.
///
/// The ring recognises it through `isIdentity` and moves the gradient buffer itself, so on
/// the hot path none of these methods run; they exist so that fp32 composes with the zstd
/// stage (`zstd` alone) and so that tests can treat every codec alike.
public final class FP32Codec: GradientCodec {
    public init() {}

    public var name: String { "none" }
    public var isIdentity: Bool { true }

    public func maxEncodedBytes(count: Int) -> Int { count * 4 }

    public func encode(_ source: UnsafeMutableBufferPointer<Float>,
                       into destination: UnsafeMutableRawBufferPointer,
                       residual: UnsafeMutablePointer<Float>?, residualScale: Float,
                       roundTrip: Bool) throws -> Int {
        try checkCapacity(destination, count: source.count)
        if source.count > 0 {
            destination.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: source.count * 4)
        }
        // Lossless: the residual is zero and the round trip changes nothing.
        if let residual { residual.update(repeating: 0, count: source.count) }
        return source.count * 4
    }

    public func decode(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try checkLength(payload, count: destination.count, expected: destination.count * 4)
        if destination.count > 0 {
            UnsafeMutableRawPointer(destination.baseAddress!).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
        }
    }

    public func decodeAccumulate(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try checkLength(payload, count: destination.count, expected: destination.count * 4)
        guard let d = destination.baseAddress, let p = payload.baseAddress else { return }
        FloatKernels.add(p.assumingMemoryBound(to: Float.self), into: d, count: destination.count)
    }
}
