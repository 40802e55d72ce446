import CMPI
import Collectives
import Foundation

/// `Transport` over an MPI communicator: `MPI_Isend`/`MPI_Irecv` of bytes, `MPI_Wait`.
///
/// A request handle is the `MPI_Request` itself (an opaque pointer in OpenMPI) stored as
/// bits; a received message's length comes from `MPI_Get_count` on its status. Transfers of
/// `maxMessageBytes` or more are split (MPI counts are 32-bit): see MPILargeMessages.swift.
public final class MPITransport: Transport, ActivityReporting {
    public let rank: Int
    public let size: Int
    let comm: MPI_Comm
    /// The most bytes one MPI call of this transport moves: longer transfers, and messages and
    /// receive buffers of exactly this length, go as several calls (MPILargeMessages.swift).
    ///
    /// Why: every MPI count is a C `int`, so one call moves at most 2³¹ − 1 elements, and
    /// `Int32(count)` traps past that — a parameter broadcast of ~537 M fp32 values, a
    /// checkpoint broadcast at resume or a large ring segment would crash the job. Every rank
    /// must use the same limit (both ends of a message compute its pieces from it):
    /// `RINGSGD_MPI_MAX_MESSAGE_BYTES`, read once at MPI initialisation, sets it (tests use a
    /// few KiB to exercise the split path); the default is `defaultMaxMessageBytes`.
    public let maxMessageBytes: Int
    /// How many transfers took more than one MPI call, by kind: the evidence a test of the
    /// split path needs (a limit that was ignored would otherwise pass unnoticed).
    public internal(set) var splitTransfers = SplitTransfers()
    /// Receives of at least `maxMessageBytes` whose length is not known yet, in posting order
    /// (MPILargeMessages.swift).
    var unexpandedReceives: [LargeTransfer] = []
    /// Shared-memory windows allocated through `allocateShared` (MPISharedWindow.swift).
    var sharedWindows: [SharedWindow] = []
    /// Transports over communicators split from this one (`splitByHost`), freed at finalisation.
    var subTransports: [MPITransport] = []
    private var ownsCommunicator = false

    init(communicator: MPI_Comm, maxMessageBytes: Int) throws {
        comm = communicator
        self.maxMessageBytes = maxMessageBytes
        var r: Int32 = 0, s: Int32 = 0
        try check(MPI_Comm_rank(comm, &r), call: "MPI_Comm_rank")
        try check(MPI_Comm_size(comm, &s), call: "MPI_Comm_size")
        rank = Int(r)
        size = Int(s)
    }

    /// Frees the communicator if this transport created it (collective over it).
    func free() {
        guard ownsCommunicator else { return }
        var c: MPI_Comm? = comm
        MPI_Comm_free(&c)
        ownsCommunicator = false
    }

