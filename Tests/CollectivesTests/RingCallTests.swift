import Collectives
import GradientCodecs
import InProcessTransport
import XCTest

/// The ring under rendezvous sends, and its per-shape agreement.
final class RingCallTests: XCTestCase {
    static let codecs = ["none", "fp16", "bf16", "int8", "int8sr:64", "sign", "int8+zstd", "sign+zstd", "zstd"]

    /// Property: with rendezvous sends (a send's bytes are read only when the receive is
    /// posted, as MPI does for large messages) every codec gives the same bits as with
    /// buffered sends — the ring never reuses a send buffer before its send completed — and
    /// every rank holds the same values. Many segments per chunk and small windows, so that
    /// slots are reused while sends are in flight.
    func testRendezvousSendsGiveTheSameBitsAsBufferedForEveryCodec() throws {
        for name in Self.codecs {
            for n in [2, 3, 5] {
                for window in [1, 4] {
                    var runs: [[[Float]]] = []
                    for mode in [SendMode.buffered, .rendezvous] {
                        runs.append(try InProcessCluster.run(size: n, sends: mode) { transport -> [Float] in
                            let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(name), segmentBytes: 256, window: window)
                            var buffer = RingAllReduceTests.input(rank: transport.rank, count: 10_007)
                            var residual = [Float](repeating: 0, count: buffer.count)
                            try buffer.withUnsafeMutableBufferPointer { b in
                                try residual.withUnsafeMutableBufferPointer { try ring.average(b, residual: $0) }
                            }
                            return buffer
                        })
                    }
                    for rank in 0 ..< n {
                        if let i = runs[1][rank].indices.first(where: { runs[1][rank][$0].bitPattern != runs[0][0][$0].bitPattern }) {
                            XCTFail("\(name) np \(n) window \(window): rank \(rank) differs under rendezvous sends at \(i): \(runs[1][rank][i]) vs \(runs[0][0][i])")
                        }
                    }
                }
            }
        }
    }

    /// Property: a shape is agreed in full (an all-gather) only the first time it is used;
    /// calls with a shape agreed before send no all-gather message, and a new length is
    /// agreed in full again.
    func testAShapeIsAgreedInFullOnlyWhenItIsNew() throws {
        let gathers = try InProcessCluster.run(size: 3) { transport -> [Int] in
            let counting = CountingTransport(transport)
            let ring = RingAllReduce(transport: counting)
            var perCall: [Int] = []
            for count in [1000, 1000, 1000, 2000, 1000] {
                var buffer = [Float](repeating: 1, count: count)
                let before = counting.sends[RingAllGather.tag, default: 0]
                try ring.average(&buffer)
                perCall.append(counting.sends[RingAllGather.tag, default: 0] - before)
            }
            return perCall
        }
        // n − 1 = 2 all-gather messages per full agreement.
        XCTAssertEqual(gathers, Array(repeating: [2, 0, 0, 2, 0], count: 3))
    }

    /// Property: a rank whose sequence of calls goes out of step (a new length where the
    /// others repeat an agreed one) is found by its neighbour before any data is used, and
    /// no rank waits longer than the transport's deadline.
    func testARankOutOfStepIsFoundByItsNeighbour() throws {
        let outcomes = try InProcessCluster.run(size: 3, timeout: 2) { transport -> String in
            let ring = RingAllReduce(transport: transport)
            var buffer = [Float](repeating: 1, count: 1000)
            try ring.average(&buffer)
            var next = [Float](repeating: 1, count: transport.rank == 1 ? 1200 : 1000)
            do { try ring.average(&next); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(outcomes[2].contains("the ranks are out of step: rank 1 started a call with a new shape to agree on"), "\(outcomes)")
        XCTAssertTrue(outcomes[1].contains("out of step"), "\(outcomes)")
        XCTAssertFalse(outcomes.contains("no error"), "\(outcomes)")
    }
}

extension RingCallTests {
    /// Property: a call that fails (its peer never comes, past the deadline) leaves the ring's
    /// scratch slots allocated for good, since a receive may still be posted into them — also
    /// for a ring dropped right after the call (the error-feedback sum's, the codec probe's) —
    /// while a call that completes leaves them to be freed as usual.
    func testAFailedCallNeverFreesTheSlotsAReceiveMayStillWriteInto() throws {
        let outcomes = try InProcessCluster.run(size: 2, timeout: 1) { transport -> [Bool] in
            let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make("fp16"))
            var buffer = [Float](repeating: Float(transport.rank), count: 4096)
            try ring.average(&buffer)
            let afterSuccess = ring.scratchAbandoned
            guard transport.rank == 1 else { return [afterSuccess] }   // rank 0 never comes to the second call
            do { try ring.average(&buffer); return [afterSuccess, false, false] } catch { return [afterSuccess, true, ring.scratchAbandoned] }
        }
        XCTAssertEqual(outcomes[0], [false])
        XCTAssertEqual(outcomes[1], [false, true, true], "after a success, whether the call failed, after the failure")
    }

    /// Property: an array whose call failed keeps its memory for the rest of the process (its
    /// caller would free it with the array while a receive may still write into it), and a
    /// later change to the array goes to a copy, not into that memory.
    func testAFailedCallOnAnArrayKeepsItsMemoryAlive() throws {
        let before = RingAllReduce.abandonedArrayCount
        let outcomes = try InProcessCluster.run(size: 2, timeout: 1) { transport -> [Bool] in
            let ring = RingAllReduce(transport: transport)
            var buffer = [Float](repeating: Float(transport.rank), count: 4096)
            try ring.average(&buffer)
            guard transport.rank == 1 else { return [] }   // rank 0 never comes to the second call
            let keptBefore = RingAllReduce.abandonedArrayCount
            let memory = buffer.withUnsafeBufferPointer { $0.baseAddress! }
            do { try ring.average(&buffer); return [false] } catch {
                // The deadline (the in-process fabric's timeout), nothing else.
                guard "\(error)".contains("no message within") else { return [false] }
            }
            buffer[0] = 42   // copy on write: the kept storage is not this one any more
            let moved = buffer.withUnsafeBufferPointer { $0.baseAddress! } != memory
            return [true, RingAllReduce.abandonedArrayCount == keptBefore + 1, moved]
        }
        XCTAssertEqual(outcomes[1], [true, true, true], "the call failed past the deadline, its array was kept, a later change was copied")
        XCTAssertEqual(RingAllReduce.abandonedArrayCount, before + 1, "only the failed call's array is kept")
    }
}

