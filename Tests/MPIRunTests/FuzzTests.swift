import Foundation
import XCTest

/// Every decoder of outside bytes (codec payloads, checkpoints, IDX headers, YAML) either
/// decodes or throws: the corpus (seeds and every crash ever found) replays cleanly, and a
/// bounded libFuzzer run finds no new crash.
final class FuzzTests: XCTestCase {
    let root = MPIRun.packageRoot.path

    /// Property: every input in Tests/FuzzCorpus (seeds and every crash ever found) decodes or
    /// throws, under the release replayer built from the current sources.
    func testTheCorpusReplaysWithoutACrash() throws {
        let outcome = try MPIRun.runProcess([try MPIRun.built("fuzz-decoders"), root + "/Tests/FuzzCorpus"], timeout: 120)
        assertSucceeded(outcome, "corpus replay")
        XCTAssertTrue(outcome.output.contains("without a crash"), outcome.output)
    }

    /// Property: 20 s of libFuzzer with AddressSanitizer (launch/fuzz.sh) build, run, and find
    /// no crash. Skipped only where the toolchain has no libFuzzer; any other failure to build fails.
    /// The build is unoptimised (`FUZZ_BUILD=debug`): 40 s sooner on 2 cores, for the suite's
    /// short run; release builds are for fuzzing campaigns.
    func testTwentySecondsOfFuzzingFindNoCrash() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-fuzz-\(UUID().uuidString)").path
        // Kept when the run fails: the crashing input is what a fix needs (and what goes into
        // Tests/FuzzCorpus afterwards).
        var found = false
        defer { if !found { try? FileManager.default.removeItem(atPath: out) } }
        let outcome = try MPIRun.runProcess(["env", "FUZZ_OUT=\(out)", "FUZZ_BUILD=debug", root + "/launch/fuzz.sh", "20"], timeout: 600)
        // No libFuzzer in this toolchain: the driver's words where compiler-rt lacks it ("error:
        // unsupported option '-sanitize=fuzzer' for target …"), or a linker missing its runtime.
        let output = outcome.output
        let noLibFuzzer = output.split(separator: "\n").first { $0.contains("unsupported option '-sanitize=fuzzer'")
            || $0.contains("libclang_rt.fuzzer") && ($0.contains("cannot find") || $0.contains("No such file")) }
        if outcome.status != 0, let noLibFuzzer {
            throw XCTSkip("this toolchain has no libFuzzer (swift build --sanitize=fuzzer): \(noLibFuzzer)")
        }
        let crashes = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
        found = !crashes.isEmpty
        XCTAssertEqual(outcome.status, 0, (crashes.isEmpty ? "launch/fuzz.sh failed (the build, or the fuzzer without a crash file)"
                                                           : "fuzzing found a crash, kept in \(out): \(crashes)") + "\n\(output.suffix(6000))")
        XCTAssertTrue(output.contains("Done "), output.suffix(2000).description)
    }
}
