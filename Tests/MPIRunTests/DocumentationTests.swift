import Foundation
import XCTest

/// Every command the README and `docs/` show in a ```sh block, run as a reader would run it, so
/// that a command that stops working fails the suite instead of a reader.
///
/// Each page's commands run in document order (a later one may read what an earlier one wrote),
/// with bash, in a scratch directory that looks like the checkout — symbolic links to its
/// `launch`, `configs`, `Sources`, `Package.swift`, `.build` and `Tests`, and a `runs/` of its
/// own — each bounded by a timeout and shortened so that the whole test takes minutes:
/// - `train` (also through `launch/quickstart.sh`): `--set train.max_steps=20 --set
///   train.epochs=1 --set checkpoint.every_steps=10` appended (a later `--set` wins), and
///   `--stop-after N` becomes `--stop-after 10`;
/// - `bench allreduce`: sizes up to 1 MiB (or `--min-bytes`), 3 iterations after 1 warm-up;
///   `bench compute`: 5 steps after 1; `bench codecs`: 64 Ki values, one repetition;
///   `bench scaling`: 10 steps per run, one round; `bench target`: 20 steps per run, evaluated
///   once, at the end (each evaluation of fashion-cnn's test set is seconds);
/// - `launch/hostfile.sh HOSTFILE NP`: a generated hostfile `localhost slots=2`, NP 2;
/// - `launch/elastic.sh`: its `train` shortened; `--hostfile` the generated one; on simulated
///   hosts as the simulated cluster; `--slurm` skipped (it runs inside an allocation);
/// - `sbatch … launch/slurm.sbatch`: submitted to a SLURM of `launch/testslurm.sh` — the one the
///   page starts itself (`SLURM_CONF=…`), or else one the test starts, with one node × 2 tasks —
///   and waited for; it must end COMPLETED 0:0.
/// A command followed by a comment line `# fails with: TEXT` must fail and print TEXT.
///
/// Skipped, each with a printed line naming the command and why, are only commands that need
/// what this machine may lack — root and network namespaces (`launch/simcluster.sh`), a SLURM
/// (`launch/testslurm.sh` exits 3), PyTorch (`launch/peer/torch_step.py`, and the two commands
/// that download it) — and `launch/test.sh`, the suite this test belongs to. A command the test
/// does not know how to run fails it: a new kind of command needs a rule here.
final class DocumentationTests: XCTestCase {
    static let root = MPIRun.packageRoot.path

    /// The pages whose commands are run; each must show at least one.
    static let pages = ["README.md", "docs/configuration.md", "docs/compression.md", "docs/across-hosts.md",
                        "docs/faults.md", "docs/models-and-data.md", "docs/design.md", "docs/benchmarks.md", "docs/transformer.md",
                        "docs/slow-links.md"]

    /// What every `train` gets appended.
    static let trainShortening = " --set train.max_steps=20 --set train.epochs=1 --set checkpoint.every_steps=10"

    /// The directory the pages' SLURM examples use for `launch/testslurm.sh` (replaced by one of
    /// this test's own, so that a run never meets another's daemons).
    static let documentedSlurmDirectory = "/tmp/ringsgd-slurm"

    func testREADME() throws { try run(page: "README.md") }
    func testConfiguration() throws { try run(page: "docs/configuration.md") }
    func testCompression() throws { try run(page: "docs/compression.md") }
    func testAcrossHosts() throws { try run(page: "docs/across-hosts.md") }
    func testFaults() throws { try run(page: "docs/faults.md") }
    func testModelsAndData() throws { try run(page: "docs/models-and-data.md") }
    func testSlowLinks() throws { try run(page: "docs/slow-links.md") }
    func testDesign() throws { try run(page: "docs/design.md") }
    func testBenchmarks() throws { try run(page: "docs/benchmarks.md") }
    func testTransformer() throws { try run(page: "docs/transformer.md") }

    /// Property: no page of `docs/` escapes this test.
    func testEveryPageIsRun() throws {
        let docs = try FileManager.default.contentsOfDirectory(atPath: Self.root + "/docs").filter { $0.hasSuffix(".md") }.map { "docs/" + $0 }
        XCTAssertEqual(Set(docs + ["README.md"]), Set(Self.pages), "each page needs an entry in DocumentationTests.pages and a test method")
    }

