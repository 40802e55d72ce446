import GradientCodecs

/// Bandwidth-optimal ring all-reduce that averages a Float buffer in place, with every
/// segment optionally compressed on the wire.
///
/// ## The algorithm (Patarasuk & Yuan 2009; the form Baidu and NCCL popularised)
///
/// n ranks stand in a ring; each sends only to its right neighbour and receives only from
/// its left one:
///
///         ┌──▶ rank 0 ──▶ rank 1 ──▶ … ──▶ rank n−1 ──┐
///         └───────────────────────────────────────────┘
///
/// The buffer is cut into n chunks (see `RingPartition`). Rank r, step s:
///
/// | phase              | steps s       | sends chunk      | receives chunk   | then                  |
/// |--------------------|---------------|------------------|------------------|-----------------------|
/// | reduce-scatter     | 0 … n−2       | (r − s) mod n    | (r − s − 1) mod n| adds it into its own  |
/// | all-gather         | 0 … n−2       | (r + 1 − s) mod n| (r − s) mod n    | overwrites its own    |
///
/// After the reduce-scatter rank r holds the full sum of chunk (r + 1) mod n — it is that
/// chunk's **owner** — divides it by n, and the all-gather carries each owner's average
/// around the ring. Each rank sends 2(n−1) chunks of K/n values: 2K(n−1)/n in all,
/// independent of n, which no other all-reduce beats on bandwidth (Patarasuk & Yuan).
///
/// ## Segments and the pipeline
///
/// Every chunk is cut into m segments; one message carries one segment. Message *units* are
/// numbered k = t·m + j for ring step t (0 … 2(n−1)−1 over both phases) and segment j. The
/// chunk sent at step t+1 is the one received at step t, so the send of unit k+m can start
/// as soon as unit k has been reduced: while segment j is being added, segments j+1 … of the
/// same step are already on the wire. Up to `window` receives are posted ahead.
///
/// ## Compression
///
/// With a lossy codec each reduce-scatter hop encodes the partial sum it forwards; the
/// receiver decode-accumulates into fp32 and re-encodes for the next hop. The owner encodes
/// its average once, replaces its own chunk by decode(encode(average)), and the all-gather
/// forwards those bytes untouched: every rank decodes the same bytes, so **every rank ends
/// with bit-identical values**. With the identity codec (fp32) the ring sends from and
/// receives into the caller's buffer directly, so the only extra memory traffic is the
/// reduction itself.
///
/// ## Error feedback
///
/// Given a residual buffer, each rank adds it to its gradient, then records the error of
/// every encoding it performs (each value is encoded exactly once per rank: chunks it
/// forwards in the reduce-scatter plus the chunk it owns, scaled by n into sum space). The
/// sum of all ranks' residuals is then exactly the compression error of this call, fed back
/// next call (EF-SGD, Karimireddy et al. 2019, applied hop by hop).
///
/// ## Zero-copy steps over shared memory
///
/// When every rank's buffer lies in a `SharedSegment` (all ranks on one host, buffer
/// allocated by a `SharedMemoryTransport`) and the codec is fp32, the same steps run as
/// direct loads from the left neighbour's memory: see `RingAllReduce+ZeroCopy.swift`. The
/// length all-gather also tells every rank whether all of them can take that path, so they
/// always agree on it.
///
/// ## Why it cannot hang
///
/// Before any transfer the ranks all-gather their lengths: a mismatch throws on every rank.
/// After that, every blocking wait at iteration k is on a message the peer posts at an
/// iteration < k (receives: the left neighbour sent unit k at iteration k−m; send-buffer
/// reuse: the right neighbour posted the matching receive at an iteration ≤ k−m−1), so the
/// rank with the lowest iteration can always proceed. `window ≤ m` keeps that true.
public final class RingAllReduce {
    /// Tag of the data messages (distinct from `RingAllGather.tag`).
    public static let tag = 0x5241

    public let transport: Transport
    /// The wire format; may be swapped between calls (e.g. fp32 during warm-up steps).
    public var codec: GradientCodec
    /// Largest segment, in fp32 bytes; nil picks `defaultSegmentBytes` for the codec in use.
    public let requestedSegmentBytes: Int?
    /// The segment size the next call uses.
    public var segmentBytes: Int { requestedSegmentBytes ?? Self.defaultSegmentBytes(for: codec) }

