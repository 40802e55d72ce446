/// "Average this flat buffer across the ranks", whatever carries it.
///
/// Every implementation leaves **bit-identical** values on every rank (the replicas'
/// optimizer steps depend on it, and the trainer's replica check proves it). Implementations:
/// `RingAllReduce` (ours, with codecs and error feedback) and `TransportAllReduce` (the
/// transport's native collective: `MPI_Allreduce` — the baseline users can switch to with
/// `comm.algorithm: mpi`).
public protocol AllReduce: AnyObject {
    var transport: Transport { get }
    /// What runs, for logs ("ring (int8)", "MPI_Allreduce").
    var name: String { get }
    /// Averages `buffer` in place. With `residual` (same length; only meaningful for a lossy
    /// codec) applies error feedback: adds it to `buffer` first, leaves this call's
    /// compression error in it. An exact all-reduce has no error to leave: callers pass nil
    /// there (`GradientSynchronizer` keeps no memory for fp32); our ring adds a residual given
    /// anyway and zeroes it (fed back once, as a lossy codec's would be), MPI_Allreduce's
    /// refuses one (a precondition).
    func average(_ buffer: UnsafeMutableBufferPointer<Float>, residual: UnsafeMutableBufferPointer<Float>?) throws
    /// Bytes this rank sent in the last call, where known (nil: the transport does not say).
    var lastBytesSentIfKnown: Int? { get }
    /// Seconds of codec work in the last call.
    var lastCodecSeconds: Double { get }
}

extension RingAllReduce {
    public var lastBytesSentIfKnown: Int? { lastBytesSent }
}

/// A transport with an all-reduce of its own (MPI's), used as a baseline.
public protocol NativeAllReduceTransport: Transport {
    /// Sums `buffer` over all ranks in place, leaving the same values on every rank, then
    /// divides by the number of ranks (the same division as the ring's).
    func nativeAverage(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// The collective's name, e.g. "MPI_Allreduce".
    var nativeAllReduceName: String { get }
}

/// The transport's own all-reduce behind the `AllReduce` protocol (fp32 only).
///
/// Why: to measure our ring against it inside training, not only in `bench allreduce`.
/// `MPI_Allreduce` leaves identical values on every rank for the algorithms OpenMPI's tuned
/// component picks (each sum is formed once and then distributed, or formed in the same
/// order everywhere); the trainer's replica check would catch one that did not.
public final class TransportAllReduce: AllReduce {
    public let transport: Transport
    private let native: NativeAllReduceTransport

    public init?(transport: Transport) {
        guard let native = transport as? NativeAllReduceTransport else { return nil }
        self.transport = transport
        self.native = native
    }

    public var name: String { native.nativeAllReduceName }
    public var lastBytesSentIfKnown: Int? { nil }
    public var lastCodecSeconds: Double { 0 }

    public func average(_ buffer: UnsafeMutableBufferPointer<Float>, residual: UnsafeMutableBufferPointer<Float>?) throws {
        precondition(residual == nil, "the transport's all-reduce is exact: no error feedback")
        guard transport.size > 1, buffer.count > 0 else { return }
        try native.nativeAverage(buffer)
    }
}

/// The ranks of a job grouped by host: the ranks of this host (sharing memory), and the ranks
/// that have this rank's local rank on every host (one per host, in host order).
public struct HostSplit {
    public let local: SharedMemoryTransport
    public let cross: Transport
    public let hosts: Int
    /// The job's rank of each rank of `local` and of `cross` (empty: the same numbers).
    public let localWorldRanks: [Int], crossWorldRanks: [Int]
    public init(local: SharedMemoryTransport, cross: Transport, hosts: Int, localWorldRanks: [Int] = [], crossWorldRanks: [Int] = []) {
        (self.local, self.cross, self.hosts) = (local, cross, hosts)
        (self.localWorldRanks, self.crossWorldRanks) = (localWorldRanks, crossWorldRanks)
    }
}

/// A transport that knows which ranks share a host.
public protocol HostTopologyTransport: Transport {
    /// Collective. The split when every host has the same k > 1 ranks and there are h > 1
    /// hosts; otherwise nil on every rank and why.
    func splitByHost() throws -> (split: HostSplit?, reason: String)
}
