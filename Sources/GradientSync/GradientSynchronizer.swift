import Collectives
import Foundation
import GradientCodecs
import NeuralNet
import Optimizers

/// The story of a gradient from backward to the optimizer: averaged across ranks, bucket by
/// bucket, while backward goes on.
///
/// Per step the trainer calls `beginStep`, `bucketReady` as backward completes each bucket of
/// the `BucketPlan`, `finishStep` before the optimizer, and `discardStep` when every rank skips
/// the step. Each bucket is averaged by the step's `BucketAverager` — the exact all-reduce
/// during `comm.warmup_steps`, PowerSGD from its start step, else the configured codec on the
/// all-reduce `AllReduceChoice` picked for the topology — with its slice of the
/// `ErrorFeedbackMemory`, carrying the momentum on compressed steps (`MomentumCarry`).
///
/// **Bit-identical with or without overlap.** Both paths make the same calls — one per
/// bucket, in the plan's order, on the same values — and only *when* differs: with
/// `comm.overlap` on the `CommunicationThread` as each bucket completes, without it on the
/// training thread after backward.
public final class GradientSynchronizer {
    public let transport: Transport
    public let settings: SyncSettings
    /// The buckets, in the order backward completes them.
    public let plan: BucketPlan
    let choice: AllReduceChoice
    let exact: BucketAverager
    var configured: BucketAverager
    /// Whether the configured averager keeps error feedback (a lossy codec with `comm.error_feedback`).
    var configuredKeepsErrors = false
    /// The configured codec's int8 base, reseeded every step (stochastic rounding); nil otherwise.
    var int8: Int8BlockCodec?
    public internal(set) var memory: ErrorFeedbackMemory?
    public let powerSGD: PowerSGD?
    private var carry = MomentumCarry()
    let thread: CommunicationThread?
    private var gradients: UnsafeMutableBufferPointer<Float>?
    private var step = 0, submitted = 0
    /// What the buckets being averaged are, for a timeout's message: a step's gradient, or an
    /// outer step's pseudo-gradient (`beginBuckets`). Set before the buckets are submitted.
    private var averaging = "the gradient all-reduce of step 0"
    /// The buckets `beginBuckets` started (nil: none in flight).
    private var partial: Range<Int>?
    let count: Int   // values the plan cuts: the gradient's length

    /// The codec the steps after the warm-up use (`comm.codec`, or what `auto` chose).
    public internal(set) var codecName = "none"
    public internal(set) var probe: CodecProbe?   // with comm.codec: auto, the probe that chose
    /// The last step: seconds of averaging (summed over buckets, from each bucket's start —
    /// waits for slower peers included), of codec work, and of the training thread waiting
    /// after backward ended (the part overlap did not hide); bytes this rank sent, where known.
    /// And what the step's averaging costs when nobody waits (`CommunicationCost`).
    public private(set) var lastSeconds = 0.0, lastCodecSeconds = 0.0, lastExposedSeconds = 0.0, lastIsolatedSeconds = 0.0
    public private(set) var lastBytesSent: Int?
    /// ‖averaged gradient‖² of the last step, summed bucket by bucket in the plan's order when
    /// every bucket's all-reduce took it on the way (our ring with a lossy codec), else nil:
    /// the trainer then needs no pass of its own for the norm. Identical on every rank. When
    /// the carry stayed on (`lastAverageCarried`) it is ‖ḡ + s·b‖², good for the non-finite
    /// check only (the trainer then does not clip).
    public private(set) var lastSquaredNorm: Double?
    var cost: CommunicationCost?
    /// The optimizer whose momentum rides in compressed all-reduces (`comm.compress_momentum`).
    public var momentumCarrier: MomentumCarrying? { get { carry.carrier } set { carry.carrier = newValue } }
    /// Set before a step: its optimizer takes the carried average as it is
    /// (`MomentumCarrying.takesCarriedAverage`), so the all-reduce leaves s·b on.
    public var carryStaysOn: Bool { get { carry.staysOn } set { carry.staysOn = newValue } }
    /// Whether the last step's average is of g + s·b (the carry left on), not of g.
    public private(set) var lastAverageCarried = false
    /// Where spans go (the trainer's timeline): each bucket's all-reduce, and the ring's phases.
    public var onSpan: ((SyncSpan, ContinuousClock.Instant, ContinuousClock.Instant) -> Void)? { didSet { connectPhases() } }
    /// Whether buckets are averaged on a thread of their own (the timeline's lane).
    public var averagesOnOwnThread: Bool { thread != nil }
    /// What the steps after the warm-up run, for the log.
    public var description: String {
        guard let powerSGD else { return configured.name }
        return "\(configured.name), PowerSGD rank \(powerSGD.settings.rank) on \(powerSGD.matrixCount) matrices (\(powerSGD.matrixValues) values) from step \(powerSGD.settings.startStep)"
    }

