import Collectives
import FileFormats
import Foundation
import GradientSync
import NeuralNet
import Optimizers

/// Data-parallel training on every rank of a `Transport`.
///
/// ## The step (`Trainer+Step.swift`)
///
/// 1. forward and backward on this rank's B/n samples → the local mean-loss gradient;
/// 2. the `GradientSynchronizer` averages the flat gradient across ranks (ring all-reduce,
///    compressed by `comm.codec`);
/// 3. the global norm of the averaged gradient — identical on every rank — which both
///    detects non-finite values and clips (`train.clip_grad_norm`);
/// 4. the optimizer update with the schedule's learning rate (and momentum) for this step.
///
/// **Non-finite steps are skipped by all ranks together.** A rank whose loss is not finite
/// poisons its gradient with a NaN; NaN and ±Inf survive averaging, so every rank sees a
/// non-finite norm in the *same* averaged gradient and skips the same step: the all-reduce
/// itself is the all-reduced flag, and costs no extra message.
///
/// **Replicas are proven identical.** After a checkpoint is loaded, every
/// `consistency.check_every_steps` steps and at the end, ranks all-gather a 64-bit hash of
/// parameters and optimizer state; any difference stops the run on every rank, naming the step
/// and the ranks.
///
/// **No rank fails alone.** Whatever a rank checks on its own (its files, its arguments) goes
/// through `Agreement`, so that a failure anywhere is the same one-line error on every rank.
///
/// The run's pieces: setup (`Trainer+Setup.swift`), the step, the epoch's bookkeeping
/// (`Trainer+Epoch.swift`), checkpoints and replica checks (`Trainer+Checkpointing.swift`).
public final class Trainer {
    public let config: TrainingConfig
    public let transport: Transport
    public let runDirectory: String
    /// If set, rank 0 writes the last step's averaged gradient here (raw Float32, little-endian):
    /// real gradients for `bench allreduce --gradient`.
    public var gradientDumpPath: String?
    /// If set, spans of every rank go to this Chrome trace-event file (`Timeline`), written at the end.
    public var timelinePath: String?
    /// `train --init-from`: a safetensors file whose tensors replace the seeded initialisation.
    public var initFromPath: String?
    /// `train --target`: stop at the first evaluation that reaches it (`TrainingTarget`).
    public var target: TrainingTarget?
    /// Where the config came from, when a resume's refusal should say it (the default --config).
    public var configOrigin: String?
    /// `train --resume-if-present` (what `launch/elastic.sh` relaunches with): resume when any
    /// rank's run directory holds a checkpoint, start the run otherwise.
    public var resumeIfPresent = false
    /// The identity of the run to continue (RINGSGD_RUN_ID, which `launch/elastic.sh` chooses
    /// for a fresh run, or learns from a resumed first job's "run id" line): a resume then takes
    /// only this run's checkpoints, and a fresh start takes this identity.
    public var continuingRunID: UInt64?
    /// `train` listens for SIGUSR1 (`StopRequest`): the run then stops, with a checkpoint, at its
    /// next periodic checkpoint, replica check, evaluation or epoch end.
    public var stopRequest: StopRequest?
    /// Every this many steps rank 0 prints "ringsgd: at step N" (`launch/elastic.sh` sets
    /// RINGSGD_STEP_LINES to know how far a run got; 0: never).
    public var stepLines = 0
    let log: (String) -> Void
    let isTerminal: Bool

    public init(config: TrainingConfig, transport: Transport, runDirectory: String,
                isTerminal: Bool = false, log: @escaping (String) -> Void) {
        self.config = config
        self.transport = transport
        self.runDirectory = runDirectory
        self.isTerminal = isTerminal
        self.log = log
    }

