import ArgumentParser
import Datasets
import Foundation
import ModelFiles
import MPITransport
import NeuralNet
import Training

/// `ringsgd evaluate`: a checkpoint's test loss, accuracy, per-class accuracy and confusion
/// matrix; one process or under mpirun (each rank a shard of the test set).
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a checkpoint on the test set: loss, accuracy, per-class accuracy, confusion matrix.",
        discussion: """
            Examples:
              ringsgd evaluate --run-dir runs/fashion-cnn
              launch/local.sh 2 evaluate --run-dir runs/fashion-cnn \\
                  --set data.test_images=other.npy --set data.test_labels=other-labels.npy
            Other test files are read as .npy or IDX by their extension, whatever
            the run trained on; the normalisation and classes are the checkpoint's.
            """
    )

    @OptionGroup var source: CheckpointChoice

    @Option(name: .customLong("set"), help: "Override a data key of the checkpoint's config: --set data.test_images=FILE (repeatable; data.*, train.eval_batch and comm.timeout_seconds).")
    var overrides: [String] = []

    @Option(help: "Where to write the results as JSON (default: RUN-DIR/evaluation.json; with --checkpoint FILE alone, none).")
    var out: String?

    func validate() throws {
        if let (images, format) = Self.testImages(overrides), format == nil {
            throw ValidationError("--set data.test_images=\(images): the format cannot be told from the name (.npy, or IDX: .gz, .idx, …-ubyte); add --set data.dataset=npy or idx")
        }
        if let bad = overrides.first(where: { !$0.hasPrefix("data.") && !$0.hasPrefix("train.eval_batch=") && !$0.hasPrefix("comm.timeout_seconds=") }) {
            throw ValidationError("--set \(bad): an evaluation takes only data.* keys, train.eval_batch and comm.timeout_seconds; the model and its training are the checkpoint's")
        }
        // Checked before MPI starts: the first collectives' deadline comes from it.
        do { _ = try startTimeout() } catch { throw ValidationError("--set \(error)") }
        if let out {
            try OutputFile.check(out, option: "--out", notReplacingTheRunIn: source.runDir)
        }
    }

    /// The deadline of the collectives before the checkpoint's config is read: `--set
    /// comm.timeout_seconds`, read by the config reader as a config's would be, else the default.
    func startTimeout() throws -> Double {
        try TrainingConfig(yaml: nil, source: "--set", overrides: overrides.filter { $0.hasPrefix("comm.timeout_seconds=") }).timeoutSeconds
    }

    /// Other test files make the data idx or npy (by their extension, unless data.dataset is
    /// given), whatever the run trained on: an evaluation reads the test files and nothing else.
    static func testFileOverrides(_ overrides: [String]) -> [String] {
        guard let (_, format) = testImages(overrides), let format else { return overrides }
        return ["data.dataset=" + format] + overrides
    }

    /// The test images named by `--set` when data.dataset is not, and the format their name
    /// says (nil: it does not say).
    static func testImages(_ overrides: [String]) -> (path: String, format: String?)? {
        guard !overrides.contains(where: { $0.hasPrefix("data.dataset=") }),
              let images = overrides.last(where: { $0.hasPrefix("data.test_images=") })?.dropFirst("data.test_images=".count) else { return nil }
        return (String(images), format(ofTestFile: String(images)))
    }

    /// "npy" or "idx" by a file's name, or nil when it does not say.
    static func format(ofTestFile name: String) -> String? {
        let name = name.lowercased()
        if name.hasSuffix(".npy") { return "npy" }
        if name.hasSuffix(".gz") || name.hasSuffix(".idx") || name.hasSuffix("-ubyte") || name.contains("idx1") || name.contains("idx3") { return "idx" }
        return nil
    }

    func run() throws {
        let destination = out ?? source.inRunDirectory("evaluation.json")
        MPIJob.run(afterStall: "run the evaluation again") { transport in
            BLASThreads.set(1)
            // Every wait for a peer is bounded, as in training: by --set comm.timeout_seconds, else
            // the default until the checkpoint's config is read, then by that config's.
            transport.setDeadline(seconds: try startTimeout())
            transport.setActivity("start-up (reading the checkpoint)")
            // Rank 0 reads the checkpoint and sends it: ranks on other hosts need no copy.
            var path = ""
            let bytes = try Agreement.fromRankZero("read the checkpoint", over: transport) {
                let located = try source.locate()
                path = located.path
                return located.checkpoint.encoded()
            }
            let found = try Checkpoint(decoding: bytes)
            transport.setActivity("start-up (loading the model and the test set)")
            let (model, test, batch, timeout) = try Agreement.run("load the model and the test set", over: transport) { () -> (Model, Dataset, Int, Double) in
                var config = try TrainingConfig(canonicalText: found.config, overrides: Self.testFileOverrides(overrides), testOnly: true)
                // Data the model was not trained on is normalised as its training data was.
                if config.normalization == nil, let trained = found.model?.normalization, config.dataset != "synthetic" {
                    config.normalization = trained
                }
                // …and has the model's classes: the training files need not be at hand.
                if config.classes == 0, let classes = found.model?.classes, ["idx", "npy"].contains(config.dataset) {
                    config.classes = classes
                }
                // A run on synthetic data has no normalisation to reuse for files, and no training
                // files to compute one from.
                if ["idx", "npy"].contains(config.dataset) && config.normalization == nil && config.trainImages.isEmpty {
                    throw ConfigError("no input normalisation for \(config.testImages): the checkpoint has none (its run trained on generated data) and no training files are named; give --set data.mean=M --set data.std=S")
                }
                let test = try config.loadTestSet()
                let model = try config.makeModel(for: test)
                guard model.parameters.count == found.parameters.count else {
                    throw ConfigError("the checkpoint holds \(found.parameters.count) parameters, its model on this data \(model.parameters.count) (input \(test.inputShape), \(test.classes) classes); evaluate on data shaped like the training data")
                }
                _ = model.parameters.parameters.update(fromContentsOf: found.parameters)
                guard model.parameters.buffers.count == found.buffers.count else {
                    throw ConfigError("the checkpoint holds \(found.buffers.count) buffer values, its model \(model.parameters.buffers.count); the checkpoint does not describe this model")
                }
                _ = model.parameters.buffers.update(fromContentsOf: found.buffers)
                return (model, test, config.evalBatch, config.timeoutSeconds)
            }
            transport.setDeadline(seconds: timeout)
            transport.setActivity("the evaluation")
            let result = try Evaluation.run(model, on: test, over: transport, batch: batch)
            try Agreement.run("write the evaluation", over: transport) {
                guard transport.rank == 0 else { return }
                print("evaluated \(path) (step \(found.step)) on \(transport.size) rank\(transport.size == 1 ? "" : "s")")
                print(result.report)
                if let destination {
                    try ModelExport.write(try result.encoded(), to: destination, what: "evaluation results")
                    print("results: \(destination)")
                } else {
                    // A checkpoint file named alone has no run directory to write into.
                    print("results: not written to a file (give --out FILE to keep them)")
                }
            }
        }
    }
}