    /// fp32: 512 KiB. Over TCP (`--mca btl tcp,self`, np 2, three interleaved runs) 512 KiB gave
    /// 1.24–1.31× MPI_Allreduce at 4 MiB, 1.10–1.21× at 16 MiB and 2.10–2.17× at 64 MiB,
    /// against 0.98–1.10/1.04–1.12/1.87–1.90× for 256 KiB (each message costs a rendezvous) and
    /// 0.97–1.03/1.01–1.13/1.58–1.65× for 4 MiB (too few segments to overlap the reduction with
    /// the wire). Over shared memory, messages cost the same at 512 KiB–4 MiB (0.92–1.04×), and
    /// on one host the fp32 ring normally skips messages altogether (zero-copy steps). Lossy
    /// codecs: 1 MiB, so that encoding one segment overlaps sending the previous one (int8 at
    /// 4 MiB buffers: 1 MiB segments 0.92–0.99×, 4 MiB 0.85–0.86× the fp32 MPI_Allreduce over
    /// shared memory).
    public static func defaultSegmentBytes(for codec: GradientCodec) -> Int {
        codec.isIdentity ? 512 << 10 : 1 << 20
    }
    /// Receives posted ahead of the one being reduced.
    public let window: Int

    /// Bytes this rank sent in the last call (the wire cost, after compression).
    public internal(set) var lastBytesSent = 0
    /// Whether the last call ran its steps as loads from shared memory (zero-copy) rather than messages.
    public internal(set) var lastCallWasZeroCopy = false
    /// Seconds spent in codec work (encode/decode) in the last call.
    public private(set) var lastCodecSeconds = 0.0

    private var scratch = Scratch()
    private var pendingSends: [TransportRequest?] = []
    private var pendingReceives: [TransportRequest?] = []
    private var receivedBytes: [Int] = []

    public init(transport: Transport, codec: GradientCodec = FP32Codec(),
                segmentBytes: Int? = nil, window: Int = 4) {
        precondition((segmentBytes ?? 4) >= 4 && window >= 1)
        self.transport = transport
        self.codec = codec
        self.requestedSegmentBytes = segmentBytes
        self.window = window
    }

    /// Averages `buffer` across all ranks, in place.
    public func average(_ array: inout [Float]) throws {
        try array.withUnsafeMutableBufferPointer { try average($0) }
    }

    /// Averages `buffer` across all ranks, in place. With `residual` (same length as
    /// `buffer`), applies error feedback as described above.
    public func average(_ buffer: UnsafeMutableBufferPointer<Float>,
                        residual: UnsafeMutableBufferPointer<Float>? = nil) throws {
        lastBytesSent = 0
        lastCodecSeconds = 0
        lastCallWasZeroCopy = false
        let n = transport.size, r = transport.rank
        // Every rank's length, where its buffer lies in shared memory (−1: it does not), and its
        // wire settings: ranks that disagree on any of them would exchange different numbers or
        // sizes of messages, so each is an error on every rank before anything is sent.
        let segment = codec.isIdentity ? (transport as? SharedMemoryTransport)?.sharedSegment(containing: buffer) : nil
        let offset = segment?.offset(of: buffer) ?? -1
        let records = try RingAllGather.gather(SIMD4<Int64>(Int64(buffer.count), Int64(offset), Int64(segmentBytes),
                                                            Self.fingerprint(codec.name)), over: transport)
        if records.contains(where: { $0.x != records[0].x }) {
            throw CollectiveError.lengthMismatch(rank: r, lengths: records.map { Int($0.x) })
        }
        if records.contains(where: { $0.z != records[0].z || $0.w != records[0].w }) {
            let mine = "codec \(codec.name), segments of \(segmentBytes) bytes"
            throw CollectiveError.disagreement(rank: r, what: "the all-reduce's codec and segment size (this rank: \(mine))",
                                               values: records.map { "segments \($0.z), codec fingerprint \(String(UInt64(bitPattern: $0.w), radix: 16))" })
        }
        if let residual, residual.count != buffer.count {
            preconditionFailure("error-feedback residual has \(residual.count) values, gradient \(buffer.count)")
        }
        guard n > 1, buffer.count > 0 else { return }
        if let residual { FloatKernels.add(residual.baseAddress!, into: buffer.baseAddress!, count: buffer.count) }
        if let segment, records.allSatisfy({ $0.y >= 0 }) {
            return try averageInSharedMemory(buffer, segment: segment, offsets: records.map { Int($0.y) })
        }

        let part = RingPartition(count: buffer.count, ranks: n, maxSegmentValues: max(1, segmentBytes / 4))
        let m = part.segmentsPerChunk
        let steps = 2 * (n - 1), units = steps * m
        let window = min(self.window, m)
        let slotBytes = codec.isIdentity ? part.maxSegmentValues * 4 : codec.maxEncodedBytes(count: part.maxSegmentValues)
        scratch.reserve(slotsPerStripe: m, slotBytes: slotBytes)
        resetRequests(units: units)

        let ctx = Context(buffer: buffer, residual: residual?.baseAddress, part: part, n: n, r: r, m: m)
        // Step 0 of the reduce-scatter sends this rank's own chunk r, untouched by anyone else.
        for j in 0 ..< m { try postSend(unit: j, ctx) }
        for k in 0 ..< min(window, units) { try postReceive(unit: k, ctx) }

        for k in 0 ..< units {
            let t = k / m, j = k % m
            let got = try transport.wait(pendingReceives[k]!)
            pendingReceives[k] = nil
            receivedBytes[k] = got
            let segment = ctx.segment(j, ofChunk: ctx.receiveChunk(step: t))
            try absorb(unit: k, step: t, segment: segment, bytes: got, ctx)
            if k + m < units { try postSend(unit: k + m, ctx) }
            if k + window < units { try postReceive(unit: k + window, ctx) }
        }
        try drainSends()
    }