/// Counts the messages a collective sends, per tag.
final class CountingTransport: Transport {
    let inner: Transport
    var sends: [Int: Int] = [:]
    init(_ inner: Transport) { self.inner = inner }
    var rank: Int { inner.rank }
    var size: Int { inner.size }
    func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: Int) throws -> TransportRequest {
        sends[tag, default: 0] += 1
        return try inner.send(bytes, to: peer, tag: tag)
    }
    func receive(into bytes: UnsafeMutableRawBufferPointer, from peer: Int, tag: Int) throws -> TransportRequest {
        try inner.receive(into: bytes, from: peer, tag: tag)
    }
    func wait(_ request: TransportRequest) throws -> Int { try inner.wait(request) }
    func barrier() throws { try inner.barrier() }
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws { try inner.broadcast(bytes, root: root) }
}

/// Error feedback's invariant, on the ring itself.
final class RingErrorFeedbackTests: XCTestCase {
    /// Property: after a call, the sum over ranks of the residuals equals the call's whole
    /// compression error: Σ_r (g_r + e_r) − n · average. Nothing is lost or counted twice.
    func testTheResidualsSumToTheCallsCompressionError() throws {
        for name in ["fp16", "bf16", "int8", "int8sr:32", "int8+zstd", "sign", "sign:32"] {
            let n = 3, count = 5_001
            let outcomes = try InProcessCluster.run(size: n) { transport -> (input: [Double], output: [Float], residual: [Float]) in
                let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(name), segmentBytes: 1024)
                var buffer = RingAllReduceTests.input(rank: transport.rank, count: count)
                var residual = (0 ..< count).map { Float(($0 * 31 + transport.rank * 7) % 17) * 1e-3 }   // an earlier call's error
                let input = zip(buffer, residual).map { Double($0) + Double($1) }
                try buffer.withUnsafeMutableBufferPointer { b in
                    try residual.withUnsafeMutableBufferPointer { try ring.average(b, residual: $0) }
                }
                return (input, buffer, residual)
            }
            var worst = 0.0
            for i in 0 ..< count {
                let inputs = outcomes.reduce(0.0) { $0 + $1.input[i] }
                let residuals = outcomes.reduce(0.0) { $0 + Double($1.residual[i]) }
                let error = inputs - Double(n) * Double(outcomes[0].output[i])
                worst = max(worst, abs(residuals - error) / max(1, abs(inputs)))
            }
            // Only fp32 rounding of the sums separates the two (values are O(10)).
            XCTAssertLessThan(worst, 1e-5, "\(name): Σ residuals ≠ compression error (worst relative gap \(worst))")
        }
    }
}

