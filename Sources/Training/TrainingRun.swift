import Collectives
import Datasets
import FileFormats
import Foundation
import GradientSync
import ModelFiles
import NeuralNet
import Optimizers

/// Everything a run holds from setup to the end: data, model, optimizer, schedule, the
/// gradient synchronizer, where it starts and ends, and the per-step buffers. Built once by
/// `Trainer.prepare`; the step and the bookkeeping read it.
final class TrainingRun {
    let train: Dataset, test: Dataset
    let model: Model
    let sampler: DistributedSampler
    let optimizer: Optimizer
    let schedule: LearningRateSchedule
    let synchronizer: GradientSynchronizer
    /// `comm.sync: local_sgd | diloco`: θ_outer and the outer optimizer (nil: every step).
    let outer: OuterSynchronizer?
    let config: TrainingConfig
    let store: CheckpointStore
    /// `metrics.jsonl`, open on rank 0 only.
    let metrics: AppendOnlyFile?
    /// `curve.jsonl` (`train.eval_every_steps`), open on rank 0 only, and the training seconds
    /// of the run this one resumes (its curve's time axis continues from there).
    var curve: AppendOnlyFile?
    var curveSecondsBefore = 0.0
    /// Bytes this rank sent before the run this one resumes (from curve.jsonl; nil: unknown).
    var bytesSentBefore: Double? = 0

    let stepsPerEpoch: Int, totalSteps: Int, epochs: Int
    /// Whether the schedule counts epochs rather than steps.
    let perEpoch: Bool
    /// First step this process runs, and the step after its last (earlier when `--target` is reached).
    let startStep: Int
    var endStep: Int
    /// Non-finite steps skipped so far by every rank together (checkpointed).
    var skipped: Int
    /// Local steps (`comm.sync: local_sgd | diloco`) this rank skipped on its own (non-finite
    /// local gradient); not checkpointed.
    var locallySkipped = 0
    /// The step and training seconds where steady-state throughput starts counting
    /// (`RunSummary.steady_samples_per_second`).
    var steadyFrom: (step: Int, seconds: Double)?
    /// `--target`: when it was reached (nil: not yet, or no target).
    var targetReached: TargetReached?
    /// The resumed checkpoint's run had already reached this same `--target` and stopped there:
    /// nothing is left to do (nil otherwise).
    var resumedAtItsTarget: String?
    /// Keys that differ from the resumed checkpoint's config ("key: old → new").
    let configChanges: [String]
    /// When the first step starts (set again by `Trainer.run` just before it, so that setup —
    /// a resume's replica check, reserving buffers, the timeline's barrier — is not counted as
    /// training, as the peer starts its clock after its set-up).
    var wallStart = ContinuousClock.now
    /// `train --timeline`: spans of this run (nil: not recorded).
    var timeline: Timeline?
    /// Whether this rank writes the checkpoint (`checkpoint.replicate`), and the writer
    /// thread that writes this rank's files (`checkpoint.async`).
    var writesCheckpoint = true
    let checkpointWriter = CheckpointWriter()
    /// Stopped, with a checkpoint, because a rank was asked to (SIGUSR1: `launch/elastic.sh`
    /// grows the job; SLURM's warning before the time limit).
    var stoppedOnRequest = false
    /// This run's identity (`Checkpoint.runID`): chosen at a fresh start, kept by a resume.
    var runID: UInt64 = 0

    /// This rank's batch, filled each step (allocated once).
    let input: UnsafeMutableBufferPointer<Float>, labels: UnsafeMutableBufferPointer<Int32>
    /// Micro-batches per step (`train.accumulate_steps`), their size, and the sum of the
    /// earlier micro-batches' gradients (allocated only when there are several).
    let microBatches: Int, microBatch: Int
    let accumulated: UnsafeMutableBufferPointer<Float>?
    /// The model's buffers (batch norms' running statistics) as they were before the step's
    /// forward, which updates them: a skipped step puts them back (`Trainer.trainStep`).
    var buffersBeforeStep: [Float]
    /// `model.batchnorm: local`'s per-step average of the buffers: the Doubles it sums and the
    /// memory the ranks' values are gathered into, made at its first step (`Trainer.averageBuffers`).
    var bufferAverage: (sums: UnsafeMutableBufferPointer<Double>, scratch: RingAllGather.SumScratch)?
    private var order: [Int] = [], orderEpoch = -1