    /// Trains to the configured end, or stops after global step `stopAfter` (with a
    /// checkpoint) as an interrupted job would; `resume` continues from the newest checkpoint;
    /// `overwrite` lets a fresh run replace an earlier run's checkpoints in the run directory.
    /// Returns nil when a resumed run had nothing left to do (its summary is kept).
    public func run(resume: Bool, stopAfter: Int? = nil, overwrite: Bool = false) throws -> RunSummary? {
        let run = try prepare(resume: resume, stopAfter: stopAfter, overwrite: overwrite)
        guard run.startStep < run.endStep else {
            if transport.rank == 0 {
                let reason = run.resumedAtItsTarget.map { "the run reached its target \($0) there" } ?? "this run ends at step \(run.endStep)"
                log("nothing left to do: the newest checkpoint is at step \(run.startStep) and \(reason); \(runDirectory)/summary.json is kept")
            }
            return nil
        }
        try startTimeline(run)
        // A checkpoint written at a step where a streaming fragment starts holds it not yet
        // started (the checkpoint comes first): it starts now, as it did in the run that wrote it.
        if run.startStep > 0 && run.outer?.inFlight == nil { startOuterSteps(run, after: run.startStep - 1) }
        run.wallStart = .now
        var epoch = EpochAccumulator(startStep: run.startStep)
        let summary: RunSummary
        do {
            for step in run.startStep ..< run.endStep {
                epoch.record(try trainStep(step, run))
                try afterStep(step, run, &epoch)
                if run.targetReached != nil || run.stoppedOnRequest { break }
            }
            summary = try finish(run, &epoch)
            try writeTimeline(run)
        } catch {
            // A job may still be running or queued on the communication thread (a streaming
            // fragment in flight, a bucket after a failed one), or a receive still posted into
            // the run's buffers (a collective past its deadline, the last outer step's drain or
            // the final broadcast of buffers among them): the run's memory must not be freed
            // under it. Waiting could hang (the failure may be a peer's), and the job ends on
            // this error, so the run is kept for the process's rest.
            AbandonedRuns.keep(run)
            throw error
        }
        // --stop-after (a time-boxed job): the run is not finished, and says how it goes on.
        if let stopAfter, run.endStep == stopAfter, run.endStep < run.totalSteps, run.targetReached == nil, !run.stoppedOnRequest,
           transport.rank == 0 {
            log("stopped at step \(run.endStep) of \(run.totalSteps) (--stop-after), with a checkpoint; 'train … --resume' continues")
        }
        if run.stoppedOnRequest && transport.rank == 0 {
            log("stopped at step \(run.endStep) on request (SIGUSR1), with a checkpoint; 'train … --resume' continues")
            // The dump is of the last step's gradient, which this run did not reach.
            if let gradientDumpPath { log("--dump-gradient \(gradientDumpPath): not written (the run stopped before its last step); the resumed run writes it when given --dump-gradient") }
        }
        return summary
    }

    /// Whether any rank has been asked to stop (`StopRequest`); collective, at periodic
    /// checkpoints, replica checks, evaluations and epoch ends.
    private func stopIsRequested() throws -> Bool {
        try RingAllGather.gather(UInt8(stopRequest?.isRequested == true ? 1 : 0), over: transport).contains(1)
    }

    /// `--timeline`: every rank starts its clock after a barrier (collective).
    private func startTimeline(_ run: TrainingRun) throws {
        guard timelinePath != nil else { return }
        let timeline = Timeline()
        timeline.layerNames = run.model.unitNames
        try timeline.start(over: transport)
        run.timeline = timeline
        let lane = run.synchronizer.averagesOnOwnThread ? timeline.communication : timeline.training
        run.synchronizer.onSpan = { span, from, to in
            switch span {
            case let .allReduce(bucket): timeline.record(.allReduce, bucket, from: from, to: to, on: lane)
            case let .phase(phase):
                let kind: Timeline.Kind = switch phase { case .encode: .encode; case .decode: .decode; case .reduce: .reduce; case .wait: .wait }
                timeline.record(kind, from: from, to: to, on: lane)
            }
        }
    }

    /// Rank 0 gathers every rank's spans and writes the trace (collective).
    private func writeTimeline(_ run: TrainingRun) throws {
        guard let timelinePath, let timeline = run.timeline else { return }
        try timeline.write(to: timelinePath, over: transport)
        if transport.rank == 0 { log("timeline: \(timelinePath) (open in https://ui.perfetto.dev or chrome://tracing)") }
    }