    /// `hosts`: the host split when the all-reduce is hierarchical; `views`: the parameters'
    /// names and shapes (PowerSGD's matrices). With `comm.codec: auto` the codec is fp32 until
    /// `chooseCodecIfAutomatic` (collective) has measured the candidates.
    public init(settings: SyncSettings, transport: Transport, plan: BucketPlan, hosts: HostSplit? = nil,
                views: [ParameterView] = []) throws {
        (self.settings, self.transport, self.plan) = (settings, transport, plan)
        let count = plan.buckets.map(\.upperBound).max() ?? 0
        self.count = count
        thread = settings.overlap ? CommunicationThread() : nil
        // PowerSGD's P and Q calls run on the flat ring (their buffers are not in shared memory).
        choice = try AllReduceChoice(transport: transport, hosts: settings.powerSGD == nil ? hosts : nil,
                                     segmentBytes: settings.segmentBytes, algorithm: settings.algorithm)
        exact = AllReduceBuckets(choice.exact)
        configured = exact
        powerSGD = try settings.powerSGD.map {
            try PowerSGD(views: views, plan: plan, settings: $0, transport: transport, codec: try CodecRegistry.make(settings.codec),
                         errorFeedback: settings.errorFeedback, segmentBytes: settings.segmentBytes, seed: settings.seed)
        }
        if settings.algorithm == .ring && settings.codec != "auto" { try use(codec: settings.codec) }
    }

    // Jobs still queued hold this synchronizer unowned: they finish (or fail, their failure
    // dropped: nobody is left to hear it) before the thread stops and this goes.
    deinit {
        try? thread?.waitForAll()
        thread?.stop()
    }

    /// Runs a collective `job` of the training thread in the place it would have among the
    /// buckets, and waits for it: with `comm.overlap`, after every bucket submitted before it —
    /// on the communication thread while buckets are in flight, in place once it is idle
    /// (`CommunicationThread.runAndWait`); directly otherwise. A synchronised batch norm's
    /// reductions, forward's and backward's, go through here: MPI is at THREAD_SERIALIZED, so
    /// the two threads must never call it at once, and every rank must make the same calls in
    /// the same order. A
    /// failure stays with the thread (later buckets are skipped); a step that fails calls
    /// `abandonStep`, which drains the thread before the job ends.
    public func runCollective(_ job: @escaping () throws -> Void) throws {
        guard let thread else {
            // Without the thread, its rule kept here: after a failure no collective of the
            // step is attempted (the one that failed may have left receives posted into the
            // scratch its successors share), and the failure is rethrown until the step ends.
            if let collectiveFailure { throw collectiveFailure }
            do { try job() } catch { collectiveFailure = error; throw error }
            return
        }
        try thread.runAndWait(job)
    }

    /// Without `comm.overlap`: the first failure of a training-thread collective this step
    /// (`runCollective`), as the communication thread keeps its own; reported by `finishStep`,
    /// dropped by `abandonStep`.
    private var collectiveFailure: Error?

    // MARK: - The step

    /// The averager of the current step, and whether the step is past the exact warm-up
    /// (`compressed`: the configured codec or PowerSGD runs, with error feedback and the
    /// momentum carry — the carry even with an identity codec, where it changes nothing but
    /// rounding).
    private var active: (averager: BucketAverager, compressed: Bool) {
        if step < settings.warmupSteps { return (exact, false) }
        if let powerSGD, step >= powerSGD.settings.startStep { return (powerSGD, true) }
        return (configured, true)
    }

    /// Starts step `step`'s averaging of `gradients` (the flat buffer the plan cuts).
    public func beginStep(_ step: Int, gradients: UnsafeMutableBufferPointer<Float>) {
        precondition(gradients.count == count, "the plan cuts this gradient")
        (self.gradients, self.step, submitted) = (gradients, step, 0)
        averaging = "the gradient all-reduce of step \(step)"
        (lastSeconds, lastCodecSeconds, lastBytesSent, lastSquaredNorm) = (0, 0, 0, 0)
        lastIsolatedSeconds = cost?.seconds(of: active.averager) ?? 0
        lastAverageCarried = active.compressed && carry.staysOn && carry.carries
    }

    /// Bucket `b`'s gradients are final: with overlap, its all-reduce starts now on the
    /// communication thread. Buckets must be reported in the plan's order.
    public func bucketReady(_ b: Int) {
        precondition(b == submitted, "buckets complete in the plan's order")
        submitted += 1
        if let thread { thread.submit { [unowned self] in try self.averageBucket(b) } }
    }