    /// FNV-1a of a codec's name, for the agreement above.
    static func fingerprint(_ name: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int64(bitPattern: hash)
    }

    // MARK: - The three moves of one unit

    /// Folds received unit k (step t) into `segment` of the buffer.
    private func absorb(unit k: Int, step t: Int, segment: UnsafeMutableBufferPointer<Float>, bytes: Int, _ ctx: Context) throws {
        let slot = scratch.slot(step: t, segment: k % ctx.m)
        let payload = UnsafeRawBufferPointer(rebasing: slot[0 ..< bytes])
        let isReduceScatter = t < ctx.n - 1
        if codec.isIdentity {
            if bytes != segment.count * 4 {
                throw CollectiveError.badPayload(rank: ctx.r, peer: transport.leftNeighbour,
                    detail: "expected \(segment.count * 4) bytes of fp32, got \(bytes)")
            }
            // All-gather units were received straight into the buffer: nothing to do. The last
            // reduce-scatter step completes the owner's chunk: add and divide by n in one pass.
            if isReduceScatter, let d = segment.baseAddress {
                let source = payload.baseAddress!.assumingMemoryBound(to: Float.self)
                if t == ctx.n - 2 {
                    FloatKernels.addThenScale(source, into: d, by: 1 / Float(ctx.n), count: segment.count)
                } else {
                    FloatKernels.add(source, into: d, count: segment.count)
                }
            }
            return
        }
        let start = ContinuousClock.now
        defer { lastCodecSeconds += (ContinuousClock.now - start).seconds }
        do {
            if isReduceScatter { try codec.decodeAccumulate(payload, into: segment) }
            else { try codec.decode(payload, into: segment) }
        } catch {
            throw CollectiveError.badPayload(rank: ctx.r, peer: transport.leftNeighbour, detail: "\(error)")
        }
    }

    /// Prepares and starts the send of unit u (step t = u / m).
    private func postSend(unit u: Int, _ ctx: Context) throws {
        let t = u / ctx.m, j = u % ctx.m, n = ctx.n
        let chunk = ctx.sendChunk(step: t)
        let range = ctx.part.segment(j, ofChunk: chunk)
        let segment = ctx.segment(j, ofChunk: chunk)
        let becomesOwner = t == n - 1   // first all-gather step: the owner's average goes out
        if becomesOwner && !codec.isIdentity, let d = segment.baseAddress {
            FloatKernels.scale(d, by: 1 / Float(n), count: segment.count)   // fp32: fused in `absorb`
        }
        let bytes: UnsafeRawBufferPointer
        if codec.isIdentity {
            bytes = UnsafeRawBufferPointer(segment)
        } else if t >= n {
            // Later all-gather steps forward the bytes received one step earlier, untouched.
            let previous = u - ctx.m
            bytes = UnsafeRawBufferPointer(rebasing: scratch.slot(step: t - 1, segment: j)[0 ..< receivedBytes[previous]])
        } else {
            // Reduce-scatter hops and the owner encode; the slot's previous sender must be done.
            if u >= 2 * ctx.m { try waitSend(unit: u - 2 * ctx.m) }
            let out = scratch.sendSlot(step: t, segment: j)
            let start = ContinuousClock.now
            let residual = ctx.residual.map { $0 + range.lowerBound }
            let written = try codec.encode(segment, into: out, residual: residual,
                                           residualScale: becomesOwner ? Float(n) : 1, roundTrip: becomesOwner)
            lastCodecSeconds += (ContinuousClock.now - start).seconds
            bytes = UnsafeRawBufferPointer(rebasing: out[0 ..< written])
        }
        lastBytesSent += bytes.count
        pendingSends[u] = try transport.send(bytes, to: transport.rightNeighbour, tag: Self.tag)
    }