    var parameters: FlatParameters { model.parameters }
    /// Whether every position of a sample is labelled (a language model): throughput is then
    /// also reported in tokens per second and the evaluation as a validation loss.
    var isLanguageModel: Bool { train.labelsPerSample > 1 }
    /// A language model's tokens per second at `samplesPerSecond` windows per second; nil otherwise.
    func tokensPerSecond(_ samplesPerSecond: Double) -> Double? {
        isLanguageModel ? samplesPerSecond * Double(train.labelsPerSample) : nil
    }

    /// What the checkpoints' parameters are the parameters of (written with each checkpoint).
    var modelDescription: ModelDescription {
        ModelDescription(model: model, layers: config.gpt == nil ? config.modelSpec.expanded : [],
                         normalization: (train as? ArrayDataset)?.normalization)
    }

    init(train: Dataset, test: Dataset, model: Model, sampler: DistributedSampler, optimizer: Optimizer,
         schedule: LearningRateSchedule, synchronizer: GradientSynchronizer, outer: OuterSynchronizer?, config: TrainingConfig, store: CheckpointStore, metrics: AppendOnlyFile?,
         totalSteps: Int, perEpoch: Bool, startStep: Int, endStep: Int, skipped: Int, configChanges: [String]) {
        (self.train, self.test, self.model, self.sampler, self.optimizer) = (train, test, model, sampler, optimizer)
        (self.schedule, self.synchronizer, self.outer, self.config, self.store, self.metrics) = (schedule, synchronizer, outer, config, store, metrics)
        stepsPerEpoch = sampler.stepsPerEpoch
        self.totalSteps = totalSteps
        epochs = (totalSteps + stepsPerEpoch - 1) / stepsPerEpoch
        (self.perEpoch, self.startStep, self.endStep, self.skipped, self.configChanges) = (perEpoch, startStep, endStep, skipped, configChanges)
        input = .allocate(capacity: sampler.localBatch * train.inputSize)
        labels = .allocate(capacity: sampler.localBatch * train.labelsPerSample)
        microBatches = config.accumulateSteps
        microBatch = sampler.localBatch / microBatches
        accumulated = microBatches > 1 ? .allocate(capacity: model.parameters.count) : nil
        buffersBeforeStep = Array(repeating: 0, count: model.parameters.buffers.count)
    }

    deinit { input.deallocate(); labels.deallocate(); accumulated?.deallocate(); bufferAverage?.sums.deallocate() }

    /// Records a training-thread span of `kind` from `start` until now, if a timeline is on.
    func recordSpan(_ kind: Timeline.Kind, since start: ContinuousClock.Instant) {
        timeline.map { $0.record(kind, from: start, to: .now, on: $0.training) }
    }

    /// Micro-batch k of this rank's batch: its inputs and labels.
    func microBatch(_ k: Int) -> (input: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>) {
        let size = train.inputSize, perSample = train.labelsPerSample
        return (UnsafeBufferPointer(rebasing: input[k * microBatch * size ..< (k + 1) * microBatch * size]),
                UnsafeBufferPointer(rebasing: labels[k * microBatch * perSample ..< (k + 1) * microBatch * perSample]))
    }

    /// Gathers this rank's samples of global step `step` into `input` and `labels`.
    func fillBatch(step: Int) {
        let epoch = step / stepsPerEpoch
        if epoch != orderEpoch { order = sampler.permutation(epoch: epoch); orderEpoch = epoch }
        train.fill(sampler.localIndices(order, stepInEpoch: step % stepsPerEpoch), input: input.baseAddress!, labels: labels.baseAddress!)
    }
}
