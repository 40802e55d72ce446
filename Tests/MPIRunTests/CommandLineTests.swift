import Foundation
import NeuralNet
import XCTest

/// What a user meets first on the command line: `--version`, a mistyped command, `--help`.
final class CommandLineTests: XCTestCase {
    func ringsgd(_ arguments: [String]) throws -> MPIRun.Outcome {
        try MPIRun.runProcess([try MPIRun.binary] + arguments, timeout: 30)
    }

    /// Property: a job that outlives its timeout is killed whole — the shell the test started,
    /// its children, and a child that made a process group of its own (as mpirun's ranks are),
    /// all in the session `setsid` made — so no test leaves load behind (kill(−pid) reached only
    /// the waiting `setsid`).
    func testATimedOutJobIsKilledWhole() throws {
        let marker = "\(Int.random(in: 100_000 ... 999_999)).5"
        let outcome = try MPIRun.runProcess(["sh", "-c", "perl -e 'setpgrp; exec \"sleep\", \"\(marker)\"' & sleep \(marker); wait"], timeout: 1)
        XCTAssertTrue(outcome.timedOut)
        usleep(300_000)
        let left = try MPIRun.runProcess(["pgrep", "-f", "^sleep \(marker)$"], timeout: 10).output   // not the pgrep's own setsid
        XCTAssertEqual(left.trimmingCharacters(in: .whitespacesAndNewlines), "", "processes left running")
    }

    /// Property: `--version` names the version, the commit it was built from, and the versions
    /// of Swift, OpenMPI, OpenBLAS and zstd — what a bug report needs.
    func testVersionNamesTheBuildAndItsLibraries() throws {
        let outcome = try ringsgd(["--version"])
        assertSucceeded(outcome, "--version")
        for part in ["ringsgd 0.", "commit ", "Swift 6.", "Open MPI v", "OpenBLAS ", "zstd 1."] {
            XCTAssertTrue(outcome.output.contains(part), "'\(part)' in:\n\(outcome.output)")
        }
        // launch/test.sh and build.sh record the commit they built from beside the binary.
        if let recorded = try? String(contentsOfFile: try MPIRun.binary + ".commit", encoding: .utf8) {
            XCTAssertTrue(outcome.output.contains("built from commit \(recorded.trimmingCharacters(in: .whitespacesAndNewlines))"), outcome.output)
        }
    }

    /// Property: on a CPU older than the build's target (Haswell), `ringsgd` ends with exit
    /// status 2 and one line naming what the CPU lacks and what to do — not SIGILL with no word
    /// — and on one that has it all, it runs. The CPUs are QEMU's user-mode emulations of a
    /// Westmere (no AVX), a Sandy Bridge (AVX, no AVX2 or FMA) and a Haswell.
    func testAnOlderCPUGetsOneLineNamingWhatItLacks() throws {
        #if arch(x86_64)
        guard let qemu = ["/usr/bin/qemu-x86_64", "/usr/bin/qemu-x86_64-static"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("qemu-x86_64 is not installed (launch/setup.sh --with-slurm installs qemu-user): no older CPU to run on")
        }
        for (cpu, lacking) in [("Westmere", "avx, fma, f16c, movbe, avx2, bmi1, bmi2, lzcnt"), ("SandyBridge", "fma, f16c, movbe, avx2, bmi1, bmi2, lzcnt")] {
            let outcome = try MPIRun.runProcess([qemu, "-cpu", cpu, try MPIRun.binary, "--version"], timeout: 120)
            XCTAssertFalse(outcome.timedOut, "\(cpu): timed out")
            XCTAssertEqual(outcome.status, 2, "\(cpu): \(outcome.output)")
            let lines = outcome.output.split(separator: "\n").filter { !$0.hasPrefix("qemu-x86_64: warning") }
            XCTAssertEqual(lines, ["ringsgd: error: this CPU lacks \(lacking), which this build was compiled for (Package.swift's cpuFlags: -target-cpu haswell, x86-64 CPUs since 2013); set cpuFlags to [] in Package.swift and build again"], cpu)
        }
        let haswell = try MPIRun.runProcess([qemu, "-cpu", "Haswell", try MPIRun.binary, "--version"], timeout: 120)
        assertSucceeded(haswell, "--version on an emulated Haswell")
        XCTAssertTrue(haswell.output.contains("ringsgd 0."), haswell.output)
        #else
        throw XCTSkip("the CPU check is x86-64's: other builds keep the compiler's default target")
        #endif
    }

