import Foundation
import XCTest

/// Transfers longer than one MPI call may move (MPI counts are 32-bit: 2 GiB and more used to
/// trap) are split into pieces of at most `RINGSGD_MPI_MAX_MESSAGE_BYTES`. Gigabyte buffers
/// are out of reach here, so the tests set the limit to 4 KiB — as if 4 KiB were MPI's largest
/// count — and run `ringsgd check allreduce`, whose every megabyte-sized transfer then takes
/// the split path.
final class SplitMessagesUnderMPIRunTests: XCTestCase {
    /// Property: with every MPI call capped at 4 KiB, the ring still equals MPI_Allreduce
    /// within rounding and is bit-identical across ranks, and a 4 MB broadcast delivers the
    /// root's bits to every rank — whatever the sizes on each end of a message:
    /// - fp32, 512 KiB segments: messages of many pieces, edge segments not a multiple of
    ///   4 KiB, reduce-scatter slots longer than the message they receive;
    /// - fp32, 4 KiB segments on np·65536 values: every chunk 64 segments of exactly 1024
    ///   floats, messages of exactly the limit (split, no piece after the first);
    /// - int8: variable-length payloads into slots sized for the worst case;
    /// - the reference MPI_Allreduce and the broadcast: one call per 4 KiB on every rank.
    /// The check reports the limit and, per rank, how many sends, receives and collectives it
    /// split: a limit ignored anywhere (say, point-to-point still one call per message, which
    /// MPI would carry fine at these sizes) fails the test as surely as a wrong byte does.
    func testTransfersPastTheMessageLimitArriveWholeAndBitIdentical() throws {
        for np in [2, 3] {
            for extra in [[], ["--segment-bytes", "4096"], ["--codec", "int8"]] {
                let what = "check allreduce \(extra.joined(separator: " ")) at np \(np) with 4 KiB MPI calls"
                let largeCount = extra.contains("--segment-bytes") ? np * 65536 : 1000003
                let outcome = try MPIRun.run(np: np, ["check", "allreduce", "--counts", "0,1,\(np - 1),\(largeCount)"] + extra, timeout: 180,
                                             mpiArguments: ["-x", "RINGSGD_MPI_MAX_MESSAGE_BYTES=4096"])
                assertSucceeded(outcome, what)
                let lines = outcome.output.split(separator: "\n").filter { $0.hasPrefix("check allreduce") }
                XCTAssertEqual(lines.filter { $0.hasSuffix(" PASS") }.count, 4, "\(what):\n\(outcome.output)")
                XCTAssertEqual(lines.filter { $0.contains("broadcast_identical=true") && $0.contains("max_message_bytes=4096") }.count, 4,
                               "\(what):\n\(outcome.output)")
                let large = lines.first { $0.contains("count=\(largeCount) ") }.map(String.init) ?? ""
                for kind in ["split_sends", "split_receives", "split_collectives"] {
                    let counts = large.split(separator: " ").first { $0.hasPrefix(kind + "=") }?
                        .dropFirst(kind.count + 1).split(separator: ",").compactMap { Int($0) } ?? []
                    XCTAssertEqual(counts.count, np, "\(kind): one count per rank in '\(large)'")
                    XCTAssertTrue(counts.allSatisfy { $0 > 0 }, "\(kind): every rank took the split path: '\(large)'")
                }
            }
        }
    }

    /// Property: a limit no transfer could work with is one error line naming the variable,
    /// before MPI starts — not a crash, not a job that crawls through 1-byte messages.
    func testAnUnusableMessageLimitIsAOneLineError() throws {
        for value in ["12", "3000000000", "4k"] {
            let outcome = try MPIRun.run(np: 1, ["check", "allreduce", "--counts", "1"],
                                         mpiArguments: ["-x", "RINGSGD_MPI_MAX_MESSAGE_BYTES=\(value)"])
            assertOneLineError(outcome, "RINGSGD_MPI_MAX_MESSAGE_BYTES must be a whole number of bytes from 64 to 2147483647")
        }
    }
}
