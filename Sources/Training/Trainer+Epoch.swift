import Collectives
import FileFormats
import Foundation
import NeuralNet

/// The epoch's running sums (loss, accuracy, timings) and the run's totals.
struct EpochAccumulator {
    var loss = 0.0, correct = 0, samples = 0
    var clock = StepClock(), runClock = StepClock()
    var startTime = ContinuousClock.now, startStep: Int
    var lastLR = 0.0
    var lastTestAccuracy = 0.0, lastTrainLoss: Double?
    /// The last evaluation's loss per label and (language models) perplexity.
    var lastTestLoss: Double?, lastPerplexity: Double?
    /// Evaluation time, excluded from training throughput (as the peer's steady figure and its
    /// curve exclude it; its `samples_per_second` does not, when it evaluates during training).
    var evalSeconds = 0.0
    /// Time spent writing checkpoints, excluded from the training time axis (curve.jsonl,
    /// `--target`): a resumed run continues from the clock its checkpoint recorded before it
    /// was written, so the run that wrote it must not count the writing either — else the two
    /// time axes disagree, and a resumed curve can run backwards.
    var checkpointSeconds = 0.0

    /// evalSeconds + checkpointSeconds when this epoch started.
    private var excludedAtStart = 0.0

    init(startStep: Int) { self.startStep = startStep }

    /// Seconds of training since the epoch started: evaluations and checkpoint writes inside
    /// it (`train.eval_every_steps`, `checkpoint.every_steps`) excluded, as `summary.json`'s
    /// throughput excludes them.
    var trainingSecondsThisEpoch: Double {
        (ContinuousClock.now - startTime).seconds - (evalSeconds + checkpointSeconds - excludedAtStart)
    }

    mutating func record(_ outcome: StepOutcome) {
        if outcome.applied {
            loss += outcome.loss * Double(outcome.samples)
            correct += outcome.correct
            samples += outcome.samples
        }
        clock.add(outcome.clock)
        lastLR = outcome.lr
    }

    /// Starts the next epoch at `step`, adding this one's timings to the run's.
    mutating func reset(at step: Int) {
        loss = 0; correct = 0; samples = 0
        closeRunClock()
        startTime = ContinuousClock.now
        excludedAtStart = evalSeconds + checkpointSeconds
        startStep = step
    }

    mutating func closeRunClock() {
        runClock.add(clock)
        clock = StepClock()
    }
}

/// The end of an epoch: global training metrics, test accuracy, `metrics.jsonl`, the log line.
extension Trainer {
    /// `evaluated`: the evaluation of this step has just run (the target's check).
    func closeEpoch(_ run: TrainingRun, _ epoch: inout EpochAccumulator, epochIndex: Int, step done: Int, evaluated: Bool = false) throws {
        let elapsed = epoch.trainingSecondsThisEpoch
        let sums = try RingAllGather.sum([epoch.loss, Double(epoch.correct), Double(epoch.samples)], over: transport)
        epoch.lastTrainLoss = sums[2] > 0 ? sums[0] / sums[2] : nil
        if !evaluated { try evaluate(run, &epoch) }
        let partial = done % run.stepsPerEpoch != 0 && done < run.totalSteps
        let samplesPerSecond = Double((done - epoch.startStep) * config.globalBatch) / max(elapsed, 1e-9)
        let labels = Double(run.train.labelsPerSample)
        let metrics = EpochMetrics(epoch: epochIndex + 1, from_step: epoch.startStep, step: done, partial: partial ? true : nil, lr: epoch.lastLR, train_loss: epoch.lastTrainLoss,
                                   train_accuracy: sums[2] > 0 ? sums[1] / (sums[2] * labels) : nil, test_accuracy: epoch.lastTestAccuracy,
                                   test_loss: epoch.lastTestLoss, perplexity: epoch.lastPerplexity,
                                   samples_per_second: samplesPerSecond, tokens_per_second: run.tokensPerSecond(samplesPerSecond),
                                   compute_seconds: epoch.clock.compute, comm_seconds: epoch.clock.comm,
                                   codec_seconds: epoch.clock.codec, comm_exposed_seconds: epoch.clock.exposed,
                                   comm_isolated_seconds: epoch.clock.isolated,
                                   comm_hidden_fraction: epoch.clock.hiddenFraction, skipped_steps: run.skipped)
        try Agreement.run("append to metrics.jsonl", over: transport) {
            guard let file = run.metrics else { return }
            try file.appendLine(try JSONEncoder.sorted.encode(metrics))
        }
        if transport.rank == 0 {
            if isTerminal { print("") }
            let trainLoss = metrics.train_loss.map { String(format: "%.4f", $0) } ?? "n/a"
            if run.isLanguageModel {
                log(String(format: "epoch %d/%d  step %d  train loss %@  val loss %.4f  perplexity %.2f  %.0f tokens/s  compute %.1fs comm %.1fs",
                           epochIndex + 1, run.epochs, done, trainLoss, epoch.lastTestLoss ?? .nan, epoch.lastPerplexity ?? .nan,
                           metrics.tokens_per_second ?? 0, epoch.clock.compute, epoch.clock.comm))
            } else {
                log(String(format: "epoch %d/%d  step %d  train loss %@  train acc %@  test acc %.4f  %.0f samples/s  compute %.1fs comm %.1fs",
                           epochIndex + 1, run.epochs, done, trainLoss, metrics.train_accuracy.map { String(format: "%.4f", $0) } ?? "n/a",
                           metrics.test_accuracy, metrics.samples_per_second, epoch.clock.compute, epoch.clock.comm))
            }
        }
        epoch.reset(at: done)
    }

