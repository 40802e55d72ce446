import GradientCodecs

/// All-reduce for hosts with several ranks: shared memory inside a host, the ring across hosts.
///
/// With h hosts of k ranks each (local rank j of host i):
/// 1. **reduce-scatter inside the host** over shared memory, fp32 and exact (the zero-copy
///    ring steps): local rank j then owns chunk c = (j + 1) mod k of its host's average;
/// 2. **a ring across hosts per chunk**: the h ranks with local rank j average chunk c with
///    `RingAllReduce` — the configured codec and error feedback act only here, where bytes
///    cross the network, and the k rings run in parallel, one per local rank;
/// 3. **all-gather inside the host** over shared memory: every rank gets every chunk.
///
/// Why: the flat ring pushes 2(n−1)/n of the buffer through every host's link and, with a
/// lossy codec, re-encodes at every one of n − 1 hops, also between ranks that share memory;
/// this pushes 2(h−1)/h through it (the k per-chunk rings share the link) and encodes only
/// between hosts — Horovod's hierarchical all-reduce and NCCL's intra-/inter-node split are
/// the anchors. **Every rank ends bit-identical**: each chunk's value is decided by the
/// cross-host ring (bit-identical across its ranks) and copied unchanged inside the host.
///
/// Error feedback lives in the cross-host ring's input space (host averages of the owned
/// chunk), in the owned chunk's slice of the caller's residual buffer.
public final class HierarchicalAllReduce: AllReduce {
    public let transport: Transport
    let local: SharedMemoryTransport
    let localRing: RingAllReduce, crossRing: RingAllReduce
    public let hosts: Int
    /// The job's rank of each rank of the host's and of the cross-host communicator, for errors.
    let localWorldRanks: [Int], crossWorldRanks: [Int]

    public init(world: Transport, split: HostSplit, codec: GradientCodec = FP32Codec(), segmentBytes: Int? = nil) {
        transport = world
        local = split.local
        hosts = split.hosts
        localRing = RingAllReduce(transport: split.local)
        crossRing = RingAllReduce(transport: split.cross, codec: codec, segmentBytes: segmentBytes)
        (localWorldRanks, crossWorldRanks) = (split.localWorldRanks, split.crossWorldRanks)
    }

    /// Runs `body` on one of the split's communicators, its errors naming the job's ranks.
    private func on<T>(_ worldRanks: [Int], _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as CollectiveError where !worldRanks.isEmpty {
            throw error.renamingRanks { worldRanks.indices.contains($0) ? worldRanks[$0] : $0 }
        }
    }

    public var name: String { "hierarchical (\(hosts) hosts × \(local.size) ranks: shared memory inside, ring (\(crossRing.codec.name)) across)" }
    /// Bytes this rank sent across hosts in the last call.
    public var lastBytesSentIfKnown: Int? { crossRing.lastBytesSent }
    public var lastCodecSeconds: Double { crossRing.lastCodecSeconds }
    public var codec: GradientCodec { crossRing.codec }
    /// Forwarded to the cross-host ring (the timeline).
    public var onPhase: ((RingAllReduce.Phase, ContinuousClock.Instant, ContinuousClock.Instant) -> Void)? {
        get { crossRing.onPhase }
        set { crossRing.onPhase = newValue }
    }

    /// The values of a `count`-value buffer that this rank's cross-host ring averages — the
    /// chunk it owns after the host's reduce-scatter — and so the only ones whose
    /// error-feedback memory it uses.
    public func ownedRange(ofCount count: Int) -> Range<Int> {
        RingPartition(count: count, ranks: local.size, maxSegmentValues: max(1, count)).chunk((local.rank + 1) % local.size)
    }

    public func average(_ buffer: UnsafeMutableBufferPointer<Float>, residual: UnsafeMutableBufferPointer<Float>?) throws {
        guard let (region, offsets) = try on(localWorldRanks, { try localRing.agreedSharedOffsets(buffer) }) else {
            throw CollectiveError.transport(rank: transport.rank, peer: nil, call: "hierarchical all-reduce",
                detail: "the buffer is not in this host's shared memory on every rank (comm.shared_memory must be on)")
        }
        let part = RingPartition(count: buffer.count, ranks: local.size, maxSegmentValues: max(1, buffer.count))
        try on(localWorldRanks) { try localRing.reduceScatterInSharedMemory(buffer, region: region, offsets: offsets, part: part) }
        let owned = ownedRange(ofCount: buffer.count)
        try on(crossWorldRanks) {
            try crossRing.average(UnsafeMutableBufferPointer(rebasing: buffer[owned]),
                                  residual: residual.map { UnsafeMutableBufferPointer(rebasing: $0[owned]) })
        }
        try on(localWorldRanks) {
            try region.synchronize(over: local)   // the owned chunks' new values, visible to the host
            try localRing.allGatherInSharedMemory(buffer, region: region, offsets: offsets, part: part)
        }
    }
}
