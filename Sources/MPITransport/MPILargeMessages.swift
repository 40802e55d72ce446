import CMPI
import Collectives
import Foundation

// Transfers longer than one MPI call may move.
//
// Every MPI count is a C `int`: one call moves at most 2³¹ − 1 bytes. So no MPI call of
// `MPITransport` moves more than L = `maxMessageBytes`:
//
// - **Broadcast and MPI_Allreduce** pass the same length on every rank, so every rank makes
//   the same sequence of calls over consecutive pieces (MPITransport.swift).
// - **Point-to-point** is harder: a receive knows only its capacity, not the length of the
//   message it will get (the compressed ring receives variable-length payloads into slots
//   sized for the worst case; the fp32 ring's short edge segments land in full-size slots).
//   So the sender tells the receiver:
//
//     sender, m bytes            m < L: one message, as always
//                                m ≥ L: bytes 0 ..< L on the tag; then, on the continuation
//                                       tag (tag + 0x8000), the length m as an Int64, then
//                                       bytes L ..< m in pieces of at most L
//     receiver, capacity C       C < L: one receive, as always (a longer message is MPI's
//                                       truncation error, as the `Transport` contract asks)
//                                C ≥ L: a receive of L bytes on the tag; fewer arrived: that
//                                       was the whole message; L arrived: receive the length
//                                       on the continuation tag, then post every remaining
//                                       piece at once, cut by the same `pieces(of:)`
//
//   Both ends cut bytes L ..< m by one function of (m, L), so receives match sends piece for
//   piece. Small messages and small buffers — every message of a normal run — take the
//   one-call path exactly as before: no allocation, no extra message.
//
// Why this matching is sound: first pieces travel on the caller's tag, so they are matched in
// posting order with every other message of that tag (the ring's window of receives posted
// ahead is undisturbed). Continuation traffic from one peer for one tag arrives in the
// sender's order, so the receiver must read the lengths in the order it posted its receives:
// `waitLarge` first expands every earlier unexpanded receive from the same peer and tag.
// Sends post every piece at once, and a wait completes every piece; nothing is left posted.

/// `RINGSGD_MPI_MAX_MESSAGE_BYTES` holds no usable limit.
public struct MPISettingError: Error, CustomStringConvertible {
    public let description: String
}

extension MPITransport {
    /// 1 GiB: a round number under MPI's 2³¹ − 1, a multiple of every element size (pieces of
    /// an fp32 all-reduce stay whole values), and large enough that the extra messages of a
    /// split transfer cost nothing measurable (a 1 GiB piece takes ~0.1 s at 10 GB/s).
    public static let defaultMaxMessageBytes = 1 << 30
    /// Sets `maxMessageBytes`; every rank must see the same value (`mpirun -x NAME=value`).
    public static let maxMessageBytesVariable = "RINGSGD_MPI_MAX_MESSAGE_BYTES"
    /// Added to a tag for the continuation of a split message. Callers' tags lie below it (MPI
    /// guarantees tags up to 32767; ours are 0x52xx); OpenMPI accepts tags up to 2³¹ − 1 (ob1)
    /// or 2²³ − 1 (ucx), so tag + 0x8000 is valid.
    static let continuationTagOffset = 0x8000

    /// The limit `value` (the environment variable's text, nil: unset) sets.
    ///
    /// Below 64 bytes a few-megabyte transfer becomes so many messages that the job seems to
    /// hang; above 2³¹ − 1 the count no longer fits MPI's `int`.
    public static func maxMessageBytes(fromEnvironment value: String?) throws -> Int {
        guard let value else { return defaultMaxMessageBytes }
        guard let bytes = Int(value.trimmingCharacters(in: .whitespaces)), bytes >= 64, bytes <= Int(Int32.max) else {
            throw MPISettingError(description: "\(maxMessageBytesVariable) must be a whole number of bytes from 64 to \(Int32.max) (MPI's largest count), got '\(value)'")
        }
        return bytes
    }

