import ArgumentParser
import Collectives
import Foundation
import GradientCodecs
import MPITransport
import NeuralNet
import Training

/// `bench allreduce --compressor powersgd`: PowerSGD needs the gradient's layer shapes, so it
/// is timed on a real gradient dumped by `train --dump-gradient FILE` (values in FILE, views in
/// FILE.views.json), a step at a time as in training — Q warm-started from the previous
/// iteration, error feedback on — against the fp32 ring and MPI_Allreduce on the same buffer,
/// alternating which goes first.
extension BenchAllReduce {
    func measurePowerSGD(_ transport: MPITransport) throws {
        let n = transport.size, rank = transport.rank
        let path = gradient!
        let views = try JSONDecoder().decode([ParameterView].self, from: Data(contentsOf: URL(fileURLWithPath: path + ".views.json")))
        let values = try Data(contentsOf: URL(fileURLWithPath: path)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let count = values.count
        guard let last = views.last, last.offset + last.count <= count else {
            throw ValidationError("\(path).views.json describes \(views.last.map { $0.offset + $0.count } ?? 0) values, \(path) holds \(count); dump both from one run")
        }
        if rank == 0 {
            print("# ringsgd bench allreduce --compressor powersgd: np \(n), gradient \(path) (\(count) values, \(views.count) tensors)")
            print("# \(warmup) warm-up + \(iterations) timed steps (Q warm-started, error feedback on), median of per-rank medians' max")
            print(pad("mode", 18) + " " + ["wire_bytes", "wire_vs_fp32", "us", "fp32_ring_us", "mpi_us", "vs_fp32_ring", "vs_mpi"].enumerated()
                .map { pad($0.element, [12, 12, 10, 12, 10, 12, 8][$0.offset], right: true) }.joined(separator: " "))
        }
        // Ranks differ: each starts the dumped gradient at its own offset.
        let pristine = (0 ..< count).map { values[($0 + rank * 7919) % count] }
        // Refilled in place before each timed call (an array assignment would copy on write
        // inside the timed region).
        let work = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { work.deallocate() }
        let fp32Ring = RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        var results: [[String: Any]] = []
        /// The collective is as slow as its slowest rank: the largest per-rank median.
        func slowest(_ times: [Double]) throws -> Double { try RingAllGather.gather(median(times), over: transport).max()! }
        for r in powerSGDRanks {
            let powerSGD = try PowerSGD(views: views, count: count, rank: r, minCompressionRate: 2, transport: transport,
                                        codec: try CodecRegistry.make(codecNames[0]), segmentBytes: segmentBytes)
            var residual = [Float](repeating: 0, count: count)
            var state = [Float](repeating: 0, count: powerSGD.stateCount)
            state.withUnsafeMutableBufferPointer { PowerSGD.initialize(UnsafeMutableBufferPointer(rebasing: $0[0 ..< powerSGD.qCount]), seed: 0) }
            // Per contender (PowerSGD, the fp32 ring, MPI_Allreduce), the timed iterations.
            var samples: [[Double]] = [[], [], []]
            for i in 0 ..< warmup + iterations {
                for which in (i % 2 == 0 ? [0, 1, 2] : [2, 1, 0]) {
                    _ = work.update(fromContentsOf: pristine)
                    try transport.barrier()
                    let t = MPITransport.wallTime()
                    switch which {
                    case 0:
                        try residual.withUnsafeMutableBufferPointer { res in
                            try state.withUnsafeMutableBufferPointer { try powerSGD.average(work, residual: res, state: $0, restErrorFeedback: true) }
                        }
                    case 1: try fp32Ring.average(work)
                    default: try transport.mpiAllReduceSum(work)
                    }
                    if i >= warmup { samples[which].append(MPITransport.wallTime() - t) }
                }
            }
            let (time, fp32, mpi) = try (slowest(samples[0]), slowest(samples[1]), slowest(samples[2]))
            let fp32Wire = Double(RingPartition(count: count, ranks: n, maxSegmentValues: 1).chunkSum(ranks: n)) * 4
            let ratio = Double(powerSGD.lastBytesSent) / fp32Wire
            if rank == 0 {
                let mode = "powersgd r\(r)+\(codecNames[0])"
                print(pad(mode, 18) + String(format: " %12d ", powerSGD.lastBytesSent) + pad(String(format: "1/%.0f", 1 / ratio), 12, right: true)
                      + String(format: " %10.1f %12.1f %10.1f %12.2f %8.2f", time * 1e6, fp32 * 1e6, mpi * 1e6, fp32 / time, mpi / time)
                      + "  (\(powerSGD.matrixCount) matrices, \(powerSGD.matrixValues) of \(count) values)")
                results.append(["mode": mode, "rank": r, "wire_bytes_per_rank": powerSGD.lastBytesSent, "wire_ratio": ratio,
                                "us": time * 1e6, "fp32_ring_us": fp32 * 1e6, "mpi_us": mpi * 1e6])
            }
        }
        if rank == 0, let json {
            let data = try JSONSerialization.data(withJSONObject: ["np": n, "gradient": path, "results": results], options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json), options: .atomic)
            print("# wrote \(json)")
        }
    }
}
