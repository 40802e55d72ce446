// InProcessTransport — n ranks as n threads of one process, for fast exhaustive unit tests of
// the collectives. Never what users run: the executable always uses MPITransport.
import Collectives
import Foundation

/// How a send completes.
public enum SendMode: Sendable {
    /// The bytes are copied at `send`, which completes at once (MPI's eager protocol).
    case buffered
    /// The bytes are copied only when a matching receive is posted, and `wait` on the send
    /// returns only then (MPI's rendezvous protocol for large messages): a collective that
    /// reuses a send buffer before its send completed sends the wrong bytes, and a test sees it.
    case rendezvous
}

/// The shared "network": per (sender, receiver, tag) the sends not yet matched and the
/// receives not yet matched, matched in posting order as MPI matches them.
final class InProcessFabric: @unchecked Sendable {
    let size: Int
    let timeout: TimeInterval
    let mode: SendMode
    private let condition = NSCondition()
    private var unmatchedSends: [MailboxKey: [OutgoingMessage]] = [:]
    private var unmatchedReceives: [MailboxKey: [IncomingSlot]] = [:]
    /// Regions handed out by `allocateShared`, freed with the fabric (after every rank's transport is gone).
    var sharedAllocations: [UnsafeMutableBufferPointer<Float>] = []
    private var barrierArrived = 0
    private var barrierGeneration = 0

    struct MailboxKey: Hashable { let from: Int, to: Int, tag: Int }

    /// A send: its bytes (buffered) or where they lie (rendezvous), done once copied.
    final class OutgoingMessage {
        let copy: [UInt8]?
        let source: UnsafeRawBufferPointer
        var done = false
        init(copy: [UInt8]?, source: UnsafeRawBufferPointer) { (self.copy, self.source) = (copy, source) }
    }

    /// A posted receive: where to copy, then the length or the error.
    final class IncomingSlot {
        let buffer: UnsafeMutableRawBufferPointer
        var received: Int?
        var overrun: Int?
        init(buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
    }

    init(size: Int, timeout: TimeInterval, mode: SendMode) {
        self.size = size
        self.timeout = timeout
        self.mode = mode
    }

    deinit { for allocation in sharedAllocations { allocation.deallocate() } }

    func keep(_ allocation: UnsafeMutableBufferPointer<Float>) {
        condition.lock()
        sharedAllocations.append(allocation)
        condition.unlock()
    }

    func post(_ message: OutgoingMessage, on key: MailboxKey) {
        condition.lock()
        unmatchedSends[key, default: []].append(message)
        matchAll(key)
        condition.unlock()
    }

    func post(_ slot: IncomingSlot, on key: MailboxKey) {
        condition.lock()
        unmatchedReceives[key, default: []].append(slot)
        matchAll(key)
        condition.unlock()
    }

    /// Pairs the oldest unmatched send with the oldest unmatched receive (lock held).
    private func matchAll(_ key: MailboxKey) {
        while let send = unmatchedSends[key]?.first, let slot = unmatchedReceives[key]?.first {
            unmatchedSends[key]!.removeFirst()
            unmatchedReceives[key]!.removeFirst()
            let count = send.copy?.count ?? send.source.count
            if count > slot.buffer.count {
                slot.overrun = count
            } else if count > 0 {
                if let copy = send.copy {
                    copy.withUnsafeBytes { slot.buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: count) }
                } else {
                    slot.buffer.baseAddress!.copyMemory(from: send.source.baseAddress!, byteCount: count)
                }
            }
            slot.received = count
            send.done = true
            condition.broadcast()
        }
    }

    /// Waits until `isDone` holds (lock held while it is evaluated); false after `timeout`.
    func waitUntil(_ isDone: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !isDone() {
            if !condition.wait(until: deadline) { return isDone() }
        }
        return true
    }

    func barrier() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let generation = barrierGeneration
        barrierArrived += 1
        if barrierArrived == size {
            barrierArrived = 0
            barrierGeneration += 1
            condition.broadcast()
            return true
        }
        let deadline = Date().addingTimeInterval(timeout)
        while barrierGeneration == generation {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }
}

/// One rank's endpoint on an `InProcessFabric`.
///
/// Sends are buffered or rendezvous (`SendMode`); a send and a receive are matched as soon as
/// both are posted, in posting order per (peer, tag), as an MPI library with asynchronous
/// progress matches them. A wait that is not satisfied within the fabric's timeout throws: a
/// test that would hang fails instead.
public final class InProcessTransport: Transport {
    public let rank: Int
    public var size: Int { fabric.size }
    let fabric: InProcessFabric

    private var sends: [UInt: (message: InProcessFabric.OutgoingMessage, peer: Int)] = [:]
    private var receives: [UInt: (slot: InProcessFabric.IncomingSlot, peer: Int)] = [:]
    private var nextHandle: UInt = 1
    var regions: [SharedRegion] = []

    init(rank: Int, fabric: InProcessFabric) {
        self.rank = rank
        self.fabric = fabric
    }