    public func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: Int) throws -> TransportRequest {
        if bytes.count >= maxMessageBytes { return try sendLarge(bytes, to: peer, tag: tag) }
        var request: MPI_Request? = ringsgd_mpi_request_null()
        try check(MPI_Isend(bytes.baseAddress, Int32(bytes.count), ringsgd_mpi_byte(), Int32(peer), Int32(tag), comm, &request),
                  call: "MPI_Isend of \(bytes.count) bytes", rank: rank, peer: peer)
        return TransportRequest(handle: Self.handle(request), peer: peer, isSend: true)
    }

    public func receive(into bytes: UnsafeMutableRawBufferPointer, from peer: Int, tag: Int) throws -> TransportRequest {
        if bytes.count >= maxMessageBytes { return try receiveLarge(into: bytes, from: peer, tag: tag) }
        var request: MPI_Request? = ringsgd_mpi_request_null()
        try check(MPI_Irecv(bytes.baseAddress, Int32(bytes.count), ringsgd_mpi_byte(), Int32(peer), Int32(tag), comm, &request),
                  call: "MPI_Irecv of up to \(bytes.count) bytes", rank: rank, peer: peer)
        return TransportRequest(handle: Self.handle(request), peer: peer, isSend: false)
    }

    /// An `MPI_Request`'s bits as a handle. OpenMPI's requests are pointers to word-aligned
    /// structs, so bit 0 is clear: a set bit 0 marks a split transfer (`LargeTransfer`).
    static func handle(_ request: MPI_Request?) -> UInt {
        let bits = UInt(bitPattern: request.map { UnsafeMutableRawPointer($0) })
        assert(bits & 1 == 0, "an MPI_Request with bit 0 set would be taken for a split transfer")
        return bits
    }

    /// The longest any wait may last (`comm.timeout_seconds`); nil waits forever.
    ///
    /// Why: a rank that is alive but stuck (stopped, swapping, wedged in I/O) makes its peers
    /// wait in the next collective forever — MPI has no timeout of its own. With a deadline the
    /// waiting ranks say whom they waited for, in which collective, and for how long, and the
    /// job ends (Horovod's stall inspector and PyTorch's NCCL watchdog are the anchors). Waits
    /// then poll (`MPI_Test`) instead of blocking in `MPI_Wait`; both spin inside OpenMPI, so
    /// progress is the same.
    public var deadlineSeconds: Double?

    /// `comm.timeout_seconds`'s reading of a deadline: 0 waits for ever.
    public func setDeadline(seconds: Double) { deadlineSeconds = seconds > 0 ? seconds : nil }

    public func wait(_ request: TransportRequest) throws -> Int {
        if request.handle & 1 != 0 { return try waitLarge(request) }
        var handle: MPI_Request? = UnsafeMutableRawPointer(bitPattern: request.handle).map { MPI_Request($0) }
        return try finish(&handle, peer: request.peer, isSend: request.isSend)
    }

    /// Completes one MPI request of a send or receive; returns the bytes it received (0 for a send).
    func finish(_ handle: inout MPI_Request?, peer: Int, isSend: Bool) throws -> Int {
        var status = MPI_Status()
        let code = try complete(&handle, &status, peer: peer)
        if code != MPI_SUCCESS {
            // MPI_ERR_IN_STATUS is not used by MPI_Wait; the status's MPI_ERROR may say more.
            let detail = status.MPI_ERROR != MPI_SUCCESS ? mpiErrorString(status.MPI_ERROR) : mpiErrorString(code)
            throw CollectiveError.transport(rank: rank, peer: peer, call: isSend ? "MPI_Wait on a send" : "MPI_Wait on a receive",
                                            detail: detail)
        }
        if isSend { return 0 }
        var count: Int32 = 0
        try check(MPI_Get_count(&status, ringsgd_mpi_byte(), &count), call: "MPI_Get_count", rank: rank, peer: peer)
        return Int(count)
    }

    /// Completes `handle`: `MPI_Wait` without a deadline, else `MPI_Test` until done or the
    /// deadline passes (then an error naming the peer and the collective).
    private func complete(_ handle: inout MPI_Request?, _ status: inout MPI_Status, peer: Int?) throws -> Int32 {
        guard let deadline = deadlineSeconds else { return MPI_Wait(&handle, &status) }
        let start = MPI_Wtime()
        var polls = 0
        while true {
            var done: Int32 = 0
            let code = MPI_Test(&handle, &done, &status)
            if code != MPI_SUCCESS || done != 0 { return code }
            polls += 1
            if polls & 255 == 0 {
                let waited = MPI_Wtime() - start
                if waited > deadline {
                    // A collective (barrier, broadcast) waits for every other rank; with two
                    // ranks that is one rank, which the message can then name.
                    let whom = peer ?? (size == 2 ? 1 - rank : nil)
                    throw CollectiveError.stalled(rank: rank, peer: whom, activity: activity, seconds: waited, deadline: deadline)
                }
                if waited > 0.001 { sched_yield() }
            }
        }
    }

    /// What the rank is doing, for the deadline message (`ActivityReporting`): a communicator
    /// split from this one (`splitByHost`) reports its parent's, which the trainer sets.
    public var activity: String {
        get { parent?.activity ?? ownActivity }
        set { if let parent { parent.activity = newValue } else { ownActivity = newValue } }
    }
    private var ownActivity = "start-up"
    /// The transport this one was split from (`splitByHost`).
    weak var parent: MPITransport?

    public func barrier() throws {
        guard deadlineSeconds != nil else { return try check(MPI_Barrier(comm), call: "MPI_Barrier", rank: rank) }
        var handle: MPI_Request? = ringsgd_mpi_request_null()
        try check(MPI_Ibarrier(comm, &handle), call: "MPI_Ibarrier", rank: rank)
        var status = MPI_Status()
        try check(try complete(&handle, &status, peer: nil), call: "MPI_Barrier", rank: rank)
    }

    /// One `MPI_Bcast` per piece of at most `maxMessageBytes`: every rank passes the same
    /// length, so every rank makes the same calls.
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        if bytes.count > maxMessageBytes { splitTransfers.collectives += 1 }
        var offset = 0
        repeat {   // at least once: a broadcast of 0 bytes is still a collective call
            let piece = min(maxMessageBytes, bytes.count - offset), start = bytes.baseAddress.map { $0 + offset }
            if deadlineSeconds == nil {
                try check(MPI_Bcast(start, Int32(piece), ringsgd_mpi_byte(), Int32(root), comm),
                          call: Self.broadcastCall(bytes.count, root, offset, piece), rank: rank, peer: root)
            } else {
                var handle: MPI_Request? = ringsgd_mpi_request_null()
                try check(MPI_Ibcast(start, Int32(piece), ringsgd_mpi_byte(), Int32(root), comm, &handle),
                          call: Self.broadcastCall(bytes.count, root, offset, piece), rank: rank, peer: root)
                var status = MPI_Status()
                // Who is late is not known (a tree broadcast waits on its parent, the root on
                // nobody in particular): named only when there are two ranks (`complete`).
                try check(try complete(&handle, &status, peer: nil),
                          call: Self.broadcastCall(bytes.count, root, offset, piece), rank: rank, peer: root)
            }
            offset += piece
        } while offset < bytes.count
    }

    /// Names a broadcast call for an error message, with the piece when it is one of several.
    private static func broadcastCall(_ count: Int, _ root: Int, _ offset: Int, _ piece: Int) -> String {
        "MPI_Bcast of \(count) bytes from rank \(root)" + (piece < count ? " (bytes \(offset) ..< \(offset + piece))" : "")
    }

    /// OpenMPI's own `MPI_Allreduce` (sum, in place), then — if `average` — the same division
    /// by n as our ring's: the baseline the ring is measured (`bench allreduce` times the bare
    /// sum) and tested against. One call per piece of at most `maxMessageBytes`.
    public func mpiAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>, average: Bool) throws {
        let most = max(1, maxMessageBytes / 4)
        if buffer.count > most { splitTransfers.collectives += 1 }
        var offset = 0
        repeat {   // at least once, like the broadcast
            let piece = min(most, buffer.count - offset), start = buffer.baseAddress.map { $0 + offset }
            // Named only when a call fails (`check`'s autoclosure): a string built on every call
            // would be a cost the ring's timed calls do not have.
            func call() -> String { "MPI_Allreduce of \(buffer.count) floats" + (piece < buffer.count ? " (values \(offset) ..< \(offset + piece))" : "") }
            if deadlineSeconds == nil {
                try check(MPI_Allreduce(ringsgd_mpi_in_place(), start, Int32(piece), ringsgd_mpi_float(), ringsgd_mpi_sum(), comm),
                          call: call(), rank: rank)
            } else {
                // comm.timeout_seconds holds here too: a stalled peer ends the job with one line
                // (the blocking call would wait for it for ever).
                var handle: MPI_Request? = ringsgd_mpi_request_null()
                try check(MPI_Iallreduce(ringsgd_mpi_in_place(), start, Int32(piece), ringsgd_mpi_float(), ringsgd_mpi_sum(), comm, &handle),
                          call: call(), rank: rank)
                var status = MPI_Status()
                try check(try complete(&handle, &status, peer: nil), call: call(), rank: rank)
            }
            offset += piece
        } while offset < buffer.count
        guard average else { return }
        let scale = 1 / Float(size)
        for i in buffer.indices { buffer[i] *= scale }
    }

    /// Wall-clock seconds (MPI_Wtime), the clock MPI benchmarks use.
    public static func wallTime() -> Double { MPI_Wtime() }
}