    /// One line of `curve.jsonl`: the step, the training seconds so far (evaluations
    /// excluded, as the peer's `--eval-every-steps` counts them) and the last evaluation — a
    /// curve for time-to-target comparisons.
    func recordCurvePoint(_ run: TrainingRun, _ epoch: EpochAccumulator, step: Int) throws {
        let trainSeconds = trainingSeconds(run, epoch)
        let point = CurvePoint(step: step, train_seconds: trainSeconds, test_loss: epoch.lastTestLoss ?? 0,
                               test_accuracy: epoch.lastTestAccuracy, perplexity: epoch.lastPerplexity, bytes_sent: bytesSent(run, epoch))
        try Agreement.run("append to curve.jsonl", over: transport) {
            guard let file = run.curve else { return }
            try file.appendLine(try JSONEncoder.sorted.encode(point))
        }
        if transport.rank == 0 {
            if isTerminal { print("") }
            log(String(format: "step %d  %@  (%.1f s of training)", step,
                       epoch.lastPerplexity.map { String(format: "val loss %.4f  perplexity %.2f", epoch.lastTestLoss ?? .nan, $0) }
                           ?? String(format: "test loss %.4f  test acc %.4f", epoch.lastTestLoss ?? .nan, epoch.lastTestAccuracy), trainSeconds))
        }
    }

    /// Evaluates on the test (validation) set, sharded across ranks and reduced, into `epoch`'s
    /// last test figures; its time is excluded from training throughput.
    func evaluate(_ run: TrainingRun, _ epoch: inout EpochAccumulator) throws {
        transport.setActivity("the evaluation")
        let spanStart = ContinuousClock.now
        defer {
            run.recordSpan(.evaluate, since: spanStart)
            epoch.evalSeconds += (ContinuousClock.now - spanStart).seconds
        }
        try broadcastBuffers(run)
        let batch = max(1, min(config.evalBatch, run.model.reservedBatch))
        // Between outer steps (local SGD, DiLoCo) the model is θ_outer, which every rank agrees on.
        let result = try run.outer.map { outer in
            try outer.withSharedParameters(in: run.parameters.parameters) { try Evaluation.run(run.model, on: run.test, over: transport, batch: batch) }
        } ?? Evaluation.run(run.model, on: run.test, over: transport, batch: batch)
        (epoch.lastTestAccuracy, epoch.lastTestLoss, epoch.lastPerplexity) = (result.accuracy, result.loss, result.perplexity)
    }

    /// The progress line: a live `\r` line on a terminal, a log line every `train.log_every_steps` otherwise.
    func progress(_ run: TrainingRun, _ epoch: EpochAccumulator, step: Int) {
        let wall = (ContinuousClock.now - run.wallStart).seconds
        // To this run's end (--stop-after, --target's step once reached), not the configured one.
        let remaining = Double(run.endStep - step) * wall / Double(max(step - run.startStep, 1))
        let samplesPerSecond = Double((step - epoch.startStep) * config.globalBatch) / max(epoch.trainingSecondsThisEpoch, 1e-9)
        let rate = run.tokensPerSecond(samplesPerSecond).map { String(format: "%.0f tokens/s", $0) }
            ?? String(format: "%.0f samples/s", samplesPerSecond)
        let line = String(format: "epoch %d/%d  step %d/%d  loss %@  lr %.5f  %@  ETA %@",
                          (step - 1) / run.stepsPerEpoch + 1, run.epochs, step, run.totalSteps,
                          epoch.samples > 0 ? String(format: "%.4f", epoch.loss / Double(epoch.samples)) : "n/a",
                          epoch.lastLR, rate, formatDuration(remaining))
        if isTerminal {
            print("\r" + line, terminator: "")
            fflush(stdout)
        } else {
            log(line)
        }
    }
}
