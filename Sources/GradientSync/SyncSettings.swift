// GradientSync — everything between backward and the optimizer.
//
// Owns: how the flat gradient is cut into buckets and averaged across ranks while backward
// runs (the communication thread), which all-reduce runs at a step (exact warm-up, the
// configured codec on the flat or hierarchical ring, MPI_Allreduce, PowerSGD), the choice of
// `comm.codec: auto`, the error-feedback memory, and the momentum carry. It sees a
// `Transport`, never MPI, datasets, the config file or the trainer: `Training` hands it
// `SyncSettings` and calls it once per bucket and step.

/// What the synchronizer is told by the run's config (`comm.*`, the seed): plain values, so
/// that this module needs no YAML and no trainer.
public struct SyncSettings {
    public enum Algorithm: String { case ring, mpi }

    /// `comm.algorithm`: our ring, or the transport's own all-reduce (fp32 only).
    public var algorithm = Algorithm.ring
    /// `comm.codec`: a `CodecRegistry` name, or "auto" (measured before the first step).
    public var codec = "none"
    /// `comm.error_feedback`: keep each encoding's error and add it to the next gradient.
    public var errorFeedback = false
    /// `comm.warmup_steps`: steps averaged exactly before the codec takes over.
    public var warmupSteps = 0
    /// `comm.segment_bytes` (nil: the ring's default for the codec).
    public var segmentBytes: Int?
    /// `comm.overlap`: average each bucket on the communication thread as backward completes it.
    public var overlap = true
    /// `comm.compressor: powersgd` and its settings; nil: off.
    public var powerSGD: PowerSGDSettings?
    /// The run's seed: stochastic rounding and PowerSGD's first Q draw from it.
    public var seed: UInt64 = 0

    public init() {}
}

/// `comm.powersgd.*`, PyTorch DDP's `PowerSGDState` settings — with our defaults, rank 4 from
/// step 10 (DDP's are rank 1 from iteration 1000: docs/configuration.md says why).
public struct PowerSGDSettings: Equatable {
    public var rank = 4
    /// Steps before this one are averaged by the codec's all-reduce (DDP's `start_powerSGD_iter`).
    public var startStep = 10
    /// A matrix n × m is compressed when n·m / ((n + m)·r) ≥ this.
    public var minCompressionRate = 2.0
    /// Error feedback for the compressed matrices (DDP: on).
    public var errorFeedback = true

    public init(rank: Int = 4, startStep: Int = 10, minCompressionRate: Double = 2.0, errorFeedback: Bool = true) {
        (self.rank, self.startStep, self.minCompressionRate, self.errorFeedback) = (rank, startStep, minCompressionRate, errorFeedback)
    }
}

/// A synchronizer that cannot be set up as asked: what and what to do, in one line.
public struct SyncSetupError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
