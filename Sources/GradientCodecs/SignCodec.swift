/// 1-bit sign compression with a per-block scale (1-bit SGD, Seide et al. 2014; scaled sign
/// with error feedback, Karimireddy et al. 2019, "EF-SGD": the sign of x times the block's
/// mean |x|, so that decode(encode(x)) keeps the block's L1 norm and every value's sign).
///
/// Payload: ⌈n/B⌉ Float32 scales, then ⌈n/8⌉ bytes of sign bits (bit i % 8 of byte i / 8 set
/// when value i is negative): 1/31 of fp32's bytes at the default B = 1024.
/// Decoding is ±scale. A block holding a NaN or ±Inf gets a NaN scale, so a non-finite
/// gradient survives compression and the trainer skips the step on every rank. +0 encodes as
/// +scale and −0 as −scale (the sign bit); error feedback carries the difference to the next step, which is what makes
/// this converge (without it, sign compression is biased).
public final class SignCodec: TiledCodec {
    public let blockSize: Int

    public init(blockSize: Int = 1024) {
        precondition(blockSize >= 1)
        self.blockSize = blockSize
        self.layout = FixedRateLayout(blockSize: blockSize, bitsPerValue: 1)
    }

    public var name: String { blockSize == 1024 ? "sign" : "sign:\(blockSize)" }
    public var isIdentity: Bool { false }
    public let layout: FixedRateLayout

    public func encodeTile(_ x: UnsafeMutablePointer<Float>, count n: Int, into tile: PayloadTile,
                           residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) {
        let scales = tile.scales, bits = tile.body.assumingMemoryBound(to: UInt8.self)
        bits.update(repeating: 0, count: (n + 7) / 8)
        for b in 0 ..< layout.blocks(n) {
            let start = b * blockSize
            let end = min(n, start + blockSize)
            let scale = Self.meanMagnitude(x + start, count: end - start)
            scales[b] = scale
            Self.packSigns(x, bits, start ..< end)
            let magnitude = scale.bitPattern
            if let residual {
                for i in start ..< end {
                    let decoded = Float(bitPattern: magnitude | (x[i].bitPattern & 0x8000_0000))
                    residual[i] = residualScale * (x[i] - decoded)
                }
            }
            if roundTrip { for i in start ..< end { x[i] = Float(bitPattern: magnitude | (x[i].bitPattern & 0x8000_0000)) } }
        }
    }

    /// Sign bits of `range` (bit 31 of each value), 8 values to a byte: whole bytes eight lanes
    /// at a time (each lane's bit weighted by its position, summed), a block's unaligned ends
    /// one value at a time into the bytes they share with the next block.
    @inline(__always) static func packSigns(_ x: UnsafePointer<Float>, _ bits: UnsafeMutablePointer<UInt8>, _ range: Range<Int>) {
        var i = range.lowerBound
        while i < range.upperBound && i & 7 != 0 { bits[i >> 3] |= UInt8(truncatingIfNeeded: x[i].bitPattern >> 31) << UInt8(i & 7); i += 1 }
        let weights = SIMD8<UInt32>(1, 2, 4, 8, 16, 32, 64, 128)
        while i + 8 <= range.upperBound {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<UInt32>.self)
            bits[i >> 3] = UInt8(truncatingIfNeeded: ((v &>> 31) &* weights).wrappedSum())
            i += 8
        }
        while i < range.upperBound { bits[i >> 3] |= UInt8(truncatingIfNeeded: x[i].bitPattern >> 31) << UInt8(i & 7); i += 1 }
    }

    /// ±scale for `range` from its sign bits, into `d` (or added to it): whole bytes eight lanes
    /// at a time, the unaligned ends one value at a time — the same values, hence bits, either way.
    @inline(__always) static func unpack(_ bits: UnsafePointer<UInt8>, _ magnitude: UInt32, _ d: UnsafeMutablePointer<Float>,
                                         _ range: Range<Int>, accumulate: Bool) {
        var i = range.lowerBound
        func one(_ i: Int) { if accumulate { d[i] += value(i, bits, magnitude) } else { d[i] = value(i, bits, magnitude) } }
        while i < range.upperBound && i & 7 != 0 { one(i); i += 1 }
        let shifts = SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7), m = SIMD8<UInt32>(repeating: magnitude)
        while i + 8 <= range.upperBound {
            let signs = ((SIMD8<UInt32>(repeating: UInt32(bits[i >> 3])) &>> shifts) & 1) &<< 31
            var v = unsafeBitCast(signs | m, to: SIMD8<Float>.self)
            if accumulate { v += UnsafeRawPointer(d + i).loadUnaligned(as: SIMD8<Float>.self) }
            UnsafeMutableRawPointer(d + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < range.upperBound { one(i); i += 1 }
    }

    /// Mean |x| of a block, summed in eight fixed lanes (vectorised; the same order, hence the
    /// same bits, on every rank); NaN when the block holds a NaN or ±Inf, and also when its
    /// finite values' sum overflows (|x| around 3e35 and up): the step is then skipped as
    /// non-finite, as a gradient that large would be clipped or diverge anyway.
    @inline(__always) static func meanMagnitude(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = SIMD8<Float>(), i = 0
        let mask = SIMD8<UInt32>(repeating: 0x7FFF_FFFF)
        while i + 8 <= count {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            lanes += unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & mask, to: SIMD8<Float>.self)
            i += 8
        }
        var sum = lanes.sum()
        while i < count { sum += abs(x[i]); i += 1 }
        return sum.isFinite ? sum / Float(count) : .nan
    }


    /// ±scale of value i's block, branch-free: the scale's magnitude with the sign bit stored.
    @inline(__always) private static func value(_ i: Int, _ bits: UnsafePointer<UInt8>, _ magnitude: UInt32) -> Float {
        Float(bitPattern: magnitude | UInt32((bits[i >> 3] >> UInt8(i & 7)) & 1) << 31)
    }

    public func decodeTile(_ tile: PayloadTile, count n: Int, into d: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let bits = UnsafePointer(tile.body.assumingMemoryBound(to: UInt8.self))
        for b in 0 ..< layout.blocks(n) {
            let start = b * blockSize
            Self.unpack(bits, tile.scales[b].bitPattern, d, start ..< min(n, start + blockSize), accumulate: accumulate)
        }
    }
}
