import Collectives
import GradientCodecs

/// Which all-reduce carries a codec on this job: the one place that knows the topologies.
///
/// - `comm.algorithm: mpi`: the transport's own all-reduce (fp32, no codec);
/// - hosts with several ranks each (`comm.topology: auto` found a `HostSplit`, gradients in
///   the host's shared memory): `HierarchicalAllReduce`, the codec acting only across hosts;
/// - otherwise the flat ring, zero-copy over shared memory for fp32 where it can be.
///
/// `comm.codec: auto` probes with the all-reduce this builds, so it measures what will run.
struct AllReduceChoice {
    let transport: Transport
    let hosts: HostSplit?
    let segmentBytes: Int?
    /// The exact all-reduce (warm-up steps, and the configured one for an identity codec).
    let exact: AllReduce

    init(transport: Transport, hosts: HostSplit?, segmentBytes: Int?, algorithm: SyncSettings.Algorithm) throws {
        (self.transport, self.hosts, self.segmentBytes) = (transport, hosts, segmentBytes)
        switch algorithm {
        case .mpi:
            guard let native = TransportAllReduce(transport: transport) else {
                throw SyncSetupError("comm.algorithm: mpi needs the MPI transport; this transport has no all-reduce of its own")
            }
            exact = native
        case .ring:
            exact = hosts.map { HierarchicalAllReduce(world: transport, split: $0, segmentBytes: segmentBytes) }
                ?? RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        }
    }

    /// The all-reduce that averages with `codec` (the exact one for an identity codec).
    func allReduce(codec: GradientCodec) -> AllReduce {
        guard !codec.isIdentity else { return exact }
        if let hosts { return HierarchicalAllReduce(world: transport, split: hosts, codec: codec, segmentBytes: segmentBytes) }
        return RingAllReduce(transport: transport, codec: codec, segmentBytes: segmentBytes)
    }

    /// The error-feedback memory `allReduce(codec:)` uses for `plan`'s buckets.
    func errorFeedbackMemory(count: Int, plan: BucketPlan) -> ErrorFeedbackMemory {
        guard let hierarchical = exact as? HierarchicalAllReduce else {
            return ErrorFeedbackMemory(count: count, sharers: transport.size)
        }
        return ErrorFeedbackMemory(count: count, plan: plan, hierarchical: hierarchical)
    }
}
