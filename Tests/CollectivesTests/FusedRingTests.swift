import Collectives
import GradientCodecs
import InProcessTransport
import XCTest

/// The compressed ring's fused sweeps against the ring as it was before they were fused: one
/// pass per operation, with each codec's whole-segment calls.
final class FusedRingTests: XCTestCase {
    /// int8:4096: a granule (block) larger than the usual tile; int8:7: blocks that divide
    /// neither a tile nor a SIMD width; sign:20 and sign:7: blocks that do not fill whole bytes
    /// (granules 40 and 56).
    static let codecs = ["fp16", "bf16", "int8", "int8:4096", "int8:7", "int8sr:64", "sign", "sign:20", "sign:7", "int8+zstd", "sign+zstd"]

    /// Property: for every codec, world size 2–4, with and without error feedback and the
    /// momentum carry, the fused ring leaves the same bits — averaged values and residuals, on
    /// every rank — as the unfused sequence of passes (carry add, residual add, decode-accumulate,
    /// ÷ n, encode, decode, carry subtraction — none when the carry stays on) in the ring's
    /// order. Segments of 5,000 values, so that a segment holds several tiles and a partial
    /// one; and 3 values on 4 ranks.
    func testFusedSweepsGiveTheBitsOfSeparatePasses() throws {
        let segmentValues = 5_000
        for name in Self.codecs {
            for (n, count) in [(2, 40_037), (3, 40_037), (4, 40_037), (4, 3)] {   // 3 values: empty chunks
                for (feedback, carried, staysOn) in [(true, true, false), (true, false, false), (false, true, false), (false, false, false), (true, true, true)] {
                    let carry = carried ? Self.values(count: count, seed: 99, scale: 0.3) : nil
                    let expected = Self.reference(name: name, n: n, count: count, segmentValues: segmentValues,
                                                  feedback: feedback, carry: carry, scale: 0.7, staysOn: staysOn)
                    let got = try InProcessCluster.run(size: n) { transport -> (values: [Float], residual: [Float], squares: Double?) in
                        let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(name), segmentBytes: segmentValues * 4)
                        var buffer = Self.values(count: count, seed: UInt64(transport.rank), scale: 1)
                        var residual = Self.values(count: count, seed: 50 + UInt64(transport.rank), scale: 0.01)
                        try buffer.withUnsafeMutableBufferPointer { b in
                            try residual.withUnsafeMutableBufferPointer { r in
                                try (carry ?? []).withUnsafeBufferPointer { c in
                                    try ring.average(b, residual: feedback ? r : nil,
                                                     carry: carried ? CarriedAddend(values: c.baseAddress!, scale: 0.7, staysOn: staysOn) : nil)
                                }
                            }
                        }
                        return (buffer, residual, ring.lastSquaredSum)
                    }
                    let label = "\(name) np \(n) feedback \(feedback) carry \(carried)\(staysOn ? " (stays on)" : "")"
                    for rank in 0 ..< n {
                        Self.assertSameBits(got[rank].values, expected.values[rank], "\(label): rank \(rank) values")
                        if feedback { Self.assertSameBits(got[rank].residual, expected.residuals[rank], "\(label): rank \(rank) residual") }
                        XCTAssertEqual(got[rank].squares?.bitPattern, got[0].squares?.bitPattern, "\(label): rank \(rank)'s squared norm differs")
                    }
                    // The norm taken on the way is the averaged values' (to Double rounding of another order).
                    let direct = got[0].values.reduce(0.0) { $0 + Double($1) * Double($1) }
                    XCTAssertEqual(got[0].squares ?? -1, direct, accuracy: 1e-12 * max(direct, 1e-30), label)
                }
            }
        }
    }

    /// Property: the exact ring (fp32) given an error-feedback residual averages buffer +
    /// residual, and leaves the residual 0 (an exact all-reduce has no error to feed back), so
    /// a second call averages its buffer alone — at np 2 and 3, and at np 1 with any codec.
    func testTheExactRingFeedsAResidualBackOnce() throws {
        let count = 1_001
        // One rank compresses nothing, whatever the codec: a residual resumed there (a run on
        // more ranks left it) is fed back once too, not kept for ever.
        for (n, codec) in [(1, "none"), (1, "int8"), (2, "none"), (3, "none")] {
            let got = try InProcessCluster.run(size: n) { transport -> (first: [Float], second: [Float], residual: [Float]) in
                let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(codec))
                var first = Self.values(count: count, seed: UInt64(transport.rank), scale: 1), second = first
                var residual = Self.values(count: count, seed: 50 + UInt64(transport.rank), scale: 0.01)
                try first.withUnsafeMutableBufferPointer { b in try residual.withUnsafeMutableBufferPointer { try ring.average(b, residual: $0) } }
                try second.withUnsafeMutableBufferPointer { b in try residual.withUnsafeMutableBufferPointer { try ring.average(b, residual: $0) } }
                return (first, second, residual)
            }
            for i in [0, 500, count - 1] {
                let inputs = (0 ..< n).map { Double(Self.values(count: count, seed: UInt64($0), scale: 1)[i]) }
                let residuals = (0 ..< n).map { Double(Self.values(count: count, seed: 50 + UInt64($0), scale: 0.01)[i]) }
                let withResidual = (inputs.reduce(0, +) + residuals.reduce(0, +)) / Double(n), alone = inputs.reduce(0, +) / Double(n)
                for rank in 0 ..< n {
                    XCTAssertEqual(Double(got[rank].first[i]), withResidual, accuracy: 1e-6, "np \(n) rank \(rank) [\(i)]: first call with the residual")
                    XCTAssertEqual(Double(got[rank].second[i]), alone, accuracy: 1e-6, "np \(n) rank \(rank) [\(i)]: second call without it")
                }
            }
            for rank in 0 ..< n { XCTAssertTrue(got[rank].residual.allSatisfy { $0 == 0 }, "np \(n) rank \(rank): the residual is 0 after an exact call") }
        }
    }

    /// Property: the exact ring (fp32) with a carry gives the bits of adding s·b to every
    /// rank's buffer, averaging without it, and taking s·b off again — on every rank — and
    /// takes no norm on the way (the trainer takes its own).
    func testTheExactRingAddsTheCarryBeforeAndTakesItOffAfter() throws {
        let count = 1_001, scale: Float = 2
        let carry = Self.values(count: count, seed: 7, scale: 1)
        for n in [1, 3] {
            let got = try InProcessCluster.run(size: n) { transport -> (folded: [Float], separate: [Float], squares: Double?) in
                let ring = RingAllReduce(transport: transport)
                var folded = Self.values(count: count, seed: UInt64(transport.rank), scale: 1), separate = folded
                try carry.withUnsafeBufferPointer { c in
                    try folded.withUnsafeMutableBufferPointer { try ring.average($0, residual: nil, carry: CarriedAddend(values: c.baseAddress!, scale: scale)) }
                    try separate.withUnsafeMutableBufferPointer { b in
                        FloatKernels.add(c.baseAddress!, times: scale, into: b.baseAddress!, count: count)
                        try ring.average(b, residual: nil)
                        FloatKernels.add(c.baseAddress!, times: -scale, into: b.baseAddress!, count: count)
                    }
                }
                return (folded, separate, ring.lastSquaredSum)
            }
            for rank in 0 ..< n {
                Self.assertSameBits(got[rank].folded, got[rank].separate, "np \(n) rank \(rank)")
                Self.assertSameBits(got[rank].folded, got[0].folded, "np \(n) rank \(rank) against rank 0")
                XCTAssertNil(got[rank].squares, "np \(n): the exact ring takes no norm")
            }
            if n == 3 {   // the carry changed rounding, not the average
                let plain = (0 ..< count).map { i in (0 ..< 3).reduce(0.0) { $0 + Double(Self.values(count: count, seed: UInt64($1), scale: 1)[i]) } / 3 }
                for i in 0 ..< count { XCTAssertEqual(Double(got[0].folded[i]), plain[i], accuracy: 1e-5) }
            }
        }
    }

    // MARK: - The unfused ring

    /// The compressed ring rank by rank and step by step, one pass per operation. Each rank's
    /// codec encodes in the ring's order (step by step, segment by segment), so stochastic
    /// rounding draws the same numbers.
    static func reference(name: String, n: Int, count: Int, segmentValues: Int, feedback: Bool,
                          carry: [Float]?, scale s: Float, staysOn: Bool = false) -> (values: [[Float]], residuals: [[Float]]) {
        let codecs = (0 ..< n).map { _ in try! CodecRegistry.make(name) }
        var g = (0 ..< n).map { values(count: count, seed: UInt64($0), scale: 1) }
        var r = (0 ..< n).map { values(count: count, seed: 50 + UInt64($0), scale: 0.01) }
        for rank in 0 ..< n {
            if let carry { for i in 0 ..< count { g[rank][i] = g[rank][i].addingProduct(carry[i], s) } }
            if feedback { for i in 0 ..< count { g[rank][i] += r[rank][i] } }
        }
        let part = RingPartition(count: count, ranks: n, maxSegmentValues: segmentValues)
        let m = part.segmentsPerChunk
        var sent = [[[UInt8]]](repeating: [[UInt8]](repeating: [], count: m), count: n)
        for t in 0 ..< n {   // t = n − 1: the owner's encoding
            var next = sent
            for rank in 0 ..< n {
                let chunk = ((rank - t) % n + n) % n, owner = t == n - 1
                for j in 0 ..< m {
                    let range = part.segment(j, ofChunk: chunk)
                    g[rank].withUnsafeMutableBufferPointer { all in
                        let segment = UnsafeMutableBufferPointer(rebasing: all[range])
                        if t > 0 { sent[(rank + n - 1) % n][j].withUnsafeBytes { try! codecs[rank].decodeAccumulate($0, into: segment) } }
                        if owner { for i in segment.indices { segment[i] *= 1 / Float(n) } }
                        var out = [UInt8](repeating: 0, count: codecs[rank].maxEncodedBytes(count: range.count))
                        let bytes = r[rank].withUnsafeMutableBufferPointer { residual in
                            out.withUnsafeMutableBytes { try! codecs[rank].encode(segment, into: $0, residual: feedback ? residual.baseAddress! + range.lowerBound : nil,
                                                                                  residualScale: owner ? Float(n) : 1, roundTrip: owner) }
                        }
                        next[rank][j] = Array(out[0 ..< bytes])
                    }
                }
            }
            sent = next
        }
        // The all-gather: every other rank decodes the owner's bytes.
        for rank in 0 ..< n {
            for chunk in 0 ..< n where (chunk + n - 1) % n != rank {
                for j in 0 ..< m {
                    let range = part.segment(j, ofChunk: chunk)
                    g[rank].withUnsafeMutableBufferPointer { all in
                        sent[(chunk + n - 1) % n][j].withUnsafeBytes { try! codecs[rank].decode($0, into: UnsafeMutableBufferPointer(rebasing: all[range])) }
                    }
                }
            }
            if let carry, !staysOn { for i in 0 ..< count { g[rank][i] = g[rank][i].addingProduct(carry[i], -s) } }
        }
        return (g, r)
    }

    /// Gradient-like values: a seeded sequence over several magnitudes, both signs.
    static func values(count: Int, seed: UInt64, scale: Float) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
        return (0 ..< count).map { i in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(state >> 40) * 0x1p-24 - 0.5
            return scale * u * Float(1 << (i % 5))
        }
    }

    static func assertSameBits(_ a: [Float], _ b: [Float], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, file: file, line: line)
        if let i = a.indices.first(where: { a[$0].bitPattern != b[$0].bitPattern }) {
            XCTFail("\(message) differ at \(i): \(a[i]) vs \(b[i])", file: file, line: line)
        }
    }
}
