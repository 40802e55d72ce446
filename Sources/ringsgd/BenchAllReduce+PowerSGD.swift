import ArgumentParser
import Collectives
import Foundation
import GradientCodecs
import GradientSync
import MPITransport
import NeuralNet
import Training

/// `bench allreduce --compressor powersgd`: PowerSGD needs the gradient's layer shapes, so it
/// is timed on a real gradient dumped by `train --dump-gradient FILE` (values in FILE, views in
/// FILE.views.json), a step at a time as in training — Q warm-started from the previous
/// iteration, error feedback on — against the fp32 ring and MPI_Allreduce on the same buffer,
/// the order rotating each round (`BenchAllReduce.timeInRotation(_:input:over:)`).
extension BenchAllReduce {
    func measurePowerSGD(_ transport: MPITransport) throws {
        let n = transport.size, rank = transport.rank
        let path = gradient!
        let views = try JSONDecoder().decode([ParameterView].self, from: Data(contentsOf: URL(fileURLWithPath: path + ".views.json")))
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard data.count % 4 == 0 else { throw ValidationError("\(path) holds \(data.count) bytes, not whole Float32 values; dump it again with train --dump-gradient") }
        let values = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let count = values.count
        // Every view inside the dump, in order and without overlap: the layout train wrote.
        var end = 0
        for view in views {
            guard view.offset >= end, view.count <= count - view.offset else {
                throw ValidationError("\(path).views.json: view \(view.name) (\(view.offset) + \(view.count) values) overlaps the one before or passes the \(count) values of \(path); dump both from one run")
            }
            end = view.offset + view.count
        }
        guard !views.isEmpty else { throw ValidationError("\(path).views.json lists no tensors; dump it again with train --dump-gradient") }
        if rank == 0 {
            print("# ringsgd bench allreduce --compressor powersgd: np \(n), gradient \(path) (\(count) values, \(views.count) tensors)")
            print("# \(warmup) warm-up + \(iterations) timed steps (Q warm-started, error feedback on; contenders interleaved, order rotating), median of per-rank medians' max")
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
        for r in powerSGDRanks {
            // The whole gradient as one bucket, error feedback on (for the matrices and the rest).
            let powerSGD = try PowerSGD(views: views, plan: BucketPlan(extents: [0 ..< count], bucketBytes: 0),
                                        settings: PowerSGDSettings(rank: r, minCompressionRate: 2), transport: transport,
                                        codec: try CodecRegistry.make(codecNames[0]), errorFeedback: true, segmentBytes: segmentBytes, seed: 0)
            let memory = ErrorFeedbackMemory(count: count, sharers: n)
            let contenders = [
                Contender(buffer: work) { try powerSGD.average(work, memory: memory) },
                Contender(buffer: work) { try fp32Ring.average(work) },
                Contender(buffer: work) { try transport.mpiAllReduce(work, average: true) },
            ]
            let samples = try pristine.withUnsafeBufferPointer { try timeInRotation(contenders, input: $0, over: transport) }
            let (time, fp32, mpi) = try (slowest(samples[0], over: transport), slowest(samples[1], over: transport),
                                         slowest(samples[2], over: transport))
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
