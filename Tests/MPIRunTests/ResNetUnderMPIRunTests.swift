import FileFormats
import Foundation
import XCTest

/// A tiny residual network with batch norms on Fashion-MNIST under real mpirun: with
/// `model.batchnorm: sync` a run on 2 and 3 ranks is the run of one process on the global
/// batch (and `local` is not), every mode keeps the replicas identical — buffers included in
/// the hash — and resumes bit-identically, the synchronised reductions during backward run
/// behind the buckets on the communication thread without deadlock, and exports carry the
/// running statistics, which `--init-from` reads back.
final class ResNetUnderMPIRunTests: XCTestCase {
    static let layers = """
    model:
      layers:
        - conv2d: {out: 4, kernel: 3, padding: 1, bias: false}
        - batchnorm2d
        - relu
        - residual: {layers: [conv2d: {out: 4, kernel: 3, padding: 1, bias: false}, batchnorm2d, relu, conv2d: {out: 4, kernel: 3, padding: 1, bias: false}, batchnorm2d]}
        - relu
        - residual: {shortcut: projection, layers: [conv2d: {out: 8, kernel: 3, stride: 2, padding: 1, bias: false}, batchnorm2d, relu, conv2d: {out: 8, kernel: 3, padding: 1, bias: false}, batchnorm2d]}
        - relu
        - globalavgpool2d
        - linear
    train: {max_steps: 6, global_batch: 25, eval_batch: 500}
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
    consistency: {check_every_steps: 2}
    checkpoint: {every_steps: 2}
    comm: {bucket_bytes: 1024}

    """

    func config() throws -> String {
        let path = temporaryDirectory() + "/resnet.yaml"
        try Self.layers.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func train(np: Int, _ extra: [String], dir: String) throws -> MPIRun.Outcome {
        let outcome = try MPIRun.run(np: np, ["train", "--config", try config(), "--run-dir", dir] + extra, timeout: 240)
        assertSucceeded(outcome, "train resnet np \(np) \(extra)")
        return outcome
    }

    /// Property: synchronised batch norms make a step on n ranks a step on the global batch —
    /// the evaluation loss after 6 steps at np 2 and 3 equals np 1's within 1e-4 (relative), with
    /// unequal shares too (25 samples: 13/12 and 9/8/8) — and `local` (each rank's own
    /// statistics) does not.
    func testSyncAtSeveralRanksIsOneProcessOnTheGlobalBatch() throws {
        func loss(np: Int, mode: String) throws -> Double {
            let dir = temporaryDirectory()
            _ = try train(np: np, ["--set", "model.batchnorm=\(mode)"], dir: dir)
            return try XCTUnwrap(try summary(dir)["test_loss"] as? Double)
        }
        let single = try loss(np: 1, mode: "sync")
        for np in [2, 3] {
            XCTAssertEqual(try loss(np: np, mode: "sync"), single, accuracy: 1e-4 * single, "np \(np)")
        }
        let local = try loss(np: 3, mode: "local")
        XCTAssertGreaterThan(abs(local - single), 1e-3 * single, "local statistics (8 samples a rank) are not the global batch's")
    }

    /// Property: every mode keeps replicas identical (the hash covers the buffers) and resumes
    /// on the bits of the uninterrupted run; with comm.overlap and 1 KiB buckets the sync
    /// reductions of backward run behind the buckets on the communication thread.
    func testEveryModeKeepsReplicasIdenticalAndResumesBitIdentically() throws {
        for mode in ["sync", "local", "broadcast"] {
            let straight = temporaryDirectory(), stopped = temporaryDirectory()
            let extra = ["--set", "model.batchnorm=\(mode)"]
            let outcome = try train(np: 2, extra, dir: straight)
            XCTAssertTrue(outcome.output.contains("replicas identical"), outcome.output)
            _ = try train(np: 2, extra + ["--stop-after", "3"], dir: stopped)
            assertResumed(try train(np: 2, extra + ["--resume"], dir: stopped), dir: stopped, from: 3)
            assertSameParameters(straight, stopped, mode)
        }
    }

    /// Exports carry the running statistics under PyTorch's names, and the residual module's source.
    func testExportCarriesTheBuffers() throws {
        let dir = temporaryDirectory()
        _ = try train(np: 2, [], dir: dir)
        let outcome = try MPIRun.runProcess([try MPIRun.binary, "export", "--run-dir", dir, "--out", dir + "/resnet.safetensors"], timeout: 60)
        XCTAssertEqual(outcome.status, 0, outcome.output)
        for name in ["1.running_mean [4]", "1.num_batches_tracked []", "5.shortcut.1.running_var [8]", "5.shortcut.0.weight [8, 4, 1, 1]"] {
            XCTAssertTrue(outcome.output.contains(name), "\(name) in:\n\(outcome.output)")
        }
        let header = try String(decoding: Data(contentsOf: URL(fileURLWithPath: dir + "/resnet.safetensors")).prefix(20000), as: UTF8.self)
        XCTAssertTrue(header.contains("class Residual(nn.Module)"), "the module source is in the metadata")
        // Read back with --init-from (running statistics included) and a zero learning rate,
        // evaluation gives the exported model's loss.
        let again = temporaryDirectory()
        _ = try train(np: 2, ["--init-from", dir + "/resnet.safetensors", "--set", "optimizer.lr=0", "--set", "train.max_steps=1",
                              "--set", "optimizer.momentum=0", "--set", "model.batchnorm=broadcast"], dir: again)
        let initial = try XCTUnwrap(try summary(again)["test_loss"] as? Double), exported = try XCTUnwrap(try summary(dir)["test_loss"] as? Double)
        // One training step moves the running statistics by momentum 0.1 towards that batch's.
        XCTAssertEqual(initial, exported, accuracy: 0.05 * exported)
        // The buffers were read, not left at their start: num_batches_tracked goes on from the
        // export's count, one step further.
        func tracked(_ run: String) throws -> [Float] {
            let file = run + "/model.safetensors"
            let exported = try MPIRun.runProcess([try MPIRun.binary, "export", "--run-dir", run, "--out", file], timeout: 60)
            XCTAssertEqual(exported.status, 0, exported.output)
            let tensors = try Safetensors.decode(Array(try Data(contentsOf: URL(fileURLWithPath: file)))).tensors
            return tensors.filter { $0.name.hasSuffix("num_batches_tracked") }.flatMap(\.values)
        }
        let (before, after) = (try tracked(dir), try tracked(again))
        XCTAssertFalse(before.isEmpty)
        XCTAssertGreaterThan(before.first ?? 0, 1)
        XCTAssertEqual(after, before.map { $0 + 1 })
    }
}
