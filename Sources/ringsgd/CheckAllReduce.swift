import ArgumentParser
import Collectives
import Foundation
import GradientCodecs
import GradientSync
import MPITransport
import Training

/// `ringsgd check allreduce`: the property test the suite runs under real `mpirun`.
///
/// For each count, every rank fills a buffer with values distinct per rank (never all ones:
/// a chunk sent to the wrong place must show), then
/// 1. averages it with our ring, twice from the same input: both results must be bit-equal;
/// 2. averages it with `MPI_Allreduce`: the difference must be within the rounding of a sum
///    taken in another order, `n · 2⁻²³ · mean|x|` per element (fp32), or the codec's bound;
/// 3. all-gathers a 64-bit hash of the result: every rank must hold bit-identical values;
/// 4. with `--buffers shared`, runs the ring on buffers in an MPI shared-memory window (fp32:
///    zero-copy steps) and also on private memory (messages): the two must be bit-equal;
/// 5. broadcasts the last rank's input: every rank must then hold its bits (inputs differ per
///    rank, so a broadcast that moved nothing, or only part, shows).
/// Prints one line per count — with the MPI message limit and, per rank, how many sends,
/// receives and collectives so far took several MPI calls (`RINGSGD_MPI_MAX_MESSAGE_BYTES` set
/// low makes them) — and any failure is an error on every rank (exit 1).
struct CheckAllReduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Check the ring against MPI_Allreduce and bit-identity across ranks (under mpirun)."
    )

    @Option(help: "Comma-separated element counts.")
    var counts: String = "0,1,3,1000003"

    @Option(help: "Codec (\(CodecRegistry.validNames)).")
    var codec: String = "none"

    @Option(parsing: .unconditional, help: "Ring segment size in bytes (small values exercise many segments; default: the ring's for the codec).")
    var segmentBytes: Int?

    @Option(help: ArgumentHelp("Where the buffers live (auto, shared, private).", discussion: BufferPlacement.help))
    var buffers: BufferPlacement = .private

    @Option(help: "flat: one ring over all ranks; hierarchical: shared memory inside each host, the ring across hosts (needs hosts with the same k > 1 ranks).")
    var topology: AllReduceTopology = .flat

    @Option(parsing: .unconditional, help: "Relative tolerance against MPI_Allreduce, in units of mean|x| (default: the codec's).")
    var tolerance: Double?

    @Option(parsing: .unconditional, help: "Longest wait for a peer, in seconds, before the check ends with an error naming it (0: wait for ever; as training's comm.timeout_seconds).")
    var timeoutSeconds: Double = TrainingConfig.defaultTimeoutSeconds

    func validate() throws {
        _ = try CodecRegistry.make(codec)
        _ = try parsedCounts
        if let tolerance, !(tolerance > 0) { throw ValidationError("--tolerance must be > 0, got \(tolerance)") }
        guard timeoutSeconds >= 0, timeoutSeconds.isFinite else {
            throw ValidationError("--timeout-seconds must be a number of seconds ≥ 0 (0: wait for ever), got \(timeoutSeconds)")
        }
        if let segmentBytes, segmentBytes < 4 { throw ValidationError("--segment-bytes must be ≥ 4 (one float), got \(segmentBytes)") }
    }

    /// --counts, every entry a whole number ≥ 0 (an entry that is not one was dropped once, and
    /// a list of none checked nothing and passed).
    var parsedCounts: [Int] {
        get throws {
            let entries = counts.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            let values = entries.compactMap { Int($0) }.filter { $0 >= 0 }
            guard values.count == entries.count, !values.isEmpty else {
                throw ValidationError("--counts must be comma-separated element counts ≥ 0, like 0,1,3,1000003; got '\(counts)'")
            }
            return values
        }
    }

    func run() throws {
        MPIJob.run(afterStall: "run the check again", deadlineSetting: "--timeout-seconds") { transport in try check(transport) }
    }

    private func check(_ transport: MPITransport) throws {
        // Every wait for a peer is bounded, as in training: a rank that stalls or is gone ends
        // the check with a line naming it instead of leaving the others waiting for ever.
        transport.setDeadline(seconds: timeoutSeconds)
        transport.setActivity("start-up")
        let n = transport.size, rank = transport.rank
        let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(codec), segmentBytes: segmentBytes)
        let parsed = try parsedCounts
        let bound = tolerance ?? (ring.codec.isIdentity ? Double(n) * 0x1p-23 : 0.05)
        let segment = buffers.resolved == .shared ? try transport.allocateShared(count: max(1, parsed.max() ?? 1)) : nil
        if buffers == .shared && segment == nil {
            throw AgreedError("--buffers shared needs every rank on one host; these ranks span several")
        }
        var hierarchical: (HierarchicalAllReduce, SharedRegion)?
        if topology == .hierarchical {
            let (split, region) = try AllReduceTopology.hostBuffers(transport, count: parsed.max() ?? 1)
            hierarchical = (HierarchicalAllReduce(world: transport, split: split, codec: ring.codec, segmentBytes: segmentBytes), region)
        }
        /// Averages `values` with the ring, in the shared segment when there is one.
        func average(_ values: inout [Float]) throws {
            if let (h, region) = hierarchical {
                let shared = UnsafeMutableBufferPointer(rebasing: region.local[0 ..< values.count])
                _ = shared.update(fromContentsOf: values)
                try h.average(shared, residual: nil)
                values = Array(shared)
                return
            }
            guard let segment else { return try ring.average(&values) }
            let shared = UnsafeMutableBufferPointer(rebasing: segment.local[0 ..< values.count])
            _ = shared.update(fromContentsOf: values)
            try ring.average(shared)
            values = Array(shared)
        }
        for count in parsed {
            transport.setActivity("the check of \(count) value\(count == 1 ? "" : "s")")
            var input = [Float](repeating: 0, count: count)
            input.withUnsafeMutableBufferPointer { GradientLikeData.fill($0, seed: 7, rank: rank) }
            // Make every element distinct per rank even where the generator gave zeros.
            for i in input.indices { input[i] += Float(rank + 1) * 1e-3 * Float(i % 7 + 1) }
            var first = input, second = input, reference = input
            // Stochastic rounding draws from a stream: restart it so both calls draw the same.
            let int8 = ring.codec.int8Base
            int8?.reseed(UInt64(rank) &+ 99)
            try average(&first)
            let path = hierarchical != nil ? "hierarchical" : ring.lastCallWasZeroCopy ? "zero-copy" : "messages"
            int8?.reseed(UInt64(rank) &+ 99)
            try average(&second)
            // In shared memory, also against the message ring on private memory (there it *is* `first`).
            var sameAsMessages = true
            if segment != nil {
                var viaMessages = input
                int8?.reseed(UInt64(rank) &+ 99)
                try ring.average(&viaMessages)
                sameAsMessages = first.withUnsafeBytes { a in viaMessages.withUnsafeBytes { b in a.elementsEqual(b) } }
            }
            try reference.withUnsafeMutableBufferPointer { try transport.mpiAllReduce($0, average: true) }
            var magnitude = input.map { abs($0) }
            try magnitude.withUnsafeMutableBufferPointer { try transport.mpiAllReduce($0, average: true) }
            var broadcast = input
            try transport.broadcast(&broadcast, root: n - 1)

            let repeatable = first.withUnsafeBytes { a in second.withUnsafeBytes { b in a.elementsEqual(b) } }
            // int8's error is half a step of its block, s = blockmax/127, at each of the n
            // encodings a value goes through (n−1 hops of partial sums + the owner's average):
            // bound n·max|x| over the surrounding block / 254 (blocks align to segments, so
            // take the max over ±one block).
            let block = int8?.blockSize
            let steps = int8?.stochasticRounding == true ? 2.0 : 1.0   // stochastic rounding: up to a full step
            var windowMax = [Float](repeating: 0, count: count)
            if let block {
                for i in 0 ..< count {
                    windowMax[i] = magnitude[max(0, i - block) ..< min(count, i + block + 1)].max() ?? 0
                }
            }
            var worst = 0.0
            // The sign codec keeps only signs and block means: a single call has no useful
            // per-value bound (error feedback makes it converge over steps, which training tests);
            // here it is held to bit-identity and repeatability alone.
            let boundless = codec.lowercased().hasPrefix("sign")
            for i in 0 ..< count where !boundless {
                let allowed = block != nil ? 1.05 * steps * Double(n) * Double(windowMax[i]) / 254 + 1e-30
                                           : bound * Double(magnitude[i]) + 1e-30
                worst = max(worst, Double(abs(first[i] - reference[i])) / allowed)
            }
            let hashes = try RingAllGather.gather(first.withUnsafeBytes { FastHash.hash($0) }, over: transport)
            let identical = hashes.allSatisfy { $0 == hashes[0] }
            // What each rank received against what the root sent (its input, a broadcast's root keeps).
            let received = try RingAllGather.gather(SIMD2(broadcast.withUnsafeBytes { FastHash.hash($0) },
                                                          input.withUnsafeBytes { FastHash.hash($0) }), over: transport)
            let broadcastIdentical = received.allSatisfy { $0.x == received[n - 1].y }
            let verdicts = try RingAllGather.gather(repeatable && sameAsMessages && worst <= 1 ? 1 as Int32 : 0, over: transport)
            let ok = identical && broadcastIdentical && verdicts.allSatisfy { $0 == 1 }
            let split = transport.splitTransfers
            let splits = try RingAllGather.gather(SIMD3(Int64(split.sends), Int64(split.receives), Int64(split.collectives)), over: transport)
            let perRank = { (lane: Int) in splits.map { String($0[lane]) }.joined(separator: ",") }
            if rank == 0 {
                print("check allreduce np=\(n) codec=\(codec) count=\(count) segment_bytes=\(ring.segmentBytes) buffers=\(segment != nil ? "shared" : "private") path=\(path) "
                      + "identical_across_ranks=\(identical) repeatable=\(repeatable) shared_equals_messages=\(sameAsMessages) "
                      + "broadcast_identical=\(broadcastIdentical) max_message_bytes=\(transport.maxMessageBytes) "
                      + "split_sends=\(perRank(0)) split_receives=\(perRank(1)) split_collectives=\(perRank(2)) "
                      + String(format: "worst_error_vs_mpi=%.3f_of_bound", worst) + " \(ok ? "PASS" : "FAIL")")
            }
            if !ok {
                throw AgreedError("all-reduce check failed for \(count) values with codec \(codec) at np \(n) "
                                  + "(identical=\(identical), broadcast identical=\(broadcastIdentical), per-rank verdicts \(verdicts))")
            }
        }
    }
}
