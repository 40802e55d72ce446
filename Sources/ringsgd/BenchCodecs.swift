import ArgumentParser
import Collectives
import Foundation
import GradientCodecs
import GradientSync
import NeuralNet

/// `ringsgd bench codecs`: how close each codec's passes come to the memory's speed, on one
/// core — the question behind a compressed step that no longer waits for the link.
///
/// Per codec, over a gradient-like buffer larger than the caches, in the ring's own segments
/// (`RingAllReduce.defaultSegmentBytes`, one reused destination slot as the ring's scratch):
/// - `encode+EF`: encode with error feedback (the residual overwritten with this encoding's
///   error; the ring's send of a rank's own chunk);
/// - `decode+acc`: decode a payload and add it into the buffer (the ring's reduce step);
/// - `encode-once`: the chunk owner's encode that also overwrites its values with what it
///   sends (`roundTrip`), before the all-gather.
/// - `hop passes` / `hop fused`: a reduce-scatter hop with error feedback and the momentum
///   carry — g + s·b and + r over the whole buffer, then per segment decode-accumulate and
///   encode+EF, as the ring did before its passes were fused — against `FusedSegmentPass`'s one
///   sweep over the same values;
/// - `gather passes` / `gather fused`: the all-gather's decode, the carry taken off (a pass)
///   and the norm taken (a pass), against the fused decode that does all three.
/// Beside them, in the same run, two memory baselines on the same size: copy (b ← a) and
/// triad (a ← b + s·c, STREAM's), the order of the passes rotating from round to round and the
/// median reported.
///
/// Rates are given two ways: GB/s of fp32 values processed (4 bytes a value: what a ring step
/// consumes), and the memory traffic the pass makes — bytes read plus bytes written to memory:
/// `encode+EF` reads the values and writes the residual (4 + 4 bytes a value; the payload goes
/// to a reused, cache-resident slot, as the ring's does); `decode+acc` reads the payload (p
/// bytes a value, streamed from memory) and reads and writes the values (p + 8); `encode-once`
/// reads and writes the values (8); copy 8 and triad 12, as STREAM counts them — as a fraction
/// of triad's measured bandwidth. A pass at 1.0 runs at the memory's speed. STREAM's count
/// leaves out the read a write to a line not yet in cache costs (write-allocate): triad pays it
/// for its destination, a pass that reads and writes the same values in place (`decode+acc`)
/// does not, so in-place passes can exceed 1.0.
struct BenchCodecs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codecs",
        abstract: "Per-core speed of each codec's encode, decode and owner passes, beside copy and triad.",
        discussion: """
            Example:
              ringsgd bench codecs --codec fp16,int8,sign,int8+zstd
            One process, one core; run it on an idle machine.
            """
    )

    @Option(help: "Comma-separated codecs (\(CodecRegistry.validNames)).")
    var codec: String = "fp16,bf16,int8,int8sr,sign,int8+zstd"
    // `.unconditional`: a negative value reaches validate() and its message (see `Generate`).
    @Option(parsing: .unconditional, help: "Values in the buffer (16 Mi values are 64 MiB: beyond the caches).")
    var values: Int = 16 << 20
    @Option(parsing: .unconditional, help: "Timed repetitions of each pass (median reported).")
    var repetitions: Int = 5
    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    func validate() throws {
        if values < 1024 { throw ValidationError("--values must be ≥ 1024, got \(values)") }
        // The buffer, its copy, a residual and an encoded buffer: about 16 bytes a value.
        let needed = Double(values) * 16
        if let exceeded = MachineMemory.exceeded(by: needed, half: true) {
            throw ValidationError("--values \(values) needs about \(MachineMemory.gigabytes(needed)), \(exceeded); choose at most \(Int(MachineMemory.bytes / 32))")
        }
        if let json { try OutputFile.check(json, option: "--json") }
        if repetitions < 1 { throw ValidationError("--repetitions must be ≥ 1, got \(repetitions)") }
        for name in codec.split(separator: ",") {
            do { _ = try CodecRegistry.make(String(name)) } catch { throw ValidationError("--codec: \(error)") }
        }
    }

    /// One timed pass: its name, fp32 bytes it consumes per value, and memory bytes per value.
    struct Pass {
        let codec: String, kind: String
        let trafficPerValue: Double
        let run: () throws -> Void
        var seconds: [Double] = []
    }

    func run() throws {
        let n = values
        let a = UnsafeMutableBufferPointer<Float>.allocate(capacity: n), b = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let c = UnsafeMutableBufferPointer<Float>.allocate(capacity: n), pristine = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { [a, b, c, pristine].forEach { $0.deallocate() } }
        GradientLikeData.fill(pristine, seed: 11, rank: 0)
        _ = a.update(fromContentsOf: pristine); _ = b.update(fromContentsOf: pristine); _ = c.update(fromContentsOf: pristine)

        var passes: [Pass] = [
            Pass(codec: "memory", kind: "copy", trafficPerValue: 8) { _ = b.update(fromContentsOf: a) },
            Pass(codec: "memory", kind: "triad", trafficPerValue: 12) {
                let pa = a.baseAddress!, pb = b.baseAddress!, pc = c.baseAddress!
                for i in 0 ..< n { pa[i] = pb[i] + 0.5 * pc[i] }
            },
        ]
        var slots: [UnsafeMutableRawBufferPointer] = [], payloads: [[UInt8]] = []
        var tiles: [UnsafeMutablePointer<Float>] = []
        var sink: Float = 0
        defer { slots.forEach { $0.deallocate() }; tiles.forEach { $0.deallocate() } }
        for name in codec.split(separator: ",").map(String.init) {
            let codec = try CodecRegistry.make(name)
            let segment = RingAllReduce.defaultSegmentBytes(for: codec) / 4
            let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: codec.maxEncodedBytes(count: segment), alignment: 64)
            slots.append(slot)
            // The payloads of every segment, for decode+acc (encoded once, untimed).
            var encoded: [UInt8] = [], offsets: [Range<Int>] = []
            for start in stride(from: 0, to: n, by: segment) {
                let part = UnsafeMutableBufferPointer(rebasing: pristine[start ..< min(n, start + segment)])
                let bytes = try codec.encode(part, into: slot)
                offsets.append(encoded.count ..< encoded.count + bytes)
                encoded += UnsafeRawBufferPointer(rebasing: slot[0 ..< bytes])
            }
            payloads.append(encoded)
            let payloadPerValue = Double(encoded.count) / Double(n)
            let stored = payloads.count - 1
            func segments(_ body: (UnsafeMutableBufferPointer<Float>, Int) throws -> Void) rethrows {
                for (k, start) in stride(from: 0, to: n, by: segment).enumerated() {
                    try body(UnsafeMutableBufferPointer(rebasing: a[start ..< min(n, start + segment)]), k)
                }
            }
            passes.append(Pass(codec: name, kind: "encode+EF", trafficPerValue: 8) {
                try segments { part, _ in
                    _ = try codec.encode(part, into: slot, residual: c.baseAddress! + (part.baseAddress! - a.baseAddress!), residualScale: 1, roundTrip: false)
                }
            })
            passes.append(Pass(codec: name, kind: "decode+acc", trafficPerValue: 8 + payloadPerValue) {
                try payloads[stored].withUnsafeBytes { payload in
                    try segments { part, k in try codec.decodeAccumulate(UnsafeRawBufferPointer(rebasing: payload[offsets[k]]), into: part) }
                }
            })
            passes.append(Pass(codec: name, kind: "encode-once", trafficPerValue: 8) {
                try segments { part, _ in _ = try codec.encode(part, into: slot, residual: nil, residualScale: 1, roundTrip: true) }
            })
            // A reduce-scatter hop with error feedback and the momentum carry (residual in c,
            // carry in b), as separate passes — the carry and the residual added over the
            // whole buffer, then per segment decode-accumulate and encode+EF — and fused.
            let carry = CarriedAddend(values: b.baseAddress!, scale: 0.1)
            let tile = UnsafeMutablePointer<Float>.allocate(capacity: FusedSegmentPass.tileValues(for: codec, maxSegmentValues: segment))
            tiles.append(tile)
            let fused = FusedSegmentPass(codec: codec, buffer: a.baseAddress!, residual: c.baseAddress!, carry: carry,
                                         scratch: tile, maxSegmentValues: segment)
            passes.append(Pass(codec: name, kind: "hop passes", trafficPerValue: 12 + 12 + 8 + payloadPerValue + 8) {
                FloatKernels.add(b.baseAddress!, times: 0.1, into: a.baseAddress!, count: n)
                FloatKernels.add(c.baseAddress!, into: a.baseAddress!, count: n)
                try payloads[stored].withUnsafeBytes { payload in
                    try segments { part, k in
                        try codec.decodeAccumulate(UnsafeRawBufferPointer(rebasing: payload[offsets[k]]), into: part)
                        _ = try codec.encode(part, into: slot, residual: c.baseAddress! + (part.baseAddress! - a.baseAddress!), residualScale: 1, roundTrip: false)
                    }
                }
            })
            passes.append(Pass(codec: name, kind: "hop fused", trafficPerValue: 16 + payloadPerValue) {
                try payloads[stored].withUnsafeBytes { payload in
                    try segments { part, k in
                        let start = part.baseAddress! - a.baseAddress!
                        _ = try fused.encode(start ..< start + part.count, incoming: UnsafeRawBufferPointer(rebasing: payload[offsets[k]]),
                                             owner: nil, into: slot)
                    }
                }
            })
            // The all-gather's decode, the carry taken off and the norm taken: passes, and fused.
            passes.append(Pass(codec: name, kind: "gather passes", trafficPerValue: 4 + payloadPerValue + 12 + 4) {
                try payloads[stored].withUnsafeBytes { payload in
                    try segments { part, k in try codec.decode(UnsafeRawBufferPointer(rebasing: payload[offsets[k]]), into: part) }
                }
                FloatKernels.add(b.baseAddress!, times: -0.1, into: a.baseAddress!, count: n)
                var norm = SquareSum()
                norm.add(a.baseAddress!, count: n)
                sink += Float(norm.total)
            })
            passes.append(Pass(codec: name, kind: "gather fused", trafficPerValue: 8 + payloadPerValue) {
                var total = 0.0
                try payloads[stored].withUnsafeBytes { payload in
                    try segments { part, k in
                        let start = part.baseAddress! - a.baseAddress!
                        total += try fused.decode(UnsafeRawBufferPointer(rebasing: payload[offsets[k]]), into: start ..< start + part.count)
                    }
                }
                sink += Float(total)
            })
        }

        // Rounds: every pass once, the order rotating from round to round. Before
        // each timed pass (outside the timing) the buffer is put back and the caches are
        // flushed by reading 128 MiB, so that every pass starts from memory, as a step's
        // passes over a gradient larger than the caches do.
        let flush = UnsafeMutableBufferPointer<Float>.allocate(capacity: 32 << 20)
        defer { flush.deallocate() }
        flush.initialize(repeating: 1)
        for round in 0 ..< repetitions + 1 {
            for k in passes.indices {
                let i = (k + round) % passes.count
                _ = a.update(fromContentsOf: pristine)
                sink += flush.reduce(0, +)
                let start = ContinuousClock.now
                try passes[i].run()
                let seconds = (ContinuousClock.now - start).seconds
                if round > 0 { passes[i].seconds.append(seconds) }   // round 0 warms up
            }
        }

        if sink.isNaN { print("") }   // keeps the flush from being optimised away
        let triad = passes.first { $0.kind == "triad" }.map { 12 * Double(n) / median($0.seconds) } ?? .nan
        print("# ringsgd bench codecs: \(n) values (\(String(format: "%.1f", Double(n) * 4 / 1048576)) MiB), one core, median of \(repetitions), passes rotating, caches flushed before each")
        print(pad("codec", 12) + " " + pad("pass", 12) + " " + ["fp32 GB/s", "traffic GB/s", "of triad"].map { pad($0, 13, right: true) }.joined(separator: " "))
        var rows: [[String: Any]] = []
        for pass in passes {
            let t = median(pass.seconds)
            let fp32 = 4 * Double(n) / t / 1e9, traffic = pass.trafficPerValue * Double(n) / t / 1e9
            print(pad(pass.codec, 12) + " " + pad(pass.kind, 12) + " "
                  + [String(format: "%.2f", fp32), String(format: "%.2f", traffic), String(format: "%.2f", traffic * 1e9 / triad)]
                    .map { pad($0, 13, right: true) }.joined(separator: " "))
            rows.append(["codec": pass.codec, "pass": pass.kind, "seconds": t, "fp32_GBps": fp32, "traffic_GBps": traffic,
                         "fraction_of_triad": traffic * 1e9 / triad])
        }
        if let json {
            let object: [String: Any] = ["values": n, "repetitions": repetitions, "results": rows]
            try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json), options: .atomic)
            print("# wrote \(json)")
        }
    }
}