    /// The pieces after the first L bytes of an m-byte split message: (offset, length) with
    /// every length at most L. Sender and receiver both cut by this.
    func pieces(of m: Int) -> [(offset: Int, count: Int)] {
        stride(from: maxMessageBytes, to: m, by: maxMessageBytes).map { ($0, min(maxMessageBytes, m - $0)) }
    }

    /// `send` of m ≥ L bytes: every piece posted now, completed by `wait`.
    func sendLarge(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: Int) throws -> TransportRequest {
        let base = UnsafeMutableRawPointer(mutating: bytes.baseAddress!)
        let transfer = LargeTransfer(peer: peer, tag: tag, isSend: true, base: base, capacity: bytes.count)
        let handle = transfer.retainedHandle()
        let continuation = try continuationTag(tag)   // checked before anything is posted
        splitTransfers.sends += 1
        transfer.length.pointee = Int64(bytes.count)
        try transfer.requests.append(post(send: true, base, count: maxMessageBytes, peer: peer, tag: tag))
        try transfer.requests.append(post(send: true, UnsafeMutableRawPointer(transfer.length), count: 8, peer: peer, tag: continuation))
        for (offset, count) in pieces(of: bytes.count) {
            try transfer.requests.append(post(send: true, base + offset, count: count, peer: peer, tag: continuation))
        }
        return TransportRequest(handle: handle, peer: peer, isSend: true)
    }

    /// `receive` into C ≥ L bytes: the first piece posted now; the rest once its length is known.
    func receiveLarge(into bytes: UnsafeMutableRawBufferPointer, from peer: Int, tag: Int) throws -> TransportRequest {
        let transfer = LargeTransfer(peer: peer, tag: tag, isSend: false, base: bytes.baseAddress!, capacity: bytes.count)
        let handle = transfer.retainedHandle()
        try transfer.requests.append(post(send: false, transfer.base, count: maxMessageBytes, peer: peer, tag: tag))
        unexpandedReceives.append(transfer)
        return TransportRequest(handle: handle, peer: peer, isSend: false)
    }

    /// `wait` on a split transfer: completes every piece; returns the message length (0 for a
    /// send). The transfer is released only on success: after an error MPI may still write to
    /// its buffers, and the job is ending (`MPIRuntime.abort`).
    func waitLarge(_ request: TransportRequest) throws -> Int {
        let unmanaged = LargeTransfer.unmanaged(request.handle)
        let transfer = unmanaged.takeUnretainedValue()
        // Lengths arrive in the sender's order: learn those of earlier receives first.
        while !transfer.isSend && transfer.messageBytes < 0,
              let earlier = unexpandedReceives.first(where: { $0.peer == transfer.peer && $0.tag == transfer.tag }) {
            try expand(earlier)
        }
        var moved = 0
        for i in transfer.requests.indices {
            moved += try finish(&transfer.requests[i], peer: transfer.peer, isSend: transfer.isSend)
        }
        if !transfer.isSend && transfer.messageBytes >= maxMessageBytes && moved != transfer.messageBytes - maxMessageBytes {
            throw CollectiveError.transport(rank: rank, peer: transfer.peer, call: "MPI_Irecv of a split message",
                detail: "the pieces after the first held \(moved) bytes, the sender announced \(transfer.messageBytes - maxMessageBytes); do all ranks use the same \(Self.maxMessageBytesVariable)?")
        }
        unmanaged.release()
        return transfer.isSend ? 0 : transfer.messageBytes
    }