    /// Starts the receive of unit k into its slot (or, fp32 all-gather, into the buffer).
    private func postReceive(unit k: Int, _ ctx: Context) throws {
        let t = k / ctx.m, j = k % ctx.m, n = ctx.n
        let destination: UnsafeMutableRawBufferPointer
        if codec.isIdentity && t >= n - 1 {
            // The region was sent from in reduce-scatter step t − (n−1); that send must be done.
            try waitSend(unit: k - (n - 1) * ctx.m)
            destination = UnsafeMutableRawBufferPointer(ctx.segment(j, ofChunk: ctx.receiveChunk(step: t)))
        } else {
            // The slot's previous occupant (step t−2) may still be being forwarded (step t−1).
            if !codec.isIdentity && t >= 2 && t - 2 >= n - 1 { try waitSend(unit: k - ctx.m) }
            destination = scratch.slot(step: t, segment: j)
        }
        pendingReceives[k] = try transport.receive(into: destination, from: transport.leftNeighbour, tag: Self.tag)
    }

    // MARK: - Bookkeeping

    private func waitSend(unit u: Int) throws {
        if let request = pendingSends[u] {
            pendingSends[u] = nil
            _ = try transport.wait(request)
        }
    }

    private func resetRequests(units: Int) {
        if pendingSends.count < units {
            pendingSends = Array(repeating: nil, count: units)
            pendingReceives = Array(repeating: nil, count: units)
            receivedBytes = Array(repeating: 0, count: units)
        } else {
            // Requests left behind by a failed call belong to a broken job; forget them.
            for u in 0 ..< units { pendingSends[u] = nil; pendingReceives[u] = nil }
        }
    }

    /// Completes every send still in flight. After an error we do not drain: a peer may be
    /// waiting on us, so waiting on it could hang; the caller aborts the job instead
    /// (`MPIRuntime.abort`), which is what MPI offers for a broken collective.
    private func drainSends() throws {
        for u in pendingSends.indices { try waitSend(unit: u) }
    }

    /// Per-call geometry: which chunk a step moves, and views of its segments.
    private struct Context {
        let buffer: UnsafeMutableBufferPointer<Float>
        let residual: UnsafeMutablePointer<Float>?
        let part: RingPartition
        let n: Int, r: Int, m: Int

        /// Chunk sent at ring step t (reduce-scatter for t < n−1, then all-gather).
        func sendChunk(step t: Int) -> Int {
            t < n - 1 ? ((r - t) % n + n) % n : ((r + 1 - (t - (n - 1))) % n + n) % n
        }
        /// Chunk received at ring step t.
        func receiveChunk(step t: Int) -> Int {
            t < n - 1 ? ((r - t - 1) % n + 2 * n) % n : ((r - (t - (n - 1))) % n + n) % n
        }
        func segment(_ j: Int, ofChunk c: Int) -> UnsafeMutableBufferPointer<Float> {
            UnsafeMutableBufferPointer(rebasing: buffer[part.segment(j, ofChunk: c)])
        }
    }
}

/// Receive and send slots: two stripes (even and odd ring steps) of m slots each, so a step
/// can fill its slots while the previous step's are still being forwarded. Allocated once
/// and grown only when a larger buffer or codec needs it: no allocation per call.
private final class Scratch {
    private var storage: UnsafeMutableRawBufferPointer?
    private var slotsPerStripe = 0
    private var slotBytes = 0

    deinit { storage?.deallocate() }

    func reserve(slotsPerStripe m: Int, slotBytes bytes: Int) {
        let rounded = (max(bytes, 1) + 63) & ~63
        if m <= slotsPerStripe && rounded <= slotBytes { return }
        storage?.deallocate()
        slotsPerStripe = max(m, slotsPerStripe)
        slotBytes = max(rounded, slotBytes)
        // 2 receive stripes + 2 send stripes.
        storage = .allocate(byteCount: 4 * slotsPerStripe * slotBytes, alignment: 64)
    }

    func slot(step t: Int, segment j: Int) -> UnsafeMutableRawBufferPointer {
        let index = (t % 2) * slotsPerStripe + j
        return UnsafeMutableRawBufferPointer(rebasing: storage![index * slotBytes ..< (index + 1) * slotBytes])
    }

    func sendSlot(step t: Int, segment j: Int) -> UnsafeMutableRawBufferPointer {
        let index = (2 + t % 2) * slotsPerStripe + j
        return UnsafeMutableRawBufferPointer(rebasing: storage![index * slotBytes ..< (index + 1) * slotBytes])
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
