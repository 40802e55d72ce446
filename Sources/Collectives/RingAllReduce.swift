import GradientCodecs
import Synchronization

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
/// ## Two step bodies over this one table
///
/// - **Exact** (fp32, `RingAllReduce+Exact.swift`): sends from and receives into the
///   caller's buffer directly; the last reduce-scatter step adds and divides by n in one pass.
/// - **Compressed** (any lossy codec, `RingAllReduce+Compressed.swift`): each reduce-scatter
///   hop encodes the partial sum it forwards; the receiver decode-accumulates into fp32 and
///   re-encodes for the next hop. The owner encodes its average once, replaces its own chunk
///   by decode(encode(average)), and the all-gather forwards those bytes untouched: every
///   rank decodes the same bytes, so **every rank ends with bit-identical values**.
///
/// ## Error feedback
///
/// Given a residual buffer, each rank adds it to its gradient (as it first encodes each value:
/// `FusedSegmentPass`), then records the error of every encoding it performs (each value is encoded exactly once per rank: chunks it
/// forwards in the reduce-scatter plus the chunk it owns, scaled by n into sum space). The
/// sum of all ranks' residuals is then exactly the compression error of this call, fed back
/// next call (EF-SGD, Karimireddy et al. 2019, applied hop by hop).
///
/// ## Zero-copy steps over shared memory
///
/// When every rank's buffer lies in a `SharedRegion` (all ranks on one host, buffer
/// allocated by a `SharedMemoryTransport`) and the codec is fp32, the same steps run as
/// direct loads from the left neighbour's memory: see `RingAllReduce+ZeroCopy.swift`.
///
/// ## Why it cannot hang
///
/// Ranks agree on every call's shape — length, codec, segment size, where the buffer lies —
/// before any data moves (`RingCallAgreement`): in full, with an all-gather, the first time
/// a shape is used (a mismatch is then an error on every rank), and afterwards by a small
/// header each rank sends its right neighbour with the call's first messages. After that,
/// every blocking wait at iteration k is on a message the peer posts at an iteration < k
/// (receives: the left neighbour sent unit k at iteration k−m; send-buffer reuse: the right
/// neighbour posted the matching receive at an iteration ≤ k−m−1), so the rank with the
/// lowest iteration can always proceed. `window ≤ m` keeps that true.
public final class RingAllReduce: AllReduce {
    /// Tag of the data messages (distinct from `RingAllGather.tag` and the call header's).
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

    public var name: String { "ring (\(codec.name))" }
    /// Bytes this rank sent in the last call (the wire cost, after compression).
    public internal(set) var lastBytesSent = 0
    /// Whether the last call ran its steps as loads from shared memory (zero-copy) rather than messages.
    public internal(set) var lastCallWasZeroCopy = false
    /// Seconds spent in codec work (encode/decode) in the last call.
    public internal(set) var lastCodecSeconds = 0.0
    /// Σ x² of the averaged buffer, when the last call took it on the way (a lossy codec's
    /// decodes; nil otherwise): bit-identical on every rank, summed segment by segment in index order.
    public internal(set) var lastSquaredSum: Double?

    /// What the ring spends time on, reported per segment when set (the timeline): nil costs nothing.
    public enum Phase { case encode, decode, reduce, wait }
    public var onPhase: ((Phase, ContinuousClock.Instant, ContinuousClock.Instant) -> Void)?

    let agreement = RingCallAgreement()
    let scratch = RingScratch()
    /// Whether a failed call left the scratch slots to receives that may still be posted into
    /// them: they are then never freed (`RingScratch.mayStillBeWritten`).
    public var scratchAbandoned: Bool { scratch.mayStillBeWritten }
    var pendingSends: [TransportRequest?] = []
    var pendingReceives: [TransportRequest?] = []
    var receivedBytes: [Int] = []
    var encodedBytes: [Int] = []
    /// Each segment's sum of squares in the last compressed call, at chunk · m + segment.
    var squares: [Double] = []

    public init(transport: Transport, codec: GradientCodec = FP32Codec(),
                segmentBytes: Int? = nil, window: Int = 4) {
        precondition((segmentBytes ?? 4) >= 4 && window >= 1)
        self.transport = transport
        self.codec = codec
        self.requestedSegmentBytes = segmentBytes
        self.window = window
    }

    /// Averages `array` across all ranks, in place.
    ///
    /// A call that throws may leave sends from the array's memory (the zero-copy ring) and
    /// receives into it posted with peers past the deadline, and the caller would free that
    /// memory with the array: its storage is then kept alive for the rest of the process, as
    /// the ring's own slots are (`RingScratch.mayStillBeWritten`). A later change to the array
    /// copies it elsewhere first (copy on write), so it never sees what is still written there.
    public func average(_ array: inout [Float]) throws {
        do {
            try array.withUnsafeMutableBufferPointer { try average($0) }
        } catch {
            Self.abandonedArrays.withLock { $0.append(array) }
            throw error
        }
    }

