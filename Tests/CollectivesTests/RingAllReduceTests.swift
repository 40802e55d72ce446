import Collectives
import GradientCodecs
import InProcessTransport
import XCTest

/// Exhaustive tests of the ring algorithm on the in-process transport (threads): every world
/// size 1…8, counts 0, 1, n−1 (fewer than ranks), and 1,000,003 (not divisible), each rank
/// holding distinct values, every call made twice.
final class RingAllReduceTests: XCTestCase {
    /// Distinct per rank and per index, never constant: a chunk delivered to the wrong place
    /// or reduced twice changes the result.
    static func input(rank: Int, count: Int) -> [Float] {
        (0 ..< count).map { i in Float((i * 7 + rank * 13) % 101) * 0.25 - 12.0 + Float(rank) * 0.5 }
    }

    /// The exact average computed in Double.
    static func expectedAverage(ranks: Int, count: Int) -> [Double] {
        var sum = [Double](repeating: 0, count: count)
        for r in 0 ..< ranks { for (i, v) in input(rank: r, count: count).enumerated() { sum[i] += Double(v) } }
        return sum.map { $0 / Double(ranks) }
    }

    func checkAverage(ranks n: Int, count: Int, segmentBytes: Int, window: Int = 4, sends: SendMode = .buffered) throws {
        let results = try InProcessCluster.run(size: n, sends: sends) { transport -> [[Float]] in
            let ring = RingAllReduce(transport: transport, segmentBytes: segmentBytes, window: window)
            var outputs: [[Float]] = []
            for _ in 0 ..< 2 {                       // every call twice: no state leaks between calls
                var buffer = Self.input(rank: transport.rank, count: count)
                try ring.average(&buffer)
                outputs.append(buffer)
            }
            return outputs
        }
        let expected = Self.expectedAverage(ranks: n, count: count)
        for rank in 0 ..< n {
            for call in 0 ..< 2 {
                // Property: every rank, every call, holds bit-identical values …
                XCTAssertEqual(results[rank][call], results[0][0], "np \(n) count \(count): rank \(rank) call \(call) differs")
            }
        }
        // … equal to the true average up to fp32 rounding of an n-term sum.
        for i in 0 ..< count {
            let tolerance = 1e-5 * max(1, abs(expected[i]))
            if abs(Double(results[0][0][i]) - expected[i]) > tolerance {
                XCTFail("np \(n) count \(count): element \(i) = \(results[0][0][i]), expected \(expected[i])")
                return
            }
        }
    }

    func testEveryWorldSizeOneToEightSmallCounts() throws {
        for n in 1 ... 8 {
            for count in Set([0, 1, max(0, n - 1), n, 2 * n + 1]) {
                try checkAverage(ranks: n, count: count, segmentBytes: 8)   // 2-value segments
                try checkAverage(ranks: n, count: count, segmentBytes: 8, sends: .rendezvous)
            }
        }
    }

    func testEveryWorldSizeOneToEightMillionNonDivisible() throws {
        for n in 1 ... 8 {
            try checkAverage(ranks: n, count: 1_000_003, segmentBytes: 1 << 20)
        }
    }

    func testManySegmentsPerChunkAndWindows() throws {
        // 10,007 values at np 3: ~3,336 per chunk, 64-value segments → 53 segments per chunk.
        for window in [1, 2, 4, 64] {
            for sends in [SendMode.buffered, .rendezvous] {
                try checkAverage(ranks: 3, count: 10_007, segmentBytes: 256, window: window, sends: sends)
            }
        }
    }

    /// Runs one all-reduce on 3 ranks, each with its own ring and length; returns each rank's
    /// error message ("no error" if it returned).
    func errorsOnEveryRank(ring: @escaping (Transport) -> RingAllReduce, count: @escaping (Int) -> Int) throws -> [String] {
        try InProcessCluster.run(size: 3) { transport -> String in
            var buffer = [Float](repeating: 1, count: count(transport.rank))
            do {
                try ring(transport).average(&buffer)
                return "no error"
            } catch let error as CollectiveError {
                return "\(error)"
            }
        }
    }

