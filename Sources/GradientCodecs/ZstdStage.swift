import CZstd

/// A lossless zstd stage stacked on any codec (`fp16+zstd`, `int8+zstd:3`, `zstd` on fp32).
///
/// Raw float bytes barely compress: the low mantissa bytes are noise. As blosc does, the
/// inner codec's output is first **byte-plane shuffled** — byte k of every element gathered
/// into plane k — so that the sign/exponent planes, which are highly repetitive across a
/// gradient, sit together and compress well. Then `ZSTD_compress2` at `level`, with zstd's
/// frame checksum on.
///
/// Payload: 'Z' | mode (0 compressed, 1 stored raw when zstd would not shrink it) | 2 zero
/// bytes | inner length (UInt32) | body. Decoding checks the header, that zstd's output is
/// exactly the inner length, and reports zstd's own error string otherwise.
public final class ZstdStage: GradientCodec {
    /// libzstd's version ("1.5.4"), for bug reports.
    public static var libraryVersion: String { String(cString: ZSTD_versionString()) }

    public let inner: GradientCodec
    public let level: Int32
    private let elementBytes: Int
    private let compressor: OpaquePointer
    private let decompressor: OpaquePointer
    private var scratch: UnsafeMutableRawBufferPointer
    private var shuffled: UnsafeMutableRawBufferPointer

    public init(inner: GradientCodec, level: Int) {
        self.inner = inner
        self.level = Int32(level)
        switch inner {
        case is FP32Codec: elementBytes = 4
        case is FP16Codec, is BF16Codec: elementBytes = 2
        default: elementBytes = 1
        }
        // Contexts are a few hundred KB of memory: out of memory here is out of memory anywhere.
        guard let compressor = ZSTD_createCCtx(), let decompressor = ZSTD_createDCtx() else {
            fatalError("zstd could not allocate its compression contexts (out of memory)")
        }
        (self.compressor, self.decompressor) = (compressor, decompressor)
        // A content checksum (xxHash64 of the frame) turns a damaged body into zstd's error
        // instead of a plausible wrong gradient. Neither setting can fail for a level the
        // registry accepted (1–22) — checked all the same.
        for (parameter, value) in [(ZSTD_c_compressionLevel, self.level), (ZSTD_c_checksumFlag, 1)] {
            let result = ZSTD_CCtx_setParameter(compressor, parameter, value)
            precondition(ZSTD_isError(result) == 0, "zstd refused a parameter: \(String(cString: ZSTD_getErrorName(result)))")
        }
        scratch = .allocate(byteCount: 64, alignment: 64)
        shuffled = .allocate(byteCount: 64, alignment: 64)
    }

    deinit {
        ZSTD_freeCCtx(compressor)
        ZSTD_freeDCtx(decompressor)
        scratch.deallocate()
        shuffled.deallocate()
    }

    public var name: String { (inner is FP32Codec ? "zstd" : inner.name + "+zstd") + (level == 1 ? "" : ":\(level)") }
    public var isIdentity: Bool { false }
    public func maxEncodedBytes(count: Int) -> Int { 8 + Int(ZSTD_compressBound(inner.maxEncodedBytes(count: count))) }

    private func reserve(_ bytes: Int) {
        guard bytes > scratch.count else { return }
        scratch.deallocate(); shuffled.deallocate()
        scratch = .allocate(byteCount: bytes, alignment: 64)
        shuffled = .allocate(byteCount: bytes, alignment: 64)
    }

