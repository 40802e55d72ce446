// Collectives — how ranks combine their buffers.
//
// Owns: the `Transport` interface (what a collective needs from a network) and the
// collectives written once against it (`RingAllReduce`, `RingAllGather`). Knows nothing of
// MPI: `MPITransport` implements the interface on MPI point-to-point, `InProcessTransport`
// on threads for unit tests.

/// A handle on a nonblocking send or receive, completed by `Transport.wait`.
///
/// The transport owns what `handle` means (an `MPI_Request`, an index into a table, …).
/// `peer` and `isSend` are kept so that a failure can name who was on the other end.
public struct TransportRequest {
    public var handle: UInt
    public let peer: Int
    public let isSend: Bool

    public init(handle: UInt, peer: Int, isSend: Bool) {
        self.handle = handle
        self.peer = peer
        self.isSend = isSend
    }
}

/// Point-to-point messaging between the `size` ranks of a job, as a collective needs it.
///
/// Semantics every implementation keeps (MPI's, which the ring relies on):
/// - Messages between one sender and one receiver with the same tag arrive in the order
///   they were sent (MPI's non-overtaking rule).
/// - A buffer passed to `send` must not be modified, and one passed to `receive` must not be
///   read, until `wait` on its request returns.
/// - A receive accepts any message up to the buffer's size; `wait` returns its true length.
///   A longer message is an error, never an overrun.
/// - A send may complete only once the peer has *waited* on the matching receive, not merely
///   posted it (MPI's rendezvous for large messages; `MPITransport` also posts the later pieces
///   of a message past its size limit only in that wait). So a rank must not wait on a send
///   before waiting on the receive its peer needs from it first: the ring waits on its
///   receives before its sends, and the in-process transport's rendezvous mode tests it.
public protocol Transport: AnyObject {
    /// This process's rank, 0..<size.
    var rank: Int { get }
    /// The number of ranks in the job.
    var size: Int { get }

    /// Starts sending `bytes` to `peer`.
    func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: Int) throws -> TransportRequest
    /// Starts receiving at most `bytes.count` bytes from `peer` into `bytes`.
    func receive(into bytes: UnsafeMutableRawBufferPointer, from peer: Int, tag: Int) throws -> TransportRequest
    /// Completes a request; returns the number of bytes moved (the message length for a receive).
    func wait(_ request: TransportRequest) throws -> Int

    /// Returns once every rank has called it.
    func barrier() throws
    /// Copies `root`'s `bytes` to every rank's `bytes` (same length everywhere).
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws
}

/// A transport that can say what its rank was doing when a wait failed (the stall message).
public protocol ActivityReporting: AnyObject {
    /// e.g. "the gradient all-reduce of step 120 (bucket 2)"; set before a collective starts.
    var activity: String { get set }
}

extension Transport {
    /// Says what the next collectives are for, if the transport reports it.
    public func setActivity(_ text: @autoclosure () -> String) {
        (self as? ActivityReporting)?.activity = text()
    }

    /// The rank we send to in a ring: `(rank + 1) mod size`.
    public var rightNeighbour: Int { (rank + 1) % size }
    /// The rank we receive from in a ring: `(rank - 1) mod size`.
    public var leftNeighbour: Int { (rank + size - 1) % size }

    /// Starts sending a Float buffer.
    public func send(_ floats: UnsafeBufferPointer<Float>, to peer: Int, tag: Int) throws -> TransportRequest {
        try send(UnsafeRawBufferPointer(floats), to: peer, tag: tag)
    }

    /// Starts receiving into a Float buffer.
    public func receive(into floats: UnsafeMutableBufferPointer<Float>, from peer: Int, tag: Int) throws -> TransportRequest {
        try receive(into: UnsafeMutableRawBufferPointer(floats), from: peer, tag: tag)
    }

    /// Broadcasts an array of trivially-copyable values from `root` (same count everywhere).
    public func broadcast<T: BitwiseCopyable>(_ values: inout [T], root: Int) throws {
        try values.withUnsafeMutableBytes { try broadcast($0, root: root) }
    }
}