    /// Everything due after step `step`: the outer step (local SGD, DiLoCo), replica check,
    /// checkpoint, progress, epoch end, evaluation and the target.
    private func afterStep(_ step: Int, _ run: TrainingRun, _ epoch: inout EpochAccumulator) throws {
        let done = step + 1
        if done == run.startStep + Self.warmupSteps { run.steadyFrom = (done, trainingSeconds(run, epoch)) }
        let outerStepRan = try finishOuterSteps(run, after: step, &epoch)
        // Between outer steps the shared state (θ_outer) cannot have moved: the check that
        // matters is right after an outer step.
        let checkDue = config.checkEverySteps > 0 && (done % config.checkEverySteps == 0 || outerStepRan)
        // Not at the run's end (`--stop-after`, the last step): `finish` writes that checkpoint.
        let checkpointDue = config.checkpointEverySteps > 0 && done % config.checkpointEverySteps == 0 && done < run.endStep
        var closing = step % run.stepsPerEpoch == run.stepsPerEpoch - 1 || done == run.endStep
        let evaluationDue = config.evalEverySteps > 0 && (done % config.evalEverySteps == 0 || done == run.endStep)
        if checkDue || checkpointDue || closing || evaluationDue { try drainOuterStep(run, &epoch) }   // one collective at a time
        if checkDue { try checkReplicas(run, step: done) }
        // A stop request is agreed at checkpoints, replica checks, evaluations and epoch ends
        // (collectives already: one byte more), so that a run with rare or no periodic
        // checkpoints still stops within consistency.check_every_steps of the signal — SLURM's
        // warning before the time limit — and one with neither still stops at its next epoch end.
        let stopAgreed = (checkpointDue || checkDue || closing || evaluationDue) && done < run.endStep ? try stopIsRequested() : false
        if stopAgreed {
            run.endStep = done   // the checkpoint is the end's (finish)
            run.stoppedOnRequest = true
            closing = true       // the epoch's record so far, marked partial, as --stop-after writes it
        }
        if stepLines > 0 && transport.rank == 0 && done % stepLines == 0 { log("ringsgd: at step \(done)") }
        if transport.rank == 0 && (done % config.logEverySteps == 0 || isTerminal) { progress(run, epoch, step: done) }
        if closing { try closeEpoch(run, &epoch, epochIndex: step / run.stepsPerEpoch, step: done) }
        var evaluated = closing
        if evaluationDue && !closing { try evaluate(run, &epoch); evaluated = true }   // an epoch's end has just evaluated
        // Every evaluation is a point of the curve (with one), the epoch ends' too: the
        // evaluation that reaches --target may be an epoch end's, and it must be the curve's last.
        if evaluated && config.evalEverySteps > 0 { try recordCurvePoint(run, epoch, step: done) }
        if evaluated, let target, run.targetReached == nil,
           target.isReached(accuracy: epoch.lastTestAccuracy, loss: epoch.lastTestLoss, perplexity: epoch.lastPerplexity) {
            // The evaluation's figures are reduced over every rank: every rank stops here.
            run.targetReached = TargetReached(step: done, trainSeconds: trainingSeconds(run, epoch), bytesSent: bytesSent(run, epoch))
            run.endStep = done
            // A stop agreed at this same evaluation: the run is complete, not stopped to be
            // continued (a supervisor would relaunch it past its target).
            run.stoppedOnRequest = false
            if transport.rank == 0 {
                if isTerminal { print("") }
                log(String(format: "target %@ reached at step %d after %.1f s of training%@", target.description, done,
                           run.targetReached!.trainSeconds, run.targetReached!.bytesSent.map { String(format: " and %.1f MB sent per rank", $0 / 1e6) } ?? ""))
            }
            if !closing { try closeEpoch(run, &epoch, epochIndex: step / run.stepsPerEpoch, step: done, evaluated: true) }
        }
        // The periodic checkpoint comes after this step's epoch record, evaluation, curve point
        // and target check: a run resumed from it starts after them, so a crash between the
        // checkpoint and them must not lose them (a target reached at this step would be missed).
        // Not where the run ends here (a stop, the target): `finish` writes that checkpoint.
        if checkpointDue && done < run.endStep {
            let writing = ContinuousClock.now
            try saveCheckpoint(run, step: done, clock: (trainingSeconds(run, epoch), bytesSent(run, epoch)))
            epoch.checkpointSeconds += (ContinuousClock.now - writing).seconds
        }
        // Streaming: started last, behind every collective of this step, overlapped with the next local steps.
        if run.targetReached == nil { startOuterSteps(run, after: step) }
    }

    /// The steps `steady_samples_per_second` leaves out, as the peer's figure does.
    public static let warmupSteps = 10

    /// Seconds of training so far, evaluations and checkpoint writes excluded, continuing a
    /// resumed run's (the time axis of curve.jsonl and of `--target`).
    func trainingSeconds(_ run: TrainingRun, _ epoch: EpochAccumulator) -> Double {
        run.curveSecondsBefore + (ContinuousClock.now - run.wallStart).seconds - epoch.evalSeconds - epoch.checkpointSeconds
    }

    /// Bytes this rank has sent in all-reduces so far, continuing a resumed run's when its
    /// curve.jsonl said (nil: unknown).
    func bytesSent(_ run: TrainingRun, _ epoch: EpochAccumulator) -> Double? {
        guard let before = run.bytesSentBefore, let mine = epoch.runClock.wireBytes, let open = epoch.clock.wireBytes else { return nil }
        return before + mine + open
    }