    /// Property: the extraction sees what a reader sees (continuations joined, comments dropped,
    /// `# fails with:` attached to its command, other blocks ignored) and rejects what it cannot run.
    func testExtractionJoinsContinuationsAndAttachesExpectedFailures() throws {
        let page = """
            ```sh
            # a comment
            launch/local.sh 2 train \\
                --config configs/fashion-mlp.yaml

            launch/local.sh 2 train --set train.lr=1
            # fails with: ringsgd: error: unknown config key
            ```
            ```text
            launch/local.sh 2 train
            ```
            """
        let commands = try Self.commands(inText: page, page: "t.md")
        XCTAssertEqual(commands.map(\.text), ["launch/local.sh 2 train --config configs/fashion-mlp.yaml", "launch/local.sh 2 train --set train.lr=1"])
        XCTAssertEqual(commands.map(\.line), [3, 6])
        XCTAssertEqual(commands.map(\.expectedError), [nil, "ringsgd: error: unknown config key"])
        let scratch = Scratch(directory: "/s", hostfile: "/s/h", substitutions: [])
        for unknown in ["rm -rf runs", "launch/local.sh 2 frobnicate", "launch/local.sh 2 train | tee log", "launch/local.sh 2 train  # note"] {
            XCTAssertThrowsError(try Self.plan(Command(page: "t.md", line: 1, text: unknown, expectedError: nil), in: scratch), unknown)
        }
        guard case let .shell(shell, _) = try Self.plan(Command(page: "t.md", line: 1, text: "launch/hostfile.sh hosts 32 train --stop-after 1000", expectedError: nil), in: scratch) else {
            return XCTFail("a hostfile command is run")
        }
        XCTAssertEqual(shell, "launch/hostfile.sh '/s/h' 2 train --stop-after 10" + Self.trainShortening)
        guard case let .shell(scaling, _) = try Self.plan(Command(page: "t.md", line: 1, text: ".build/release/ringsgd bench scaling --launcher hostfile:hosts --ranks 8,16", expectedError: nil), in: scratch) else {
            return XCTFail("a scaling benchmark across a hostfile is run")
        }
        XCTAssertEqual(scaling, ".build/release/ringsgd bench scaling --launcher hostfile:/s/h --ranks 8,16 --steps 10 --rounds 1 --ranks 2")
    }

    // MARK: - Extraction

    /// One command as a page shows it.
    struct Command {
        let page: String
        /// The line of the page where it starts (1-based).
        let line: Int
        /// Its lines, `\` continuations joined.
        var text: String
        /// `# fails with: TEXT` below it: it must fail, printing TEXT.
        var expectedError: String?

        var location: String { "\(page):\(line)" }
    }

    static func commands(in page: String) throws -> [Command] {
        try commands(inText: String(contentsOfFile: root + "/" + page, encoding: .utf8), page: page)
    }

