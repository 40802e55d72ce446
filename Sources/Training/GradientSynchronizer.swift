import Collectives
import Foundation
import GradientCodecs

/// Everything between backward and the optimizer: averaging the flat gradient across ranks.
///
/// It owns which all-reduce runs at a step (fp32 during `comm.warmup_steps`, then the
/// configured codec), the codec's per-step seeding, the error-feedback memory and how that
/// memory is checkpointed and restored, and the time the averaging took. The trainer calls
/// `average` once per step and `discardStep` when every rank skips a step.
///
/// **Error feedback** (EF-SGD, Karimireddy et al. 2019; see `RingAllReduce`): each rank keeps
/// the error of every encoding it performs and adds it to its next gradient. On a skipped
/// (non-finite) step the memory is cleared on every rank: the codecs record NaN errors for a
/// non-finite input, and adding those back would make every later step non-finite too. The
/// memory holds at most one step's compression error, so clearing it loses no more than that;
/// restoring the previous memory exactly would cost a copy of the whole residual every step.
public final class GradientSynchronizer {
    public let transport: Transport
    let config: TrainingConfig
    private let count: Int
    /// The all-reduce of the steps after the warm-up (the ring with the configured codec, or
    /// MPI_Allreduce with `comm.algorithm: mpi`), and the exact one of the warm-up steps.
    private var configured: AllReduce
    private let exact: AllReduce
    /// The ring's int8 codec, reseeded every step (stochastic rounding); nil for other codecs.
    private var int8: Int8BlockCodec?
    /// This rank's error-feedback memory; nil when error feedback is off or the codec is exact.
    private var residual: UnsafeMutableBufferPointer<Float>?
    /// The fp32 ring for collective sums of checkpointed state (residuals).
    private let fp32Ring: RingAllReduce
    private let segmentBytes: Int?

    /// The codec the steps after the warm-up use (`comm.codec`, or what `auto` chose).
    public private(set) var codecName: String
    /// With `comm.codec: auto`, the probe that chose the codec (after `chooseCodecIfAutomatic`).
    public private(set) var probe: CodecProbe?
    /// Seconds the last `average` spent in all (communication + codec) and in codec work alone.
    public private(set) var lastSeconds = 0.0, lastCodecSeconds = 0.0
    /// Bytes this rank sent in the last `average` (after compression), where known.
    public private(set) var lastBytesSent: Int?
    /// What the steps after the warm-up run, for the log.
    public var description: String { configured.name }

    /// Local: builds the all-reduces. With `comm.codec: auto` the codec is fp32 until
    /// `chooseCodecIfAutomatic` (collective) has measured the candidates.
    public init(config: TrainingConfig, transport: Transport, count: Int) throws {
        self.config = config
        self.transport = transport
        self.count = count
        segmentBytes = config.segmentBytes > 0 ? config.segmentBytes : nil
        fp32Ring = RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        exact = config.allReduceAlgorithm == "mpi" ? try Self.native(transport) : fp32Ring
        configured = exact
        codecName = "none"
        if config.allReduceAlgorithm == "ring" && config.codec != "auto" { try use(codec: config.codec) }
    }

    private static func native(_ transport: Transport) throws -> AllReduce {
        guard let native = TransportAllReduce(transport: transport) else {
            throw ConfigError("comm.algorithm: mpi needs the MPI transport; this transport has no all-reduce of its own")
        }
        return native
    }

    /// Makes `name` the codec of the steps after the warm-up, with a fresh error-feedback memory.
    private func use(codec name: String) throws {
        let codec = try CodecRegistry.make(name)
        codecName = name
        int8 = codec.int8Base
        configured = codec.isIdentity ? fp32Ring : RingAllReduce(transport: transport, codec: codec, segmentBytes: segmentBytes)
        residual?.deallocate()
        residual = nil
        if config.errorFeedback && !codec.isIdentity {
            residual = .allocate(capacity: count)
            residual!.initialize(repeating: 0)
        }
    }

    /// `comm.codec: auto`: measures the candidates on `gradients` (left zeroed) and uses the
    /// fastest on every rank (see `CodecProbe`). Collective; does nothing for a fixed codec.
    public func chooseCodecIfAutomatic(probing gradients: UnsafeMutableBufferPointer<Float>) throws {
        guard config.codec == "auto" else { return }
        let probe = try CodecProbe.run(on: gradients, transport: transport, segmentBytes: segmentBytes)
        try use(codec: probe.choice)
        self.probe = probe
    }

    deinit { residual?.deallocate() }

    /// Averages `gradients` in place across all ranks for global step `step`.
    public func average(_ gradients: UnsafeMutableBufferPointer<Float>, step: Int) throws {
        let start = ContinuousClock.now
        let active = step < config.uncompressedWarmupSteps ? exact : configured
        // Stochastic rounding draws from (seed, rank, step): resumable without state.
        // (Round-to-nearest int8 never draws, so reseeding it changes nothing.)
        int8?.reseed(config.seed &+ UInt64(transport.rank) << 40 &+ UInt64(step) &* 0x9E37_79B9)
        try active.average(gradients, residual: active === configured ? residual : nil)
        lastBytesSent = active.lastBytesSentIfKnown
        lastCodecSeconds = active.lastCodecSeconds
        lastSeconds = (ContinuousClock.now - start).seconds
    }

    /// Every rank skips this step (its averaged gradient is not finite): clear the
    /// error-feedback memory (see the type's comment for why).
    public func discardStep() {
        residual?.update(repeating: 0)
    }

    // MARK: - Checkpointed state

    /// The sum over ranks of the error-feedback memory — what EF preserves, and what a run
    /// resumed on another number of ranks re-shards — or nil without error feedback.
    /// Collective: every rank calls it.
    public func residualSum() throws -> [Float]? {
        guard let residual else { return nil }
        var values = Array(residual)
        try fp32Ring.average(&values)   // the fp32 ring's average times n
        let n = Float(transport.size)
        for i in values.indices { values[i] *= n }
        return values
    }

    /// Writes this rank's own memory beside the checkpoint of `step` (exact resume on the
    /// same ranks).
    public func writeOwnResidual(to store: CheckpointStore, step: Int) throws {
        guard let residual else { return }
        try store.writeResidual(UnsafeBufferPointer(residual), step: step, rank: transport.rank)
    }

    /// Restores the memory: this rank's own file when the world size is unchanged, otherwise
    /// an equal share of the checkpoint's sum (re-sharded). Returns a warning, if any.
    public func restore(from checkpoint: Checkpoint, store: CheckpointStore) -> String? {
        guard let residual else { return nil }
        let rank = transport.rank, n = transport.size
        if checkpoint.worldSize == n, let mine = store.loadResidual(step: checkpoint.step, rank: rank), mine.count == residual.count {
            _ = residual.update(fromContentsOf: mine)
            return nil
        }
        guard let sum = checkpoint.residualSum, sum.count == residual.count else {
            residual.update(repeating: 0)
            return "rank \(rank): the checkpoint holds no error-feedback memory; it restarts from zero"
        }
        for i in 0 ..< residual.count { residual[i] = sum[i] / Float(n) }
        return checkpoint.worldSize == n
            ? "rank \(rank): its own error-feedback file for step \(checkpoint.step) is missing; it takes an equal share of the checkpoint's sum"
            : nil
    }
}