    /// The last replica check, the final checkpoint and `summary.json`.
    private func finish(_ run: TrainingRun, _ epoch: inout EpochAccumulator) throws -> RunSummary {
        try drainOuterStep(run, &epoch)
        epoch.closeRunClock()   // steps after the last epoch boundary (none unless stopped early)
        // Stopped at the target between outer steps: the run ends on the θ_outer it evaluated.
        // A fragment in flight is dropped with it (the checkpoint then holds none).
        if run.targetReached != nil, let outer = run.outer, outer.started {
            outer.inFlight = nil
            if !outer.inSync { outer.resetAll(run.parameters.parameters) }
        }
        let wall = (ContinuousClock.now - run.wallStart).seconds, trained = trainingSeconds(run, epoch)
        let hash = try checkReplicas(run, step: run.endStep)
        try saveCheckpoint(run, step: run.endStep, clock: (trainingSeconds(run, epoch), bytesSent(run, epoch)), wait: true)
        let rss = try RingAllGather.gather(peakResidentMegabytes(), over: transport).max() ?? 0
        let samplesPerSecond = Double((run.endStep - run.startStep) * config.globalBatch) / max(wall - epoch.evalSeconds - epoch.checkpointSeconds, 1e-9)
        let steady = run.endStep - run.startStep > 2 * Self.warmupSteps
            ? run.steadyFrom.map { Double((run.endStep - $0.step) * config.globalBatch) / max(trained - $0.seconds, 1e-9) } : samplesPerSecond
        let summary = RunSummary(test_accuracy: epoch.lastTestAccuracy, test_loss: epoch.lastTestLoss, perplexity: epoch.lastPerplexity,
                                 samples_per_second: samplesPerSecond,
                                 tokens_per_second: run.tokensPerSecond(samplesPerSecond), steady_samples_per_second: steady,
                                 steady_tokens_per_second: steady.flatMap(run.tokensPerSecond),
                                 steps: run.endStep, global_batch: config.globalBatch, wall_seconds: wall, skipped_steps: run.skipped,
                                 param_hash: String(format: "%016llx", hash), peak_rss_mb: rss, world_size: transport.size,
                                 codec: run.synchronizer.codecName, train_loss: epoch.lastTrainLoss, compute_seconds: epoch.runClock.compute,
                                 comm_seconds: epoch.runClock.comm, codec_seconds: epoch.runClock.codec,
                                 comm_exposed_seconds: epoch.runClock.exposed, comm_isolated_seconds: epoch.runClock.isolated,
                                 comm_hidden_fraction: epoch.runClock.hiddenFraction,
                                 resumed_from_step: run.startStep,
                                 wire_bytes_per_step: epoch.runClock.wireBytes.map { $0 / Double(max(1, run.endStep - run.startStep)) },
                                 config_changes_on_resume: run.configChanges.isEmpty ? nil : run.configChanges,
                                 bytes_sent: bytesSent(run, epoch), sync: config.syncMode, outer_steps: run.outer?.steps,
                                 locally_skipped_steps: run.outer.map { _ in run.locallySkipped },
                                 target: target?.description, target_step: run.targetReached?.step,
                                 time_to_target_seconds: run.targetReached?.trainSeconds, bytes_to_target: run.targetReached?.bytesSent ?? nil,
                                 blas_kernels: BLASKernels.coreName)
        try Agreement.run("write summary.json", over: transport) {
            guard transport.rank == 0 else { return }
            try FileSystem.writeAtomically(Array(try JSONEncoder.sorted.encode(summary)),
                                           to: (runDirectory as NSString).appendingPathComponent("summary.json"), what: "summary")
        }
        return summary
    }
}

/// Seconds spent per kind of work.
struct StepClock {
    /// Forward and backward; averaging (summed over buckets, from each bucket's start: waits
    /// for slower peers included); codec work; the wait for averaging after backward ended
    /// (the part overlap did not hide); what the averaging costs when nobody waits
    /// (`CommunicationCost`).
    var compute = 0.0, comm = 0.0, codec = 0.0, exposed = 0.0, isolated = 0.0
    /// Bytes sent by the all-reduce (nil once any step's count was unknown).
    var wireBytes: Double? = 0

    mutating func add(_ other: StepClock) {
        compute += other.compute; comm += other.comm; codec += other.codec; exposed += other.exposed; isolated += other.isolated
        wireBytes = wireBytes.flatMap { mine in other.wireBytes.map { mine + $0 } }
    }

    /// 1 − exposed / the cost of averaging when nobody waits, in [0, 1] (0 without communication).
    var hiddenFraction: Double { isolated > 0 ? min(1, max(0, 1 - exposed / isolated)) : 0 }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : "\(s / 60)m\(String(format: "%02d", s % 60))s"
}

/// Peak resident set size of this process in MiB (getrusage's ru_maxrss is in KiB on Linux);
/// `peak_rss_mb` and "MB" in the done line, as the peer's `peak_rss_mb_per_process`.
func peakResidentMegabytes() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_maxrss) / 1024
}


/// Runs a failure ended while the communication thread may still use their buffers (`Trainer.run`).
enum AbandonedRuns {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var runs: [TrainingRun] = []

    static func keep(_ run: TrainingRun) {
        lock.lock()
        runs.append(run)
        lock.unlock()
    }
}