    /// Property: left to itself (no `OPENBLAS_CORETYPE`), `ringsgd` runs OpenBLAS kernels as
    /// wide as this CPU can run, and says so on one line exactly when OpenBLAS's own choice —
    /// what this test process runs, when it has no `OPENBLAS_CORETYPE` — is narrower. With
    /// `OPENBLAS_CORETYPE` set, the user's choice is run as it is, without a word.
    func testOpenBLASKernelsAreAsWideAsTheCPU() throws {
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else {
            throw XCTSkip("no /proc/cpuinfo: the CPU's flags are unknown here")
        }
        guard (ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "").isEmpty else {
            throw XCTSkip("OPENBLAS_CORETYPE is set for the tests: OpenBLAS's own choice is unknown here")
        }
        let flags = BLASKernelChoice.cpuFlags(cpuinfo: cpuinfo), own = BLASKernels.coreName
        // The executable's own decision (unit-tested in BLASKernelChoiceTests); checked here is
        // that the binary acts on it.
        let expected = BLASKernelChoice.coreTypeToRunAgainWith(ownChoice: own, configuration: BLASKernels.configuration,
                                                               userCoreType: nil, cpuinfo: { cpuinfo })
        print("OpenBLAS's own kernels here: \(own) on a CPU that can run \(BLASKernelChoice.width(ofCPUFlags: flags)); "
              + (expected.map { "ringsgd must run \($0)" } ?? "ringsgd must keep them"))
        let outcome = try MPIRun.runProcess(["env", "-u", "OPENBLAS_CORETYPE", try MPIRun.binary, "--version"], timeout: 30)
        assertSucceeded(outcome, "--version")
        let afterKernelsLabel = try XCTUnwrap(outcome.output.components(separatedBy: "(kernels: ").dropFirst().first, outcome.output)
        let kernels = String(afterKernelsLabel.prefix { $0.isLetter })
        XCTAssertEqual(kernels, expected ?? own, outcome.output)
        XCTAssertEqual(outcome.output.components(separatedBy: "ringsgd: OpenBLAS chose its \(own) kernels for this CPU, which can run wider ones: running its \(kernels) kernels").count - 1,
                       expected == nil ? 0 : 1, outcome.output)
        XCTAssertFalse(outcome.output.contains("did not widen"), outcome.output)
        // The user's choice stands (Prescott runs on every x86-64 CPU).
        let pinned = try MPIRun.runProcess(["env", "OPENBLAS_CORETYPE=Prescott", try MPIRun.binary, "--version"], timeout: 30)
        assertSucceeded(pinned, "--version with OPENBLAS_CORETYPE=Prescott")
        XCTAssertTrue(pinned.output.contains("kernels: Prescott, OPENBLAS_CORETYPE=Prescott"), pinned.output)
        XCTAssertFalse(pinned.output.contains("OpenBLAS chose its"), pinned.output)
    }

