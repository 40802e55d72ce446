import Collectives
import GradientCodecs
import InProcessTransport
import XCTest

/// Each codec's contract: its round-trip error bound, exact losslessness of the zstd stage,
/// fused decode-accumulate equal to decode-then-add, residual = x − decode(encode(x)), and
/// rejection of corrupt payloads with an error instead of an overrun.
final class CodecTests: XCTestCase {
    /// Gradient-like values over many magnitudes, signs, and some exact zeros.
    static func sample(_ count: Int, seed: UInt64 = 1) -> [Float] {
        var s = seed
        return (0 ..< count).map { i in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(s >> 40) * 0x1p-24
            if i % 11 == 0 { return 0 }
            let magnitude = Float(pow(10.0, Double(-4 + (i / 300) % 5)))
            return (u - 0.5) * 2 * magnitude
        }
    }

    func roundTrip(_ codec: GradientCodec, _ x: [Float]) throws -> (decoded: [Float], bytes: Int, residual: [Float]) {
        var source = x, residual = [Float](repeating: 0, count: x.count), decoded = [Float](repeating: 0, count: x.count)
        var payload = [UInt8](repeating: 0, count: codec.maxEncodedBytes(count: x.count))
        let written = try source.withUnsafeMutableBufferPointer { s in
            try payload.withUnsafeMutableBytes { p in
                try residual.withUnsafeMutableBufferPointer { r in
                    try codec.encode(s, into: p, residual: r.baseAddress, residualScale: 1, roundTrip: false)
                }
            }
        }
        try payload.withUnsafeBytes { p in
            try decoded.withUnsafeMutableBufferPointer { try codec.decode(UnsafeRawBufferPointer(rebasing: p[0 ..< written]), into: $0) }
        }
        // decode-accumulate onto ones equals 1 + decode, bit for bit.
        var accumulated = [Float](repeating: 1, count: x.count)
        try payload.withUnsafeBytes { p in
            try accumulated.withUnsafeMutableBufferPointer { try codec.decodeAccumulate(UnsafeRawBufferPointer(rebasing: p[0 ..< written]), into: $0) }
        }
        func same(_ a: Float, _ b: Float) -> Bool { a == b || (a.isNaN && b.isNaN) }
        for i in x.indices where !same(accumulated[i], 1 + decoded[i]) {
            XCTFail("\(codec.name): decodeAccumulate[\(i)] = \(accumulated[i]) ≠ 1 + decode = \(1 + decoded[i])"); break
        }
        for i in x.indices where !same(residual[i], x[i] - decoded[i]) {
            XCTFail("\(codec.name): residual[\(i)] = \(residual[i]), expected \(x[i] - decoded[i])"); break
        }
        return (decoded, written, residual)
    }

    /// Property: for every codec, with a residual scale of 3 and `roundTrip` on (what the
    /// ring's chunk owner asks, scaled by the world size), at a count that is no multiple of a
    /// block or a SIMD width (1031): the residual is 3·(x − decode(payload)) computed from the
    /// input x — not from the source the round trip overwrites — and the source ends as exactly
    /// decode(payload), the bytes the others receive (stochastic rounding included: the
    /// payload of that same call).
    func testScaledResidualAndRoundTripFollowTheDefinitionForEveryCodec() throws {
        let x = Self.sample(1031, seed: 7)
        for name in ["none", "fp16", "bf16", "int8", "int8:7", "int8sr", "sign", "sign:5", "int8+zstd:3", "fp16+zstd", "zstd"] {
            let codec = try CodecRegistry.make(name)
            var source = x, residual = [Float](repeating: .nan, count: x.count), decoded = [Float](repeating: 0, count: x.count)
            var payload = [UInt8](repeating: 0, count: codec.maxEncodedBytes(count: x.count))
            let written = try source.withUnsafeMutableBufferPointer { s in
                try payload.withUnsafeMutableBytes { p in
                    try residual.withUnsafeMutableBufferPointer { r in
                        try codec.encode(s, into: p, residual: r.baseAddress, residualScale: 3, roundTrip: true)
                    }
                }
            }
            try payload.withUnsafeBytes { p in
                try decoded.withUnsafeMutableBufferPointer { try codec.decode(UnsafeRawBufferPointer(rebasing: p[0 ..< written]), into: $0) }
            }
            XCTAssertEqual(source, decoded, "\(name): the round trip leaves decode(payload) in the source")
            // The residual starts as NaN: a value the codec never wrote fails both checks.
            let nonzero = residual.filter { $0 != 0 && !$0.isNaN }.count
            for i in x.indices {
                let expected = 3 * (x[i] - decoded[i])
                if !(abs(residual[i] - expected) <= 1e-6 * max(abs(x[i]), 1e-30)) {
                    XCTFail("\(name): residual[\(i)] = \(residual[i]), expected 3·(\(x[i]) − \(decoded[i])) = \(expected)"); break
                }
            }
            if !["none", "zstd"].contains(name) { XCTAssertGreaterThan(nonzero, x.count / 2, "\(name): a lossy codec leaves a residual") }
        }
    }

