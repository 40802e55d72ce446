import Foundation
import XCTest

/// `comm.sync: diloco | local_sgd` and `--target` under real mpirun on Fashion-MNIST: the
/// pseudo-gradient's all-reduce on the communication thread (comm.overlap) and on the
/// training thread, replicas identical at every outer step at np 2 and 3, resume between
/// outer steps bit-identical, and a target that stops every rank.
final class LocalStepsUnderMPIRunTests: XCTestCase {
    func train(np: Int, _ extra: [String], dir: String) throws -> MPIRun.Outcome {
        let diloco = ["--set", "comm.sync=diloco", "--set", "comm.sync_every=6", "--set", "comm.codec=int8", "--set", "comm.error_feedback=true",
                      "--set", "checkpoint.every_steps=8"]
        let outcome = try MPIRun.run(np: np, ["train"] + TrainUnderMPIRunTests.short + diloco + ["--run-dir", dir] + extra, timeout: 180)
        assertSucceeded(outcome, "train np \(np) \(extra)")
        return outcome
    }

    /// Property: at np 2 and 3, with the outer all-reduce on the communication thread and on
    /// the training thread, every rank ends on the same θ_outer (the trainer's check after each
    /// outer step passed), bit-identical between the two threads, and stopping between outer
    /// steps (after step 16: outer steps at 12 and 18) then resuming gives the same bits.
    func testReplicasAgreeAndResumeBetweenOuterStepsIsBitIdentical() throws {
        for np in [2, 3] {
            let whole = temporaryDirectory(), serial = temporaryDirectory(), stopped = temporaryDirectory()
            let outcome = try train(np: np, [], dir: whole)
            XCTAssertTrue(outcome.output.contains("diloco: 6 local steps between outer steps"), outcome.output)
            XCTAssertEqual(try summary(whole)["outer_steps"] as? Int, 7, "after 6, 12, …, 36 and the last step (40)")
            // No every-step averaging (comm.sync_warmup_steps 0): nothing to compare with the
            // isolated cost of a step's gradient, so no exposed time; the outer waits are in comm.
            XCTAssertEqual(try summary(whole)["comm_exposed_seconds"] as? Double, 0)
            XCTAssertGreaterThan(try summary(whole)["comm_seconds"] as? Double ?? 0, 0)
            _ = try train(np: np, ["--set", "comm.overlap=false"], dir: serial)
            assertSameParameters(serial, whole, "np \(np): overlap changes no bits")
            _ = try train(np: np, ["--stop-after", "16"], dir: stopped)
            XCTAssertTrue(FileManager.default.fileExists(atPath: stopped + "/checkpoints/step-00000016.local-rank-\(np - 1)"))
            assertResumed(try train(np: np, ["--resume"], dir: stopped), dir: stopped, from: 16)
            assertSameParameters(stopped, whole, "np \(np): resumed between outer steps")
        }
    }

    /// Property: streaming fragments under real MPI — a fragment's all-reduce on the communication
    /// thread (MPI_THREAD_SERIALIZED) while the training thread takes local steps and, between
    /// them, evaluates, checks replicas and writes checkpoints — end with identical replicas at np
    /// 3 and resume bit-identically from a checkpoint taken with a fragment in flight.
    func testStreamingFragmentsUnderMPI() throws {
        // fashion-mlp has 3 layers: 3 fragments, starting after local steps ≡ 0, 2, 4 (mod 6),
        // each applied 2 steps later; the one started after step 14 (≡ 2) is in flight at 15.
        let streaming = ["--set", "comm.fragments=3", "--set", "comm.outer_delay=2", "--set", "train.eval_every_steps=5",
                         "--set", "consistency.check_every_steps=7"]
        let whole = temporaryDirectory(), stopped = temporaryDirectory()
        let outcome = try train(np: 3, streaming, dir: whole)
        XCTAssertTrue(outcome.output.contains("3 fragments in turn, each applied 2 steps after it starts"), outcome.output)
        _ = try train(np: 3, streaming + ["--stop-after", "15"], dir: stopped)
        assertResumed(try train(np: 3, streaming + ["--resume"], dir: stopped), dir: stopped, from: 15)
        assertSameParameters(stopped, whole, "resumed with a fragment in flight")
    }

    /// Property: `--target` stops every rank at the evaluation that reaches it (the job exits 0
    /// at that step) and summary.json records the step, the time and the bytes to it.
    func testATargetStopsEveryRank() throws {
        let dir = temporaryDirectory()
        let outcome = try train(np: 2, ["--set", "train.eval_every_steps=5", "--target", "test_accuracy=0.5"], dir: dir)
        XCTAssertTrue(outcome.output.contains("target test_accuracy=0.5 reached at step"), outcome.output)
        let s = try summary(dir)
        let step = try XCTUnwrap(s["target_step"] as? Int)
        XCTAssertEqual(s["steps"] as? Int, step)
        XCTAssertLessThan(step, 40)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(s["test_accuracy"] as? Double), 0.5)
        XCTAssertGreaterThan(try XCTUnwrap(s["time_to_target_seconds"] as? Double), 0)
    }

    /// Property: a target the model cannot report is one error line before training starts.
    func testATargetTheModelHasNotGotIsOneLine() throws {
        let outcome = try MPIRun.run(np: 2, ["train"] + TrainUnderMPIRunTests.short + ["--run-dir", temporaryDirectory(), "--target", "perplexity=3"],
                                     timeout: 60)
        assertOneLineError(outcome, "--target perplexity: this model is a classifier")
    }
}
