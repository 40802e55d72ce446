import ArgumentParser
import Foundation
import MPITransport
import NeuralNet
import Training

/// `ringsgd train`: data-parallel training under mpirun.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model on every rank (run under mpirun: launch/local.sh 2 train …).",
        discussion: "Every config key is documented in docs/configuration.md. Example:\n  launch/local.sh 2 train --config configs/fashion-mlp.yaml --set train.epochs=1"
    )

    @Option(name: .customLong("config"), help: "YAML config file. (default: \(Self.defaultConfig))")
    var configFile: String?
    static let defaultConfig = "configs/fashion-mlp.yaml"
    /// The config read: --config, or the default.
    var config: String { configFile ?? Self.defaultConfig }

    @Option(name: .customLong("set"), help: "Override a config key: --set optimizer.lr=0.1 (repeatable).")
    var overrides: [String] = []

    @Option(help: "Run directory for metrics.jsonl, summary.json and checkpoints (default runs/CONFIG-NAME).")
    var runDir: String?

    @Flag(help: "Continue from the newest valid checkpoint in the run directory.")
    var resume = false

    @Flag(help: "Continue from the newest valid checkpoint if any rank's run directory holds one, else start the run (from --init-from if given; what launch/elastic.sh relaunches with).")
    var resumeIfPresent = false

    @Flag(help: "Start over in a run directory that holds an earlier run's checkpoints (deletes them).")
    var overwrite = false

    // `.unconditional`: "--stop-after -5" reaches validate() and gets a message about the value
    // instead of a "missing value" error.
    @Option(parsing: .unconditional,
            help: "Stop cleanly after this global step, with a checkpoint (time-boxed jobs; resume later with --resume).")
    var stopAfter: Int?

    @Option(help: "Write a Chrome trace-event timeline of every rank to this file (open in https://ui.perfetto.dev).")
    var timeline: String?

    @Option(help: "Start from these weights (safetensors, matched to the model by name and shape) instead of the seeded initialisation.")
    var initFrom: String?

    @Option(help: "Stop at the first evaluation that reaches METRIC=VALUE (test_accuracy, test_loss, val_loss, perplexity) and record the time to it in summary.json; evaluations run every train.eval_every_steps and at epoch ends.")
    var target: String?

    @Option(help: "Write the last step's averaged gradient to this file (raw Float32) for `bench allreduce --gradient`.")
    var dumpGradient: String?

    /// RINGSGD_RUN_ID (set by launch/elastic.sh), 16 hex digits; nil when unset.
    static func continuingRunID() throws -> UInt64? {
        guard let text = ProcessInfo.processInfo.environment["RINGSGD_RUN_ID"], !text.isEmpty else { return nil }
        guard text.count == 16, let id = UInt64(text, radix: 16) else {
            throw ValidationError("RINGSGD_RUN_ID must be a run id of 16 hex digits as a run's 'run id' line prints it, got '\(text)'; unset it to resume any run's checkpoints")
        }
        return id
    }

    func validate() throws {
        if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after must be ≥ 1, got \(stopAfter)") }
        if resume && initFrom != nil { throw ValidationError("--resume continues from the run's checkpoint; --init-from starts a new run from given weights: pass one") }
        if let target { do { _ = try TrainingTarget(parsing: target) } catch { throw ValidationError("\(error)") } }
        if resume && overwrite { throw ValidationError("--resume continues the run directory's run, --overwrite replaces it: pass one") }
        if resumeIfPresent && (resume || overwrite) {
            throw ValidationError("--resume-if-present decides by itself whether to resume: pass it without --resume or --overwrite")
        }
    }

    func run() throws {
        let runDirectory = runDir ?? "runs/" + ((config as NSString).lastPathComponent as NSString).deletingPathExtension
        // SIGUSR1 (forwarded by mpirun; sent by SLURM before the time limit): stop, with a
        // checkpoint, at the next periodic checkpoint, replica check, evaluation or epoch end (launch/elastic.sh grows
        // the job there). Listened for first thing: before, the signal's default action ends
        // the process — a job whose time limit is near its start would fail instead of stopping.
        StopRequest.shared.listen()
        MPIJob.run(afterStall: "continue with 'train … --resume'") { transport in
            // Every rank reads its own copy of the file, alone first: its comm.timeout_seconds
            // (the default where it cannot be read) then bounds every wait for a peer from the
            // first collective on — a rank stuck before it (a config on a hung filesystem) is
            // named by its peers instead of keeping them waiting for ever. Then the ranks
            // agree: one that cannot read it is an error on all.
            let local = Result { try TrainingConfig.load(path: config, overrides: overrides) }
            transport.setDeadline(seconds: (try? local.get())?.timeoutSeconds ?? TrainingConfig.defaultTimeoutSeconds)
            transport.setActivity("start-up (reading the config)")
            let parsed = try Agreement.run("read the config", over: transport) { try local.get() }
            transport.setActivity("start-up")
            // Rank 0 writes these when training is over: a path it cannot write is found now
            // (one in the run directory is fine before training creates that directory).
            try Agreement.run("check the output files", over: transport) {
                guard transport.rank == 0 else { return }
                if let dumpGradient { try OutputFile.check(dumpGradient, option: "--dump-gradient", createdDirectory: runDirectory) }
                if let timeline { try OutputFile.check(timeline, option: "--timeline", createdDirectory: runDirectory) }
            }
            BLASThreads.set(1)
            // OpenMPI hands ranks a pty for stdout even when mpirun's own output is a file, so a
            // live \r progress line is used only when stdin is a terminal too.
            let isTerminal = transport.rank == 0 && isatty(STDOUT_FILENO) != 0 && isatty(STDIN_FILENO) != 0
            let trainer = Trainer(config: parsed, transport: transport, runDirectory: runDirectory, isTerminal: isTerminal) { line in
                print(line)
                fflush(stdout)
            }
            trainer.gradientDumpPath = dumpGradient
            trainer.timelinePath = timeline
            trainer.initFromPath = initFrom
            trainer.target = try target.map(TrainingTarget.init(parsing:))
            trainer.resumeIfPresent = resumeIfPresent
            trainer.continuingRunID = try Agreement.run("read RINGSGD_RUN_ID", over: transport) { try Self.continuingRunID() }
            trainer.stopRequest = StopRequest.shared
            trainer.stepLines = Int(ProcessInfo.processInfo.environment["RINGSGD_STEP_LINES"] ?? "") ?? 0
            // A resume without --config reads the default config, whose model is seldom the
            // run's: a refusal then names a key of the wrong model, so it says where that came from.
            if configFile == nil { trainer.configOrigin = "no --config was given, so this resume read \(Self.defaultConfig)" }
            guard let summary = try trainer.run(resume: resume, stopAfter: stopAfter, overwrite: overwrite) else { return }
            if transport.rank == 0 {
                let ran = summary.steps - summary.resumed_from_step
                let steps = summary.resumed_from_step > 0 ? "steps \(summary.resumed_from_step + 1)–\(summary.steps) (resumed at \(summary.resumed_from_step))" : "\(ran) steps"
                let quality = summary.perplexity.map { String(format: "validation loss %.4f (perplexity %.2f)", summary.test_loss ?? .nan, $0) }
                    ?? String(format: "test accuracy %.4f", summary.test_accuracy)
                let rate = (summary.tokens_per_second.map { String(format: "%.0f tokens/s", $0) } ?? String(format: "%.0f samples/s", summary.samples_per_second))
                    + (ran > 2 * Trainer.warmupSteps ? summary.steady_samples_per_second.map { steady in
                        // In the rate's own unit: tokens are samples × the block size.
                        let perSample = summary.tokens_per_second.map { $0 / max(summary.samples_per_second, 1e-9) } ?? 1
                        return String(format: " (%.0f after the first %d steps)", steady * perSample, Trainer.warmupSteps)
                    } ?? "" : "")
                if let reached = summary.time_to_target_seconds, let step = summary.target_step {
                    print(String(format: "target %@ reached at step %d: %.1f s of training", summary.target ?? "", step, reached)
                          + (summary.bytes_to_target.map { String(format: ", %.2f MB sent per rank", $0 / 1e6) } ?? ""))
                } else if let goal = summary.target {
                    print("target \(goal) not reached in \(summary.steps) steps")
                }
                print(String(format: "done: %@, %@ over %@ in %.1f s, %d skipped, peak RSS %.0f MiB/rank, replicas identical (hash %@)",
                             quality, rate, steps, summary.wall_seconds,
                             summary.skipped_steps, summary.peak_rss_mb, summary.param_hash))
                print("metrics: \(runDirectory)/metrics.jsonl  summary: \(runDirectory)/summary.json  checkpoints: \(runDirectory)/checkpoints/")
            }
        }
    }
}