    func testFP16ErrorIsAtMostTwoToTheMinus11RelativeInTheNormalRange() throws {
        let x = Self.sample(10_000).map { $0 * 1000 }    // into fp16's normal range mostly
        let (d, bytes, _) = try roundTrip(FP16Codec(), x)
        XCTAssertEqual(bytes, x.count * 2)
        for (a, b) in zip(x, d) where abs(a) >= 6.2e-5 && abs(a) <= 65504 {
            XCTAssertLessThanOrEqual(abs(a - b), abs(a) * 0x1p-11, "\(a) → \(b)")
        }
    }

    func testBF16ErrorIsAtMostTwoToTheMinus8RelativeAndRoundsToNearestEven() throws {
        let x = Self.sample(10_000)
        let (d, bytes, _) = try roundTrip(BF16Codec(), x)
        XCTAssertEqual(bytes, x.count * 2)
        for (a, b) in zip(x, d) { XCTAssertLessThanOrEqual(abs(a - b), abs(a) * 0x1p-8, "\(a) → \(b)") }
        // Ties: 1 + 2⁻⁸ lies halfway between bf16 neighbours 1 and 1 + 2⁻⁷: rounds to even (1).
        let (tie, _, _) = try roundTrip(BF16Codec(), [1 + 0x1p-8, 1 + 3 * 0x1p-8])
        XCTAssertEqual(tie, [1, 1 + 4 * 0x1p-8])
    }

    func testInt8ErrorIsAtMostHalfAStepOfItsBlockAndWireRatioIsBelowQuarterPlus() throws {
        for block in [256, 64, 7] {
            let codec = Int8BlockCodec(blockSize: block)
            let x = Self.sample(5_003)
            let (d, bytes, _) = try roundTrip(codec, x)
            XCTAssertEqual(bytes, (x.count + block - 1) / block * 4 + x.count)
            for start in stride(from: 0, to: x.count, by: block) {
                let range = start ..< min(x.count, start + block)
                let step = x[range].map(abs).max()! / 127
                for i in range { XCTAssertLessThanOrEqual(abs(x[i] - d[i]), step / 2 * 1.0001 + 1e-30, "block \(block) i \(i)") }
            }
        }
        XCTAssertLessThanOrEqual(Double(Int8BlockCodec().maxEncodedBytes(count: 1 << 20)) / Double(4 << 20), 0.26)
        // Blocks so small that 127 / absmax overflows (absmax < 3.7e-37), and so small that
        // absmax / 127 itself rounds to zero (absmax < 8.9e-44): the same bound, a step being the
        // (subnormal) scale actually used, at least the least subnormal. Each value was once
        // ±absmax (every one ±127 steps), then 0 for the smallest blocks.
        for name in ["int8:64", "int8sr:64"] {
            for magnitude: Float in [1e-38, 0x1p-143] {
                let tiny = Self.sample(1_000).map { $0 * magnitude }
                let (d, _, _) = try roundTrip(try CodecRegistry.make(name), tiny)
                for start in stride(from: 0, to: tiny.count, by: 64) {
                    let range = start ..< min(tiny.count, start + 64)
                    let m = tiny[range].map(abs).max()!, step = Swift.max(m / 127, .leastNonzeroMagnitude)
                    // A subnormal scale rounded below m / 127 clamps the largest values at ±127
                    // steps: up to 127 × that rounding (half the least subnormal) more.
                    let clamped = Double(m) / 127 > Double(step) ? 127 * Double(Float.leastNonzeroMagnitude) / 2 : 0
                    for i in range {
                        XCTAssertLessThanOrEqual(Double(abs(tiny[i] - d[i])), Double(step) * (name == "int8:64" ? 0.5 : 1) * 1.0001 + clamped,
                                                 "\(name) at \(magnitude), i \(i)")
                    }
                }
            }
        }
    }

