import Foundation
import XCTest

/// The user's doors under real mpirun on the real Fashion-MNIST files: a model written as a
/// layer list, the same data as .npy and as IDX, `ringsgd evaluate` sharded over ranks, and
/// `ringsgd export`.
final class ModelsDataExportTests: XCTestCase {
    static let fashion = "/usr/share/datasets/fashion-mnist"
    static let short = ["--set", "train.max_steps=30", "--set", "train.global_batch=96", "--set", "consistency.check_every_steps=10"]

    func train(_ config: String, _ extra: [String], dir: String) throws -> String {
        let outcome = try MPIRun.run(np: 2, ["train", "--config", config, "--run-dir", dir] + Self.short + extra, timeout: 180)
        assertSucceeded(outcome, "train \(config) \(extra)")
        return parameterHash(dir) ?? "none"
    }

    func config(_ name: String) -> String { MPIRun.packageRoot.appendingPathComponent("configs/\(name)").path }

    /// Property: `model.kind: cnn` and its expansion written out as `model.layers` train to the
    /// same parameters (same param_hash), at np 2.
    func testCNNShorthandAndItsLayerListTrainTheSameParameters() throws {
        let dir = temporaryDirectory()
        let yaml = dir + "/cnn-as-layers.yaml"
        try """
        model:
          layers:
            - conv2d: {out: 32, kernel: 3, padding: 1}
            - maxpool2d: {kernel: 2}
            - relu
            - conv2d: {out: 64, kernel: 3, padding: 1}
            - maxpool2d: {kernel: 2}
            - relu
            - flatten
            - linear: {out: 128}
            - relu
            - linear: {out: 10}
        optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
        train: {eval_batch: 250}
        """.write(toFile: yaml, atomically: true, encoding: .utf8)
        let shorthand = try train(config("fashion-cnn.yaml"), [], dir: dir + "/a")
        XCTAssertEqual(try train(yaml, ["--set", "train.epochs=5"], dir: dir + "/b"), shorthand)
    }

