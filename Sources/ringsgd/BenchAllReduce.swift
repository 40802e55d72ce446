import ArgumentParser
import Collectives
import Foundation
import GradientCodecs
import MPITransport

/// `ringsgd bench allreduce`: our ring against OpenMPI's `MPI_Allreduce` on the same buffers,
/// in the same run, iterations alternating so that machine noise hits both alike.
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

    @Option(help: "Smallest buffer in bytes.")
    var minBytes: Int = 4 << 10

    @Option(help: "Largest buffer in bytes (sizes step ×4).")
    var maxBytes: Int = 64 << 20

    @Option(help: "Untimed warm-up iterations per size.")
    var warmup: Int = 5

    @Option(help: "Timed iterations per size (median reported).")
    var iterations: Int = 20

    @Option(help: "Ring segment size in bytes.")
    var segmentBytes: Int = 1 << 20

    @Option(help: "Write results as JSON to this file (rank 0).")
    var json: String?

    func validate() throws {
        if iterations < 1 { throw ValidationError("--iterations must be ≥ 1, got \(iterations)") }
        if minBytes < 4 || maxBytes < minBytes {
            throw ValidationError("need 4 ≤ --min-bytes ≤ --max-bytes, got \(minBytes) and \(maxBytes)")
        }
        for name in codecNames { _ = try CodecRegistry.make(name) }
    }

    var codecNames: [String] { codec.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    func run() throws {
        MPIJob.run { transport in try measure(transport) }
    }

    private func measure(_ transport: MPITransport) throws {
        let n = transport.size, rank = transport.rank
        var sizes: [Int] = []
        var bytes = minBytes
        while bytes <= maxBytes { sizes.append(bytes); bytes *= 4 }
        let busFactor = n > 1 ? 2 * Double(n - 1) / Double(n) : 1
        let label = transportLabel()
        if rank == 0 {
            print("# ringsgd bench allreduce: np \(n), transport \(label), MPI thread level \(MPIRuntime.shared.threadLevel)")
            print("# \(warmup) warm-up + \(iterations) timed iterations, median of per-rank medians' max; busbw = bytes/time·2(n−1)/n")
            print(String(format: "%-10s %12s %10s %10s %11s %11s %8s", "codec", "bytes", "ring_us", "mpi_us",
                         "ring_GB/s", "mpi_GB/s", "ring/mpi"))
        }
        var results: [[String: Any]] = []
        for name in codecNames {
            let ring = RingAllReduce(transport: transport, codec: try CodecRegistry.make(name), segmentBytes: segmentBytes)
            for size in sizes {
                let count = size / 4
                let pristine = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
                let work = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
                defer { pristine.deallocate(); work.deallocate() }
                GradientLikeData.fill(pristine, seed: 42, rank: rank)
                var ringTimes: [Double] = [], mpiTimes: [Double] = []
                for i in 0 ..< warmup + iterations {
                    _ = work.update(fromContentsOf: pristine)
                    try transport.barrier()
                    var t0 = MPITransport.wallTime()
                    try ring.average(work)
                    let ringTime = MPITransport.wallTime() - t0
                    _ = work.update(fromContentsOf: pristine)
                    try transport.barrier()
                    t0 = MPITransport.wallTime()
                    try transport.mpiAllReduceSum(work)
                    let mpiTime = MPITransport.wallTime() - t0
                    if i >= warmup { ringTimes.append(ringTime); mpiTimes.append(mpiTime) }
                }
                // The collective is as slow as its slowest rank.
                let ringMedian = try RingAllGather.gather(median(ringTimes), over: transport).max()!
                let mpiMedian = try RingAllGather.gather(median(mpiTimes), over: transport).max()!
                let ringBus = Double(size) / ringMedian * busFactor / 1e9
                let mpiBus = Double(size) / mpiMedian * busFactor / 1e9
                if rank == 0 {
                    print(String(format: "%-10s %12d %10.1f %10.1f %11.3f %11.3f %8.2f", name, size, ringMedian * 1e6,
                                 mpiMedian * 1e6, ringBus, mpiBus, mpiMedian / ringMedian))
                    results.append(["codec": name, "bytes": size, "ring_us": ringMedian * 1e6, "mpi_us": mpiMedian * 1e6,
                                    "ring_busbw_gbps": ringBus, "mpi_busbw_gbps": mpiBus,
                                    "wire_bytes_per_rank": ring.lastBytesSent])
                }
            }
        }
        if rank == 0, let json {
            let object: [String: Any] = ["np": n, "transport": label, "results": results]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json), options: .atomic)
            print("# wrote \(json)")
        }
    }

    /// "mpi (btl tcp,self)" when the BTL was chosen on the command line, else "mpi (default btl)".
    private func transportLabel() -> String {
        if let btl = ProcessInfo.processInfo.environment["OMPI_MCA_btl"] { return "mpi (btl \(btl))" }
        return "mpi (default btl)"
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