    public func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: Int) throws -> TransportRequest {
        try checkPeer(peer, call: "send")
        let message = InProcessFabric.OutgoingMessage(copy: fabric.mode == .buffered ? Array(bytes) : nil, source: bytes)
        fabric.post(message, on: InProcessFabric.MailboxKey(from: rank, to: peer, tag: tag))
        let handle = nextHandle
        nextHandle += 1
        if fabric.mode == .rendezvous { sends[handle] = (message, peer) }
        return TransportRequest(handle: handle, peer: peer, isSend: true)
    }

    public func receive(into bytes: UnsafeMutableRawBufferPointer, from peer: Int, tag: Int) throws -> TransportRequest {
        try checkPeer(peer, call: "receive")
        let slot = InProcessFabric.IncomingSlot(buffer: bytes)
        fabric.post(slot, on: InProcessFabric.MailboxKey(from: peer, to: rank, tag: tag))
        let handle = nextHandle
        nextHandle += 1
        receives[handle] = (slot, peer)
        return TransportRequest(handle: handle, peer: peer, isSend: false)
    }

    public func wait(_ request: TransportRequest) throws -> Int {
        if request.isSend {
            guard let (message, peer) = sends.removeValue(forKey: request.handle) else { return 0 }   // buffered: done
            guard fabric.waitUntil({ message.done }) else {
                throw CollectiveError.transport(rank: rank, peer: peer, call: "send",
                                                detail: "no matching receive within \(fabric.timeout) s (the collective would hang)")
            }
            return message.source.count
        }
        guard let (slot, peer) = receives.removeValue(forKey: request.handle) else {
            throw CollectiveError.transport(rank: rank, peer: request.peer, call: "wait", detail: "unknown or completed request")
        }
        guard fabric.waitUntil({ slot.received != nil }) else {
            throw CollectiveError.transport(rank: rank, peer: peer, call: "receive",
                                            detail: "no message within \(fabric.timeout) s (the collective would hang)")
        }
        if let overrun = slot.overrun {
            throw CollectiveError.transport(rank: rank, peer: peer, call: "receive",
                                            detail: "message of \(overrun) bytes overruns a \(slot.buffer.count)-byte buffer")
        }
        return slot.received!
    }

    public func barrier() throws {
        if !fabric.barrier() {
            throw CollectiveError.transport(rank: rank, peer: nil, call: "barrier", detail: "timed out after \(fabric.timeout) s")
        }
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        let tag = 0x4243
        if rank == root {
            for peer in 0 ..< size where peer != root {
                _ = try wait(send(UnsafeRawBufferPointer(bytes), to: peer, tag: tag))
            }
        } else {
            let got = try wait(receive(into: bytes, from: root, tag: tag))
            if got != bytes.count {
                throw CollectiveError.transport(rank: rank, peer: root, call: "broadcast",
                                                detail: "expected \(bytes.count) bytes, got \(got)")
            }
        }
    }

    private func checkPeer(_ peer: Int, call: String) throws {
        if peer < 0 || peer >= size {
            throw CollectiveError.transport(rank: rank, peer: peer, call: call, detail: "peer out of range 0..<\(size)")
        }
    }
}

/// Threads share an address space, so shared memory is ordinary memory: each rank allocates
/// its part and the ranks all-gather the addresses. The fabric's barrier takes a lock, which
/// orders memory, so the fence has nothing to do.
extension InProcessTransport: SharedMemoryTransport {
    public func allocateShared(count: Int) throws -> SharedRegion? {
        let local = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        local.initialize(repeating: 0)
        fabric.keep(local)
        let addresses = try RingAllGather.gather(UInt(bitPattern: local.baseAddress), over: self)
        let region = SharedRegion(local: local, bases: addresses.map { UnsafeMutablePointer(bitPattern: $0)! }, fence: {})
        regions.append(region)
        return region
    }

    public func sharedRegion(containing buffer: UnsafeMutableBufferPointer<Float>) -> SharedRegion? {
        regions.first { $0.offset(of: buffer) != nil }
    }
}

/// Runs `body` on `size` threads, one rank each, and returns each rank's result in rank
/// order (or rethrows the first rank's error).
public enum InProcessCluster {
    public static func run<T>(size: Int, timeout: TimeInterval = 20, sends: SendMode = .buffered,
                              _ body: @escaping (InProcessTransport) throws -> T) throws -> [T] {
        let fabric = InProcessFabric(size: size, timeout: timeout, mode: sends)
        let results = ResultBox<T>(size: size)
        let group = DispatchGroup()
        for rank in 0 ..< size {
            group.enter()
            let thread = Thread {
                let transport = InProcessTransport(rank: rank, fabric: fabric)
                results.set(rank, Result { try body(transport) })
                group.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        group.wait()
        return try results.values.map { try $0!.get() }
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [Result<T, Error>?]
    init(size: Int) { values = Array(repeating: nil, count: size) }
    func set(_ rank: Int, _ value: Result<T, Error>) {
        lock.lock(); values[rank] = value; lock.unlock()
    }
}