    /// Property: the process `ringsgd` runs again with wider kernels (found by the variable
    /// that carries OpenBLAS's own choice) says on one line what it runs now, and whether the
    /// kernels did widen — checked on any CPU, whatever OpenBLAS would choose here by itself:
    /// Haswell's kernels against a Prescott "own choice".
    func testTheProcessRunAgainSaysWhichKernelsItRuns() throws {
        guard BLASKernels.configuration.contains("DYNAMIC_ARCH") else {
            throw XCTSkip("OpenBLAS is not a DYNAMIC_ARCH build (\(BLASKernels.configuration)): it ignores OPENBLAS_CORETYPE")
        }
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              BLASKernelChoice.width(ofCPUFlags: BLASKernelChoice.cpuFlags(cpuinfo: cpuinfo)) >= .avx2 else {
            throw XCTSkip("this CPU cannot run OpenBLAS's Haswell kernels")
        }
        let outcome = try MPIRun.runProcess(["env", "OPENBLAS_CORETYPE=Haswell", "RINGSGD_OPENBLAS_OWN_CHOICE=Prescott",
                                             try MPIRun.binary, "--version"], timeout: 30)
        assertSucceeded(outcome, "--version run again")
        let said = outcome.output.components(separatedBy: "\n").filter { $0.hasPrefix("ringsgd: ") }
        XCTAssertEqual(said, ["ringsgd: OpenBLAS chose its Prescott kernels for this CPU, which can run wider ones: running its Haswell kernels (OPENBLAS_CORETYPE=Haswell; set OPENBLAS_CORETYPE to choose yourself)"],
                       outcome.output)
        XCTAssertTrue(outcome.output.contains("(kernels: Haswell, OPENBLAS_CORETYPE=Haswell)"), outcome.output)
        // Kernels that did not widen are said to, not passed over.
        let same = try MPIRun.runProcess(["env", "OPENBLAS_CORETYPE=Haswell", "RINGSGD_OPENBLAS_OWN_CHOICE=SkylakeX",
                                          try MPIRun.binary, "--version"], timeout: 30)
        assertSucceeded(same, "--version run again, not wider")
        XCTAssertTrue(same.output.contains("ringsgd: OPENBLAS_CORETYPE=Haswell did not widen OpenBLAS's SkylakeX kernels (it runs Haswell)"), same.output)
    }

