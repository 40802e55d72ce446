// GradientCodecs — what a segment of gradient looks like on the wire.
//
// Owns: the codec interface and one file per codec. Knows nothing of rings, ranks or MPI:
// a codec turns a segment of Floats into bytes and back. The ring all-reduce (module
// Collectives) calls it once per segment per hop.

/// Errors a codec reports. Every one names what was wrong with the payload, so that the ring
/// can prefix it with "rank X received from rank Y" and the user knows whom to blame.
public enum CodecError: Error, CustomStringConvertible, Equatable {
    /// The payload is not the size this codec produces for `count` values.
    case wrongPayloadLength(codec: String, count: Int, expected: Int, actual: Int)
    /// The payload's header is inconsistent (bad magic, block count, scale, …).
    case badHeader(codec: String, detail: String)
    /// The lossless stage failed (zstd's error string).
    case lossless(codec: String, detail: String)
    /// The destination buffer given to `encode` is smaller than `maxEncodedBytes`.
    case destinationTooSmall(codec: String, needed: Int, available: Int)

    public var description: String {
        switch self {
        case let .wrongPayloadLength(codec, count, expected, actual):
            return "\(codec) payload for \(count) values must be \(expected) bytes, got \(actual)"
        case let .badHeader(codec, detail):
            return "\(codec) payload header is invalid: \(detail)"
        case let .lossless(codec, detail):
            return "\(codec) lossless stage failed: \(detail)"
        case let .destinationTooSmall(codec, needed, available):
            return "\(codec) encode needs \(needed) bytes of destination, got \(available)"
        }
    }
}

/// A wire format for segments of a Float gradient.
///
/// Contract (what the ring relies on for replicas to stay bit-identical):
/// - `decode(encode(x))` is a pure function of `x`: the same input bytes give the same output
///   bits on every rank (no dependence on thread count, alignment or CPU dispatch).
/// - `encode` writes at most `maxEncodedBytes(count:)` bytes and returns how many it wrote.
/// - `decode` and `decodeAccumulate` validate the payload (length, header) and throw
///   `CodecError` rather than read or write out of bounds.
///
/// Codecs are classes because some carry state that is reused across calls (zstd contexts,
/// scratch space, the stochastic-rounding generator); one instance is used by one thread.
public protocol GradientCodec: AnyObject {
    /// The name used in configs and on the command line (`fp16`, `int8+zstd:3`, …).
    var name: String { get }

    /// True when the encoded bytes are exactly the fp32 input: the ring then sends straight
    /// from, and receives straight into, the gradient buffer (no copies).
    var isIdentity: Bool { get }

    /// An upper bound on the encoded size of `count` values.
    func maxEncodedBytes(count: Int) -> Int

    /// Encodes `source` into `destination`, returning the number of bytes written.
    ///
    /// When `residual` is non-nil it points at `source.count` floats that the codec sets to
    /// `residualScale * (x - decode(encode(x)))` element-wise: the error-feedback memory of
    /// EF-SGD (Karimireddy et al. 2019), fused into the encoding pass so that it costs no
    /// second sweep. (Overwritten, not added: the ring encodes each value once per rank.) When `roundTrip` is true the codec also overwrites `source` with
    /// `decode(encode(x))` (the chunk owner keeps exactly what it sends).
    func encode(_ source: UnsafeMutableBufferPointer<Float>,
                into destination: UnsafeMutableRawBufferPointer,
                residual: UnsafeMutablePointer<Float>?, residualScale: Float,
                roundTrip: Bool) throws -> Int

    /// Decodes `payload` into `destination` (overwriting it).
    func decode(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws

    /// Decodes `payload` and adds it to `destination`, element-wise, in one pass.
    func decodeAccumulate(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws
}

extension GradientCodec {
    /// Encodes without error feedback and without touching the source.
    @inlinable
    public func encode(_ source: UnsafeMutableBufferPointer<Float>,
                       into destination: UnsafeMutableRawBufferPointer) throws -> Int {
        try encode(source, into: destination, residual: nil, residualScale: 1, roundTrip: false)
    }

    /// Checks that `destination` can hold the encoding of `count` values.
    @inlinable
    public func checkCapacity(_ destination: UnsafeMutableRawBufferPointer, count: Int) throws {
        let needed = maxEncodedBytes(count: count)
        if destination.count < needed {
            throw CodecError.destinationTooSmall(codec: name, needed: needed, available: destination.count)
        }
    }

    /// Validates a block-scaled payload (int8, sign): exactly `maxEncodedBytes(count)` bytes
    /// holding `blocks` Float32 scales, each ≥ 0 and finite (or NaN: a non-finite block), then
    /// the body. Returns the scales and the body, or nil for an empty payload.
    @inlinable
    public func blockScaledPayload(_ payload: UnsafeRawBufferPointer, count n: Int, blocks: Int) throws -> (scales: UnsafePointer<Float>, body: UnsafeRawPointer)? {
        try checkLength(payload, count: n, expected: maxEncodedBytes(count: n))
        guard n > 0, let p = payload.baseAddress else { return nil }
        let scales = p.assumingMemoryBound(to: Float.self)
        for b in 0 ..< blocks where scales[b] < 0 || scales[b] == .infinity {
            throw CodecError.badHeader(codec: name, detail: "block \(b) has scale \(scales[b]); scales are ≥ 0 and finite (or NaN)")
        }
        return (scales, p + blocks * 4)
    }

    /// Checks that a fixed-rate payload has exactly `expected` bytes.
    @inlinable
    public func checkLength(_ payload: UnsafeRawBufferPointer, count: Int, expected: Int) throws {
        if payload.count != expected {
            throw CodecError.wrongPayloadLength(codec: name, count: count, expected: expected, actual: payload.count)
        }
    }
}