    /// Plane k of the output holds byte k of every element (a trailing partial element, if
    /// any, is copied as is).
    private func shuffle(_ source: UnsafeRawPointer, _ destination: UnsafeMutableRawPointer, bytes: Int, inverse: Bool) {
        let w = elementBytes, elements = bytes / w
        guard w > 1 else { destination.copyMemory(from: source, byteCount: bytes); return }
        let s = source.assumingMemoryBound(to: UInt8.self), d = destination.assumingMemoryBound(to: UInt8.self)
        // Whole elements as words, planes by shifts: vectorisable, unlike a strided byte loop.
        if w == 2 {
            if inverse {
                let out = destination.assumingMemoryBound(to: UInt16.self)
                for e in 0 ..< elements { out[e] = UInt16(s[e]) | UInt16(s[elements + e]) << 8 }
            } else {
                let words = source.assumingMemoryBound(to: UInt16.self)
                for e in 0 ..< elements { let v = words[e]; d[e] = UInt8(truncatingIfNeeded: v); d[elements + e] = UInt8(truncatingIfNeeded: v >> 8) }
            }
        } else if w == 4 {
            if inverse {
                let out = destination.assumingMemoryBound(to: UInt32.self)
                for e in 0 ..< elements {
                    out[e] = UInt32(s[e]) | UInt32(s[elements + e]) << 8 | UInt32(s[2 * elements + e]) << 16 | UInt32(s[3 * elements + e]) << 24
                }
            } else {
                let words = source.assumingMemoryBound(to: UInt32.self)
                for e in 0 ..< elements {
                    let v = words[e]
                    d[e] = UInt8(truncatingIfNeeded: v); d[elements + e] = UInt8(truncatingIfNeeded: v >> 8)
                    d[2 * elements + e] = UInt8(truncatingIfNeeded: v >> 16); d[3 * elements + e] = UInt8(truncatingIfNeeded: v >> 24)
                }
            }
        } else {
            for k in 0 ..< w {
                if inverse { for e in 0 ..< elements { d[e * w + k] = s[k * elements + e] } }
                else { for e in 0 ..< elements { d[k * elements + e] = s[e * w + k] } }
            }
        }
        let tail = elements * w
        for i in tail ..< bytes { d[i] = s[i] }
    }

    public func encode(_ source: UnsafeMutableBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer,
                       residual: UnsafeMutablePointer<Float>?, residualScale: Float, roundTrip: Bool) throws -> Int {
        try checkCapacity(destination, count: source.count)
        reserve(inner.maxEncodedBytes(count: source.count))
        let innerBytes = try inner.encode(source, into: scratch, residual: residual, residualScale: residualScale, roundTrip: roundTrip)
        shuffle(scratch.baseAddress!, shuffled.baseAddress!, bytes: innerBytes, inverse: false)
        let out = destination.baseAddress!
        let body = out + 8, capacity = destination.count - 8
        let written = ZSTD_compress2(compressor, body, capacity, shuffled.baseAddress!, innerBytes)
        var mode: UInt8 = 0, bodyBytes = written
        if ZSTD_isError(written) != 0 || written >= innerBytes {
            mode = 1
            body.copyMemory(from: shuffled.baseAddress!, byteCount: innerBytes)
            bodyBytes = innerBytes
        }
        out.storeBytes(of: UInt8(ascii: "Z"), as: UInt8.self)
        out.storeBytes(of: mode, toByteOffset: 1, as: UInt8.self)
        out.storeBytes(of: UInt16(0), toByteOffset: 2, as: UInt16.self)
        out.storeBytes(of: UInt32(innerBytes).littleEndian, toByteOffset: 4, as: UInt32.self)
        return 8 + bodyBytes
    }

    /// Undoes zstd and the shuffle; returns the inner codec's payload.
    private func unwrap(_ payload: UnsafeRawBufferPointer, count: Int) throws -> UnsafeRawBufferPointer {
        guard payload.count >= 8, payload[0] == UInt8(ascii: "Z"), payload[1] <= 1 else {
            throw CodecError.badHeader(codec: name, detail: "missing 'Z' header or unknown mode")
        }
        let innerBytes = Int(UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        let expected = inner.maxEncodedBytes(count: count)
        guard innerBytes == expected else {
            throw CodecError.badHeader(codec: name, detail: "inner length \(innerBytes), expected \(expected) for \(count) values")
        }
        reserve(innerBytes)
        let body = UnsafeRawBufferPointer(rebasing: payload[8...])
        if payload[1] == 1 {
            guard body.count == innerBytes else { throw CodecError.wrongPayloadLength(codec: name, count: count, expected: 8 + innerBytes, actual: payload.count) }
            shuffled.baseAddress!.copyMemory(from: body.baseAddress!, byteCount: innerBytes)
        } else {
            let got = ZSTD_decompressDCtx(decompressor, shuffled.baseAddress!, innerBytes, body.baseAddress, body.count)
            if ZSTD_isError(got) != 0 { throw CodecError.lossless(codec: name, detail: String(cString: ZSTD_getErrorName(got))) }
            guard got == innerBytes else { throw CodecError.lossless(codec: name, detail: "decompressed \(got) bytes, header says \(innerBytes)") }
        }
        shuffle(shuffled.baseAddress!, scratch.baseAddress!, bytes: innerBytes, inverse: true)
        return UnsafeRawBufferPointer(rebasing: scratch[0 ..< innerBytes])
    }

    public func decode(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try inner.decode(try unwrap(payload, count: destination.count), into: destination)
    }

    public func decodeAccumulate(_ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try inner.decodeAccumulate(try unwrap(payload, count: destination.count), into: destination)
    }
}