    func testLengthMismatchIsAnErrorOnEveryRank() throws {
        let outcomes = try errorsOnEveryRank(ring: { RingAllReduce(transport: $0) }, count: { $0 == 1 ? 10 : 12 })
        for (rank, message) in outcomes.enumerated() {
            XCTAssertTrue(message.contains("different buffer lengths"), "rank \(rank): \(message)")
            XCTAssertTrue(message.contains("rank 1: 10"), "rank \(rank) must name the odd rank: \(message)")
        }
    }

    /// Property: ranks with different codecs or segment sizes would exchange different
    /// numbers or sizes of messages; that is an error on every rank, never a hang.
    func testCodecOrSegmentMismatchIsAnErrorOnEveryRank() throws {
        for oddRank in [(FP16Codec() as GradientCodec, 1 << 20), (FP32Codec() as GradientCodec, 4096)] {
            let outcomes = try errorsOnEveryRank(ring: { transport in
                transport.rank == 2 ? RingAllReduce(transport: transport, codec: oddRank.0, segmentBytes: oddRank.1)
                                    : RingAllReduce(transport: transport, segmentBytes: 1 << 20)
            }, count: { _ in 100_000 })
            for (rank, message) in outcomes.enumerated() {
                XCTAssertTrue(message.contains("codec and segment size"), "rank \(rank): \(message)")
            }
        }
    }

    func testPartitionCoversBufferExactlyOnce() {
        // Property: chunks and segments tile [0, count) in order, without gaps or overlap.
        for count in [0, 1, 5, 97, 1000] {
            for ranks in 1 ... 8 {
                for segmentValues in [1, 3, 64] {
                    let part = RingPartition(count: count, ranks: ranks, maxSegmentValues: segmentValues)
                    var next = 0
                    for c in 0 ..< ranks {
                        for j in 0 ..< part.segmentsPerChunk {
                            let s = part.segment(j, ofChunk: c)
                            XCTAssertEqual(s.lowerBound, next)
                            XCTAssertLessThanOrEqual(s.count, part.maxSegmentValues)
                            next = s.upperBound
                        }
                    }
                    XCTAssertEqual(next, count)
                }
            }
        }
    }
}

final class RingAllGatherTests: XCTestCase {
    func testGatherReturnsEveryRanksRecordInRankOrder() throws {
        for n in 1 ... 6 {
            let results = try InProcessCluster.run(size: n) { t in try RingAllGather.gather(Int64(t.rank * 10 + 3), over: t) }
            for r in results { XCTAssertEqual(r, (0 ..< n).map { Int64($0 * 10 + 3) }) }
        }
    }

    func testSumIsIdenticalOnEveryRank() throws {
        let results = try InProcessCluster.run(size: 5) { t in
            try RingAllGather.sum([0.1 * Double(t.rank), 1e-17, 3], over: t)
        }
        for r in results { XCTAssertEqual(r, results[0]) }
        XCTAssertEqual(results[0][2], 15)
    }

    /// Property: the in-place sum on a kept scratch (a synchronised batch norm's, every pass)
    /// gives, call after call and at narrower widths than the scratch's, the bits of a sum in
    /// rank order from 0 — every rank the same, −0 made +0 as one addition from 0 makes it.
    func testInPlaceSumOnAKeptScratchAddsInRankOrder() throws {
        func value(rank: Int, _ i: Int, call: Int) -> Double {
            let scale: Double = call == 1 ? 1e16 : 1, tiny: Double = i == 0 ? 1e-17 : 0
            return Double(rank + 1) * (0.1 + Double(i)) * scale + tiny
        }
        for n in [1, 2, 3, 5] {
            let results = try InProcessCluster.run(size: n) { t -> [[Double]] in
                let scratch = RingAllGather.SumScratch(count: 7, ranks: n)
                return try (0 ..< 3).map { call -> [Double] in
                    var values = (0 ..< 7 - 2 * call).map { i in value(rank: t.rank, i, call: call) }
                    values[values.count - 1] = -0.0
                    try values.withUnsafeMutableBufferPointer { try RingAllGather.sum($0, scratch: scratch, over: t) }
                    return values
                }
            }
            for (call, width) in [7, 5, 3].enumerated() {
                let expected = (0 ..< width).map { i -> Double in
                    if i == width - 1 { return 0 }
                    var total = 0.0
                    for rank in 0 ..< n { total += value(rank: rank, i, call: call) }
                    return total
                }
                for r in results {
                    XCTAssertEqual(r[call], expected, "n \(n), call \(call)")
                    XCTAssertEqual(r[call].last?.sign, .plus, "n \(n): −0 summed from 0 is +0")
                }
            }
        }
    }
}