/// The hierarchical all-reduce runs on communicators split from the job's, whose ranks count
/// from 0 again: its errors must name the job's ranks, which the user (and `launch/elastic.sh`,
/// reading "rank R waited … for rank M") can find.
final class HierarchicalErrorTests: XCTestCase {
    /// Property: an error on the host's communicator (here the ranks disagree on the buffer's
    /// length) names the ranks by the job's numbers the split gave, not the communicator's —
    /// the rank that reports and the ranks its list of lengths names.
    func testAnErrorOnTheHostsCommunicatorNamesTheJobsRanks() throws {
        let messages = try InProcessCluster.run(size: 2) { local -> String in
            let split = HostSplit(local: local, cross: local, hosts: 2, localWorldRanks: [6, 7], crossWorldRanks: [6, 7])
            let hierarchical = HierarchicalAllReduce(world: local, split: split)
            let region = try XCTUnwrap(try local.allocateShared(count: 16))
            let buffer = UnsafeMutableBufferPointer(rebasing: region.local[0 ..< (local.rank == 0 ? 16 : 12)])
            do { try hierarchical.average(buffer, residual: nil) } catch { return "\(error)" }
            return "no error"
        }
        for message in messages {
            XCTAssertTrue(message.hasPrefix("rank 6") || message.hasPrefix("rank 7"), message)
            XCTAssertTrue(message.contains("(rank 6: 16, rank 7: 12)"), "the lengths' list names them too: \(message)")
        }
    }
}

/// The deadline's message is the last line a user sees of a stalled job (`MPIJob` adds the
/// command's own way on): it names the rank waited for, where, and what to look for.
final class StallMessageTests: XCTestCase {
    /// Property: the message names the rank that waited, the one it waited for and the
    /// collective, says the deadline as the config wrote it, and ends with what to do; the
    /// split's ranks renamed to the job's keep all of it.
    func testTheStallMessageNamesWhoWaitedForWhomWhereAndWhatToDo() {
        let stalled = CollectiveError.stalled(rank: 0, peer: 1, activity: "the evaluation", seconds: 3.2, deadline: 3)
        XCTAssertEqual("\(stalled)", "rank 0 waited 3 s for rank 1 in the evaluation; rank 1 is stalled or gone (comm.timeout_seconds is 3); find the stalled host or rank, or raise comm.timeout_seconds if it is only slow")
        let renamed = stalled.renamingRanks { $0 + 6 }
        XCTAssertEqual("\(renamed)", "\(stalled)".replacingOccurrences(of: "rank 0", with: "rank 6").replacingOccurrences(of: "rank 1", with: "rank 7"))
        let barrier = CollectiveError.stalled(rank: 2, peer: nil, activity: "start-up", seconds: 0.75, deadline: 0.5)
        XCTAssertTrue("\(barrier)".contains("for the ranks that had not arrived in start-up; they are stalled or gone (comm.timeout_seconds is 0.5)"), "\(barrier)")
    }

    /// Property: a command whose deadline is set by another setting (`check allreduce
    /// --timeout-seconds`) names that setting, in both places, and nothing else changes; errors
    /// that are not stalls keep their message.
    func testTheStallMessageNamesTheSettingThatSetTheDeadline() {
        let stalled = CollectiveError.stalled(rank: 0, peer: 1, activity: "the check of 3 values", seconds: 3.2, deadline: 3)
        XCTAssertEqual(stalled.description(deadlineSetting: "--timeout-seconds"),
                       "\(stalled)".replacingOccurrences(of: "comm.timeout_seconds", with: "--timeout-seconds"))
        let other = CollectiveError.badPayload(rank: 0, peer: 1, detail: "short")
        XCTAssertEqual(other.description(deadlineSetting: "--timeout-seconds"), "\(other)")
    }
}