    /// Storage of arrays whose call failed, never released (`average(_: inout [Float])`).
    private static let abandonedArrays = Mutex<[[Float]]>([])
    /// How many arrays failed calls have left kept alive (for tests).
    public static var abandonedArrayCount: Int { abandonedArrays.withLock { $0.count } }

    /// Averages `buffer` across all ranks, in place. With `residual` (same length as
    /// `buffer`), applies error feedback as described above.
    public func average(_ buffer: UnsafeMutableBufferPointer<Float>,
                        residual: UnsafeMutableBufferPointer<Float>? = nil) throws {
        try average(buffer, residual: residual, carry: nil)
    }

    /// Averages `buffer` with `carry` riding along: the codec encodes buffer + s·b and the
    /// caller gets the average back without it (see `CarriedAddend`; with `staysOn`, with it). A lossy codec folds both
    /// into its sweeps; the exact ring adds s·b before and takes it off after, as separate passes.
    public func average(_ buffer: UnsafeMutableBufferPointer<Float>,
                        residual: UnsafeMutableBufferPointer<Float>?, carry: CarriedAddend?) throws {
        lastBytesSent = 0
        lastCodecSeconds = 0
        lastCallWasZeroCopy = false
        lastSquaredSum = nil
        if let residual, residual.count != buffer.count {
            preconditionFailure("error-feedback residual has \(residual.count) values, gradient \(buffer.count)")
        }
        let folds = !codec.isIdentity && transport.size > 1
        if let carry, !folds { Self.add(carry, sign: 1, to: buffer) }
        do {
            try averageFolding(buffer, residual: residual, carry: folds ? carry : nil)
        } catch {
            // Receives may still be posted into the scratch slots (a peer past the deadline):
            // they are never freed from now on, even by a ring dropped after this call.
            scratch.mayStillBeWritten = true
            throw error
        }
        // Only after a call that completed: one that threw may have left peers reading this
        // buffer (the zero-copy ring reads it in place), and the step is abandoned anyway.
        if let carry, !folds, !carry.staysOn { Self.add(carry, sign: -1, to: buffer) }
    }

    /// buffer ← buffer + sign·s·b, one fused multiply-add a value.
    private static func add(_ carry: CarriedAddend, sign: Float, to buffer: UnsafeMutableBufferPointer<Float>) {
        guard let p = buffer.baseAddress else { return }
        FloatKernels.add(carry.values, times: sign * carry.scale, into: p, count: buffer.count)
    }

    private func averageFolding(_ buffer: UnsafeMutableBufferPointer<Float>,
                                residual: UnsafeMutableBufferPointer<Float>?, carry: CarriedAddend?) throws {
        let n = transport.size
        // A lossy codec adds the residual as it encodes (`FusedSegmentPass`) and sets it to its
        // error. Where nothing is encoded — the exact ring, or one rank (a residual a run on
        // more ranks left, resumed here) — it is added here, and its error, the new residual,
        // is 0: left as it was, the same memory would be fed back again at every call.
        if let residual, codec.isIdentity || n == 1, let values = buffer.baseAddress, buffer.count > 0 {
            FloatKernels.add(residual.baseAddress!, into: values, count: buffer.count)
            residual.update(repeating: 0)
        }
        guard n > 1 else { return }
        let region = codec.isIdentity ? (transport as? SharedMemoryTransport)?.sharedRegion(containing: buffer) : nil
        let shape = RingCallShape(count: buffer.count, offsetInSharedRegion: region?.offset(of: buffer) ?? -1,
                                  segmentBytes: segmentBytes, codecName: codec.name)
        let plan = try agreement.begin(shape, over: transport)
        guard buffer.count > 0 else { return try agreement.confirm() }
        if let region, let offsets = plan.sharedOffsets {
            try agreement.confirm()
            return try averageInSharedMemory(buffer, region: region, offsets: offsets)
        }
        let part = RingPartition(count: buffer.count, ranks: n, maxSegmentValues: max(1, segmentBytes / 4))
        let call = RingCall(buffer: buffer, residual: residual?.baseAddress, carry: carry, part: part, n: n, r: transport.rank)
        if codec.isIdentity { try averageExact(call) } else { try averageCompressed(call) }
    }

