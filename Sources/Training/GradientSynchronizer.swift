import Collectives
import Foundation
import GradientCodecs
import NeuralNet
import Optimizers

/// Everything between backward and the optimizer: averaging the flat gradient across ranks.
///
/// It owns which all-reduce runs at a step (fp32 during `comm.warmup_steps`, then the
/// configured codec), the bucket plan and the communication thread that averages buckets
/// while backward runs (`comm.overlap`), the codec's per-bucket seeding, the error-feedback
/// memory and how that memory is checkpointed and restored, and the time the averaging took.
/// Per step the trainer calls `beginStep`, `bucketReady` as backward completes each bucket,
/// `finishStep` before the optimizer, and `discardStep` when every rank skips the step.
///
/// **Bit-identical with or without overlap.** Both paths make the same all-reduce calls —
/// one per bucket, in the plan's order, on the same values — and only *when* they run
/// differs: with overlap on the communication thread as each bucket completes, without it on
/// the training thread after backward.
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
    /// The buckets, in the order backward completes them.
    public let plan: BucketPlan
    private let thread: CommunicationThread?
    private var gradients: UnsafeMutableBufferPointer<Float>?
    private var step = 0, submitted = 0

    /// The codec the steps after the warm-up use (`comm.codec`, or what `auto` chose).
    public private(set) var codecName: String
    /// Where spans go (`train --timeline`); nil records nothing.
    public var timeline: Timeline? { didSet { connectTimeline() } }
    /// With `comm.codec: auto`, the probe that chose the codec (after `chooseCodecIfAutomatic`).
    public private(set) var probe: CodecProbe?
    /// The last step's seconds of averaging (communication + codec, summed over buckets), of
    /// codec work alone, and of the training thread waiting for communication after backward
    /// ended (the part overlap did not hide).
    public private(set) var lastSeconds = 0.0, lastCodecSeconds = 0.0, lastExposedSeconds = 0.0
    /// Bytes this rank sent in the last step (after compression), where known.
    public private(set) var lastBytesSent: Int?
    /// With `comm.compress_momentum`, the optimizer whose momentum rides in the compressed
    /// all-reduce (see `MomentumCarrying`); nil averages plain gradients.
    public weak var momentumCarrier: MomentumCarrying?
    /// What the steps after the warm-up run, for the log.
    public var description: String { configured.name }

    /// Local: builds the all-reduces. With `comm.codec: auto` the codec is fp32 until
    /// `chooseCodecIfAutomatic` (collective) has measured the candidates.
    /// The host split when the all-reduce is hierarchical (`comm.topology: auto`).
    private let hosts: HostSplit?

    /// `comm.compressor: powersgd`: the low-rank all-reduce of the large matrices, from its
    /// start step on. Its state (Q's, the vectors' EF memory) follows the gradient-sized EF
    /// memory in `residual`, so the checkpoint saves and restores both as one buffer.
    private let powerSGD: PowerSGD?

    public init(config: TrainingConfig, transport: Transport, plan: BucketPlan, hosts: HostSplit? = nil,
                views: [ParameterView] = []) throws {
        self.config = config
        self.transport = transport
        self.plan = plan
        self.hosts = hosts
        self.count = plan.buckets.map(\.upperBound).max() ?? 0
        thread = config.overlap ? CommunicationThread() : nil
        segmentBytes = config.segmentBytes > 0 ? config.segmentBytes : nil
        fp32Ring = RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        exact = config.allReduceAlgorithm == "mpi" ? try Self.native(transport)
            : hosts.map { HierarchicalAllReduce(world: transport, split: $0, segmentBytes: config.segmentBytes > 0 ? config.segmentBytes : nil) as AllReduce } ?? fp32Ring
        configured = exact
        codecName = "none"
        powerSGD = config.compressor == "powersgd"
            ? try PowerSGD(views: views, count: count, rank: config.powerSGDRank, minCompressionRate: config.powerSGDMinCompressionRate,
                           transport: transport, codec: try CodecRegistry.make(config.codec), segmentBytes: segmentBytes)
            : nil
        if config.allReduceAlgorithm == "ring" && config.codec != "auto" { try use(codec: config.codec) }
    }

    /// Whether this step runs PowerSGD (after `comm.powersgd.start_step`).
    private var powerSGDActive: Bool { powerSGD != nil && step >= config.powerSGDStartStep }

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
        if let hosts {
            configured = codec.isIdentity ? exact : HierarchicalAllReduce(world: transport, split: hosts, codec: codec, segmentBytes: segmentBytes)
        } else {
            configured = codec.isIdentity ? fp32Ring : RingAllReduce(transport: transport, codec: codec, segmentBytes: segmentBytes)
        }
        residual?.deallocate()
        residual = nil
        connectTimeline()
        if let powerSGD {
            residual = .allocate(capacity: count + powerSGD.stateCount)
            residual!.initialize(repeating: 0)
            PowerSGD.initialize(UnsafeMutableBufferPointer(rebasing: residual![count ..< count + powerSGD.qCount]), seed: config.seed)
        } else if config.errorFeedback && !codec.isIdentity {
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

    deinit {
        thread?.stop()
        residual?.deallocate()
    }

    // MARK: - The step

    /// Starts step `step`'s averaging of `gradients` (the flat buffer the plan cuts).
    public func beginStep(_ step: Int, gradients: UnsafeMutableBufferPointer<Float>) {
        precondition(gradients.count == count)
        self.gradients = gradients
        self.step = step
        submitted = 0
        lastSeconds = 0
        lastCodecSeconds = 0
        lastBytesSent = 0
    }

    /// Bucket `b`'s gradients are final: with overlap, its all-reduce starts now on the
    /// communication thread. Buckets must be reported in the plan's order.
    public func bucketReady(_ b: Int) {
        precondition(b == submitted, "buckets complete in the plan's order")
        submitted += 1
        if powerSGDActive { return }   // PowerSGD needs every matrix: it runs in finishStep
        if let thread { thread.submit { [unowned self] in try self.averageBucket(b) } }
    }

    /// Waits until every bucket is averaged (without overlap: averages them now, in order).
    public func finishStep() throws {
        precondition(submitted == plan.buckets.count, "every bucket reported before finishStep")
        let start = ContinuousClock.now
        if let powerSGD, powerSGDActive {
            let memory = residual!
            powerSGD.restCodec.int8Base?.reseed(roundingSeed(bucket: 0))
            transport.setActivity("the PowerSGD all-reduce of step \(step)")
            try powerSGD.average(gradients!, residual: config.powerSGDErrorFeedback ? UnsafeMutableBufferPointer(rebasing: memory[0 ..< count]) : nil,
                                 state: UnsafeMutableBufferPointer(rebasing: memory[count...]), restErrorFeedback: config.errorFeedback)
            lastBytesSent = powerSGD.lastBytesSent
            lastCodecSeconds = powerSGD.lastCodecSeconds
            lastSeconds = (ContinuousClock.now - start).seconds
        } else if let thread {
            try thread.waitForAll()
        } else {
            for b in plan.buckets.indices { try averageBucket(b) }
        }
        lastExposedSeconds = (ContinuousClock.now - start).seconds
    }

    /// Averages bucket `b` of the current step in place, with its slice of the EF memory.
    private func averageBucket(_ b: Int) throws {
        let start = ContinuousClock.now
        let range = plan.buckets[b]
        let values = UnsafeMutableBufferPointer(rebasing: gradients![range])
        let active = step < config.uncompressedWarmupSteps ? exact : configured
        int8?.reseed(roundingSeed(bucket: b))
        transport.setActivity("the gradient all-reduce of step \(step) (bucket \(b) of \(plan.buckets.count))")
        let memory = active === configured && (powerSGD == nil || config.errorFeedback) ? residual.map { UnsafeMutableBufferPointer(rebasing: $0[range]) } : nil
        // Compressed steps with comm.compress_momentum average g + s·b (the next momentum) and
        // take s·b back off: the optimizer still receives an averaged gradient.
        let carry = active === configured ? momentumCarrier?.momentumCarry : nil
        let carried = carry.map { UnsafePointer($0.buffer.baseAddress! + range.lowerBound) }
        if let carry, let carried { FloatKernels.add(carried, times: carry.scale, into: values.baseAddress!, count: values.count) }
        try active.average(values, residual: memory)
        if let carry, let carried { FloatKernels.add(carried, times: -carry.scale, into: values.baseAddress!, count: values.count) }
        if let timeline { timeline.record(.allReduce, b, from: start, to: .now, on: timelineLane(timeline)) }
        lastBytesSent = lastBytesSent.flatMap { sent in active.lastBytesSentIfKnown.map { sent + $0 } }
        lastCodecSeconds += active.lastCodecSeconds
        lastSeconds += (ContinuousClock.now - start).seconds
    }

    /// Stochastic rounding draws from (seed, rank, step, bucket): resumable without state and
    /// the same whichever thread runs it. (Round-to-nearest never draws.)
    private func roundingSeed(bucket b: Int) -> UInt64 {
        config.seed &+ UInt64(transport.rank) << 40 &+ UInt64(step) &* 0x9E37_79B9 &+ UInt64(b) &* 0xD1B5_4A32_D192_ED03
    }

    /// Spans go on the lane of the thread that runs the all-reduces.
    private func timelineLane(_ timeline: Timeline) -> Timeline.Lane {
        thread != nil ? timeline.communication : timeline.training
    }

    /// Points the all-reduces' per-segment phases at the timeline (once, not per call).
    private func connectTimeline() {
        guard let timeline else { return }
        let lane = timelineLane(timeline)
        let onPhase: (RingAllReduce.Phase, ContinuousClock.Instant, ContinuousClock.Instant) -> Void = { phase, from, to in
            let kind: Timeline.Kind = switch phase { case .encode: .encode; case .decode: .decode; case .reduce: .reduce; case .wait: .wait }
            timeline.record(kind, from: from, to: to, on: lane)
        }
        for allReduce in [configured, exact] {
            (allReduce as? RingAllReduce)?.onPhase = onPhase
            (allReduce as? HierarchicalAllReduce)?.onPhase = onPhase
        }
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
