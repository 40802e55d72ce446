import ArgumentParser
import Foundation
import GradientCodecs
import MPITransport
import NeuralNet
import Training

/// `ringsgd` — distributed data-parallel SGD over MPI. Run it under `mpirun`
/// (`launch/local.sh`, `launch/hostfile.sh`, `launch/slurm.sbatch`).
@main
struct RingSGD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringsgd",
        abstract: "Distributed data-parallel SGD with a compressed ring all-reduce over MPI.",
        discussion: "Launch under mpirun: launch/local.sh 2 train --config configs/fashion-mlp.yaml\n`ringsgd --version` prints the version, the commit built and the libraries found (for bug reports).",
        subcommands: [Train.self, Evaluate.self, Generate.self, Export.self, Bench.self, Check.self]
    )

    /// Under mpirun every rank parses the same arguments: rank 0 alone reports a mistake in
    /// them, on one line (ranks printing at once interleave character by character), and
    /// exits non-zero; the others exit 0 — before MPI starts, so no rank waits for another.
    /// Why not non-zero everywhere: mpirun stops the job as soon as one rank exits non-zero,
    /// and a rank 0 still starting (a loaded node, more ranks than cores) was stopped before
    /// its line was out, leaving only mpirun's own message. A failure of the command itself
    /// (a file one rank cannot read) exits non-zero on every rank. A mistake in the arguments
    /// points at `--help`; a failure of the command itself does not.
    static func main() {
        let environment = ProcessInfo.processInfo.environment
        let rank = MPIRuntime.launcherRank(in: environment)
        runAgainWithWiderBLASKernels(rank: rank, environment: environment)
        // The launchers' sign that mpirun did start this rank (launch/run-ranks.sh drops the
        // line from what it shows): a job that fails without it never ran.
        if environment["RINGSGD_SAY_STARTED"] != nil {
            FileHandle.standardError.write(Data("ringsgd: rank \(rank) started\n".utf8))
        }
        func fail(_ message: String, code: Int32, sameOnEveryRank: Bool) -> Never {
            if rank == "0" { FileHandle.standardError.write(Data("ringsgd: error: \(message)\n".utf8)) }
            Foundation.exit(rank == "0" || !sameOnEveryRank ? code : 0)
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        // Handled here, not by the parser's `version:`: the report runs git, which every other
        // command should not pay for.
        if arguments == ["--version"] || arguments == ["version"] {
            print(BuildInfo.report)
            Foundation.exit(0)
        }
        if let unknown = unknownCommand(in: arguments) { fail(unknown, code: ExitCode.validationFailure.rawValue, sameOnEveryRank: true) }
        // `--help` is a command of its own that "fails" with the help text (code .success).
        func finish(_ error: Error, pointingAtHelp: Bool) -> Never {
            let code = exitCode(for: error)
            if code == .success { if rank == "0" { exit(withError: error) } else { Foundation.exit(0) } }
            let subcommand = commandWords(in: arguments).joined(separator: " ")
            let hint = pointingAtHelp ? " (see 'ringsgd \(subcommand.isEmpty ? "" : subcommand + " ")--help')" : ""
            fail(message(for: error) + hint, code: code.rawValue, sameOnEveryRank: pointingAtHelp)
        }
        var command: ParsableCommand
        do { command = try parseAsRoot() } catch { finish(error, pointingAtHelp: true) }
        do { try command.run() } catch { finish(error, pointingAtHelp: false) }
    }

    /// When OpenBLAS chose kernels narrower than this CPU's vector instructions (a CPU newer
    /// than its model table: see `BLASKernelChoice`), sets `OPENBLAS_CORETYPE` to the widest
    /// the CPU can run and runs this executable again with the same arguments: OpenBLAS reads
    /// the variable only when it loads. It runs before MPI starts, so under `mpirun` every rank
    /// does it on its own, in its own process. An `OPENBLAS_CORETYPE` the user set (not empty)
    /// is never overridden, and since the new process has it set, it never runs itself again.
    /// Only a DYNAMIC_ARCH OpenBLAS reads the variable, so no other build is run again.
    ///
    /// The process run again finds OpenBLAS's own choice in `ownChoiceVariable` and says, on
    /// rank 0, what it runs now — after checking that the kernels did widen — then removes the
    /// variable, so that processes it starts (`bench scaling`'s jobs) say nothing again.
    static func runAgainWithWiderBLASKernels(rank: String, environment: [String: String]) {
        let say = { (line: String) in if rank == "0" { FileHandle.standardError.write(Data("ringsgd: \(line)\n".utf8)) } }
        if let own = environment[ownChoiceVariable] {
            unsetenv(ownChoiceVariable)
            let now = BLASKernels.coreName, coreType = environment["OPENBLAS_CORETYPE"] ?? ""
            let widened = (BLASKernelChoice.width(ofKernels: now) ?? .belowAVX2) > (BLASKernelChoice.width(ofKernels: own) ?? .avx512)
            say(widened
                ? "OpenBLAS chose its \(own) kernels for this CPU, which can run wider ones: running its \(now) kernels (OPENBLAS_CORETYPE=\(coreType); set OPENBLAS_CORETYPE to choose yourself)"
                : "OPENBLAS_CORETYPE=\(coreType) did not widen OpenBLAS's \(own) kernels (it runs \(now)); set OPENBLAS_CORETYPE to choose yourself")
            return
        }
        let own = BLASKernels.coreName
        guard let wider = BLASKernelChoice.coreTypeToRunAgainWith(
            ownChoice: own, configuration: BLASKernels.configuration, userCoreType: environment["OPENBLAS_CORETYPE"],
            cpuinfo: { try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) }) else { return }
        setenv("OPENBLAS_CORETYPE", wider, 1)
        setenv(ownChoiceVariable, own, 1)
        // The file /proc/self/exe links to, not the link itself: a process run from the link
        // is named "exe" (`ps`, `top`, `pgrep ringsgd` would not find it). The link only when
        // that fails (the file replaced or removed since the start).
        if let file = executableFile { execv(file, CommandLine.unsafeArgv) }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when the exec failed: this process runs on with OpenBLAS's own kernels,
        // and `--version` and `bench compute` must not name a variable OpenBLAS never read.
        let reason = String(cString: strerror(errno))
        unsetenv("OPENBLAS_CORETYPE")
        unsetenv(ownChoiceVariable)
        say("could not run itself again with OPENBLAS_CORETYPE=\(wider) (\(reason)); running OpenBLAS's \(own) kernels, narrower than this CPU's")
    }

    /// The file this process runs, which `/proc/self/exe` links to; nil where the link cannot be
    /// read (no /proc, or the file removed since the start).
    static var executableFile: String? { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") }

    /// OpenBLAS's own kernel choice, passed to the process `runAgainWithWiderBLASKernels` runs.
    static let ownChoiceVariable = "RINGSGD_OPENBLAS_OWN_CHOICE"

    /// "unknown command 'trian'; did you mean 'train'? (…)" when the words before the first
    /// option name no command (`ringsgd trian`, `ringsgd bench alreduce`); nil otherwise.
    /// `ringsgd help WORDS` is checked as `ringsgd WORDS` (`ringsgd help trian` too).
    static func unknownCommand(in arguments: [String]) -> String? {
        var level: [ParsableCommand.Type] = configuration.subcommands, path = "ringsgd"
        if arguments.first == "help" { return unknownCommand(in: Array(arguments.dropFirst())) }
        for word in arguments.prefix(while: { !$0.hasPrefix("-") }) {
            guard !level.isEmpty else { return nil }   // a leaf's own arguments
            let names = level.map { $0._commandName }
            guard let next = level.first(where: { $0._commandName == word }) else {
                if path == "ringsgd" && word == "version" { return nil }
                let guess = Spelling.nearest(to: word, among: names, limit: 2).map { "; did you mean '\($0)'?" } ?? ""
                return "unknown command '\(path) \(word)'\(guess) (commands: \(names.joined(separator: ", ")); see '\(path) --help')"
            }
            level = next.configuration.subcommands
            path += " " + word
        }
        return nil
    }

    /// The leading words that name a command and its subcommands (`bench compute`), without
    /// the positional arguments a command takes after them: what `--help` follows in a hint.
    static func commandWords(in arguments: [String]) -> [String] {
        var level: [ParsableCommand.Type] = configuration.subcommands, words: [String] = []
        for word in arguments.prefix(while: { !$0.hasPrefix("-") }) {
            guard let next = level.first(where: { $0._commandName == word }) else { break }
            words.append(word)
            level = next.configuration.subcommands
        }
        return words
    }
}