    /// Property: the process is named "ringsgd" (what `ps`, `top` and `pgrep ringsgd` see)
    /// — also when it ran itself again with wider kernels, which it does at its start on a CPU
    /// whose kernels OpenBLAS narrows (an exec of /proc/self/exe would name it "exe"). Read
    /// once `train` has printed its start line, then the run is ended.
    func testTheProcessIsNamedRingsgd() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-name-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = directory + "/output"
        XCTAssertTrue(FileManager.default.createFile(atPath: log, contents: nil), log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try MPIRun.binary)
        process.arguments = ["train", "--config", MPIRun.packageRoot.path + "/configs/fashion-mlp.yaml", "--run-dir", directory + "/run"]
        process.environment = ProcessInfo.processInfo.environment.filter { $0.key != "OPENBLAS_CORETYPE" }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        (process.standardOutput, process.standardError) = (output, output)
        try process.run()
        try output.close()
        defer {
            if process.isRunning { process.terminate() }
            let end = Date().addingTimeInterval(10)
            while process.isRunning && Date() < end { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        var printed = "", name = ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && process.isRunning {
            usleep(50_000)
            printed = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            guard printed.contains("ringsgd train: ") else { continue }
            name = ((try? String(contentsOfFile: "/proc/\(process.processIdentifier)/comm", encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            break
        }
        XCTAssertTrue(printed.contains("ringsgd train: "), "no start line within 60 s:\n\(printed)")
        XCTAssertEqual(name, "ringsgd", printed)
        guard printed.contains("ringsgd: OpenBLAS chose its") else {
            throw XCTSkip("OpenBLAS's own kernels are the CPU's widest here: ringsgd did not run itself again, so only the name it was started with was checked")
        }
    }

    /// Property: a mistyped command (at any level) is one line naming it, suggesting the
    /// command meant and listing the others.
    func testAnUnknownCommandSuggestsTheOneMeant() throws {
        // Valid invocations are not taken for mistakes.
        for valid in [["help", "train"], ["bench"], ["--help"], ["train", "--help"], ["bench", "codecs", "--help"]] {
            let outcome = try ringsgd(valid)
            XCTAssertEqual(outcome.status, 0, "\(valid): \(outcome.output)")
            XCTAssertFalse(outcome.output.contains("unknown command"), "\(valid): \(outcome.output)")
        }
        assertOneLineError(try ringsgd(["trian", "--config", "x.yaml"]), "unknown command 'ringsgd trian'; did you mean 'train'? (commands: train, evaluate, generate, export, bench, check")
        assertOneLineError(try ringsgd(["bench", "alreduce"]), "unknown command 'ringsgd bench alreduce'; did you mean 'allreduce'?")
        assertOneLineError(try ringsgd(["frobnicate"]), "unknown command 'ringsgd frobnicate' (commands: train")
        // `help` takes the same path: a mistyped one is not the top-level help and exit 0.
        assertOneLineError(try ringsgd(["help", "trian"]), "unknown command 'ringsgd trian'; did you mean 'train'?")
        assertOneLineError(try ringsgd(["help", "bench", "alreduce"]), "unknown command 'ringsgd bench alreduce'; did you mean 'allreduce'?")
        // A stray argument's hint points at the command's help, not at the stray word's.
        assertOneLineError(try ringsgd(["train", "extra-word"]), "Unexpected argument 'extra-word' (see 'ringsgd train --help')")
        // A negative number given to a numeric option is that option's value, checked as such
        // (the parser took "-1" for an option and said the value was missing).
        assertOneLineError(try ringsgd(["check", "allreduce", "--timeout-seconds", "-1"]), "--timeout-seconds must be a number of seconds ≥ 0 (0: wait for ever), got -1.0")
        assertOneLineError(try ringsgd(["bench", "target", "--rounds", "-2"]), "--ranks, --eval-every-steps and --rounds must be ≥ 1")
    }

    /// Property: help states each default once, and example commands keep their line breaks
    /// (no example is reflowed in mid-command).
    func testHelpStatesDefaultsOnceAndExamplesStayWhole() throws {
        for command in [["train"], ["evaluate"], ["export"], ["bench", "allreduce"], ["bench", "scaling"], ["bench", "compute"], ["bench", "codecs"]] {
            let help = try ringsgd(command + ["--help"])
            assertSucceeded(help, "\(command) --help")
            // An option's text runs until the next line starting with "  -" (help wraps it).
            let options = help.output.components(separatedBy: "\n  -").dropFirst()
            for option in options {
                XCTAssertLessThanOrEqual(option.components(separatedBy: "(default:").count - 1, 1, "\(command): a default stated twice: -\(option)")
                XCTAssertLessThanOrEqual(option.components(separatedBy: "default:").count - 1, 1, "\(command): a default stated twice: -\(option)")
            }
        }
        let scaling = try ringsgd(["bench", "scaling", "--help"]).output
        XCTAssertTrue(scaling.contains("  ringsgd bench scaling --config configs/synthetic-large.yaml \\\n      --launcher simcluster --rate 1gbit --ranks 1,2,4 \\\n"), scaling)
        let evaluate = try ringsgd(["evaluate", "--help"]).output
        XCTAssertTrue(evaluate.contains("  launch/local.sh 2 evaluate --run-dir runs/fashion-cnn \\\n      --set data.test_images=other.npy --set data.test_labels=other-labels.npy\n"), evaluate)
    }

    /// Property: `bench codecs` times every pass of every codec asked for (and a ring hop and
    /// the all-gather, as separate passes and fused) beside the memory baselines of the same run, and reports each as GB/s and as a fraction of triad's (1.0
    /// for triad itself).
    func testBenchCodecsTimesEveryPassBesideTheMemoryBaselines() throws {
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-codecs-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: json) }
        let outcome = try ringsgd(["bench", "codecs", "--codec", "int8,sign", "--values", "65536", "--repetitions", "2", "--json", json])
        assertSucceeded(outcome, "bench codecs")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        let rows = object?["results"] as? [[String: Any]] ?? []
        XCTAssertEqual(Set(rows.map { "\($0["codec"]!) \($0["pass"]!)" }),
                       Set(["memory copy", "memory triad"] + ["int8", "sign"].flatMap { codec in
                           ["encode+EF", "decode+acc", "encode-once", "hop passes", "hop fused", "gather passes", "gather fused"].map { "\(codec) \($0)" }
                       }), "\(rows)")
        for row in rows {
            let rate = row["fp32_GBps"] as? Double ?? 0, fraction = row["fraction_of_triad"] as? Double ?? 0
            XCTAssertTrue(rate > 0 && rate.isFinite && fraction > 0 && fraction.isFinite, "\(row)")
        }
        XCTAssertEqual(rows.first { $0["pass"] as? String == "triad" }?["fraction_of_triad"] as? Double ?? 0, 1, accuracy: 1e-12)
        assertOneLineError(try ringsgd(["bench", "codecs", "--codec", "int9"]), "--codec: unknown codec 'int9'")
    }
}
