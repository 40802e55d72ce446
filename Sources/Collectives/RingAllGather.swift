/// Gathers one fixed-size record from every rank onto every rank, around the ring.
///
/// Used for the small agreements that must precede or follow the big all-reduce: buffer
/// lengths, config hashes, parameter checksums, per-rank metrics. Step s (0 ≤ s < n−1) sends
/// the record that originated at rank (r − s) mod n to the right and receives the record of
/// rank (r − s − 1) mod n from the left, so after n−1 steps every rank holds all n records,
/// in rank order. Every rank then reduces the same records in the same order, which makes
/// such reductions (sums of Doubles included) identical on every rank.
public enum RingAllGather {
    /// Tag reserved for these small exchanges, distinct from the all-reduce's data tag.
    public static let tag = 0x5247

    /// Returns `size * record.count` bytes: rank i's record at offset `i * record.count`.
    public static func gather(_ record: [UInt8], over transport: Transport) throws -> [UInt8] {
        let n = transport.size, r = transport.rank, width = record.count
        guard n > 1 else { return record }
        // Memory of our own, not an array's: a wait that throws (a peer past the deadline) may
        // leave the receive or the send posted into it, and a slow peer's record could land
        // there later, so on an error it is left allocated — the job ends on that error — as
        // `LargeTransfer` leaves its buffers. On success it is copied out and freed.
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: n * width, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
        UnsafeMutableRawBufferPointer(rebasing: bytes[r * width ..< (r + 1) * width]).copyBytes(from: record)
        try gather(into: bytes, width: width, over: transport)
        let all = Array(bytes.bindMemory(to: UInt8.self))
        bytes.deallocate()
        return all
    }

    /// The gather in place: `bytes` holds `size` records of `width` bytes, this rank's at
    /// `rank * width`; the others arrive at theirs. No allocation: what a per-step exchange
    /// (a synchronised batch norm's statistics) runs on, into memory it keeps for the run.
    public static func gather(into bytes: UnsafeMutableRawBufferPointer, width: Int, over transport: Transport) throws {
        let n = transport.size, r = transport.rank
        precondition(bytes.count >= n * width, "RingAllGather: \(bytes.count) bytes for \(n) records of \(width)")
        for s in 0 ..< max(0, n - 1) {
            let sendIndex = (r - s + n) % n, receiveIndex = (r - s - 1 + n) % n
            let outgoing = UnsafeRawBufferPointer(rebasing: bytes[sendIndex * width ..< (sendIndex + 1) * width])
            let incoming = UnsafeMutableRawBufferPointer(rebasing: bytes[receiveIndex * width ..< (receiveIndex + 1) * width])
            let rx = try transport.receive(into: incoming, from: transport.leftNeighbour, tag: tag)
            let tx = try transport.send(outgoing, to: transport.rightNeighbour, tag: tag)
            let got = try transport.wait(rx)
            _ = try transport.wait(tx)
            if got != width {
                throw CollectiveError.transport(rank: r, peer: transport.leftNeighbour, call: "all-gather",
                                                detail: "expected a \(width)-byte record, received \(got) bytes")
            }
        }
    }

    /// Gathers one trivially-copyable value per rank (lengths, hashes, counters).
    public static func gather<T: BitwiseCopyable>(_ value: T, over transport: Transport) throws -> [T] {
        let record = withUnsafeBytes(of: value) { Array($0) }
        let all = try gather(record, over: transport)
        return all.withUnsafeBytes { raw in
            (0 ..< transport.size).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) }
        }
    }

    /// Gathers an array per rank (the same count on every rank): rank i's values at
    /// `i * values.count`.
    public static func gather<T: BitwiseCopyable>(_ values: [T], over transport: Transport) throws -> [T] {
        let all = try gather(values.withUnsafeBytes { Array($0) }, over: transport)
        return all.withUnsafeBytes { raw in
            (0 ..< transport.size * values.count).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.stride, as: T.self) }
        }
    }

    /// Gathers an array of Doubles per rank (same count on every rank) and returns each
    /// element's sum in rank order: deterministic and identical on every rank.
    public static func sum(_ values: [Double], over transport: Transport) throws -> [Double] {
        var total = values
        let scratch = SumScratch(count: values.count, ranks: transport.size)
        try total.withUnsafeMutableBufferPointer { try sum($0, scratch: scratch, over: transport) }
        return total
    }

    /// `sum` in place, on memory the caller keeps (`SumScratch`): no allocation, for what runs
    /// every step. The same additions in the same order as `sum`, so the same bits.
    public static func sum(_ values: UnsafeMutableBufferPointer<Double>, scratch: SumScratch, over transport: Transport) throws {
        let n = transport.size, width = values.count * 8
        guard n > 1 else {
            for i in values.indices { values[i] = 0 + values[i] }   // the sum's bits at one rank too (−0 becomes +0)
            return
        }
        precondition(scratch.bytes.count >= n * width, "RingAllGather.sum: a scratch for \(scratch.bytes.count) bytes, \(n * width) needed")
        precondition(!scratch.mayStillBeWritten, "RingAllGather.sum: a scratch a failed gather may still write into")
        UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[transport.rank * width ..< (transport.rank + 1) * width])
            .copyMemory(from: UnsafeRawBufferPointer(values))
        do { try gather(into: scratch.bytes, width: width, over: transport) } catch {
            scratch.mayStillBeWritten = true
            throw error
        }
        let records = UnsafeRawBufferPointer(scratch.bytes)
        for i in 0 ..< values.count {
            var total = 0.0
            for rank in 0 ..< n { total += records.loadUnaligned(fromByteOffset: (rank * values.count + i) * 8, as: Double.self) }
            values[i] = total
        }
    }

    /// The memory `sum` gathers every rank's values into, kept from call to call. After a failed
    /// gather a receive may still be posted into it (a peer past the deadline), so it is then
    /// never freed: the job ends on that error.
    public final class SumScratch: @unchecked Sendable {
        let bytes: UnsafeMutableRawBufferPointer
        var mayStillBeWritten = false

        /// Room for `ranks` records of `count` Doubles.
        public init(count: Int, ranks: Int) {
            bytes = .allocate(byteCount: max(1, count * ranks * 8), alignment: 16)
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
        }

        deinit { if !mayStillBeWritten { bytes.deallocate() } }
    }

    /// Throws on every rank unless all ranks passed the same `value`. Rules out the hang of
    /// ranks entering a collective with different shapes: everyone learns of it at once.
    public static func requireAgreement<T: BitwiseCopyable & Equatable & CustomStringConvertible>(
        _ value: T, on what: String, over transport: Transport) throws {
        let all = try gather(value, over: transport)
        if all.contains(where: { $0 != all[0] }) {
            throw CollectiveError.disagreement(rank: transport.rank, what: what, values: all.map(\.description))
        }
    }
}