    /// Properties of stochastic rounding: every value lands on one of the two grid points around
    /// it; averaged over many seeds the decoded value is x (unbiased, within 5σ of the
    /// Bernoulli noise); the same seed reproduces the same bits; and one stream continues
    /// across encodes (a second encode without reseeding draws fresh u).
    func testStochasticRoundingIsUnbiasedAndReproducible() throws {
        let block = 64, count = 3 * block + 5
        // Blocks of scales 0.5, 0.03 and 2 (the block's first value, 127 grid steps, sets
        // s = max|x|/127), values m + f grid steps with fractions f bounded away from 0 and 1,
        // so that 5σ of 2000 draws is a meaningful bound for every value.
        let scales: [Float] = [0.5, 0.03, 2, 0.5], fractions: [Float] = [0.1, 0.25, 0.5, 0.75, 0.9]
        let steps: [Float] = (0 ..< count).map { i in i % block == 0 ? 127 : Float(i % 41 - 20) * 3 + fractions[i % 5] }
        let x: [Float] = steps.indices.map { steps[$0] * scales[$0 / block] }
        let codec = Int8BlockCodec(blockSize: block, stochasticRounding: true)
        let draws = 2000
        var sums = [Double](repeating: 0, count: count)
        for draw in 0 ..< draws {
            codec.reseed(UInt64(draw) &* 0x1000_0001)
            let (d, _, _) = try roundTrip(codec, x)
            for i in 0 ..< count {
                let q = Double(d[i]) / Double(scales[i / block]), below = Double(steps[i]).rounded(.down)
                XCTAssertTrue(abs(q - below) < 1e-3 || abs(q - below - 1) < 1e-3 || (steps[i] == 127 && abs(q - 127) < 1e-3),
                              "value \(i): \(q) grid steps is not a neighbour of \(steps[i])")
                sums[i] += q
            }
        }
        for i in 0 ..< count where i % block != 0 {
            let fraction = Double(steps[i]) - Double(steps[i]).rounded(.down)
            let sigma = (fraction * (1 - fraction) / Double(draws)).squareRoot()
            XCTAssertEqual(sums[i] / Double(draws), Double(steps[i]), accuracy: 5 * sigma + 1e-3, "value \(i) is rounded with a bias")
        }
        // Whole blocks: two encodes after one seed are one encode of the two inputs end to end
        // (the stream continues from where the first stopped), and the seed repeats the bits.
        let whole = Array(x[0 ..< 3 * block])
        codec.reseed(42)
        let first = try roundTrip(codec, whole).decoded, second = try roundTrip(codec, whole).decoded
        codec.reseed(42)
        XCTAssertEqual(try roundTrip(codec, whole + whole).decoded.map(\.bitPattern), (first + second).map(\.bitPattern),
                       "a second encode must continue the stream exactly")
        codec.reseed(42)
        XCTAssertEqual(try roundTrip(codec, whole).decoded.map(\.bitPattern), first.map(\.bitPattern), "the same seed must give the same bits")
    }

    /// Property: the sign codec keeps every non-zero value's sign and each block's L1 norm
    /// (decode = ±mean|x| of the block), in 1/31 of fp32's bytes at its default block.
    func testSignDecodeKeepsSignsAndBlockL1NormsInAThirtyFirstOfTheBytes() throws {
        let x = Self.sample(10_000)
        for name in ["sign", "sign:64", "sign+zstd"] {
            let (decoded, bytes, _) = try roundTrip(try CodecRegistry.make(name), x)
            let block = name == "sign:64" ? 64 : 1024
            let flipped = x.indices.filter { x[$0] != 0 && decoded[$0].sign != x[$0].sign }
            XCTAssertEqual(flipped, [], "\(name): values that changed sign")
            for start in stride(from: 0, to: x.count, by: block) {
                let range = start ..< min(x.count, start + block)
                let before = range.reduce(0.0) { $0 + Double(abs(x[$1])) }, after = range.reduce(0.0) { $0 + Double(abs(decoded[$1])) }
                XCTAssertEqual(after, before, accuracy: 1e-5 * max(before, 1e-30), "\(name): block at \(start) changed its L1 norm")
            }
            if name == "sign" { XCTAssertLessThan(Double(bytes), Double(x.count * 4) / 31 + 8) }
        }
    }

