import FileFormats
import Foundation

/// What `summary.json` holds (see the README for each field).
public struct RunSummary: Codable, Equatable {
    public var test_accuracy: Double
    /// The last evaluation's mean loss per label (per token: the validation loss of a language
    /// model) and, for a language model, its perplexity e^loss and training tokens per second.
    public var test_loss: Double?
    public var perplexity: Double?
    public var samples_per_second: Double
    public var tokens_per_second: Double?
    /// samples/s without the run's first 10 steps (the warm-up: first touches of every buffer,
    /// the first messages) when it ran more than 20, else `samples_per_second` — what the peer's
    /// `steady_samples_per_second` (torch_ddp.py) leaves out too. Not quite the same clock: ours
    /// is rank 0's wall time from step 10 (evaluations and checkpoint writes excluded, replica
    /// checks, epoch-end records and log lines included), the peer's the sum of its steps' times
    /// (the slowest rank's each), which leaves out whatever runs between them.
    public var steady_samples_per_second: Double?
    /// A language model's tokens/s at `steady_samples_per_second`: what the peer reports as its
    /// `tokens_per_second` (its steady figure × block size).
    public var steady_tokens_per_second: Double?
    public var steps: Int
    /// Samples per optimizer step, all ranks together (`train.global_batch`).
    public var global_batch: Int
    public var wall_seconds: Double
    public var skipped_steps: Int
    public var param_hash: String
    public var peak_rss_mb: Double
    public var world_size: Int
    public var codec: String
    /// Mean training loss of the last epoch; nil (null) when every step of it was skipped.
    public var train_loss: Double?
    public var compute_seconds: Double
    public var comm_seconds: Double
    public var codec_seconds: Double
    /// Seconds the steps waited for averaging after backward ended; what their averaging costs
    /// when nobody waits (measured before the first step, `CommunicationCost`); and the share
    /// of that cost overlap with backward hid: 1 − exposed / isolated, in [0, 1]. The isolated
    /// cost is measured for a step's whole gradient, so with local steps (local SGD, DiLoCo)
    /// these count the every-step warm-up's averaging only: an outer step's wait is in
    /// `comm_seconds`, and what streaming hides is the difference in step time it makes.
    public var comm_exposed_seconds: Double
    public var comm_isolated_seconds: Double
    public var comm_hidden_fraction: Double
    public var resumed_from_step: Int
    /// Bytes rank 0 sent per step of this process in its all-reduces, after compression (the
    /// ring is symmetric: every rank sends as much): the gradients' every step, or (local SGD,
    /// DiLoCo) the outer steps' averages spread over the steps between them; absent when the
    /// all-reduce does not say (MPI's).
    public var wire_bytes_per_step: Double?
    /// Config keys that differ from the resumed checkpoint's ("key: old → new"); absent when none.
    public var config_changes_on_resume: [String]?
    /// Bytes rank 0 sent in all-reduces (gradients, or pseudo-gradients at outer steps) over
    /// the whole run, a resumed run's bytes before its resume included; absent when the
    /// all-reduce does not say.
    public var bytes_sent: Double?
    /// `comm.sync` (every_step, local_sgd, diloco), and the outer steps taken by the end
    /// (absent for every_step).
    public var sync: String?
    /// Fragment outer steps taken (P per round of H local steps with `comm.fragments: P`), and
    /// the local steps this rank skipped on its own (non-finite local gradient) in this process:
    /// not carried across a resume.
    public var outer_steps: Int?
    public var locally_skipped_steps: Int?
    /// `train --target`: the target, and — when reached — the step, the training seconds to it
    /// (evaluations and checkpoint writes excluded; continued across a resume) and the bytes rank 0 had sent by then.
    public var target: String?
    public var target_step: Int?
    public var time_to_target_seconds: Double?
    public var bytes_to_target: Double?
    /// The OpenBLAS kernels rank 0 ran ("SkylakeX", "Haswell", …): `param_hash` depends on them
    /// (each kernel set rounds its sums in its own order, and they decide whether the
    /// convolutions' products are OpenBLAS's or ringsgd's: `ConvolutionProducts`) and
    /// `samples_per_second` too.
    public var blas_kernels: String?
}

/// One line of `metrics.jsonl`, written after every epoch.
public struct EpochMetrics: Codable {
    public var epoch: Int
    /// The steps the record covers: `from_step` < s ≤ `step`. An epoch a stopped run left
    /// unfinished has a record marked `partial` (absent: false); the resumed run's record of
    /// that epoch covers the rest of it.
    public var from_step: Int
    public var step: Int
    public var partial: Bool?
    public var lr: Double
    public var train_loss: Double?
    /// Absent from the record, as `train_loss` is, when every step of the epoch was skipped: no sample trained.
    public var train_accuracy: Double?
    public var test_accuracy: Double
    public var test_loss: Double?
    public var perplexity: Double?
    public var samples_per_second: Double
    public var tokens_per_second: Double?
    public var compute_seconds: Double
    public var comm_seconds: Double
    public var codec_seconds: Double
    public var comm_exposed_seconds: Double
    public var comm_isolated_seconds: Double
    public var comm_hidden_fraction: Double
    public var skipped_steps: Int
}

/// One line of `curve.jsonl` (`train.eval_every_steps`): an evaluation during training.
public struct CurvePoint: Codable {
    public var step: Int
    /// Seconds since the run started, evaluations excluded.
    public var train_seconds: Double
    public var test_loss: Double
    public var test_accuracy: Double
    public var perplexity: Double?
    /// Bytes this rank had sent in all-reduces by then (absent when the all-reduce does not say).
    public var bytes_sent: Double?

    /// Keeps the points of `path` up to step `step` (a resumed run records the later ones
    /// again) and returns the last kept point's training seconds and bytes sent (0 without one).
    static func keep(_ path: String, upTo step: Int) throws -> (seconds: Double, bytes: Double?) {
        guard let last = try keepRecords(CurvePoint.self, in: path, upTo: step, what: "curve.jsonl").last else { return (0, 0) }
        return (last.train_seconds, last.bytes_sent)
    }
}

/// A line of a JSON-lines file the run appends to, placed by the step it ends at.
protocol StepRecord: Decodable {
    var step: Int { get }
}
extension CurvePoint: StepRecord {}
extension EpochMetrics: StepRecord {}

/// Keeps the records of `path` that end at step `step` or before and returns them: a resumed
/// run runs the steps after its checkpoint again and writes their records anew, so a record
/// from past the checkpoint would describe steps twice. An epoch record that reaches past the
/// checkpoint goes too (its steps before the checkpoint are then in no record: a record cannot
/// be split). A missing file keeps nothing.
func keepRecords<R: StepRecord>(_ type: R.Type, in path: String, upTo step: Int, what: String) throws -> [R] {
    guard let data = FileManager.default.contents(atPath: path) else { return [] }
    let kept = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line -> (String, R)? in
        guard let record = try? JSONDecoder.ringsgd.decode(R.self, from: Data(line.utf8)), record.step <= step else { return nil }
        return (String(line), record)
    }
    try FileSystem.writeAtomically(Array(kept.map { $0.0 + "\n" }.joined().utf8), to: path, what: what)
    return kept.map(\.1)
}