/// The ring's zero-copy steps over shared memory (`RingAllReduce+ZeroCopy.swift`), on the
/// in-process transport, whose threads share memory.
final class ZeroCopyRingTests: XCTestCase {
    /// Property: with buffers in a shared segment (at a different offset on each rank) the ring
    /// takes the zero-copy path and gives bit-for-bit the message ring's result, every call.
    func testZeroCopyStepsEqualTheMessageRingBitForBit() throws {
        for n in 1 ... 8 {
            for count in Set([0, 1, max(0, n - 1), n, 2 * n + 1, 100_003]) {
                let results = try InProcessCluster.run(size: n) { transport -> ([Float], [[Float]], Bool) in
                    let ring = RingAllReduce(transport: transport, segmentBytes: 64)
                    var viaMessages = RingAllReduceTests.input(rank: transport.rank, count: count)
                    try ring.average(&viaMessages)
                    let offset = transport.rank % 3
                    let segment = try transport.allocateShared(count: count + 2)!
                    let shared = UnsafeMutableBufferPointer(rebasing: segment.local[offset ..< offset + count])
                    var outputs: [[Float]] = []
                    var zeroCopy = true
                    for _ in 0 ..< 2 {
                        _ = shared.update(fromContentsOf: RingAllReduceTests.input(rank: transport.rank, count: count))
                        try ring.average(shared)
                        zeroCopy = zeroCopy && (ring.lastCallWasZeroCopy || n == 1 || count == 0)
                        outputs.append(Array(shared))
                    }
                    return (viaMessages, outputs, zeroCopy)
                }
                for (rank, result) in results.enumerated() {
                    XCTAssertTrue(result.2, "np \(n) count \(count): rank \(rank) did not take the zero-copy path")
                    for call in result.1 {
                        XCTAssertEqual(call.map(\.bitPattern), results[0].0.map(\.bitPattern),
                                       "np \(n) count \(count): rank \(rank) differs from the message ring")
                    }
                }
            }
        }
    }

    /// Property: if any rank's buffer is not in shared memory, every rank agrees to use messages
    /// (no rank waits at a barrier the others never reach) and the result is still the average.
    func testOneRankWithPrivateMemoryMakesEveryRankUseMessages() throws {
        let n = 3, count = 1001
        let results = try InProcessCluster.run(size: n) { transport -> ([Float], Bool) in
            let ring = RingAllReduce(transport: transport)
            let segment = try transport.allocateShared(count: count)!
            var values = RingAllReduceTests.input(rank: transport.rank, count: count)
            if transport.rank == 1 {
                try ring.average(&values)
            } else {
                let shared = UnsafeMutableBufferPointer(rebasing: segment.local[0 ..< count])
                _ = shared.update(fromContentsOf: values)
                try ring.average(shared)
                values = Array(shared)
            }
            return (values, ring.lastCallWasZeroCopy)
        }
        XCTAssertEqual(results.map(\.1), [false, false, false])
        for result in results { XCTAssertEqual(result.0, results[0].0) }
        let expected = RingAllReduceTests.expectedAverage(ranks: n, count: count)
        for i in 0 ..< count { XCTAssertEqual(Double(results[0].0[i]), expected[i], accuracy: 1e-5 * max(1, abs(expected[i]))) }
    }
}