    /// The commands of every ```sh block, in order.
    static func commands(inText text: String, page: String) throws -> [Command] {
        var commands: [Command] = []
        var fence: String?   // the info string of the open block
        var continued: Command?
        for (index, raw) in text.components(separatedBy: "\n").enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard let info = fence else {
                if line.hasPrefix("```") {
                    let tag = line.dropFirst(3).trimmingCharacters(in: .whitespaces)
                    // Commands are `sh` blocks; a shell block under another name would not be run.
                    if ["bash", "shell", "console", "zsh", "shell-session"].contains(tag.lowercased()) {
                        throw TestFailure("\(page):\(index + 1): a ```\(tag) block: write commands in ```sh blocks (run by this test), anything else in ```text")
                    }
                    fence = tag
                }
                continue
            }
            if line == "```" {
                if let open = continued { throw TestFailure("\(open.location): the command's last line ends in '\\'") }
                fence = nil
                continue
            }
            guard info == "sh" else { continue }
            if var open = continued {
                open.text += " " + line
                if open.text.hasSuffix("\\") { open.text = String(open.text.dropLast()).trimmingCharacters(in: .whitespaces); continued = open }
                else { commands.append(open); continued = nil }
                continue
            }
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let marker = "# fails with: "
                guard line.hasPrefix(marker) else { continue }   // a comment
                guard let last = commands.indices.last, commands[last].expectedError == nil else {
                    throw TestFailure("\(page):\(index + 1): '\(marker)' follows no command")
                }
                commands[last].expectedError = String(line.dropFirst(marker.count))
                continue
            }
            var command = Command(page: page, line: index + 1, text: line, expectedError: nil)
            if line.hasSuffix("\\") {
                command.text = String(line.dropLast()).trimmingCharacters(in: .whitespaces)
                continued = command
            } else {
                commands.append(command)
            }
        }
        if fence != nil { throw TestFailure("\(page): a code block is not closed") }
        return commands
    }

    /// Words as the shell splits them (quotes removed), for recognising a command.
    static func words(_ text: String) -> [String] {
        var words: [String] = [], current = "", quote: Character?, inWord = false
        for c in text {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c; inWord = true
            } else if c == " " || c == "\t" {
                if inWord { words.append(current); current = ""; inWord = false }
            } else {
                current.append(c); inWord = true
            }
        }
        if inWord { words.append(current) }
        return words
    }

    // MARK: - What to do with each command

    /// The scratch checkout a page's commands run in.
    struct Scratch {
        let directory: String
        /// `localhost slots=2`, standing in for a reader's hostfile.
        let hostfile: String
        /// Text replaced in every command before it runs.
        let substitutions: [(String, String)]
    }

    enum Plan {
        /// Run with bash in the scratch directory.
        case shell(String, timeout: TimeInterval)
        /// Run on the simulated cluster: needs root and network namespaces.
        case simulatedCluster(String)
        /// `sbatch`: submit (`--parsable` added) and wait for the job. `conf`: the SLURM_CONF a
        /// page's own `launch/testslurm.sh start` made; nil: the test's one-node SLURM.
        case submit(String, conf: String?)
        case startSlurm(String, directory: String)
        case stopSlurm(String, directory: String)
        /// PyTorch's side of a comparison: run where `python` has torch.
        case torch(String, python: String)
        case skip(String)
    }

    static func unknown(_ command: Command, _ why: String) -> TestFailure {
        TestFailure("\(command.location): DocumentationTests does not know how to run '\(command.text)' (\(why)); show it in a ```text block, or teach this test how to run it")
    }

    /// Recognises a command and shortens it; throws for one it does not know how to run.
    static func plan(_ command: Command, in scratch: Scratch) throws -> Plan {
        var text = command.text
        for (from, to) in scratch.substitutions { text = text.replacingOccurrences(of: from, with: to) }
        // A hostfile of a SLURM allocation's nodes: only inside an allocation.
        if text.hasPrefix("scontrol show hostnames $SLURM_JOB_NODELIST ") {
            return ProcessInfo.processInfo.environment["SLURM_JOB_NODELIST"] == nil
                ? .skip("lists the nodes of a SLURM allocation ($SLURM_JOB_NODELIST), and this test runs in none")
                : .shell(text, timeout: 30)
        }
        // One simple command: anything else would defeat the shortening appended to it.
        for bad in ["|", ";", "&", ">", "<", "`", "$(", " #"] where text.contains(bad) {
            throw unknown(command, "'\(bad)': only one simple command per line")
        }
        var words = Self.words(text), environment: [String] = []
        while let first = words.first, first.range(of: #"^[A-Za-z_][A-Za-z0-9_]*="#, options: .regularExpression) != nil {
            environment.append(words.removeFirst())   // VAR=value before the command
        }
        guard let program = words.first else { throw unknown(command, "no command") }
        let arguments = Array(words.dropFirst())
        switch program {
        case "launch/test.sh":
            return .skip("launch/test.sh is the test suite, of which this test is a part: run it yourself")
        case "launch/quickstart.sh":
            return .shell(text + trainShortening, timeout: 600)
        case "launch/local.sh":
            guard let np = arguments.first, Int(np) != nil else { throw unknown(command, "launch/local.sh NP …") }
            return .shell(try shorten(text, ringsgd: Array(arguments.dropFirst()), command), timeout: 240)
        case "launch/hostfile.sh":
            guard arguments.count >= 2, Int(arguments[1]) != nil,
                  let range = text.range(of: #"launch/hostfile\.sh +[^ ]+ +[0-9]+"#, options: .regularExpression) else {
                throw unknown(command, "launch/hostfile.sh HOSTFILE NP …")
            }
            text.replaceSubrange(range, with: "launch/hostfile.sh '\(scratch.hostfile)' 2")
            return .shell(try shorten(text, ringsgd: Array(arguments.dropFirst(2)), command), timeout: 240)
        case "launch/simcluster.sh":
            guard let dashes = arguments.firstIndex(of: "--") else { throw unknown(command, "launch/simcluster.sh OPTIONS -- ARGS") }
            return .simulatedCluster(try shorten(text, ringsgd: Array(arguments[(dashes + 1)...]), command))
        case "launch/elastic.sh":
            guard let dashes = arguments.firstIndex(of: "--") else { throw unknown(command, "launch/elastic.sh HOSTS -- train …") }
            var shell = try shorten(text, ringsgd: Array(arguments[(dashes + 1)...]), command)
            if arguments.contains("--simulated-hosts") { return .simulatedCluster(shell) }
            if arguments.contains("--slurm") { return .skip("runs inside a SLURM allocation (launch/slurm.sbatch with RINGSGD_ELASTIC does it)") }
            if let range = shell.range(of: #"--hostfile +[^ ]+"#, options: .regularExpression) {
                shell.replaceSubrange(range, with: "--hostfile '\(scratch.hostfile)'")
            }
            return .shell(shell, timeout: 240)
        case "sbatch":
            guard let script = arguments.firstIndex(of: "launch/slurm.sbatch") else { throw unknown(command, "sbatch of launch/slurm.sbatch only") }
            var shell = try shorten(text, ringsgd: Array(arguments[(script + 1)...]), command)
            shell = shell.replacingOccurrences(of: #" --wait(?= )"#, with: "", options: .regularExpression)
            guard let at = shell.range(of: "sbatch ") else { throw unknown(command, "sbatch") }
            shell.replaceSubrange(at, with: "sbatch --parsable ")
            let conf = environment.first { $0.hasPrefix("SLURM_CONF=") }.map { String($0.dropFirst("SLURM_CONF=".count)) }
            if conf == nil {   // the test's own SLURM: one node, two tasks
                shell = shell.replacingOccurrences(of: #"--nodes=[0-9]+"#, with: "--nodes=1", options: .regularExpression)
                    .replacingOccurrences(of: #"--ntasks-per-node=[0-9]+"#, with: "--ntasks-per-node=2", options: .regularExpression)
            }
            return .submit(shell, conf: conf)
        case "launch/testslurm.sh":
            guard arguments.count >= 2, ["start", "stop"].contains(arguments[0]) else { throw unknown(command, "launch/testslurm.sh start|stop DIR") }
            return arguments[0] == "start" ? .startSlurm(text, directory: arguments[1]) : .stopSlurm(text, directory: arguments[1])
        case ".build/release/ringsgd":
            // bench scaling through a launcher: the generated hostfile (at 2 ranks), or the
            // simulated cluster (root).
            if let range = text.range(of: #"--launcher hostfile:[^ ]+"#, options: .regularExpression) {
                text.replaceSubrange(range, with: "--launcher hostfile:\(scratch.hostfile)")
                return .shell(try shorten(text, ringsgd: arguments, command) + " --ranks 2", timeout: 240)
            }
            if text.contains("--launcher simcluster") { return .simulatedCluster(try shorten(text, ringsgd: arguments, command)) }
            return .shell(try shorten(text, ringsgd: arguments, command), timeout: 240)
        case "cat", "tail", "head", "ls":
            return .shell(text, timeout: 30)
        case "python3" where arguments.starts(with: ["-m", "venv"]):
            return .skip("creates a Python venv for PyTorch in the home directory, outside the scratch checkout (PyTorch is never a dependency of ringsgd)")
        case let pip where pip.hasSuffix("/bin/pip"):
            return .skip("downloads PyTorch from PyPI (network access, gigabytes)")
        case let python where python.hasSuffix("/bin/python") && ["launch/peer/torch_step.py", "launch/peer/torch_gpt_check.py"].contains(arguments.first ?? ""):
            let expanded = python.hasPrefix("~/") ? NSHomeDirectory() + String(python.dropFirst(1)) : python
            return .torch(text, python: expanded)
        default:
            throw unknown(command, "unknown program '\(program)'")
        }
    }

    /// `text` (ending in the ringsgd `arguments`) with the shortening for its subcommand.
    static func shorten(_ text: String, ringsgd arguments: [String], _ command: Command) throws -> String {
        switch (arguments.first, arguments.dropFirst().first) {
        case ("train"?, _):
            let stopped = text.replacingOccurrences(of: #"--stop-after [0-9]+"#, with: "--stop-after 10", options: .regularExpression)
            return stopped + trainShortening
        case ("evaluate"?, _), ("export"?, _), ("generate"?, _), ("--version"?, _), ("check"?, "allreduce"?):
            return text
        case ("bench"?, "allreduce"?):
            let least = arguments.firstIndex(of: "--min-bytes").flatMap { arguments.indices.contains($0 + 1) ? Int(arguments[$0 + 1]) : nil } ?? 0
            return text + " --max-bytes \(max(1 << 20, least)) --iterations 3 --warmup 1"
        case ("bench"?, "compute"?):
            return text + " --steps 5 --warmup 1"
        case ("bench"?, "codecs"?):
            return text + " --values 65536 --repetitions 1"
        case ("bench"?, "scaling"?):
            return text + " --steps 10 --rounds 1"
        case ("bench"?, "target"?):
            return text + " --set train.max_steps=20 --eval-every-steps 20"
        default:
            throw unknown(command, "ringsgd \(arguments.prefix(2).joined(separator: " ")) has no shortening")
        }
    }

    // MARK: - Running a page

    /// Why the simulated cluster cannot run here, or nil.
    static let simulatedClusterUnavailable: String? = {
        do {
            try SimulatedClusterTests.requireNamespaces()
            return nil
        } catch let skip as XCTSkip {
            return skip.message ?? "\(skip)"
        } catch {
            return "\(error)"
        }
    }()

    /// A scratch checkout: links to the package's folders, its own `runs/`, a hostfile. Removed
    /// when the test ends — the links first, so that nothing is ever removed through one.
    func makeScratch() throws -> Scratch {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-doc-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory + "/runs", withIntermediateDirectories: true)
        let links = ["launch", "configs", "Sources", "Package.swift", ".build", "Tests"].map { directory + "/" + $0 }
        addTeardownBlock {
            for link in links { unlink(link) }
            try? FileManager.default.removeItem(atPath: directory)
        }
        for link in links {
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: Self.root + "/" + (link as NSString).lastPathComponent)
        }
        // launch/build.sh rebuilds when `find Package.swift Sources -newer BINARY` prints
        // anything, and find reads a link's own time: date the links back. (MPIRun.built has
        // checked the real sources against the binary.)
        let touched = try MPIRun.runProcess(["touch", "-h", "-d", "@0"] + links, timeout: 10)
        XCTAssertEqual(touched.status, 0, touched.output)
        let hostfile = directory + "/hostfile-localhost"
        try "localhost slots=2\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        let slurm = "/tmp/rsdoc-" + UUID().uuidString.prefix(8).lowercased()   // short: socket paths under it
        return Scratch(directory: directory, hostfile: hostfile, substitutions: [(Self.documentedSlurmDirectory, slurm)])
    }

    /// What a page's SLURM directories are: started (with the harness to query), or unavailable.
    enum SlurmState { case running(SlurmHarness), unavailable(String), stopped }

    func run(page: String) throws {
        _ = try MPIRun.built("ringsgd")   // skips where it is not built, fails where it is stale
        let commands = try Self.commands(in: page)
        XCTAssertFalse(commands.isEmpty, "\(page) shows no command in a ```sh block")
        let scratch = try makeScratch()
        // Recognise every command before running any: an unknown one fails the page.
        var plans: [(Command, Plan)] = []
        for command in commands {
            do { plans.append((command, try Self.plan(command, in: scratch))) } catch { XCTFail("\(error)") }
        }
        guard plans.count == commands.count else { return }
        try provideNumpyFiles(for: page, commands: commands, in: scratch)

        var slurm: [String: SlurmState] = [:]
        var ownSlurm: SlurmState?
        var ran = 0, skipped: [String] = []
        func skip(_ command: Command, _ why: String) {
            skipped.append("\(command.location) '\(command.text)': \(why)")
            print("DocumentationTests: skipped \(command.location) '\(command.text)': \(why)")
        }
        for (command, plan) in plans {
            switch plan {
            case let .skip(why):
                skip(command, why)
            case let .shell(shell, timeout):
                check(command, try runShell(shell, in: scratch, timeout: timeout), shell)
                ran += 1
            case let .simulatedCluster(shell):
                if let why = Self.simulatedClusterUnavailable { skip(command, why); continue }
                check(command, try runShell(shell, in: scratch, timeout: 300), shell)
                ran += 1
            case let .torch(shell, python):
                guard FileManager.default.isExecutableFile(atPath: python),
                      try MPIRun.runProcess([python, "-c", "import torch"], timeout: 60).status == 0 else {
                    skip(command, "PyTorch is not installed for \(python) (the commands above install it)")
                    continue
                }
                check(command, try runShell(shell, in: scratch, timeout: 300), shell)
                ran += 1
            case let .startSlurm(shell, directory):
                let started = try runShell(shell, in: scratch, timeout: 120)
                let last = started.output.split(separator: "\n").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                if started.status == SlurmHarness.unavailable {
                    slurm[directory] = .unavailable(last)
                    skip(command, "SLURM is not available here: \(last)")
                    continue
                }
                let harness = SlurmHarness(directory: directory, conf: last)
                addTeardownBlock { try? harness.stop() }   // also when a later command fails
                check(command, started, shell)
                ran += 1
                slurm[directory] = started.status == 0 ? SlurmState.running(harness) : SlurmState.unavailable("launch/testslurm.sh start failed (above)")
            case let .stopSlurm(shell, directory):
                switch slurm[directory] {
                case let .unavailable(why)?: skip(command, "SLURM is not available here: \(why)")
                case .running?:
                    check(command, try runShell(shell, in: scratch, timeout: 60), shell)
                    slurm[directory] = .stopped
                    ran += 1
                default: XCTFail("\(command.location): stops a SLURM that no earlier command of the page started")
                }
            case let .submit(shell, conf):
                let harness: SlurmHarness
                if let conf {
                    switch slurm[(conf as NSString).deletingLastPathComponent] {
                    case let .running(started)?: harness = started
                    case let .unavailable(why)?: skip(command, "SLURM is not available here: \(why)"); continue
                    default: XCTFail("\(command.location): SLURM_CONF=\(conf) names no SLURM an earlier command of the page started"); continue
                    }
                } else {
                    if ownSlurm == nil {
                        do {
                            let started = try SlurmHarness.start()
                            addTeardownBlock { try? started.stop() }
                            ownSlurm = .running(started)
                        } catch let unavailable as XCTSkip {
                            ownSlurm = .unavailable(unavailable.message ?? "\(unavailable)")
                        } catch {
                            XCTFail("\(command.location): the test's SLURM did not start: \(error)")
                            ownSlurm = .unavailable("it did not start")
                        }
                    }
                    guard case let .running(started)? = ownSlurm else {
                        if case let .unavailable(why)? = ownSlurm { skip(command, why) }
                        continue
                    }
                    harness = started
                }
                try submit(command, shell, to: harness, in: scratch)
                ran += 1
            }
        }
        print("DocumentationTests: \(page): ran \(ran) commands, skipped \(skipped.count)")
        if ran == 0 && !skipped.isEmpty {
            throw XCTSkip("every command of \(page) was skipped:\n" + skipped.joined(separator: "\n"))
        }
    }

    /// Runs `shell` with bash in the scratch checkout.
    func runShell(_ shell: String, in scratch: Scratch, timeout: TimeInterval) throws -> MPIRun.Outcome {
        let outcome = try MPIRun.runProcess(["bash", "-c", "cd '\(scratch.directory)' && \(shell)"], timeout: timeout)
        print("DocumentationTests: \(String(format: "%.1f", outcome.seconds)) s, exit \(outcome.status): \(shell)")
        return outcome
    }

    /// Exit 0 — or, for a command documented as failing, the failure it documents.
    func check(_ command: Command, _ outcome: MPIRun.Outcome, _ shell: String) {
        let what = "\(command.location): \(shell)"
        guard let expected = command.expectedError else { return assertSucceeded(outcome, what) }
        XCTAssertFalse(outcome.timedOut, "\(what) timed out; output:\n\(outcome.output)")
        XCTAssertNotEqual(outcome.status, 0, "\(what) is documented as failing; output:\n\(outcome.output)")
        XCTAssertTrue(outcome.output.contains(expected), "\(what) must print '\(expected)', as the page says; output:\n\(outcome.output)")
    }

    /// Submits with `sbatch --parsable` and waits for the job, which must complete (or, if
    /// documented as failing, fail with its line in the job's output).
    func submit(_ command: Command, _ shell: String, to harness: SlurmHarness, in scratch: Scratch) throws {
        let withConf = shell.contains("SLURM_CONF=") ? shell : "SLURM_CONF='\(harness.conf)' " + shell
        let submitted = try runShell(withConf, in: scratch, timeout: 60)
        guard submitted.status == 0, let job = submitted.output.split(separator: "\n").last?.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespaces) }),
              !job.isEmpty, job.allSatisfy(\.isNumber) else {
            return XCTFail("\(command.location): sbatch failed (status \(submitted.status)): \(withConf)\n\(submitted.output)")
        }
        let (state, exit, _) = try harness.wait(job, within: 300)
        let output = (try? String(contentsOfFile: scratch.directory + "/ringsgd-\(job).out", encoding: .utf8)) ?? ""
        if let expected = command.expectedError {
            XCTAssertEqual(state, "FAILED", "\(command.location): job \(job):\n\(output)")
            XCTAssertTrue(output.contains(expected), "\(command.location): job \(job) must print '\(expected)':\n\(output)")
        } else {
            XCTAssertEqual(state, "COMPLETED", "\(command.location): job \(job) of \(withConf):\n\(output)")
            XCTAssertEqual(exit, "0:0", "\(command.location): job \(job):\n\(output)")
        }
    }

    // MARK: - Files a page's Python writes

    /// A page that evaluates on `data/test-x.npy` writes it with Python and NumPy first (a
    /// ```python block, not run: neither is a dependency). The test writes the same files — the
    /// Fashion-MNIST test set, uint8 images [N, 28, 28] and int64 labels — into the scratch
    /// checkout, and checks that the page still shows the Python that writes them.
    func provideNumpyFiles(for page: String, commands: [Command], in scratch: Scratch) throws {
        guard commands.contains(where: { $0.text.contains("data/test-x.npy") }) else { return }
        let text = try String(contentsOfFile: Self.root + "/" + page, encoding: .utf8)
        XCTAssertTrue(text.contains("```python") && text.contains(#"np.save(f"data/{name}-x.npy", x); np.save(f"data/{name}-y.npy""#),
                      "\(page) uses data/test-x.npy: it must show the Python that writes it")
        try FileManager.default.createDirectory(atPath: scratch.directory + "/data", withIntermediateDirectories: true)
        let fashion = "/usr/share/datasets/fashion-mnist"
        try NumpyCopy.write(of: fashion + "/t10k-images-idx3-ubyte.gz", descr: "|u1", to: scratch.directory + "/data/test-x.npy")
        try NumpyCopy.write(of: fashion + "/t10k-labels-idx1-ubyte.gz", descr: "<i8", to: scratch.directory + "/data/test-y.npy")
        print("DocumentationTests: \(page): wrote data/test-x.npy and data/test-y.npy as the page's Python would")
    }
}
