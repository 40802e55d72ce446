import GradientCodecs

/// The momentum carried through a compressed all-reduce (`comm.compress_momentum`): s·b is
/// added to every value before its first encoding and taken back off the average, so the codec
/// compresses g + s·b while the caller receives the averaged gradient. `values` lies beside
/// the averaged buffer: value i of the buffer pairs with `values[i]`.
public struct CarriedAddend {
    public let values: UnsafePointer<Float>
    public let scale: Float
    /// The caller takes the average of g + s·b as it is (an optimizer that reads its next
    /// momentum from it: `MomentumCarrying.takesCarriedAverage`): the carry is not taken back
    /// off, which saves reading b twice more.
    public let staysOn: Bool
    public init(values: UnsafePointer<Float>, scale: Float, staysOn: Bool = false) {
        (self.values, self.scale, self.staysOn) = (values, scale, staysOn)
    }
}

/// What a compressed ring step does to one segment of the buffer, as one sweep over memory.
///
/// A rank's first encoding of a value reads the gradient g, the momentum carry b and the
/// error-feedback residual r, and — in the reduce-scatter — the left neighbour's partial sum p:
///
///     x = ((g + s·b) + r) + decode(p)          (÷ n at the chunk's owner)
///     send encode(x);  r ← (n at the owner, else 1) · (x − decode(encode(x)))
///     owner only: g ← decode(encode(x)) − s·b
///
/// Done buffer by buffer that is a pass over memory per addend; here x lives in a scratch
/// tile of a few thousand values that stays in L1, and each value of g, b, r and p is read
/// once and r written once. g is written only by the owner (and by the all-gather's decode):
/// a partial sum this rank forwards is never needed again. Each operation, and its order, is
/// what the separate passes did, so the bits are theirs.
///
/// A codec that cannot be tiled (zstd's output) is coded a whole segment at a time from a
/// segment-sized scratch: the same formula, one sweep per segment in L2 instead of L1.
///
/// Every decoded value the caller keeps (the owner's, the all-gather's) also goes into a sum
/// of squares per segment, taken tile by tile in eight Double lanes: each segment's sum is
/// formed from the same values in the same order on every rank, so the ring's sum over
/// segments in index order — the squared norm of the averaged gradient — is bit-identical
/// everywhere, and the trainer needs no extra pass to take the norm.
public struct FusedSegmentPass {
    let codec: GradientCodec
    let tiled: TiledCodec?
    /// Values per tile (a multiple of the layout's granule), or the largest segment when untiled.
    let tileValues: Int
    let scratch: UnsafeMutablePointer<Float>
    let buffer: UnsafeMutablePointer<Float>
    let residual: UnsafeMutablePointer<Float>?
    let carry: CarriedAddend?

    /// A pass over `buffer` (and `residual`, `carry` beside it) with `scratch` of
    /// `tileValues(for:maxSegmentValues:)` floats.
    public init(codec: GradientCodec, buffer: UnsafeMutablePointer<Float>, residual: UnsafeMutablePointer<Float>?,
                carry: CarriedAddend?, scratch: UnsafeMutablePointer<Float>, maxSegmentValues: Int) {
        (self.codec, self.tiled, self.buffer, self.residual, self.carry, self.scratch) = (codec, codec as? TiledCodec, buffer, residual, carry, scratch)
        tileValues = Self.tileValues(for: codec, maxSegmentValues: maxSegmentValues)
    }

    /// Tiles of about 2048 values (8 KiB): x, and the lines of g, b, r and p it reads, fit in L1.
    public static func tileValues(for codec: GradientCodec, maxSegmentValues: Int) -> Int {
        guard let tiled = codec as? TiledCodec else { return max(1, maxSegmentValues) }
        let granule = tiled.layout.granule
        return granule * max(1, 2048 / granule)
    }

    /// Encodes the segment `range` of the buffer into `out` (see the type's formula): `incoming`
    /// is the left neighbour's payload for the same segment (nil at step 0), `owner` the ring's
    /// n when this rank owns the chunk. Returns the bytes written and, for the owner, the sum of
    /// squares of what it kept.
    public func encode(_ range: Range<Int>, incoming: UnsafeRawBufferPointer?, owner n: Int?,
                into out: UnsafeMutableRawBufferPointer) throws -> (bytes: Int, squares: Double) {
        let count = range.count
        var squares = SquareSum()
        let residualScale = n.map(Float.init) ?? 1
        guard let tiled else {
            precondition(count <= tileValues, "a segment of \(count) values in a scratch of \(tileValues)")
            prepare(scratch, at: range.lowerBound, count: count)
            let x = UnsafeMutableBufferPointer(start: scratch, count: count)
            if let incoming { try Self.incoming { try codec.decodeAccumulate(incoming, into: x) } }
            if let n { FloatKernels.scale(scratch, by: 1 / Float(n), count: count) }
            let bytes = try codec.encode(x, into: out, residual: residual.map { $0 + range.lowerBound },
                                         residualScale: residualScale, roundTrip: n != nil)
            if n != nil { keep(scratch, at: range.lowerBound, count: count, squares: &squares) }
            return (bytes, squares.total)
        }
        try codec.checkCapacity(out, count: count)
        if let incoming { try Self.incoming { try tiled.validate(incoming, count: count) } }
        let layout = tiled.layout
        let payload = incoming?.baseAddress.map { UnsafeMutableRawPointer(mutating: $0) }
        for a in stride(from: 0, to: count, by: tileValues) {
            let k = min(tileValues, count - a), at = range.lowerBound + a
            prepare(scratch, at: at, count: k)
            if let payload { tiled.decodeTile(layout.tile(payload, count: count, at: a), count: k, into: scratch, accumulate: true) }
            if let n { FloatKernels.scale(scratch, by: 1 / Float(n), count: k) }
            tiled.encodeTile(scratch, count: k, into: layout.tile(out.baseAddress!, count: count, at: a),
                             residual: residual.map { $0 + at }, residualScale: residualScale, roundTrip: n != nil)
            if n != nil { keep(scratch, at: at, count: k, squares: &squares) }
        }
        return (layout.bytes(count: count), squares.total)
    }

