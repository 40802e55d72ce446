import ArgumentParser
import Collectives
import FileFormats
import Foundation
import GradientCodecs
import GradientSync
import MPITransport
import Training

/// `ringsgd bench allreduce`: our ring against OpenMPI's `MPI_Allreduce` on the same buffers,
/// in the same run — with `--topology hierarchical` also the hierarchical all-reduce, with a
/// lossy codec also the fp32 ring — interleaved call by call, the order rotating each round so
/// that every variant goes first (and second, …) equally often: machine noise, drift and
/// cache state favour none (`timeInRotation(_:input:over:)`).
///
/// busbw follows nccl-tests: algbw = bytes / time, busbw = algbw · 2(n−1)/n, the rate each
/// link must sustain; it is comparable across world sizes and against the link speed.
struct BenchAllReduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Ring all-reduce vs MPI_Allreduce, 4 KiB … 64 MiB (run under mpirun)."
    )

    @Option(help: "Comma-separated codecs to measure (\(CodecRegistry.validNames)).")
    var codec: String = "none"

    @Option(parsing: .unconditional, help: "Smallest buffer in bytes.")
    var minBytes: Int = 4 << 10

    @Option(parsing: .unconditional, help: "Largest buffer in bytes (sizes step ×4).")
    var maxBytes: Int = 64 << 20

    @Option(parsing: .unconditional, help: "Untimed warm-up iterations per size.")
    var warmup: Int = 5

    @Option(parsing: .unconditional, help: "Timed iterations per size (median reported).")
    var iterations: Int = 20

    @Option(parsing: .unconditional, help: "Ring segment size in bytes (default: 512 KiB for fp32, 1 MiB for lossy codecs).")
    var segmentBytes: Int?

    @Option(help: ArgumentHelp("Where the buffers live.", discussion: BufferPlacement.help))
    var buffers: BufferPlacement = .auto

    @Option(help: "Fill buffers from a gradient dumped by `train --dump-gradient` (default: synthetic gradient-like data).")
    var gradient: String?

    @Option(help: "hierarchical: also time the hierarchical all-reduce (shared memory inside each host, the ring across hosts) side by side; flat: the flat ring only.")
    var topology: AllReduceTopology = .flat

    @Option(help: "Write results as JSON to this file (rank 0).")
    var json: String?

    @Option(help: "powersgd: time PowerSGD's low-rank all-reduce on the --gradient dump, with its layer shapes (FILE.views.json), against the fp32 ring and MPI_Allreduce; --codec is then the vectors' codec.")
    var compressor: String = "none"

    @Option(help: "PowerSGD ranks to time, comma-separated.")
    var powersgdRank: String = "1,2,4"

    func validate() throws {
        if iterations < 1 { throw ValidationError("--iterations must be ≥ 1, got \(iterations)") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0, got \(warmup)") }
        if let segmentBytes, segmentBytes < 4 { throw ValidationError("--segment-bytes must be ≥ 4 (one float), got \(segmentBytes)") }
        if minBytes < 4 || maxBytes < minBytes || maxBytes > Self.largestBuffer {
            throw ValidationError("need 4 ≤ --min-bytes ≤ --max-bytes ≤ \(Self.largestBuffer), got \(minBytes) and \(maxBytes)")
        }
        if minBytes % 4 != 0 { throw ValidationError("--min-bytes must be whole floats, a multiple of 4, got \(minBytes)") }
        for name in codecNames { _ = try CodecRegistry.make(name) }
        if let json { try OutputFile.check(json, option: "--json") }
        guard ["none", "powersgd"].contains(compressor) else {
            throw ValidationError("--compressor must be none or powersgd, got '\(compressor)'")
        }
        if compressor == "powersgd" {
            guard let gradient, FileManager.default.fileExists(atPath: gradient + ".views.json") else {
                throw ValidationError("--compressor powersgd needs --gradient FILE and its layer shapes FILE.views.json; write both with `ringsgd train --dump-gradient FILE`")
            }
            if powerSGDRanks.isEmpty || powerSGDRanks.contains(where: { $0 < 1 }) {
                throw ValidationError("--powersgd-rank must be a comma-separated list of ranks ≥ 1, got '\(powersgdRank)'")
            }
            if codecNames.count != 1 { throw ValidationError("--compressor powersgd takes one --codec (the vectors'), got \(codec)") }
            // It times one buffer, the dumped gradient, in private memory, on the flat ring.
            if buffers != .auto || topology != .flat || minBytes != 4 << 10 || maxBytes != 64 << 20 {
                throw ValidationError("--compressor powersgd times the --gradient dump in private buffers on the flat ring: --buffers, --topology, --min-bytes and --max-bytes do not apply; remove them")
            }
        }
        if let gradient, ((try? FileManager.default.attributesOfItem(atPath: gradient))?[.size] as? Int ?? 0) < 4 {
            throw ValidationError("--gradient \(gradient) is missing or empty; write one with `ringsgd train --dump-gradient FILE`")
        }
    }

    /// 64 GiB: sizes step ×4 up to --max-bytes, which must not overflow.
    static let largestBuffer = 1 << 36

    /// One rank has nothing to reduce: its busbw factor 2(n−1)/n is 0 and no bytes cross a wire.
    /// Every rank sees the same size, so the error is agreed (one line, no MPI_Abort).
    static func requireRanks(_ transport: MPITransport) throws {
        if transport.size < 2 {
            throw AgreedError("bench allreduce needs 2 or more ranks (mpirun -np 2 … ringsgd bench allreduce): one rank has nothing to reduce")
        }
    }

    var powerSGDRanks: [Int] { powersgdRank.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? 0 } }

    var codecNames: [String] { codec.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    func run() throws {
        MPIJob.run { transport in
            try Self.requireRanks(transport)
            if compressor == "powersgd" { try measurePowerSGD(transport) } else { try measure(transport) }
        }
    }

    private func measure(_ transport: MPITransport) throws {
        let n = transport.size, rank = transport.rank
        var sizes: [Int] = []
        var bytes = minBytes
        while bytes <= maxBytes { sizes.append(bytes); bytes *= 4 }
        let busFactor = 2 * Double(n - 1) / Double(n)
        let label = transportLabel()
        let dumped: [Float]? = try gradient.map { path in
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        // One segment for the largest size, reused: windows are allocated collectively, once.
        let segment = buffers.resolved == .shared ? try transport.allocateShared(count: max(1, sizes.last! / 4)) : nil
        if rank == 0 {
            print("# ringsgd bench allreduce: np \(n), transport \(label), MPI thread level \(MPIRuntime.shared.threadLevel)")
            print("# input: \(gradient.map { "gradient dumped from a training run, \($0)" } ?? "synthetic gradient-like data (Laplace, log-uniform scales per 4096 values, 10 % zeros)")")
            print("# buffers: " + (segment != nil ? "MPI shared-memory window (fp32 ring steps are direct loads)"
                                                  : "private (every ring step is an MPI message)"))
            print("# \(warmup) warm-up + \(iterations) timed rounds (contenders interleaved, order rotating), the slowest rank's median; busbw = fp32 bytes/time·2(n−1)/n (for a lossy codec an effective rate: its wire carries fewer)")
            print("# lossy codecs run with error feedback, as training runs them (each call adds and keeps its residual)")
            print(pad("codec", 10) + " " + ["bytes", "ring_us", "mpi_us", "ring_GB/s", "mpi_GB/s", "mpi/ring"].enumerated()
                .map { pad($0.element, [12, 10, 10, 11, 11, 8][$0.offset], right: true) }.joined(separator: " "))
        }
        var results: [[String: Any]] = []
        let fp32Ring = RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        // Hierarchical: its buffers in this host's shared-memory window, timed beside the others.
        let hosts = topology == .hierarchical ? try AllReduceTopology.hostBuffers(transport, count: sizes.last! / 4) : nil
        for name in codecNames {
            let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(name), segmentBytes: segmentBytes)
            let compressed = !ring.codec.isIdentity
            let hierarchical = hosts.map { HierarchicalAllReduce(world: transport, split: $0.split, codec: ring.codec, segmentBytes: segmentBytes) }
            for size in sizes {
                let count = size / 4
                let pristine = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
                let work = segment.map { UnsafeMutableBufferPointer(rebasing: $0.local[0 ..< count]) }
                    ?? UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
                defer { pristine.deallocate(); if segment == nil { work.deallocate() } }
                // Error feedback's residual for a lossy codec, as training keeps it (`comm.error_feedback`,
                // on for lossy codecs): each call reads and writes it, which the timing must include.
                let memory = compressed ? ErrorFeedbackMemory(count: count, sharers: n) : nil
                let hierarchicalMemory = compressed && hierarchical != nil ? ErrorFeedbackMemory(count: count, sharers: n) : nil
                if let source = dumped {
                    // Tile the real gradient; each rank starts at its own offset so ranks differ.
                    for i in 0 ..< count { pristine[i] = source[(i + rank * 7919) % source.count] }
                } else {
                    GradientLikeData.fill(pristine, seed: 42, rank: rank)
                }
                // The contenders, all on the same input; the optional ones only where asked for.
                var codecTimes: [Double] = []
                codecTimes.reserveCapacity(warmup + iterations)   // no allocation inside a timed call
                var contenders = [Contender(buffer: work) { try ring.average(work, residual: memory?.values); codecTimes.append(ring.lastCodecSeconds) },
                                  Contender(buffer: work) { try transport.mpiAllReduce(work, average: true) }]
                if compressed { contenders.append(Contender(buffer: work) { try fp32Ring.average(work) }) }
                if let hierarchical, let region = hosts?.region {
                    let shared = UnsafeMutableBufferPointer(rebasing: region.local[0 ..< count])
                    contenders.append(Contender(buffer: shared) { try hierarchical.average(shared, residual: hierarchicalMemory?.values) })
                }
                let samples = try timeInRotation(contenders, input: UnsafeBufferPointer(pristine), over: transport)
                let ringMedian = try slowest(samples[0], over: transport), mpiMedian = try slowest(samples[1], over: transport)
                let ringBus = Double(size) / ringMedian * busFactor / 1e9
                let mpiBus = Double(size) / mpiMedian * busFactor / 1e9
                var row: [String: Any] = ["codec": name, "bytes": size, "ring_us": ringMedian * 1e6, "mpi_us": mpiMedian * 1e6,
                                          "ring_busbw_GBps": ringBus, "mpi_busbw_GBps": mpiBus,
                                          "wire_bytes_per_rank": ring.lastBytesSent]
                var extra = ""
                if hierarchical != nil {
                    let hierMedian = try slowest(samples.last!, over: transport)
                    row["hierarchical_us"] = hierMedian * 1e6
                    extra += String(format: "  hierarchical %.1f us: %.2fx the flat ring, %.2fx MPI_Allreduce", hierMedian * 1e6,
                                    ringMedian / hierMedian, mpiMedian / hierMedian)
                }
                if compressed {
                    // fp32 ring bytes: every rank sends 2(n−1) chunks of the buffer.
                    let fp32Wire = Double(RingPartition(count: count, ranks: n, maxSegmentValues: 1).chunkSum(ranks: n)) * 4
                    let fp32Median = try slowest(samples[2], over: transport)
                    let codecSeconds = try slowest(Array(codecTimes.suffix(iterations)), over: transport)
                    let (encode, decode) = try codecThroughput(name, pristine)
                    let saved = fp32Wire - Double(ring.lastBytesSent)
                    let breakEven = codecSeconds > 0 && saved > 0 ? saved / codecSeconds / 1e9 : 0
                    row["wire_ratio"] = Double(ring.lastBytesSent) / fp32Wire
                    row["encode_GBps"] = encode
                    row["decode_GBps"] = decode
                    row["fp32_ring_us"] = fp32Median * 1e6
                    row["speedup_vs_fp32_ring"] = fp32Median / ringMedian
                    row["codec_seconds_per_rank"] = codecSeconds
                    row["break_even_link_GBps"] = breakEven
                    extra += String(format: "  wire %.3f  enc %.2f GB/s  dec %.2f GB/s  vs fp32 ring %.2fx  break-even link %.2f GB/s",
                                   Double(ring.lastBytesSent) / fp32Wire, encode, decode, fp32Median / ringMedian, breakEven)
                }
                if rank == 0 {
                    print(pad(name, 10) + String(format: " %12d %10.1f %10.1f %11.3f %11.3f %8.2f", size, ringMedian * 1e6,
                                                 mpiMedian * 1e6, ringBus, mpiBus, mpiMedian / ringMedian) + extra)
                    results.append(row)
                }
            }
        }
        if rank == 0, let json {
            let object: [String: Any] = ["np": n, "transport": label, "buffers": segment != nil ? "shared" : "private",
                                         "results": results]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json), options: .atomic)
            print("# wrote \(json)")
        }
    }

    /// Times every contender on the same input: `warmup` untimed rounds, then `iterations` timed
    /// ones; returns each contender's timed seconds, in contender order.
    ///
    /// Every call starts from `input` copied into its buffer, then a barrier, so no call inherits
    /// another's result or a rank's lateness. Round i runs the contenders starting at i mod k
    /// (k of them): the order rotates, so over the timed rounds each runs first — straight after
    /// the barrier — and in every later position equally often (±1 when k does not divide
    /// `iterations`), and drift, warm-up and the cache state one leaves the next favour none.
    func timeInRotation(_ contenders: [Contender], input: UnsafeBufferPointer<Float>, over transport: MPITransport) throws -> [[Double]] {
        var samples = [[Double]](repeating: [], count: contenders.count)
        for round in 0 ..< warmup + iterations {
            for position in contenders.indices {
                let which = (round + position) % contenders.count, contender = contenders[which]
                _ = contender.buffer.update(fromContentsOf: input)
                try transport.barrier()
                let start = MPITransport.wallTime()
                try contender.call()
                if round >= warmup { samples[which].append(MPITransport.wallTime() - start) }
            }
        }
        return samples
    }

    /// A collective is as slow as its slowest rank: the largest of the ranks' median times.
    func slowest(_ times: [Double], over transport: MPITransport) throws -> Double {
        try RingAllGather.gather(median(times), over: transport).max()!
    }

    /// "mpi (btl tcp,self)" when the BTL was chosen on the command line, else "mpi (default btl)".
    private func transportLabel() -> String {
        if let btl = ProcessInfo.processInfo.environment["OMPI_MCA_btl"] { return "mpi (btl \(btl))" }
        return "mpi (default btl)"
    }
}

