import Foundation

/// Writes a checkpoint's files off the training thread (`checkpoint.async: true`).
///
/// Why: a checkpoint is bytes to disk and two fsyncs — tens to hundreds of milliseconds that
/// need no core, during which every rank would otherwise wait. The training thread takes a
/// snapshot (copies of the flat buffers: the step may change them as soon as it goes on) and
/// hands the write here; the next checkpoint, the end of the run, or a stop waits for it
/// first and agrees on its outcome across ranks (`Trainer.settlePendingWrite`), so a full
/// disk is still one error on every rank and a checkpoint is on disk before a newer one is
/// started. The writes themselves are today's: temporary file, fsync, rename, fsync of the
/// directory — a process killed mid-write leaves the previous checkpoint.
///
/// One write at a time: `submit` is called only after `wait` has returned.
public final class CheckpointWriter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "ringsgd.checkpoint-writer", qos: .utility)
    private let group = DispatchGroup()
    /// Every writer's writes: what a process about to end on an error waits for.
    private static let everyWrite = DispatchGroup()

    /// Waits up to `seconds` for every write handed over in this process (a rank ending on
    /// an error would otherwise kill a checkpoint already taken, mid-write). True if none is left.
    @discardableResult
    public static func finishPendingWrites(within seconds: Double) -> Bool {
        everyWrite.wait(timeout: .now() + seconds) == .success
    }
    private let lock = NSLock()
    private var failure: Error?
    /// The step of the write handed over and not yet waited for.
    private(set) var pendingStep: Int?

    init() {}

    /// Starts `write` on the writer's thread.
    func submit(step: Int, _ write: @escaping () throws -> Void) {
        precondition(pendingStep == nil, "a checkpoint write was submitted while another is pending")
        pendingStep = step
        Self.everyWrite.enter()
        queue.async(group: group) { [self] in
            defer { Self.everyWrite.leave() }
            do { try write() } catch {
                lock.lock(); failure = error; lock.unlock()
            }
        }
    }

    /// Waits for the pending write (if any); its error, or nil.
    func wait() -> (step: Int, error: Error?)? {
        guard let step = pendingStep else { return nil }
        group.wait()
        lock.lock(); defer { lock.unlock() }
        let error = failure
        failure = nil
        pendingStep = nil
        return (step, error)
    }
}

/// What one rank writes for one checkpoint: its own error-feedback memory and inner state
/// (per-rank files), and — on a writing rank — the checkpoint itself, last, so that a
/// checkpoint on disk always has the writing rank's own files beside it. The other ranks'
/// files are written at the same time, not before it: a crash in between can leave a
/// checkpoint without another rank's file, and a resume from it then says so and takes an
/// equal share of the summed residual (or θ_outer for the inner state) — not bit-identical.
/// A non-writing rank prunes its own older files (`CheckpointStore.pruneRankFiles`).
struct CheckpointSnapshot: @unchecked Sendable {
    let step: Int, rank: Int
    /// The run the files belong to (`Checkpoint.runID`): the per-rank files carry it.
    let runID: UInt64
    var residual: [Float]?
    var local: (parameters: [Float], optimizerState: [UInt8])?
    var checkpoint: Checkpoint?

    init(step: Int, rank: Int, runID: UInt64) { (self.step, self.rank, self.runID) = (step, rank, runID) }

    func write(to store: CheckpointStore) throws {
        if let residual {
            try residual.withUnsafeBufferPointer { try store.writeResidual($0, step: step, rank: rank, runID: runID) }
        }
        if let local {
            try local.parameters.withUnsafeBufferPointer {
                try store.writeLocalState(parameters: $0, optimizerState: local.optimizerState, step: step, rank: rank, runID: runID)
            }
        }
        if let checkpoint { try store.write(checkpoint) } else if residual != nil || local != nil { store.pruneRankFiles(rank: rank, upTo: step) }
    }
}