    /// Decodes `payload` into the segment `range` of the buffer (the all-gather), takes the
    /// carry back off, and returns the sum of squares of the result.
    public func decode(_ payload: UnsafeRawBufferPointer, into range: Range<Int>) throws -> Double {
        let count = range.count, g = buffer + range.lowerBound
        var squares = SquareSum()
        guard let tiled else {
            try Self.incoming { try codec.decode(payload, into: UnsafeMutableBufferPointer(start: g, count: count)) }
            finish(at: range.lowerBound, count: count, squares: &squares)
            return squares.total
        }
        try Self.incoming { try tiled.validate(payload, count: count) }
        guard count > 0, let base = payload.baseAddress else { return 0 }
        let p = UnsafeMutableRawPointer(mutating: base)
        for a in stride(from: 0, to: count, by: tileValues) {
            let k = min(tileValues, count - a)
            tiled.decodeTile(tiled.layout.tile(p, count: count, at: a), count: k, into: g + a, accumulate: false)
            finish(at: range.lowerBound + a, count: k, squares: &squares)
        }
        return squares.total
    }

    /// A payload from the left neighbour that does not decode (told apart from this rank's own
    /// encoding failing, so that the ring can name the sender).
    public struct BadIncoming: Error, CustomStringConvertible {
        public let error: Error
        public var description: String { "the left neighbour's payload does not decode: \(error)" }
    }

    private static func incoming(_ body: () throws -> Void) throws {
        do { try body() } catch { throw BadIncoming(error: error) }
    }

    /// x ← (g + s·b) + r over `count` values from `at` — the order the separate passes had
    /// (the carry's fused multiply-add first, then the residual).
    @inline(__always)
    private func prepare(_ x: UnsafeMutablePointer<Float>, at: Int, count: Int) {
        let g = buffer + at
        switch (carry, residual) {
        case let (carry?, residual?):
            let b = carry.values + at, r = residual + at, s = carry.scale
            for i in 0 ..< count { x[i] = g[i].addingProduct(b[i], s) + r[i] }
        case let (carry?, nil):
            let b = carry.values + at, s = carry.scale
            for i in 0 ..< count { x[i] = g[i].addingProduct(b[i], s) }
        case let (nil, residual?):
            let r = residual + at
            for i in 0 ..< count { x[i] = g[i] + r[i] }
        case (nil, nil):
            x.update(from: g, count: count)
        }
    }

    /// The owner keeps what it sent: g ← x − s·b (x when the carry stays on), counted in the squares.
    @inline(__always)
    private func keep(_ x: UnsafeMutablePointer<Float>, at: Int, count: Int, squares: inout SquareSum) {
        let g = buffer + at
        if let carry, !carry.staysOn {
            let b = carry.values + at, s = -carry.scale
            for i in 0 ..< count { g[i] = x[i].addingProduct(b[i], s) }
        } else {
            g.update(from: x, count: count)
        }
        squares.add(g, count: count)
    }

    /// After a decode into g: g ← g − s·b (unless the carry stays on), counted in the squares.
    @inline(__always)
    private func finish(at: Int, count: Int, squares: inout SquareSum) {
        let g = buffer + at
        if let carry, !carry.staysOn {
            let b = carry.values + at, s = -carry.scale
            for i in 0 ..< count { g[i] = g[i].addingProduct(b[i], s) }
        }
        squares.add(g, count: count)
    }
}

/// Σ x² in Double: per call, eight lanes over whole groups of eight and a scalar tail, added to
/// the running lanes — the same calls on the same values give the same bits.
public struct SquareSum {
    private var lanes = SIMD8<Double>(), tail = 0.0

    public init() {}

    @inline(__always)
    public mutating func add(_ x: UnsafePointer<Float>, count: Int) {
        let (partial, rest) = Self.squares(x, count: count)
        lanes += partial
        tail += rest
    }

    /// A function of its own, so that its accumulator stays in registers (inlined into the
    /// tile loops, LLVM kept it in memory and stored and reloaded it every eight values: the
    /// fused all-gather decode ran 15 % slower than three separate passes until this).
    @inline(never)
    static func squares(_ x: UnsafePointer<Float>, count: Int) -> (SIMD8<Double>, Double) {
        var sum = SIMD8<Double>(), i = 0
        while i + 8 <= count {
            let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            sum += v * v
            i += 8
        }
        var rest = 0.0
        while i < count { rest += Double(x[i]) * Double(x[i]); i += 1 }
        return (sum, rest)
    }

    public var total: Double { lanes.sum() + tail }
}