extension MPITransport: NativeAllReduceTransport {
    public func nativeAverage(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try mpiAllReduce(buffer, average: true) }
    public var nativeAllReduceName: String { "MPI_Allreduce" }
}

extension MPITransport: HostTopologyTransport {
    /// `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)` for the ranks of this host, then
    /// `MPI_Comm_split` by local rank for the ranks that hold the same slice on every host.
    /// Collective; nil (on every rank) unless every host has the same k > 1 ranks and there
    /// are h > 1 hosts, with the reason.
    public func splitByHost() throws -> (split: HostSplit?, reason: String) {
        var node: MPI_Comm? = nil
        try check(MPI_Comm_split_type(comm, ringsgd_mpi_comm_type_shared(), Int32(rank), ringsgd_mpi_info_null(), &node),
                  call: "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)", rank: rank)
        var localRank: Int32 = 0, localSize: Int32 = 0
        MPI_Comm_rank(node, &localRank)
        MPI_Comm_size(node, &localSize)
        // Every rank learns every host's size (rank order), so all decide alike.
        let sizes = try RingAllGather.gather(Int64(localSize), over: self)
        let hosts = size / Int(localSize)
        let even = sizes.allSatisfy { $0 == sizes[0] }
        guard even, localSize > 1, hosts > 1 else {
            MPI_Comm_free(&node)
            let reason = !even ? "hosts have different numbers of ranks (per rank: \(sizes.map(String.init).joined(separator: ",")))"
                : localSize <= 1 ? "one rank per host" : "one host"
            return (nil, reason)
        }
        var cross: MPI_Comm? = nil
        try check(MPI_Comm_split(comm, localRank, Int32(rank), &cross), call: "MPI_Comm_split by local rank", rank: rank)
        let local = try MPITransport(communicator: node!, maxMessageBytes: maxMessageBytes)
        let across = try MPITransport(communicator: cross!, maxMessageBytes: maxMessageBytes)
        local.ownsCommunicator = true
        across.ownsCommunicator = true
        (local.deadlineSeconds, across.deadlineSeconds) = (deadlineSeconds, deadlineSeconds)
        (local.parent, across.parent) = (self, self)
        subTransports += [local, across]
        // Each communicator's ranks as the job's, for the messages of errors on them.
        let localWorldRanks = try RingAllGather.gather(Int64(rank), over: local).map { Int($0) }
        let crossWorldRanks = try RingAllGather.gather(Int64(rank), over: across).map { Int($0) }
        return (HostSplit(local: local, cross: across, hosts: hosts, localWorldRanks: localWorldRanks, crossWorldRanks: crossWorldRanks), "")
    }
}