    /// Waits until every bucket is averaged (without overlap: averages them now, in order).
    public func finishStep() throws {
        precondition(submitted == plan.buckets.count, "every bucket reported before finishStep")
        let start = ContinuousClock.now
        if let thread { try thread.waitForAll() } else { try averageInPlace(plan.buckets.indices) }
        lastExposedSeconds = (ContinuousClock.now - start).seconds
    }

    /// Starts averaging only `buckets` of `values` (a streaming outer step's fragment: its Δ in
    /// a buffer of its own, so that local steps go on in the gradient buffer meanwhile). With
    /// `comm.overlap` the buckets go to the communication thread at once; without, they are
    /// averaged in `finishBuckets`. No other collective may run until `finishBuckets` returns.
    public func beginBuckets(_ step: Int, of values: UnsafeMutableBufferPointer<Float>, buckets: Range<Int>, what: String) {
        beginStep(step, gradients: values)
        averaging = what
        lastSquaredNorm = nil   // a fragment's Δ, not a step's gradient: no norm to hand the trainer
        lastAverageCarried = false
        (submitted, partial) = (buckets.lowerBound, buckets)
        for b in buckets { bucketReady(b) }
    }

    /// Waits until the buckets `beginBuckets` started are averaged.
    public func finishBuckets() throws {
        guard let buckets = partial else { return }
        partial = nil
        let start = ContinuousClock.now
        if let thread { try thread.waitForAll() } else { try averageInPlace(buckets) }
        lastExposedSeconds = (ContinuousClock.now - start).seconds
    }

    /// Ends a step whose backward failed part-way (a synchronised batch norm's collective):
    /// waits for the buckets already on the communication thread, whatever they throw, so that
    /// no collective is in flight when the job ends. Buckets never reported are not averaged.
    public func abandonStep() {
        try? thread?.waitForAll()
        collectiveFailure = nil
    }

    /// Without the communication thread: `buckets` averaged here, unless a collective of the
    /// step failed — that failure is then reported (and dropped), as `waitForAll` reports the
    /// thread's.
    private func averageInPlace(_ buckets: Range<Int>) throws {
        if let failure = collectiveFailure { collectiveFailure = nil; throw failure }
        for b in buckets { try averageBucket(b) }
    }

    /// Averages bucket `b` of the current step in place.
    private func averageBucket(_ b: Int) throws {
        let start = ContinuousClock.now
        let range = plan.buckets[b], values = gradients!
        let (averager, compressed) = active
        int8?.reseed(roundingSeed(bucket: b))
        powerSGD?.restCodec.int8Base?.reseed(roundingSeed(bucket: b))
        transport.setActivity("\(averaging) (bucket \(b) of \(plan.buckets.count))")
        let memory = compressed && keepsErrors(averager) ? self.memory : nil
        if compressed && averager.foldsCarry {
            try averager.average(bucket: b, range, of: values, memory: memory, carry: carry.addend(range))
        } else {
            if compressed { carry.add(1, to: values.baseAddress!, range) }
            try averager.average(bucket: b, range, of: values, memory: memory)
            // The carry stays on for an optimizer that steps from the carried average.
            if compressed && !carry.staysOn { carry.add(-1, to: values.baseAddress!, range) }
        }
        lastSquaredNorm = lastSquaredNorm.flatMap { sum in averager.lastSquaredSum.map { sum + $0 } }
        onSpan?(.allReduce(bucket: b), start, .now)
        lastBytesSent = lastBytesSent.flatMap { sent in averager.lastBytesSentIfKnown.map { sent + $0 } }
        lastCodecSeconds += averager.lastCodecSeconds
        lastSeconds += (ContinuousClock.now - start).seconds
    }

    /// Stochastic rounding draws from (seed, rank, step, bucket): resumable without state and
    /// the same whichever thread runs it. (Round-to-nearest never draws.)
    private func roundingSeed(bucket b: Int) -> UInt64 {
        settings.seed &+ UInt64(transport.rank) << 40 &+ UInt64(step) &* 0x9E37_79B9 &+ UInt64(b) &* 0xD1B5_4A32_D192_ED03
    }

    /// Every rank skips this step (its averaged gradient is not finite): clear what the
    /// non-finite values poisoned — the error-feedback memory, and PowerSGD's new Q's (the
    /// previous ones are put back; see `ErrorFeedbackMemory` and `PowerSGD`). `range`: the
    /// averaged values were those of this range alone (a streaming fragment's outer step), so
    /// only its memory was poisoned — the other fragments keep theirs.
    public func discardStep(range: Range<Int>? = nil) {
        memory?.clear(range)
        if let powerSGD, active.averager === powerSGD { powerSGD.discardStep() }
    }

}