    func testZstdStageIsExactlyLosslessOnTopOfEveryBase() throws {
        let x = Self.sample(20_000)
        for base in ["none", "fp16", "bf16", "int8"] {
            let plain = try roundTrip(try CodecRegistry.make(base), x)
            let stacked = try roundTrip(try CodecRegistry.make(base == "none" ? "zstd" : base + "+zstd"), x)
            XCTAssertEqual(stacked.decoded.map(\.bitPattern), plain.decoded.map(\.bitPattern), "\(base)+zstd must decode exactly as \(base)")
        }
        let constant = [Float](repeating: 0.25, count: 10_000)
        XCTAssertLessThan(try roundTrip(try CodecRegistry.make("zstd:19"), constant).bytes, 200, "zstd must compress a constant buffer")
    }

    func testNonFiniteValuesSurviveEveryCodec() throws {
        // +Inf, −Inf and NaNs of several payloads: bf16's rounding adds to the bit pattern, so
        // without its NaN branch 0x7FFFFFFF wrapped to −0, 0xFFFFFFFF to +0 and 0x7F800001
        // rounded to +Inf (the default NaN 0x7FC00000 survived either way).
        let specials: [Float] = [.infinity, -.infinity, Float(bitPattern: 0x7FFF_FFFF), Float(bitPattern: 0xFFFF_FFFF),
                                 Float(bitPattern: 0x7F80_0001), .nan]
        for special in specials {
            var x = Self.sample(600)
            x[300] = special
            for name in ["fp16", "bf16", "int8", "int8sr", "int8+zstd", "sign", "fp16+zstd", "sign+zstd"] {
                let (d, _, _) = try roundTrip(try CodecRegistry.make(name), x)
                XCTAssertFalse(d.allSatisfy(\.isFinite), "\(name) must keep a non-finite gradient (\(special.bitPattern)) non-finite")
                if special.isNaN && (name == "fp16" || name == "bf16") { XCTAssertTrue(d[300].isNaN, "\(name): NaN \(special.bitPattern) stays NaN") }
            }
        }
    }

    /// Property: fp16 is IEEE binary16 with round-to-nearest-even at its edges: the largest
    /// finite value, overflow at 65520, subnormals (2⁻²⁵ is a tie to 0, 3·2⁻²⁵ to 2⁻²³).
    func testFP16RoundsAtItsEdgesAsIEEE() throws {
        let x: [Float] = [65504, 65519.99, 65520, -65520, 0x1p-24, 0x1p-25, 3 * 0x1p-25, 0x1p-26]
        let (d, _, _) = try roundTrip(try CodecRegistry.make("fp16"), x)
        XCTAssertEqual(d, [65504, 65504, .infinity, -.infinity, 0x1p-24, 0, 0x1p-23, 0])
    }