/// What `ringsgd --version` prints, for bug reports: the version, the commit it was built
/// from, and the versions of Swift and of the libraries it runs on.
enum BuildInfo {
    static let version = "0.1.0"

    static var report: String {
        """
        ringsgd \(version) (\(commit))
        Swift \(swiftVersion); \(MPIRuntime.libraryVersion); \(BLASKernels.configuration) (kernels: \(BLASKernels.coreName)\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { ", OPENBLAS_CORETYPE=\($0)" } ?? "")); zstd \(ZstdStage.libraryVersion)
        """
    }

    /// The compiler that built this binary.
    static var swiftVersion: String {
        #if compiler(>=6.4)
        return "6.4 or later"
        #elseif compiler(>=6.3)
        return "6.3"
        #elseif compiler(>=6.2)
        return "6.2"
        #elseif compiler(>=6.1)
        return "6.1"
        #else
        return "6.0"
        #endif
    }

    /// The commit the binary was built from: `ringsgd.commit` beside it, which launch/build.sh
    /// and launch/test.sh write when they build (`git describe`); a binary built otherwise says
    /// so and names the checkout it runs from instead.
    static var commit: String {
        let executable = RingSGD.executableFile ?? CommandLine.arguments[0]
        if let recorded = try? String(contentsOfFile: executable + ".commit", encoding: .utf8),
           !recorded.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            return "built from commit \(recorded.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
        var directory = (executable as NSString).deletingLastPathComponent
        while directory != "/" && !directory.isEmpty {
            if FileManager.default.fileExists(atPath: directory + "/Package.swift") && FileManager.default.fileExists(atPath: directory + "/.git") {
                return "build commit not recorded (built without launch/build.sh); checkout \(directory) at \(describe(directory) ?? "an unknown commit")"
            }
            directory = (directory as NSString).deletingLastPathComponent
        }
        return "build commit not recorded; not run from a git checkout"
    }

    /// `git describe` of a checkout, or nil.
    static func describe(_ directory: String) -> String? {
        let process = Process(), pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "-C", directory, "describe", "--always", "--dirty", "--abbrev=12"]
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let described = output.trimmingCharacters(in: .whitespacesAndNewlines)
        return process.terminationStatus == 0 && !described.isEmpty ? described : nil
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print figures (run the communication ones under mpirun).",
        subcommands: [BenchAllReduce.self, BenchCodecs.self, BenchCompute.self, BenchScaling.self, BenchTarget.self]
    )
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Correctness checks run under mpirun by the test suite.",
        subcommands: [CheckAllReduce.self]
    )
}
