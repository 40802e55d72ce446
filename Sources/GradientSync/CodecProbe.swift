import Collectives
import Foundation
import GradientCodecs

/// `comm.codec: auto`: measure, before the first step, which codec averages this model's
/// gradient fastest on this link, and pick it on every rank.
///
/// Why measure rather than model: whether a codec pays depends on the link (bandwidth,
/// latency, whether the fp32 ring runs as zero-copy loads over shared memory), on the
/// codec's encode/decode rate on this CPU, and on how well the pipeline overlaps the two — a
/// model of all three is easy to get wrong by more than the differences it decides. So each
/// candidate runs the all-reduce that training will run with it (`AllReduceChoice`: the flat
/// ring, or the hierarchical all-reduce across hosts), with error feedback when training will
/// keep it (its residual pass is part of a lossy codec's cost), on a probe buffer
/// that lies where the gradient lies (a shared-memory window on one host), filled with
/// gradient-like data (`GradientLikeData`: heavy-tailed, layer-wise scales, zeros — what zstd
/// and int8 see).
///
/// The probe is `min(gradient, 4 Mi)` floats; a call on the whole gradient is estimated as
/// the probe's time scaled by size (at ≥ 16 MB the ring is bandwidth-bound, and the
/// estimate is the same for every candidate, so it cannot change the order). Each rank times
/// each candidate (best of two calls after a warm-up); the ranks all-gather the times and
/// every rank takes the slowest rank's, so every rank makes the same choice. A lossy codec
/// must beat fp32 by `margin` to be chosen: it costs accuracy, however little.
public struct CodecProbe {
    public static let candidates = ["none", "bf16", "int8", "int8+zstd"]
    public static let probeValues = 4 << 20
    public static let margin = 0.10

    /// Estimated seconds per all-reduce of the whole gradient, per candidate (slowest rank).
    public let seconds: [String: Double]
    public let choice: String
    /// fp32 bus bandwidth of the probe, GB/s (2(n−1)/n · bytes / time): the link as the ring sees it.
    public let fp32BusGBps: Double
    public let probeValues: Int
    /// The all-reduce probed (fp32's name: the flat ring, or the hierarchical all-reduce).
    public let probedOn: String

    /// Collective: every rank calls it with its gradient buffer (left zeroed); `allReduce`
    /// builds the all-reduce that would run with a codec; `errorFeedback`: comm.error_feedback.
    static func run(on gradients: UnsafeMutableBufferPointer<Float>, transport: Transport, errorFeedback: Bool,
                    allReduce: (GradientCodec) -> AllReduce) throws -> CodecProbe {
        let n = transport.size
        let count = min(gradients.count, probeValues)
        guard n > 1, count > 0 else {
            return CodecProbe(seconds: ["none": 0], choice: "none", fp32BusGBps: 0, probeValues: count, probedOn: "no all-reduce (one rank)")
        }
        let probe = UnsafeMutableBufferPointer(rebasing: gradients[0 ..< count])
        let pristine = UnsafeMutableBufferPointer<Float>.allocate(capacity: count), residual = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { pristine.deallocate(); residual.deallocate(); gradients.update(repeating: 0) }
        GradientLikeData.fill(pristine, seed: 0x9_0BE, rank: transport.rank)
        var mine: [Double] = []
        for name in candidates {
            let codec = try CodecRegistry.make(name)
            let ring = allReduce(codec)
            residual.update(repeating: 0)
            var best = Double.infinity
            for call in 0 ..< 3 {
                _ = probe.update(fromContentsOf: pristine)
                try transport.barrier()
                let start = ContinuousClock.now
                try ring.average(probe, residual: errorFeedback && !codec.isIdentity ? residual : nil)
                if call > 0 { best = min(best, (ContinuousClock.now - start).seconds) }
            }
            mine.append(best)
        }
        let all = try RingAllGather.gather(mine, over: transport)
        let scale = Double(gradients.count) / Double(count)
        var seconds: [String: Double] = [:]
        for (i, name) in candidates.enumerated() {
            seconds[name] = (0 ..< n).map { all[$0 * candidates.count + i] }.max()! * scale
        }
        let fp32 = seconds["none"]!
        var choice = "none"
        for name in candidates.dropFirst() where seconds[name]! < (choice == "none" ? fp32 * (1 - margin) : seconds[choice]!) {
            choice = name
        }
        let bus = Double(count * 4) * 2 * Double(n - 1) / Double(n) / (fp32 / scale) / 1e9
        return CodecProbe(seconds: seconds, choice: choice, fp32BusGBps: bus, probeValues: count,
                          probedOn: allReduce(try CodecRegistry.make("none")).name)
    }

    /// One log line: each candidate's estimate and the choice.
    public var report: String {
        let times = Self.candidates.compactMap { name in seconds[name].map { "\(name) \(String(format: "%.2f", $0 * 1e3)) ms" } }.joined(separator: ", ")
        return "comm.codec auto: probe of \(probeValues) floats on \(probedOn), fp32 ring busbw \(String(format: "%.2f", fp32BusGBps)) GB/s; estimated all-reduce of the gradient: \(times) (slowest rank); chose \(choice)"
    }
}