    /// Property: bf16 rounds at its edges as PyTorch's `tensor.bfloat16()` does (round to
    /// nearest even on the top 16 bits): its largest finite value stays, Float's largest rounds
    /// up to +Inf, a tie rounds to the even mantissa, and bf16's smallest subnormal stays.
    func testBF16RoundsAtItsEdgesAsPyTorch() throws {
        let x: [Float] = [Float(bitPattern: 0x7F7F_0000), .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                          Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x0001_0000)]
        let (d, _, _) = try roundTrip(try CodecRegistry.make("bf16"), x)
        XCTAssertEqual(d.map(\.bitPattern), [0x7F7F_0000, 0x7F80_0000, 0xFF80_0000, 0x3F80_0000, 0x3F82_0000, 0x0001_0000])
    }

    /// Property: a block of exact zeros (a layer with no gradient this step) decodes to exact
    /// zeros with every block codec, with no NaN from a zero scale, and leaves a zero residual;
    /// so does a whole zero buffer, under zstd too.
    func testAllZeroBlocksDecodeToZero() throws {
        var x = Self.sample(3001)
        for i in 1024 ..< 2048 { x[i] = 0 }   // whole blocks of int8's 256 values and sign's 1024
        for name in ["int8", "int8sr", "sign", "int8+zstd", "sign+zstd", "fp16", "bf16"] {
            let (d, _, residual) = try roundTrip(try CodecRegistry.make(name), x)
            XCTAssertTrue(d[1024 ..< 2048].allSatisfy { $0 == 0 }, "\(name): zero block decodes to 0")
            XCTAssertTrue(d.allSatisfy(\.isFinite), "\(name): nothing non-finite")
            XCTAssertTrue(residual[1024 ..< 2048].allSatisfy { $0 == 0 }, "\(name): no residual where the gradient is 0")
            let (zeros, _, _) = try roundTrip(try CodecRegistry.make(name), [Float](repeating: 0, count: 1031))
            XCTAssertTrue(zeros.allSatisfy { $0 == 0 }, "\(name): an all-zero buffer decodes to zeros")
        }
    }

    func testCorruptPayloadsAreRejectedWithAnError() throws {
        // zstd stores a payload it cannot shrink raw: the zstd codecs get values that repeat,
        // so that their compressed path is the one damaged below.
        let x = Self.sample(1000), repeating = (0 ..< 1000).map { Float($0 % 10) * 0.125 }
        for name in ["fp16", "bf16", "int8", "sign", "fp16+zstd", "int8+zstd", "zstd"] {
            let codec = try CodecRegistry.make(name)
            var source = name.contains("zstd") ? repeating : x
            var payload = [UInt8](repeating: 0, count: codec.maxEncodedBytes(count: x.count))
            let written = try source.withUnsafeMutableBufferPointer { s in try payload.withUnsafeMutableBytes { try codec.encode(s, into: $0) } }
            var out = [Float](repeating: 0, count: x.count)
            // Truncated by one byte.
            XCTAssertThrowsError(try payload.withUnsafeBytes { p in
                try out.withUnsafeMutableBufferPointer { try codec.decode(UnsafeRawBufferPointer(rebasing: p[0 ..< written - 1]), into: $0) }
            }, "\(name): truncated payload accepted")
            // For the zstd stage: a damaged header or body.
            if name.contains("zstd") {
                XCTAssertEqual(payload[1], 0, "\(name): compressed, not stored raw")
                var damaged = Array(payload[0 ..< written])
                damaged[0] = 0x41
                XCTAssertThrowsError(try damaged.withUnsafeBytes { p in try out.withUnsafeMutableBufferPointer { try codec.decode(p, into: $0) } })
                damaged = Array(payload[0 ..< written])
                for i in 8 ..< min(damaged.count, 40) { damaged[i] ^= 0x5A }
                XCTAssertThrowsError(try damaged.withUnsafeBytes { p in try out.withUnsafeMutableBufferPointer { try codec.decode(p, into: $0) } },
                                     "\(name): damaged zstd body accepted")
                // Only the frame's checksum (its last 4 bytes) damaged: the frame itself parses,
                // so nothing but the checksum can refuse it (the bytes above also hit the magic).
                damaged = Array(payload[0 ..< written])
                damaged[written - 1] ^= 0x01
                XCTAssertThrowsError(try damaged.withUnsafeBytes { p in try out.withUnsafeMutableBufferPointer { try codec.decode(p, into: $0) } },
                                     "\(name): a payload with a wrong frame checksum accepted")
            }
        }
        // An int8 block with a negative scale is a bad header.
        var bad = [UInt8](repeating: 0, count: 4 + 10)
        withUnsafeBytes(of: Float(-1)) { for i in 0 ..< 4 { bad[i] = $0[i] } }
        var out = [Float](repeating: 0, count: 10)
        XCTAssertThrowsError(try bad.withUnsafeBytes { p in try out.withUnsafeMutableBufferPointer { try Int8BlockCodec().decode(p, into: $0) } }) {
            XCTAssertTrue("\($0)".contains("scale"), "\($0)")
        }
    }

    func testUnknownCodecNamesListTheValidOnes() {
        for name in ["fp12", "lz4+zstd", "fp16+zstd+zstd"] {
            XCTAssertThrowsError(try CodecRegistry.make(name)) { XCTAssertTrue("\($0)".contains("valid codecs: none, fp16"), "\($0)") }
        }
    }

    /// Property: every parameter a codec name carries is checked — a parameter on a codec that
    /// takes none is rejected (`none:7` was once accepted), and an out-of-range block size or
    /// level names the part that is wrong and the allowed range.
    func testCodecParametersAreValidatedAndTheWrongPartNamed() {
        let cases: [(String, String)] = [
            ("none:7", "none takes no parameter, got ':7'"),
            ("none:garbage", "none takes no parameter"),
            ("fp32:7", "fp32 takes no parameter"),
            ("fp16:3", "fp16 takes no parameter"),
            ("bf16:1+zstd", "bf16 takes no parameter"),
            ("int8:0", "int8 block size must be an integer in 1…1048576, got '0'"),
            ("int8sr:abc", "int8sr block size must be an integer in 1…1048576, got 'abc'"),
            ("int8:4:4", "int8 block size must be an integer in 1…1048576, got '4:4'"),
            ("zstd:99", "zstd level must be an integer in 1…22, got '99'"),
            ("int8+zstd:0", "zstd level must be an integer in 1…22, got '0'"),
            ("int8+lz4", "only zstd[:LEVEL] may follow '+', got 'lz4'"),
        ]
        for (name, expected) in cases {
            XCTAssertThrowsError(try CodecRegistry.make(name), name) { XCTAssertTrue("\($0)".contains(expected), "\(name): \($0)") }
        }
        for name in ["none", "fp32", "fp16", "bf16", "int8", "int8:1", "int8sr:1048576", "zstd", "zstd:22", "int8+zstd:3", "FP16+ZSTD"] {
            XCTAssertNoThrow(try CodecRegistry.make(name), name)
        }
    }
}

