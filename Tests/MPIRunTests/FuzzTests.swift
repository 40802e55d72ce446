import Foundation
import XCTest

/// Every decoder of outside bytes (codec payloads, checkpoints, IDX headers, YAML) either
/// decodes or throws: the corpus (seeds and every crash ever found) replays cleanly, and a
/// bounded libFuzzer run finds no new crash.
final class FuzzTests: XCTestCase {
    let root = MPIRun.packageRoot.path

    func testTheCorpusReplaysWithoutACrash() throws {
        let replayer = root + "/.build/release/fuzz-decoders"
        guard FileManager.default.isExecutableFile(atPath: replayer) else {
            throw XCTSkip("fuzz-decoders not built at \(replayer): run `swift build -c release` first (launch/test.sh does)")
        }
        let outcome = try MPIRun.runProcess([replayer, root + "/Tests/FuzzCorpus"], timeout: 120)
        assertSucceeded(outcome, "corpus replay")
        XCTAssertTrue(outcome.output.contains("without a crash"), outcome.output)
    }

    func testTwentySecondsOfFuzzingFindNoCrash() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-fuzz-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let outcome = try MPIRun.runProcess(["env", "FUZZ_OUT=\(out)", root + "/launch/fuzz.sh", "20"], timeout: 600)
        // No fuzz binary means the toolchain could not build for libFuzzer: skip, saying why.
        // (A crash is a fuzz binary that ran and exited non-zero: that fails below.)
        if outcome.status != 0 && !FileManager.default.isExecutableFile(atPath: root + "/.build-fuzz/release/fuzz-decoders") {
            throw XCTSkip("the libFuzzer build (swift build --sanitize=fuzzer) is not available here: \(outcome.output.split(separator: "\n").last ?? "")")
        }
        let crashes = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
        XCTAssertEqual(outcome.status, 0, "fuzzing found a crash: \(crashes)\n\(outcome.output.suffix(3000))")
        XCTAssertTrue(outcome.output.contains("Done "), outcome.output.suffix(2000).description)
    }
}