    /// Property: a .npy copy of Fashion-MNIST (uint8 images, int64 labels) trains to the same
    /// parameters as the IDX files — with the default normalisation, as the built-in dataset;
    /// with the normalisation computed from the data, as `data.dataset: idx` on the .gz files.
    /// Then `ringsgd evaluate` (np 1, 2 and 3) reproduces the run's test accuracy, and
    /// `ringsgd export` writes a safetensors file with the cnn's names and shapes.
    func testNumpyCopyTrainsLikeTheIDXFilesAndEvaluateAndExportAgree() throws {
        let dir = temporaryDirectory()
        for (split, name) in [("train", "train"), ("t10k", "test")] {
            try NumpyCopy.write(of: "\(Self.fashion)/\(split)-images-idx3-ubyte.gz", descr: "|u1", to: "\(dir)/\(name)-images.npy")
            try NumpyCopy.write(of: "\(Self.fashion)/\(split)-labels-idx1-ubyte.gz", descr: "<i8", to: "\(dir)/\(name)-labels.npy")
        }
        let npy = ["--set", "data.dataset=npy", "--set", "data.train_images=\(dir)/train-images.npy", "--set", "data.train_labels=\(dir)/train-labels.npy",
                   "--set", "data.test_images=\(dir)/test-images.npy", "--set", "data.test_labels=\(dir)/test-labels.npy",
                   "--set", "data.cache_dir=\(dir)/cache"]
        let idx = ["--set", "data.dataset=idx", "--set", "data.train_images=\(Self.fashion)/train-images-idx3-ubyte.gz",
                   "--set", "data.train_labels=\(Self.fashion)/train-labels-idx1-ubyte.gz",
                   "--set", "data.test_images=\(Self.fashion)/t10k-images-idx3-ubyte.gz",
                   "--set", "data.test_labels=\(Self.fashion)/t10k-labels-idx1-ubyte.gz", "--set", "data.cache_dir=\(dir)/cache"]
        let fixed = ["--set", "data.mean=0.2860", "--set", "data.std=0.3530"]
        let builtIn = try train(config("fashion-mlp.yaml"), [], dir: dir + "/builtin")
        XCTAssertEqual(try train(config("fashion-mlp.yaml"), npy + fixed, dir: dir + "/npy-fixed"), builtIn)
        let computed = try train(config("fashion-mlp.yaml"), npy, dir: dir + "/npy")
        XCTAssertNotEqual(computed, builtIn, "the computed normalisation is not the rounded one")
        XCTAssertEqual(try train(config("fashion-mlp.yaml"), idx, dir: dir + "/idx"), computed)

        let accuracy = try summary(dir + "/npy")["test_accuracy"] as! Double
        // np 3 does not divide the 10,000 samples: the last rank's shard is the longer one, and
        // every sample is still counted once (no padding duplicates, none left out).
        for np in [1, 2, 3] {
            // With a deadline of its own under mpirun: accepted, and the evaluation the same.
            let deadline = np > 1 ? ["--set", "comm.timeout_seconds=60"] : []
            let outcome = try MPIRun.run(np: np, ["evaluate", "--run-dir", dir + "/npy"] + deadline, timeout: 120)
            assertSucceeded(outcome, "evaluate np \(np)")
            XCTAssertTrue(outcome.output.contains(String(format: "accuracy %.4f  (10000 samples)", accuracy)), outcome.output)
            XCTAssertTrue(outcome.output.contains("confusion matrix"), outcome.output)
            let evaluation = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/npy/evaluation.json"))) as! [String: Any]
            XCTAssertEqual(evaluation["accuracy"] as! Double, accuracy, accuracy: 1e-12)
            XCTAssertEqual((evaluation["confusion"] as! [[Int]]).joined().reduce(0, +), 10000)
            XCTAssertEqual((evaluation["per_class"] as! [Any]).count, 10)
        }

        // The same test set from other files (the IDX .gz), normalised as the run's training data
        // was and with the model's classes (both from the checkpoint), gives the same accuracy —
        // naming the test files and nothing else.
        // (IDX by the name, .gz.)
        let elsewhere = try MPIRun.run(np: 2, ["evaluate", "--run-dir", dir + "/npy", "--out", dir + "/other.json",
                                               "--set", "data.test_images=\(Self.fashion)/t10k-images-idx3-ubyte.gz",
                                               "--set", "data.test_labels=\(Self.fashion)/t10k-labels-idx1-ubyte.gz"])
        assertSucceeded(elsewhere, "evaluate on the IDX files")
        XCTAssertTrue(elsewhere.output.contains(String(format: "accuracy %.4f  (10000 samples)", accuracy)), elsewhere.output)
        // A run on the built-in dataset evaluates on .npy test files (the format from their
        // extension) as `evaluate --help` shows: the same samples, so its own accuracy.
        let builtInAccuracy = try summary(dir + "/builtin")["test_accuracy"] as! Double
        let onFiles = try MPIRun.run(np: 2, ["evaluate", "--run-dir", dir + "/builtin", "--out", dir + "/files.json",
                                             "--set", "data.test_images=\(dir)/test-images.npy", "--set", "data.test_labels=\(dir)/test-labels.npy"])
        assertSucceeded(onFiles, "evaluate a built-in-dataset run on .npy test files")
        XCTAssertTrue(onFiles.output.contains(String(format: "accuracy %.4f  (10000 samples)", builtInAccuracy)), onFiles.output)
        let wrongShape = try MPIRun.run(np: 2, ["evaluate", "--run-dir", dir + "/builtin", "--set", "data.dataset=synthetic",
                                                "--set", "data.synthetic.features=100"])
        assertOneLineError(wrongShape, "evaluate on data shaped like the training data")

        let exported = dir + "/mlp.safetensors"
        let outcome = try MPIRun.runProcess([MPIRun.binary, "export", "--run-dir", dir + "/npy", "--out", exported], timeout: 60)
        assertSucceeded(outcome, "export")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: exported))
        let length = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try JSONSerialization.jsonObject(with: bytes[8 ..< 8 + length]) as! [String: Any]
        XCTAssertEqual((header["1.weight"] as? [String: Any])?["shape"] as? [Int], [512, 784])
        XCTAssertEqual((header["5.bias"] as? [String: Any])?["data_offsets"] as? [Int], [4 * (512 * 784 + 512 + 256 * 512 + 256 + 10 * 256), 4 * 535_818])
        XCTAssertEqual(bytes.count, 8 + length + 4 * 535_818)
        let metadata = header["__metadata__"] as! [String: String]
        XCTAssertTrue(metadata["ringsgd.pytorch"]!.hasPrefix("nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU()"), "\(metadata)")
        // The format follows --out's extension: a .npz is a zip archive (local header "PK\3\4").
        let npz = dir + "/mlp.npz"
        assertSucceeded(try MPIRun.runProcess([MPIRun.binary, "export", "--run-dir", dir + "/npy", "--out", npz], timeout: 60), "export .npz")
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: npz)).prefix(4)), [0x50, 0x4B, 3, 4], "a .npz is a zip archive")

        // evaluate --out never replaces what the run keeps: a file in its checkpoints directory,
        // any ringsgd checkpoint (the one evaluated, for one), one of its records. (export's
        // --out must end .safetensors or .npz.)
        let name = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: dir + "/npy/checkpoints").filter { $0.hasSuffix(".ckpt") }.sorted().last)
        let checkpoint = dir + "/npy/checkpoints/" + name, copy = dir + "/copy.ckpt"
        try FileManager.default.copyItem(atPath: checkpoint, toPath: copy)
        let before = try Data(contentsOf: URL(fileURLWithPath: checkpoint))
        // A per-rank file (error feedback's, `.ef-rank-N`) is known by its magic too.
        let rankFile = dir + "/step-00000040.ef-rank-1"
        XCTAssertTrue(FileManager.default.createFile(atPath: rankFile, contents: Data("RSGDRNK1".utf8 + [UInt8](repeating: 0, count: 56))))
        for (command, out, expected) in [(["evaluate", "--run-dir", dir + "/npy"], checkpoint, "is in the run's checkpoints directory"),
                                         (["evaluate", "--checkpoint", copy], copy, "is a ringsgd checkpoint"),
                                         // Not the one evaluated, outside the run: refused by its magic.
                                         (["evaluate", "--run-dir", dir + "/npy"], copy, "is a ringsgd checkpoint"),
                                         (["evaluate", "--run-dir", dir + "/npy"], rankFile, "is a ringsgd"),
                                         (["evaluate", "--run-dir", dir + "/npy"], dir + "/npy/summary.json", "is the run's own summary.json")] {
            assertOneLineError(try MPIRun.runProcess([MPIRun.binary] + command + ["--out", out], timeout: 60), expected)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: checkpoint)), before)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), before)
        // A checkpoint named by --checkpoint, wherever it lies, evaluates and exports as the run's.
        let direct = try MPIRun.run(np: 1, ["evaluate", "--checkpoint", copy, "--out", dir + "/direct.json"], timeout: 120)
        assertSucceeded(direct, "evaluate --checkpoint")
        XCTAssertTrue(direct.output.contains(String(format: "accuracy %.4f  (10000 samples)", accuracy)), direct.output)
        // Named alone, it has no run directory to write into: it says so instead of writing nothing silently.
        let printed = try MPIRun.run(np: 1, ["evaluate", "--checkpoint", copy], timeout: 120)
        assertSucceeded(printed, "evaluate --checkpoint without --out")
        XCTAssertTrue(printed.output.contains("results: not written to a file (give --out FILE to keep them)"), printed.output)
        assertSucceeded(try MPIRun.runProcess([MPIRun.binary, "export", "--checkpoint", copy, "--out", dir + "/direct.safetensors"], timeout: 60), "export --checkpoint")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/direct.safetensors")), try Data(contentsOf: URL(fileURLWithPath: exported)))
    }

    /// Property: a layer list that does not fit the data, and a bad evaluate/export request,
    /// are one line naming what is wrong, before any rank trains.
    func testBadModelsAndRequestsAreOneLineErrors() throws {
        let dir = temporaryDirectory()
        let conv = try MPIRun.run(np: 2, ["train", "--config", config("fashion-mlp.yaml"), "--run-dir", dir + "/a",
                                          "--set", "model.kind=mlp", "--set", "model.layers=[flatten, {conv2d: {out: 8, kernel: 3}}, flatten, linear]"])
        assertOneLineError(conv, "model.layers describes the whole model; remove model.kind")
        let shape = try MPIRun.run(np: 2, ["train", "--config", config("fashion-3conv.yaml"), "--run-dir", dir + "/b",
                                           "--set", "model.layers=[flatten, {conv2d: {out: 8, kernel: 3}}, flatten, linear]"])
        assertOneLineError(shape, "model.layers[1] (conv2d): needs a [C, H, W] image input, got [784]")
        XCTAssertFalse(shape.output.contains("epoch 1/"), shape.output)
        let kernel = try MPIRun.run(np: 2, ["train", "--config", config("fashion-3conv.yaml"), "--run-dir", dir + "/c",
                                            "--set", "model.layers=[{conv2d: {out: 8, kernel: 29}}, flatten, linear]"])
        assertOneLineError(kernel, "model.layers[0] (conv2d): kernel 29 is larger than its 28×28 input")
        // Models too large for the machine — their parameters with the optimizer's state, or
        // their activations at the batch — are one agreed line before any allocation.
        let parameters = try MPIRun.run(np: 2, ["train", "--config", config("fashion-3conv.yaml"), "--run-dir", dir + "/d",
                                                "--set", "model.layers=[flatten, {linear: {out: 1048576}}, relu, {linear: {out: 1048576}}, relu, linear]"])
        assertOneLineError(parameters, "the model has 1100346294282 parameters: 13204.2 GB with their gradients and sgd's state")
        let activations = try MPIRun.run(np: 2, ["train", "--config", config("fashion-3conv.yaml"), "--run-dir", dir + "/e",
                                                 "--set", "model.layers=[{conv2d: {out: 1048576, kernel: 1}}, globalavgpool2d, linear]"])
        assertOneLineError(activations, "the model's activations at a batch of")
        for failed in ["a", "b", "c", "d", "e"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/" + failed), "a run that failed at its start leaves no run directory (\(failed))")
        }
        let noRunDirectory = try MPIRun.run(np: 2, ["evaluate", "--run-dir", dir + "/none"])
        assertOneLineError(noRunDirectory, "the run directory \(dir)/none does not exist; check --run-dir")
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/file", contents: Data("x".utf8)))
        assertOneLineError(try MPIRun.run(np: 1, ["evaluate", "--run-dir", dir + "/file"]), "--run-dir \(dir)/file is a file, not a run directory")
        assertOneLineError(try MPIRun.run(np: 1, ["evaluate", "--checkpoint", dir]), "--checkpoint \(dir) is a directory")
        assertOneLineError(try MPIRun.run(np: 1, ["evaluate", "--checkpoint", "/dev/zero"]), "checkpoint /dev/zero is not a regular file")
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/noise.ckpt", contents: Data((0 ..< 100).map { UInt8(truncatingIfNeeded: $0 &* 97 &+ 13) })))
        for command in [["evaluate"], ["export", "--out", dir + "/noise.safetensors"]] {
            assertOneLineError(try MPIRun.run(np: 1, command + ["--checkpoint", dir + "/noise.ckpt"]), "checkpoint \(dir)/noise.ckpt is unusable: not a ringsgd checkpoint")
        }
        try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: true)
        let empty = try MPIRun.run(np: 2, ["evaluate", "--run-dir", dir + "/empty"])
        assertOneLineError(empty, "no valid checkpoint in \(dir)/empty/checkpoints")
        let unnamed = try MPIRun.run(np: 1, ["evaluate", "--run-dir", dir + "/none", "--set", "data.test_images=x.bin", "--set", "data.test_labels=y.bin"])
        assertOneLineError(unnamed, "--set data.test_images=x.bin: the format cannot be told from the name")
        let setModel = try MPIRun.run(np: 1, ["evaluate", "--run-dir", dir + "/none", "--set", "model.kind=cnn"])
        assertOneLineError(setModel, "an evaluation takes only data.* keys")
        for bad in ["-1", "nan", "inf", "abc"] {
            // Refused by the argument check, before MPI starts: no mpirun needed.
            let timeout = try MPIRun.runProcess([MPIRun.binary, "evaluate", "--run-dir", dir + "/none", "--set", "comm.timeout_seconds=\(bad)"], timeout: 30)
            assertOneLineError(timeout, bad == "-1" ? "--set comm.timeout_seconds must be ≥ 0.0, got -1.0"
                                                    : "--set comm.timeout_seconds must be a number, got '\(bad)'")
        }
        let format = try MPIRun.runProcess([MPIRun.binary, "export", "--run-dir", dir, "--format", "onnx"], timeout: 30)
        assertOneLineError(format, "--format must be one of safetensors, npz, got 'onnx'")
        let unknown = try MPIRun.runProcess([MPIRun.binary, "export", "--run-dir", dir, "--out", dir + "/model.onnx"], timeout: 30)
        assertOneLineError(unknown, "the extension says which format to write; use .safetensors or .npz")
        let contradiction = try MPIRun.runProcess([MPIRun.binary, "export", "--run-dir", dir, "--format", "npz", "--out", dir + "/m.safetensors"], timeout: 30)
        assertOneLineError(contradiction, "--format npz contradicts --out \(dir)/m.safetensors")
        let missing = try MPIRun.runProcess([MPIRun.binary, "export", "--run-dir", dir, "--out", dir + "/no/such/dir/m.npz"], timeout: 30)
        assertOneLineError(missing, "the directory \(dir)/no/such/dir does not exist; create it first")
        // A file where the path needs a directory is said as such, not as missing.
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/plain", contents: Data("x".utf8)))
        let file = try MPIRun.runProcess([MPIRun.binary, "export", "--run-dir", dir, "--out", dir + "/plain/m.npz"], timeout: 30)
        assertOneLineError(file, "\(dir)/plain is a file, not a directory; choose a path in a directory")
    }
}