/// Why a collective failed. Every case names this rank, and where one is involved the peer,
/// so that a log line from any rank says who was talking to whom.
public enum CollectiveError: Error, CustomStringConvertible {
    /// A transport call failed (an MPI error, a receive that would overrun, a dead peer).
    case transport(rank: Int, peer: Int?, call: String, detail: String)
    /// Ranks called a collective with different buffer lengths. `ranks` names the list's
    /// entries when they are not the communicator's 0, 1, … (a sub-communicator's, renamed).
    case lengthMismatch(rank: Int, lengths: [Int], ranks: [Int]? = nil)
    /// A peer's payload could not be decoded.
    case badPayload(rank: Int, peer: Int, detail: String)
    /// Ranks disagree on a value they must share (config hash, parameter count, checksum);
    /// `ranks` as for `lengthMismatch`.
    case disagreement(rank: Int, what: String, values: [String], ranks: [Int]? = nil)
    /// A wait outlasted the deadline: the peer (nil: some rank of a barrier) is stalled or gone.
    /// Its message says what to look for; the command adds its own way on (`MPIJob`).
    case stalled(rank: Int, peer: Int?, activity: String, seconds: Double, deadline: Double)

    /// The same error with its rank and peer renamed by `name` — a sub-communicator's ranks
    /// as the job's (`HostSplit.localWorldRanks`, `.crossWorldRanks`): a message, and `launch/elastic.sh` reading it,
    /// must name the process the user can find.
    public func renamingRanks(_ name: (Int) -> Int) -> CollectiveError {
        switch self {
        case let .transport(rank, peer, call, detail): return .transport(rank: name(rank), peer: peer.map(name), call: call, detail: detail)
        case let .lengthMismatch(rank, lengths, ranks):
            return .lengthMismatch(rank: name(rank), lengths: lengths, ranks: (ranks ?? Array(lengths.indices)).map(name))
        case let .badPayload(rank, peer, detail): return .badPayload(rank: name(rank), peer: name(peer), detail: detail)
        case let .disagreement(rank, what, values, ranks):
            return .disagreement(rank: name(rank), what: what, values: values, ranks: (ranks ?? Array(values.indices)).map(name))
        case let .stalled(rank, peer, activity, seconds, deadline):
            return .stalled(rank: name(rank), peer: peer.map(name), activity: activity, seconds: seconds, deadline: deadline)
        }
    }

    public var description: String {
        switch self {
        case let .transport(rank, peer, call, detail):
            let who = peer.map { "rank \(rank) (this process) and rank \($0)" } ?? "rank \(rank)"
            return "\(call) failed between \(who): \(detail)"
        case let .lengthMismatch(rank, lengths, ranks):
            let shown = lengths.enumerated().map { "rank \(ranks?[$0.offset] ?? $0.offset): \($0.element)" }.joined(separator: ", ")
            return "rank \(rank): all-reduce called with different buffer lengths (\(shown)); every rank must reduce the same number of values"
        case let .badPayload(rank, peer, detail):
            return "rank \(rank) received an invalid payload from rank \(peer): \(detail)"
        case .stalled:
            return description(deadlineSetting: "comm.timeout_seconds")
        case let .disagreement(rank, what, values, ranks):
            let shown = values.enumerated().map { "rank \(ranks?[$0.offset] ?? $0.offset): \($0.element)" }.joined(separator: ", ")
            return "rank \(rank): ranks disagree on \(what) (\(shown))"
        }
    }

    /// The message, a stall's naming `deadlineSetting` as the setting that set its deadline
    /// (training's and evaluation's `comm.timeout_seconds`, `check allreduce`'s `--timeout-seconds`).
    public func description(deadlineSetting setting: String) -> String {
        guard case let .stalled(rank, peer, activity, seconds, deadline) = self else { return description }
        let whom = peer.map { "rank \($0)" } ?? "the ranks that had not arrived"
        let limit = deadline == deadline.rounded() ? String(Int(deadline)) : String(deadline)
        return "rank \(rank) waited \(Int(seconds)) s for \(whom) in \(activity); \(peer.map { "rank \($0) is" } ?? "they are") stalled or gone (\(setting) is \(limit)); find the stalled host or rank, or raise \(setting) if it is only slow"
    }
}