/// One collective `bench allreduce` times: the buffer it averages in place (refilled from the
/// input before every call) and the call.
struct Contender {
    let buffer: UnsafeMutableBufferPointer<Float>
    let call: () throws -> Void
}

/// Single-core codec throughput on `data` (encode, decode), in GB/s of fp32 input, segment by
/// segment in 256 KiB segments (the ring's are 1 MiB for a lossy codec, coded in 8 KiB fused
/// tiles, and 512 KiB for fp32), median of 5 passes. Every pass encodes the same input (decode
/// writes a scratch of its own, not the input, which later passes would find already
/// quantised); a buffer that fits in cache is timed in cache (`bench codecs` flushes it).
func codecThroughput(_ name: String, _ data: UnsafeMutableBufferPointer<Float>) throws -> (Double, Double) {
    let codec = try CodecRegistry.make(name)
    let segment = 64 << 10
    var copy = Array(data)
    let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: codec.maxEncodedBytes(count: segment), alignment: 64)
    let decoded = UnsafeMutableBufferPointer<Float>.allocate(capacity: segment)
    decoded.initialize(repeating: 0)
    defer { payload.deallocate(); decoded.deallocate() }
    var encodeTimes: [Double] = [], decodeTimes: [Double] = []
    try copy.withUnsafeMutableBufferPointer { x in
        for _ in 0 ..< 5 {
            var encodeSeconds = 0.0, decodeSeconds = 0.0
            var start = 0
            while start < x.count {
                let piece = UnsafeMutableBufferPointer(rebasing: x[start ..< min(x.count, start + segment)])
                var t = ContinuousClock.now
                let written = try codec.encode(piece, into: payload)
                encodeSeconds += (ContinuousClock.now - t).seconds
                t = ContinuousClock.now
                try codec.decode(UnsafeRawBufferPointer(rebasing: payload[0 ..< written]), into: UnsafeMutableBufferPointer(rebasing: decoded[0 ..< piece.count]))
                decodeSeconds += (ContinuousClock.now - t).seconds
                start += segment
            }
            encodeTimes.append(encodeSeconds); decodeTimes.append(decodeSeconds)
        }
    }
    let bytes = Double(data.count * 4)
    return (bytes / median(encodeTimes) / 1e9, bytes / median(decodeTimes) / 1e9)
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
