import Collectives
import FileFormats
import Foundation

/// `train --timeline FILE`: what every rank did when, as Chrome trace-event JSON (open it in
/// https://ui.perfetto.dev or chrome://tracing). Horovod's timeline is the anchor.
///
/// One process track per rank (`pid` = rank), two threads each: the training thread (forward,
/// backward per layer, optimizer step, checkpoint, evaluation, replica check) and the
/// communication thread (each bucket's all-reduce, and inside it the ring's encode, decode,
/// fp32 reduce and the waits for a peer's message). Events are complete events (`"ph": "X"`,
/// `ts` and `dur` in µs) from the trace-event format.
///
/// Why it is cheap: an event is 24 bytes appended to a per-thread array reserved up front —
/// no string, no lock, no I/O — and names are rendered only at the end. Each thread appends to
/// its own lane, so the two threads never touch the same array. Times are measured from an
/// instant every rank takes right after a barrier, so the tracks line up (within the
/// barrier's skew) on one host; across hosts clocks are independent, and the same barrier
/// aligns them as well as it can.
///
/// At the end rank 0 gathers every rank's events and writes one file.
public final class Timeline {
    public enum Kind: UInt8 {
        case forward, backward, optimizer, checkpoint, evaluate, replicaCheck, outerStep
        case allReduce, encode, decode, reduce, wait
    }

    struct Event {
        var kind: Kind
        var index: Int32       // layer, bucket or ring unit; −1: none
        var start: Int64       // ns since `origin`
        var duration: Int64    // ns
    }

    final class Lane {
        var events: [Event] = []
        var dropped = 0
        init() { events.reserveCapacity(Timeline.capacityPerLane) }
    }

    /// Events kept per thread (24 MB): further ones are counted, not kept.
    static let capacityPerLane = 1 << 20
    let training = Lane(), communication = Lane()
    private var origin = ContinuousClock.now
    /// Names of the layers, for the backward spans.
    var layerNames: [String] = []

    public init() {}

    /// Starts the clock on every rank right after a barrier. Collective.
    func start(over transport: Transport) throws {
        try transport.barrier()
        origin = ContinuousClock.now
    }

    func nanoseconds(_ instant: ContinuousClock.Instant) -> Int64 {
        let (s, atto) = (instant - origin).components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    /// Records a span on `lane` (the calling thread's own).
    func record(_ kind: Kind, _ index: Int = -1, from start: ContinuousClock.Instant, to end: ContinuousClock.Instant, on lane: Lane) {
        guard lane.events.count < Self.capacityPerLane else { lane.dropped += 1; return }
        let s = nanoseconds(start)
        lane.events.append(Event(kind: kind, index: Int32(clamping: index), start: s, duration: nanoseconds(end) - s))
    }


    // MARK: - Output

    private func name(_ event: Event) -> (name: String, category: String) {
        let i = Int(event.index)
        switch event.kind {
        case .forward: return ("forward", "compute")
        case .backward: return ("backward \(i < layerNames.count && i >= 0 ? layerNames[i] : "layer \(i)")", "compute")
        case .optimizer: return ("optimizer step", "compute")
        case .checkpoint: return ("checkpoint", "io")
        case .evaluate: return ("evaluate", "compute")
        case .replicaCheck: return ("replica check", "comm")
        case .outerStep: return ("outer step", "comm")
        case .allReduce: return ("all-reduce bucket \(i)", "comm")
        case .encode: return ("encode", "codec")
        case .decode: return ("decode", "codec")
        case .reduce: return ("reduce", "comm")
        case .wait: return ("wait", "comm")
        }
    }

    /// This rank's events as trace-event JSON objects, comma-separated.
    func json(rank: Int) -> String {
        var parts: [String] = [
            #"{"name":"process_name","ph":"M","pid":\#(rank),"args":{"name":"rank \#(rank)"}}"#,
            #"{"name":"process_sort_index","ph":"M","pid":\#(rank),"args":{"sort_index":\#(rank)}}"#,
            #"{"name":"thread_name","ph":"M","pid":\#(rank),"tid":0,"args":{"name":"training"}}"#,
            #"{"name":"thread_name","ph":"M","pid":\#(rank),"tid":1,"args":{"name":"communication"}}"#,
        ]
        for (tid, lane) in [training, communication].enumerated() {
            parts.reserveCapacity(parts.count + lane.events.count)
            for event in lane.events {
                let (name, category) = self.name(event)
                let escaped = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                parts.append(#"{"name":"\#(escaped)","cat":"\#(category)","ph":"X","ts":\#(Double(event.start) / 1000),"dur":\#(Double(event.duration) / 1000),"pid":\#(rank),"tid":\#(tid)}"#)
            }
            if lane.dropped > 0 {
                parts.append(#"{"name":"\#(lane.dropped) events not recorded (timeline full)","ph":"i","s":"t","ts":0,"pid":\#(rank),"tid":\#(tid)}"#)
            }
        }
        return parts.joined(separator: ",\n")
    }

    /// Gathers every rank's events on rank 0, which writes `path`. Collective.
    ///
    /// Why point-to-point and not an all-gather: only rank 0 writes, and a rank's events are
    /// megabytes of JSON — an all-gather would hold every rank's on every rank (n² of memory
    /// and traffic over the job), padded to the longest.
    func write(to path: String, over transport: Transport) throws {
        var mine = Array(json(rank: transport.rank).utf8)
        let lengths = try RingAllGather.gather(Int64(mine.count), over: transport)
        var out: [UInt8] = []
        if transport.rank == 0 {
            out = Array(#"{"displayTimeUnit":"ms","traceEvents":["#.utf8) + [10]
            out.reserveCapacity(out.count + Int(lengths.reduce(0, +)) + 2 * transport.size + 4)
            out += mine
            for rank in 1 ..< transport.size {
                var theirs = [UInt8](repeating: 0, count: Int(lengths[rank]))
                let received = try theirs.withUnsafeMutableBytes { buffer in
                    try transport.wait(try transport.receive(into: buffer, from: rank, tag: Self.tag))
                }
                guard received == theirs.count else {
                    throw CollectiveError.transport(rank: 0, peer: rank, call: "the timeline's gather",
                                                    detail: "received \(received) bytes of events, expected \(theirs.count)")
                }
                out += Array(",\n".utf8) + theirs
            }
            out += Array("\n]}\n".utf8)
        } else {
            _ = try mine.withUnsafeMutableBytes { buffer in
                try transport.wait(try transport.send(UnsafeRawBufferPointer(buffer), to: 0, tag: Self.tag))
            }
        }
        try Agreement.run("write the timeline", over: transport) {
            guard transport.rank == 0 else { return }
            try FileSystem.writeAtomically(out, to: path, what: "timeline")
        }
    }

    /// The tag of the events' messages to rank 0 (the ring's are 0x5241…: "RA", "RC", "RG").
    static let tag = 0x5254
}