/// Error feedback (EF-SGD, Karimireddy et al. 2019) applied hop by hop in the ring.
final class ErrorFeedbackTests: XCTestCase {
    /// Property: after T steps, Σ applied updates differs from Σ true averaged gradients by
    /// exactly the outstanding residual — at most one step's quantisation error — instead of
    /// growing with T as it does without error feedback.
    func testAccumulatedUpdateTracksAccumulatedGradientWithinOneStepsError() throws {
        let n = 3, count = 2_000, steps = 40
        let results = try InProcessCluster.run(size: n) { transport -> (Double, Double, Double) in
            let withEF = RingAllReduce(transport: transport, codec: Int8BlockCodec(blockSize: 64), segmentBytes: 1024)
            let withoutEF = RingAllReduce(transport: transport, codec: Int8BlockCodec(blockSize: 64), segmentBytes: 1024)
            let exact = RingAllReduce(transport: transport, segmentBytes: 1024)
            var residual = [Float](repeating: 0, count: count)
            var appliedEF = [Double](repeating: 0, count: count), appliedPlain = appliedEF, truth = appliedEF
            var oneStepError = 0.0
            for t in 0 ..< steps {
                // A biased gradient (constant sign per element): plain quantisation drifts.
                let g = (0 ..< count).map { i in Float(sin(Double(i * 7 + transport.rank * 3 + t))) * 1e-3 + 3e-6 * Float(i % 5) }
                var a = g, b = g, c = g
                try a.withUnsafeMutableBufferPointer { ab in
                    try residual.withUnsafeMutableBufferPointer { try withEF.average(ab, residual: $0) }
                }
                try withoutEF.average(&b)
                try exact.average(&c)
                for i in 0 ..< count {
                    appliedEF[i] += Double(a[i]); appliedPlain[i] += Double(b[i]); truth[i] += Double(c[i])
                    oneStepError = max(oneStepError, abs(Double(b[i]) - Double(c[i])))
                }
            }
            let driftEF = zip(appliedEF, truth).map { abs($0 - $1) }.max()!
            let driftPlain = zip(appliedPlain, truth).map { abs($0 - $1) }.max()!
            return (driftEF, driftPlain, oneStepError)
        }
        let (driftEF, driftPlain, oneStep) = results[0]
        XCTAssertLessThanOrEqual(driftEF, 2 * oneStep, "with EF the accumulated error stays within a step's quantisation error")
        XCTAssertGreaterThan(driftPlain, 3 * driftEF, "without EF the error accumulates (EF \(driftEF), plain \(driftPlain))")
    }
}