    /// The loop both step bodies share: post the first sends and receives, then for each unit
    /// in order wait for it, absorb it, and post the sends and receives it unblocks.
    func runUnits(_ call: RingCall, slotBytes: Int,
                  send: (_ unit: Int) throws -> Void,
                  receive: (_ unit: Int) throws -> Void,
                  absorb: (_ unit: Int, _ bytes: Int) throws -> Void) throws {
        let m = call.m, units = 2 * (call.n - 1) * m
        let window = min(self.window, m)
        scratch.reserve(slotsPerStripe: m, slotBytes: slotBytes, sendStripes: !codec.isIdentity)
        resetRequests(units: units)
        // Step 0 of the reduce-scatter sends this rank's own chunk r, untouched by anyone else.
        for j in 0 ..< m { try send(j) }
        for k in 0 ..< min(window, units) { try receive(k) }
        try agreement.confirm()   // the left neighbour's header, before its data is used
        for k in 0 ..< units {
            let waitStart = onPhase == nil ? nil : Optional(ContinuousClock.now)
            let got = try transport.wait(pendingReceives[k]!)
            if let waitStart { onPhase?(.wait, waitStart, .now) }
            pendingReceives[k] = nil
            receivedBytes[k] = got
            try absorb(k, got)
            if k + m < units { try send(k + m) }
            if k + window < units { try receive(k + window) }
        }
        try drainSends()
    }

    // MARK: - Bookkeeping

    func waitSend(unit u: Int) throws {
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
            encodedBytes = Array(repeating: 0, count: units)
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
}

/// One call's geometry: which chunk a step moves, and views of its segments.
struct RingCall {
    let buffer: UnsafeMutableBufferPointer<Float>
    let residual: UnsafeMutablePointer<Float>?
    let carry: CarriedAddend?
    let part: RingPartition
    let n: Int, r: Int
    var m: Int { part.segmentsPerChunk }

    /// Whether ring step t belongs to the reduce-scatter (else the all-gather).
    func isReduceScatter(step t: Int) -> Bool { t < n - 1 }
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
    /// The buffer's segment that unit u sends, and the one that unit k receives into.
    func sendSegment(unit u: Int) -> UnsafeMutableBufferPointer<Float> { segment(u % m, ofChunk: sendChunk(step: u / m)) }
    func receiveSegment(unit k: Int) -> UnsafeMutableBufferPointer<Float> { segment(k % m, ofChunk: receiveChunk(step: k / m)) }
}

/// Receive and send slots: two stripes (even and odd ring steps) of m slots each, so a step
/// can fill its slots while the previous step's are still being forwarded. Send stripes only
/// for a codec (the fp32 ring sends straight from the buffer). Allocated once and grown only
/// when a larger buffer or codec needs it: no allocation per call.
final class RingScratch {
    private var storage: UnsafeMutableRawBufferPointer?
    private var slotsPerStripe = 0
    private var slotBytes = 0
    private var hasSendStripes = false

    private var tileStorage: UnsafeMutableRawBufferPointer?
    private var tileValues = 0
    /// Set when a call failed: a receive may still be posted into the slots (a peer past the
    /// deadline), so the slots are never freed — not at deinit (a ring made for one call, such
    /// as the error-feedback sum's or the codec probe's, is dropped right after it), nor when
    /// grown. The job ends on that error; `RingAllGather.SumScratch` does the same.
    var mayStillBeWritten = false

    deinit {
        if !mayStillBeWritten { storage?.deallocate() }
        tileStorage?.deallocate()
    }

    func reserve(slotsPerStripe m: Int, slotBytes bytes: Int, sendStripes: Bool) {
        let rounded = (max(bytes, 1) + 63) & ~63
        if m <= slotsPerStripe && rounded <= slotBytes && (hasSendStripes || !sendStripes) { return }
        if !mayStillBeWritten { storage?.deallocate() }
        slotsPerStripe = max(m, slotsPerStripe)
        slotBytes = max(rounded, slotBytes)
        hasSendStripes = hasSendStripes || sendStripes
        // 2 receive stripes (+ 2 send stripes).
        storage = .allocate(byteCount: (hasSendStripes ? 4 : 2) * slotsPerStripe * slotBytes, alignment: 64)
    }

    func slot(step t: Int, segment j: Int) -> UnsafeMutableRawBufferPointer {
        let index = (t % 2) * slotsPerStripe + j
        return UnsafeMutableRawBufferPointer(rebasing: storage![index * slotBytes ..< (index + 1) * slotBytes])
    }

    /// A scratch of `values` floats for a fused pass's tile, kept across calls.
    func tile(values: Int) -> UnsafeMutablePointer<Float> {
        if tileValues < values {
            tileStorage?.deallocate()
            tileStorage = .allocate(byteCount: values * 4, alignment: 64)
            tileValues = values
        }
        return tileStorage!.baseAddress!.assumingMemoryBound(to: Float.self)
    }

    func sendSlot(step t: Int, segment j: Int) -> UnsafeMutableRawBufferPointer {
        precondition(hasSendStripes, "send slots are reserved for a codec")
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
