/// A codec whose payload is fixed-rate — one Float32 scale per block of values (or none), then
/// a fixed number of bits per value — so that a segment's payload splits into independent
/// **tiles**: values [a, a + k) with a a multiple of `layout.granule` have their own scales and
/// their own bytes. fp16, bf16, int8 and sign are such codecs; zstd's output is not.
///
/// Why tiles: the ring's compressed step forms what it encodes from several gradient-sized
/// buffers (the gradient, the error-feedback residual, the momentum carry, a neighbour's
/// payload). Encoding a tile of a few thousand values at a time from a scratch that stays in
/// L1 makes that one sweep over memory instead of one per buffer (`FusedSegmentPass` in
/// Collectives). A segment's `encode` and `decode` are the one-tile case of the same
/// kernels, so tiled and whole-segment coding give the same bytes and values.
public protocol TiledCodec: GradientCodec {
    var layout: FixedRateLayout { get }
    /// Encodes `count` values at `x` into `tile`; with `residual`, writes
    /// `residualScale · (x − decode(encode(x)))` there; with `roundTrip`, overwrites `x` with
    /// `decode(encode(x))` — the contract of `GradientCodec.encode`, for one tile.
    func encodeTile(_ x: UnsafeMutablePointer<Float>, count: Int, into tile: PayloadTile,
                    residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool)
    /// Decodes `count` values of `tile` into `d` (or adds them to it). The payload must have
    /// passed `validate` first.
    func decodeTile(_ tile: PayloadTile, count: Int, into d: UnsafeMutablePointer<Float>, accumulate: Bool)
    /// Checks a whole segment's payload (length, scales) before any of its tiles is decoded.
    func validate(_ payload: UnsafeRawBufferPointer, count: Int) throws
}

/// Where one tile's scales and bits lie in a segment's payload.
public struct PayloadTile {
    public let scales: UnsafeMutablePointer<Float>
    public let body: UnsafeMutableRawPointer
}

/// The payload of n values: ⌈n/B⌉ Float32 scales (none without blocks), then ⌈n·bits/8⌉ bytes.
public struct FixedRateLayout: Sendable {
    /// Values per scale; nil: no scales.
    public let blockSize: Int?
    public let bitsPerValue: Int

    public init(blockSize: Int?, bitsPerValue: Int) {
        precondition(blockSize.map { $0 >= 1 } ?? true && [1, 8, 16].contains(bitsPerValue))
        (self.blockSize, self.bitsPerValue) = (blockSize, bitsPerValue)
    }

    public func blocks(_ count: Int) -> Int { blockSize.map { (count + $0 - 1) / $0 } ?? 0 }
    public func bytes(count: Int) -> Int { blocks(count) * 4 + (count * bitsPerValue + 7) / 8 }

    /// Tiles start at multiples of this many values: whole blocks that fill whole bytes.
    public var granule: Int {
        let perByte = bitsPerValue >= 8 ? 1 : 8 / bitsPerValue
        let block = blockSize ?? 1
        var (a, b) = (block, perByte)
        while b != 0 { (a, b) = (b, a % b) }
        return block / a * perByte
    }

    /// The tile of values starting at `offset` (a multiple of `granule`) of a segment of `count` values.
    @inline(__always)
    public func tile(_ payload: UnsafeMutableRawPointer, count: Int, at offset: Int) -> PayloadTile {
        let scales = payload.assumingMemoryBound(to: Float.self) + (blockSize.map { offset / $0 } ?? 0)
        return PayloadTile(scales: scales, body: payload + blocks(count) * 4 + offset * bitsPerValue / 8)
    }
}

extension TiledCodec {
    public func maxEncodedBytes(count: Int) -> Int { layout.bytes(count: count) }

    /// The layout's length; with blocks, scales ≥ 0 and finite (or NaN: a non-finite block).
    public func validate(_ payload: UnsafeRawBufferPointer, count: Int) throws {
        if layout.blockSize == nil { return try checkLength(payload, count: count, expected: layout.bytes(count: count)) }
        _ = try blockScaledPayload(payload, count: count, blocks: layout.blocks(count))
    }

    /// The whole segment as one tile.
    public func encode(_ source: UnsafeMutableBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer,
                       residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) throws -> Int {
        let n = source.count
        try checkCapacity(destination, count: n)
        guard let x = source.baseAddress, let d = destination.baseAddress else { return 0 }
        encodeTile(x, count: n, into: layout.tile(d, count: n, at: 0), residual: residual, residualScale: residualScale, roundTrip: roundTrip)
        return layout.bytes(count: n)
    }

    public func decode(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try decodeWhole(payload, into: destination, accumulate: false)
    }

    public func decodeAccumulate(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try decodeWhole(payload, into: destination, accumulate: true)
    }

    private func decodeWhole(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>, accumulate: Bool) throws {
        let n = destination.count
        try validate(payload, count: n)
        guard n > 0, let p = payload.baseAddress, let d = destination.baseAddress else { return }
        decodeTile(layout.tile(UnsafeMutableRawPointer(mutating: p), count: n, at: 0), count: n, into: d, accumulate: accumulate)
    }
}
