// InProcessTransport — n ranks as n threads of one process, for fast exhaustive unit tests of
// the collectives. Never what users run: the executable always uses MPITransport.
import Collectives
import Foundation

/// The shared "network": one FIFO mailbox per (sender, receiver, tag).
final class InProcessFabric: @unchecked Sendable {
    let size: Int
    let timeout: TimeInterval
    private let condition = NSCondition()
    private var mailboxes: [MailboxKey: [[UInt8]]] = [:]
    /// Segments handed out by `allocateShared`, freed with the fabric (after every rank's transport is gone).
    var sharedAllocations: [UnsafeMutableBufferPointer<Float>] = []
    private var barrierArrived = 0
    private var barrierGeneration = 0

    struct MailboxKey: Hashable { let from: Int, to: Int, tag: Int }

    init(size: Int, timeout: TimeInterval) {
        self.size = size
        self.timeout = timeout
    }

    deinit { for allocation in sharedAllocations { allocation.deallocate() } }

    func keep(_ allocation: UnsafeMutableBufferPointer<Float>) {
        condition.lock()
        sharedAllocations.append(allocation)
        condition.unlock()
    }

    func post(_ message: [UInt8], from: Int, to: Int, tag: Int) {
        condition.lock()
        mailboxes[MailboxKey(from: from, to: to, tag: tag), default: []].append(message)
        condition.broadcast()
        condition.unlock()
    }

    /// Takes the oldest message on a mailbox, waiting up to `timeout` (then nil: a hang).
    func take(from: Int, to: Int, tag: Int) -> [UInt8]? {
        let key = MailboxKey(from: from, to: to, tag: tag)
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while mailboxes[key, default: []].isEmpty {
            if !condition.wait(until: deadline) { return nil }
        }
        return mailboxes[key]!.removeFirst()
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
/// Sends are buffered (the bytes are copied at `send`, which completes at once). Receives
/// are matched in the order they were posted per (peer, tag), as MPI matches them, when the
/// first of them is waited on. A receive that finds no message within the fabric's timeout
/// throws: a test that would hang fails instead.
public final class InProcessTransport: Transport {
    public let rank: Int
    public var size: Int { fabric.size }
    let fabric: InProcessFabric

    private struct PendingReceive {
        let buffer: UnsafeMutableRawBufferPointer
        let peer: Int, tag: Int
        var received: Int?
    }
    private var receives: [UInt: PendingReceive] = [:]
    private var postedOrder: [InProcessFabric.MailboxKey: [UInt]] = [:]
    private var nextHandle: UInt = 1
    var segments: [SharedSegment] = []

    init(rank: Int, fabric: InProcessFabric) {
        self.rank = rank
        self.fabric = fabric
    }

    public func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: Int) throws -> TransportRequest {
        try checkPeer(peer, call: "send")
        fabric.post(Array(bytes), from: rank, to: peer, tag: tag)
        return TransportRequest(handle: 0, peer: peer, isSend: true)
    }

    public func receive(into bytes: UnsafeMutableRawBufferPointer, from peer: Int, tag: Int) throws -> TransportRequest {
        try checkPeer(peer, call: "receive")
        let handle = nextHandle
        nextHandle += 1
        receives[handle] = PendingReceive(buffer: bytes, peer: peer, tag: tag)
        postedOrder[InProcessFabric.MailboxKey(from: peer, to: rank, tag: tag), default: []].append(handle)
        return TransportRequest(handle: handle, peer: peer, isSend: false)
    }

    public func wait(_ request: TransportRequest) throws -> Int {
        if request.isSend { return 0 }
        guard let pending = receives[request.handle] else {
            throw CollectiveError.transport(rank: rank, peer: request.peer, call: "wait", detail: "unknown or completed request")
        }
        let key = InProcessFabric.MailboxKey(from: pending.peer, to: rank, tag: pending.tag)
        // Complete earlier receives on the same mailbox first: MPI matches in posting order.
        while receives[request.handle]?.received == nil {
            let handle = postedOrder[key]!.removeFirst()
            var earlier = receives[handle]!
            guard let message = fabric.take(from: pending.peer, to: rank, tag: pending.tag) else {
                throw CollectiveError.transport(rank: rank, peer: pending.peer, call: "receive",
                                                detail: "no message within \(fabric.timeout) s (the collective would hang)")
            }
            if message.count > earlier.buffer.count {
                throw CollectiveError.transport(rank: rank, peer: pending.peer, call: "receive",
                                                detail: "message of \(message.count) bytes overruns a \(earlier.buffer.count)-byte buffer")
            }
            message.withUnsafeBytes { earlier.buffer.baseAddress?.copyMemory(from: $0.baseAddress!, byteCount: message.count) }
            earlier.received = message.count
            receives[handle] = earlier
        }
        return receives.removeValue(forKey: request.handle)!.received!
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
                _ = try send(UnsafeRawBufferPointer(bytes), to: peer, tag: tag)
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
    public func allocateShared(count: Int) throws -> SharedSegment? {
        let local = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        local.initialize(repeating: 0)
        fabric.keep(local)
        let addresses = try RingAllGather.gather(UInt(bitPattern: local.baseAddress), over: self)
        let segment = SharedSegment(local: local, bases: addresses.map { UnsafeMutablePointer(bitPattern: $0)! }, fence: {})
        segments.append(segment)
        return segment
    }

    public func sharedSegment(containing buffer: UnsafeMutableBufferPointer<Float>) -> SharedSegment? {
        segments.first { $0.offset(of: buffer) != nil }
    }
}

/// Runs `body` on `size` threads, one rank each, and returns each rank's result in rank
/// order (or rethrows the first rank's error).
public enum InProcessCluster {
    public static func run<T>(size: Int, timeout: TimeInterval = 20,
                              _ body: @escaping (InProcessTransport) throws -> T) throws -> [T] {
        let fabric = InProcessFabric(size: size, timeout: timeout)
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