    /// Completes a receive's first piece and learns the message's length: fewer than L bytes
    /// were the whole message; L bytes are followed by the length, and the remaining pieces
    /// are posted.
    private func expand(_ transfer: LargeTransfer) throws {
        if let index = unexpandedReceives.firstIndex(where: { $0 === transfer }) { unexpandedReceives.remove(at: index) }
        let first = try finish(&transfer.requests[0], peer: transfer.peer, isSend: false)
        transfer.requests.removeAll()
        guard first == maxMessageBytes else { transfer.messageBytes = first; return }
        splitTransfers.receives += 1
        var lengthRequest = try post(send: false, UnsafeMutableRawPointer(transfer.length), count: 8,
                                     peer: transfer.peer, tag: continuationTag(transfer.tag))
        let got = try finish(&lengthRequest, peer: transfer.peer, isSend: false)
        let m = Int(transfer.length.pointee)
        guard got == 8, m >= maxMessageBytes, m <= transfer.capacity else {
            throw CollectiveError.transport(rank: rank, peer: transfer.peer, call: "MPI_Irecv of a split message",
                detail: got != 8 || m < maxMessageBytes
                    ? "expected the message's length (8 bytes, at least \(maxMessageBytes)), got \(got) bytes saying \(m); do all ranks use the same \(Self.maxMessageBytesVariable)?"
                    : "the message is \(m) bytes, the receive buffer \(transfer.capacity): a receive must be at least as long as its message")
        }
        transfer.messageBytes = m
        let continuation = try continuationTag(transfer.tag)
        for (offset, count) in pieces(of: m) {
            try transfer.requests.append(post(send: false, transfer.base + offset, count: count, peer: transfer.peer, tag: continuation))
        }
    }

    private func continuationTag(_ tag: Int) throws -> Int {
        guard tag >= 0, tag < Self.continuationTagOffset else {
            throw CollectiveError.transport(rank: rank, peer: nil, call: "a split message",
                                            detail: "tag \(tag) is not below \(Self.continuationTagOffset), which continuation tags start at")
        }
        return tag + Self.continuationTagOffset
    }

    /// `MPI_Isend` or `MPI_Irecv` of one piece (count ≤ L).
    private func post(send: Bool, _ start: UnsafeMutableRawPointer, count: Int, peer: Int, tag: Int) throws -> MPI_Request? {
        var request: MPI_Request? = ringsgd_mpi_request_null()
        let code = send ? MPI_Isend(start, Int32(count), ringsgd_mpi_byte(), Int32(peer), Int32(tag), comm, &request)
                        : MPI_Irecv(start, Int32(count), ringsgd_mpi_byte(), Int32(peer), Int32(tag), comm, &request)
        try check(code, call: "\(send ? "MPI_Isend" : "MPI_Irecv") of \(count) bytes (a piece of a split message, tag \(tag))",
                  rank: rank, peer: peer)
        return request
    }
}

/// Counts of transfers that took more than one MPI call (`MPITransport.splitTransfers`).
public struct SplitTransfers {
    /// Sends and receives of messages of at least `maxMessageBytes` (first piece, length, the rest).
    public var sends = 0, receives = 0
    /// Broadcasts and all-reduces longer than `maxMessageBytes` (one call per piece).
    public var collectives = 0
}

/// One split send, or one receive into at least L bytes: its MPI requests and the 8-byte
/// length, alive from `send`/`receive` until `wait` (the handle holds a retain).
final class LargeTransfer {
    let peer: Int, tag: Int, isSend: Bool
    /// The caller's buffer and its length (a send's message length).
    let base: UnsafeMutableRawPointer
    let capacity: Int
    /// Send: every piece's request. Receive: the first piece's, then the remaining pieces'.
    var requests: [MPI_Request?] = []
    /// The length message's storage: MPI reads (send) or writes (receive) it until completion.
    let length = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
    /// Receive: the message's length once known (−1 before `expand`).
    var messageBytes = -1

    init(peer: Int, tag: Int, isSend: Bool, base: UnsafeMutableRawPointer, capacity: Int) {
        (self.peer, self.tag, self.isSend, self.base, self.capacity) = (peer, tag, isSend, base, capacity)
    }

    deinit { length.deallocate() }

    /// A `TransportRequest.handle`: the object's address (16-byte aligned) with bit 0 set,
    /// which no `MPI_Request` has; holds a retain until `waitLarge` releases it.
    func retainedHandle() -> UInt { UInt(bitPattern: Unmanaged.passRetained(self).toOpaque()) | 1 }

    static func unmanaged(_ handle: UInt) -> Unmanaged<LargeTransfer> {
        Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: handle & ~1)!)
    }
}
