/// What every rank must have in common for a ring call to exchange matching messages.
struct RingCallShape: Hashable {
    let count: Int
    /// Where the buffer starts in this rank's shared-memory region (−1: not in one).
    let offsetInSharedRegion: Int
    let segmentBytes: Int
    let codecName: String
}

/// What the ranks agreed for a shape: the zero-copy path's offsets when every rank's buffer
/// lies in shared memory (nil: messages).
struct RingCallPlan {
    let sharedOffsets: [Int]?
}

/// Agreement on each ring call's shape, in full once per shape and then by a neighbour header.
///
/// Why: ranks that disagree on a call's length, codec or segment size would exchange
/// different numbers or sizes of messages and could wait on each other forever. An all-gather
/// of every rank's shape before each call rules that out, but costs n − 1 latencies per call
/// — paid again by every bucket of an overlapped backward. So:
///
/// - **A new shape** (first use, or any change) is agreed in full: the ranks all-gather their
///   shapes; a difference is an error on every rank that names each rank's value.
/// - **A shape agreed before** costs one 16-byte header to the right neighbour, sent with the
///   call's first data messages and checked before any received data is used: it carries the
///   agreed plan's signature (a hash of every rank's shape), or says "new shape: agree in
///   full". Each rank checks its left neighbour's header against its own, so a rank whose
///   sequence of calls went out of step with the others' is found by a neighbour before any
///   mismatched data is read; that neighbour raises a transport error, which ends the job
///   (`MPI_Abort`), since its other peers cannot know.
///
/// The header always comes first, also before a full agreement: a rank about to all-gather
/// never waits on a neighbour that went straight to data.
final class RingCallAgreement {
    static let tag = 0x5243

    private var agreed: [RingCallShape: (plan: RingCallPlan, signature: UInt64)] = [:]
    /// [0, 1]: this rank's header (flag, signature); [2, 3]: the left neighbour's.
    private let header = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: 4)
    private var pending: (transport: Transport, send: TransportRequest, receive: TransportRequest)?

    deinit { header.deallocate() }

    /// Starts the call: agrees on `shape` (in full if it is new) and posts the header, which
    /// `confirm` must check before received data is used. Collective.
    func begin(_ shape: RingCallShape, over transport: Transport) throws -> RingCallPlan {
        pending = nil
        if let known = agreed[shape] {
            try postHeader(flag: 0, signature: known.signature, over: transport)
            return known.plan
        }
        try postHeader(flag: 1, signature: 0, over: transport)
        try confirm()
        let records = try RingAllGather.gather(SIMD4<Int64>(Int64(shape.count), Int64(shape.offsetInSharedRegion),
                                                            Int64(shape.segmentBytes), Self.fingerprint(shape.codecName)),
                                               over: transport)
        let r = transport.rank
        if records.contains(where: { $0.x != records[0].x }) {
            throw CollectiveError.lengthMismatch(rank: r, lengths: records.map { Int($0.x) })
        }
        if records.contains(where: { $0.z != records[0].z || $0.w != records[0].w }) {
            let mine = "codec \(shape.codecName), segments of \(shape.segmentBytes) bytes"
            throw CollectiveError.disagreement(rank: r, what: "the all-reduce's codec and segment size (this rank: \(mine))",
                                               values: records.map { "segments \($0.z), codec fingerprint \(String(UInt64(bitPattern: $0.w), radix: 16))" })
        }
        let plan = RingCallPlan(sharedOffsets: records.allSatisfy { $0.y >= 0 } ? records.map { Int($0.y) } : nil)
        var signature: UInt64 = 0xcbf2_9ce4_8422_2325
        for record in records {
            for lane in 0 ..< 4 { signature = (signature ^ UInt64(bitPattern: record[lane])) &* 0x100_0000_01b3 }
        }
        agreed[shape] = (plan, signature)
        return plan
    }

    /// Checks the left neighbour's header against this rank's (once per call; later calls
    /// return at once).
    func confirm() throws {
        guard let (transport, send, receive) = pending else { return }
        pending = nil
        let got = try transport.wait(receive)
        _ = try transport.wait(send)
        let left = transport.leftNeighbour
        guard got == 16, header[2] == header[0], header[0] == 1 || header[3] == header[1] else {
            let theirs = got != 16 ? "a \(got)-byte header" : header[2] == 1 ? "a new shape to agree on" : "a shape agreed earlier"
            let mine = header[0] == 1 ? "a new shape to agree on" : "a shape agreed earlier"
            throw CollectiveError.transport(rank: transport.rank, peer: left, call: "all-reduce",
                detail: "the ranks are out of step: rank \(left) started a call with \(theirs), this rank with \(mine) — every rank must make the same sequence of all-reduce calls (same lengths, codecs, segment sizes)")
        }
    }

    private func postHeader(flag: UInt64, signature: UInt64, over transport: Transport) throws {
        header[0] = flag
        header[1] = signature
        let mine = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(header)[0 ..< 16])
        let theirs = UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(header)[16 ..< 32])
        let receive = try transport.receive(into: theirs, from: transport.leftNeighbour, tag: Self.tag)
        let send = try transport.send(mine, to: transport.rightNeighbour, tag: Self.tag)
        pending = (transport, send, receive)
    }

    /// FNV-1a of a codec's name.
    static func fingerprint(_ name: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int64(bitPattern: hash)
    }
}
