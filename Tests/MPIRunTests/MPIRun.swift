import Foundation
import XCTest

/// Runs the real `ringsgd` binary under real `mpirun`, bounded by a timeout, capturing
/// output. The suite never hangs: past the timeout mpirun's process group is killed and the
/// test fails with everything the ranks printed.
enum MPIRun {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The release binary the README's commands build (`RINGSGD_BINARY` overrides, unchecked
    /// for age, and fails when it names no executable): skips where it is not built, fails
    /// where it is stale (`built`).
    static var binary: String {
        get throws {
            guard let path = ProcessInfo.processInfo.environment["RINGSGD_BINARY"] else { return try built("ringsgd") }
            // Set by hand and wrong: a failure, not a skip (a typo would otherwise skip every test).
            guard FileManager.default.isExecutableFile(atPath: path) else { throw TestFailure("RINGSGD_BINARY \(path) is not an executable: fix it or unset it") }
            return path
        }
    }

    /// `.build/release/PRODUCT`, checked: skips where it is not built; fails where it is older
    /// than a source — a plain `swift test` builds only the test targets, and would test a
    /// stale binary.
    static func built(_ product: String) throws -> String {
        let path = packageRoot.appendingPathComponent(".build/release/" + product).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw XCTSkip("\(product) not built at \(path): run `swift build -c release --product \(product)` first (launch/test.sh does)")
        }
        if let source = newerSource[product] {
            throw TestFailure("\(path) is older than \(source): run `swift build -c release --product \(product)` (launch/test.sh does)")
        }
        return path
    }

    /// Per built product, the newest source newer than it, if any: Package.swift, or a file
    /// (hidden ones aside: an editor's swap file is no source) under the Sources/ folders —
    /// whatever they are — of the modules linked into it, as its Objects.LinkFileList names
    /// them (…/MODULE.build/FILE.o, by C99 name); without that list, all of Sources/. Another
    /// product's source would not make `swift build --product` relink it. Found once per process.
    static let newerSource: [String: String] = {
        let files = FileManager.default, root = packageRoot.path + "/"
        let modified = { (path: String) in (try? files.attributesOfItem(atPath: root + path))?[.modificationDate] as? Date }
        let isSource = { (path: String) in
            !path.split(separator: "/").contains { $0.hasPrefix(".") }
                && (try? files.attributesOfItem(atPath: root + path))?[.type] as? FileAttributeType == .typeRegular
        }
        let folders = (try? files.contentsOfDirectory(atPath: root + "Sources")) ?? []
        var result: [String: String] = [:]
        for product in ["ringsgd", "fuzz-decoders"] {
            guard let built = modified(".build/release/" + product) else { continue }
            let linked = (try? String(contentsOfFile: root + ".build/release/\(product).product/Objects.LinkFileList", encoding: .utf8))
                .map { Set($0.split { $0 == "\n" || $0 == "/" }.filter { $0.hasSuffix(".build") }.map { $0.dropLast(6) }) }
            let sources = folders.filter { folder in linked?.contains(Substring(folder.map { $0.isLetter || $0.isNumber ? $0 : "_" })) ?? true }
                .flatMap { folder in (files.enumerator(atPath: root + "Sources/" + folder)?.allObjects as? [String] ?? []).map { "Sources/\(folder)/\($0)" } }
                .filter(isSource) + ["Package.swift"]
            if let (newest, time) = sources.compactMap({ path in modified(path).map { (path, $0) } }).max(by: { $0.1 < $1.1 }), time > built {
                result[product] = newest
            }
        }
        return result
    }()

    struct Outcome {
        let status: Int32
        let output: String
        let timedOut: Bool
        /// Wall-clock seconds until the job ended.
        var seconds = 0.0
    }

    static func run(np: Int, _ arguments: [String], timeout: TimeInterval = 120,
                    mpiArguments: [String] = []) throws -> Outcome {
        let binary = try Self.binary
        var command = ["mpirun", "-np", "\(np)", "--oversubscribe", "-x", "OPENBLAS_NUM_THREADS=1"]
        if getuid() == 0 { command.append("--allow-run-as-root") }
        command += mpiArguments + [binary] + arguments
        return try runProcess(command, timeout: timeout)
    }

    /// An MPMD launch: one rank per entry, each with its own `ringsgd` arguments and extra
    /// environment (`-x NAME=value`) — how a test gives one rank a different view of the world.
    static func runRanks(_ ranks: [(arguments: [String], environment: [String])], timeout: TimeInterval = 120) throws -> Outcome {
        let binary = try Self.binary
        var command = ["mpirun", "--oversubscribe", "-x", "OPENBLAS_NUM_THREADS=1"]
        if getuid() == 0 { command.append("--allow-run-as-root") }
        for (index, rank) in ranks.enumerated() {
            if index > 0 { command.append(":") }
            command += ["-np", "1"] + rank.environment.flatMap { ["-x", $0] } + [binary] + rank.arguments
        }
        return try runProcess(command, timeout: timeout)
    }

    static func runProcess(_ command: [String], timeout: TimeInterval) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["setsid", "--wait"] + command   // own session: killable as a whole
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-mpirun-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"
        // When a rank exits non-zero, mpirun stops the others — SIGCONT, SIGTERM, SIGKILL, this
        // many seconds apart (1 by default) — and waits them out even when every rank has already
        // exited, as after each agreed error. ringsgd does not handle SIGTERM (it ends at once), so the
        // wait changes nothing a test sees, and at 0 the suite's hundred-odd failing launches
        // each end a second sooner.
        if environment["OMPI_MCA_odls_base_sigkill_timeout"] == nil { environment["OMPI_MCA_odls_base_sigkill_timeout"] = "0" }
        process.environment = environment
        try process.run()
        let started = Date()
        let deadline = started.addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                killJob(process.processIdentifier)
                break
            }
            usleep(20_000)
        }
        process.waitUntilExit()
        try handle.close()
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: log)
        return Outcome(status: timedOut ? -1 : process.terminationStatus, output: output, timedOut: timedOut,
                       seconds: Date().timeIntervalSince(started))
    }

    /// Process n's parent and session, from /proc/N/stat: "N (comm) state ppid pgrp session …"
    /// — comm may hold spaces: the fields are read after the last ')'.
    static func parentAndSession(_ n: Int32) -> (parent: Int32, session: Int32)? {
        guard let text = try? String(contentsOfFile: "/proc/\(n)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 3, let parent = Int32(fields[1]), let session = Int32(fields[3]) else { return nil }
        return (parent, session)
    }

    /// The processes whose parent is `pid`.
    static func children(of pid: Int32) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { parentAndSession($0)?.parent == pid }
    }

    /// SIGKILL to a job started as `setsid --wait COMMAND`: every descendant of `pid`, and every
    /// process of the sessions they lead. Why not kill(−pid): Foundation starts the child as a
    /// process-group leader, so `setsid` forks first and the job's session is its child's, not
    /// `pid`'s group (that kill reached the waiting `setsid` alone and left mpirun and its ranks
    /// running); and mpirun gives its ranks process groups of their own, in that session.
    static func killJob(_ pid: Int32) {
        let processes = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init)
        let info = Dictionary(processes.compactMap { n in parentAndSession(n).map { (n, $0) } }, uniquingKeysWith: { a, _ in a })
        var job: Set<Int32> = [pid], grew = true
        while grew {
            grew = false
            for (n, i) in info where !job.contains(n) && job.contains(i.parent) { job.insert(n); grew = true }
        }
        let sessions = Set(job.compactMap { info[$0]?.session }).subtracting([getsid(0)])
        for (n, i) in info where n > 1 && (job.contains(n) || sessions.contains(i.session)) { kill(n, SIGKILL) }
    }
}

/// A test's failure, described: thrown where the test cannot go on (XCTest records it).
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension XCTestCase {
    /// A fresh directory under the temporary directory, removed when the test ends.
    func temporaryDirectory() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-test-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// A run directory's `summary.json`.
    func summary(_ dir: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as! [String: Any]
    }

    /// The run's `param_hash`, nil when it wrote no summary.
    func parameterHash(_ dir: String) -> String? {
        (try? summary(dir))?["param_hash"] as? String
    }

    /// Asserts that the runs in `a` and `b` ended with the same `param_hash`, both written (two
    /// runs that wrote no summary are no evidence of anything).
    func assertSameParameters(_ a: String, _ b: String, _ message: @autoclosure () -> String = "",
                              file: StaticString = #filePath, line: UInt = #line) {
        let (first, second) = (parameterHash(a), parameterHash(b))
        XCTAssertNotNil(first, "no summary in \(a): \(message())", file: file, line: line)
        XCTAssertNotNil(second, "no summary in \(b): \(message())", file: file, line: line)
        XCTAssertEqual(first, second, message(), file: file, line: line)
    }

    /// Asserts that the run in `dir` resumed from the checkpoint of `step` — not from an older
    /// one that a failed load fell back to, nor afresh: a deterministic run ends on the same
    /// bits from either, so an equal hash alone would not show that the resume was exercised.
    func assertResumed(_ outcome: MPIRun.Outcome, dir: String, from step: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual((try? summary(dir))?["resumed_from_step"] as? Int, step, outcome.output, file: file, line: line)
        XCTAssertFalse(outcome.output.contains("skipping checkpoint"), outcome.output, file: file, line: line)
    }

    /// Asserts a failed job that ended on its own (no hang), within `seconds`, printing exactly
    /// one `ringsgd: error:` line that contains `expected`, and no crash dump.
    func assertOneLineError(_ outcome: MPIRun.Outcome, _ expected: String, within seconds: Double = 60,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(outcome.timedOut, "hung; output:\n\(outcome.output)", file: file, line: line)
        XCTAssertNotEqual(outcome.status, 0, "must fail; output:\n\(outcome.output)", file: file, line: line)
        XCTAssertLessThan(outcome.seconds, seconds, "took \(outcome.seconds) s to end", file: file, line: line)
        XCTAssertTrue(outcome.output.contains(expected), "expected '\(expected)' in:\n\(outcome.output)", file: file, line: line)
        XCTAssertEqual(outcome.output.components(separatedBy: "ringsgd: error:").count - 1, 1,
                       "exactly one error line:\n\(outcome.output)", file: file, line: line)
        XCTAssertFalse(outcome.output.contains("Fatal error") || outcome.output.contains("Backtrace")
                       || outcome.output.contains("NSCocoaErrorDomain"), outcome.output, file: file, line: line)
    }

    /// Asserts a clean exit, showing the ranks' output on failure.
    func assertSucceeded(_ outcome: MPIRun.Outcome, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(outcome.timedOut, "\(what) timed out; output:\n\(outcome.output)", file: file, line: line)
        XCTAssertEqual(outcome.status, 0, "\(what) failed; output:\n\(outcome.output)", file: file, line: line)
    }
}

/// A launcher running in its own session with its output in a log: for tests that act on a
/// job while it runs (kill or stop a rank) and then read how it ended.
final class BackgroundJob {
    let process = Process()
    let log: String
    private let handle: FileHandle

    /// Starts `command`; `log` receives stdout and stderr.
    init(_ command: [String], log: String) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["setsid", "--wait"] + command
        process.standardOutput = handle; process.standardError = handle; process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { MPIRun.killJob(process.processIdentifier) }
        try? handle.close()
        try? FileManager.default.removeItem(atPath: log)
    }

    /// The launcher the job's `setsid` started (its one child; a launcher's subshells share its
    /// command line, so matching that could find one of them), checked to be the leader of its
    /// own process group; 0 when there is none such.
    var launcherPID: Int32 {
        guard let launcher = MPIRun.children(of: process.processIdentifier).first, getpgid(launcher) == launcher else { return 0 }
        return launcher
    }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
    var lastLine: String { output.split(separator: "\n").last.map(String.init) ?? "" }

    /// The `pgrep -f` pattern of the ringsgd ranks training into `runDirectory`.
    static func rankPattern(_ runDirectory: String) -> String { "^[^ ]*ringsgd train .*--run-dir \(runDirectory)( |$)" }

    /// The pids of the ringsgd ranks training into `runDirectory`, in increasing order.
    static func rankPIDs(runDirectory: String) throws -> [Int32] { try rankPIDs(matching: rankPattern(runDirectory)) }

    /// The pids of the processes whose command line `pgrep -f pattern` matches, in increasing order.
    static func rankPIDs(matching pattern: String) throws -> [Int32] {
        try MPIRun.runProcess(["pgrep", "-f", pattern], timeout: 10).output
            .split(separator: "\n").compactMap { Int32($0) }.sorted()
    }

    /// The last of `ranks` rank pids once `ready` (described by `when`) holds, polled for
    /// ≤ 60 s while the job runs. Throws, saying what it looked for and what the job printed,
    /// when there is none — never 0, which kill(2) reads as the test runner's process group.
    func rank(of runDirectory: String, ranks: Int = 2, when readiness: String, _ ready: () -> Bool) throws -> Int32 {
        try rank(matching: Self.rankPattern(runDirectory), ranks: ranks, when: readiness, ready)
    }

    /// `rank(of:)` for ranks found by any `pgrep -f` pattern (a command other than train).
    func rank(matching pattern: String, ranks: Int = 2, when readiness: String, _ ready: () -> Bool) throws -> Int32 {
        var held = false, found: [Int32] = []
        for _ in 0 ..< 600 where process.isRunning {
            usleep(100_000)
            guard ready() else { continue }
            held = true
            found = try Self.rankPIDs(matching: pattern)
            if found.count == ranks { return found[ranks - 1] }
        }
        let job = process.isRunning ? "still runs" : "ended with status \(process.terminationStatus)"
        throw TestFailure("""
            no rank to signal: looked ≤ 60 s for \(ranks) ranks (pgrep -f '\(pattern)') once \(readiness); \
            \(held ? "that happened, but pgrep found \(found)" : "that never happened"); the job \(job). It printed:
            \(output)
            """)
    }

    /// Sends `signal` to the rank `pid`: never to a pid ≤ 0 (kill(2) would signal the test
    /// runner's own process group, or every process it may signal), and throws if kill fails.
    static func send(_ signal: Int32, to pid: Int32) throws {
        guard pid > 0 else { throw TestFailure("refusing to send signal \(signal) to pid \(pid): not a rank") }
        guard kill(pid, signal) == 0 else { throw TestFailure("kill(\(pid), \(signal)): \(String(cString: strerror(errno)))") }
    }

    /// Waits up to `seconds` for the job to end; true if it did.
    func end(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        guard !process.isRunning else { return false }
        process.waitUntilExit()
        return true
    }
}

/// .npy copies of IDX files, for tests that need NumPy data without NumPy.
enum NumpyCopy {
    /// Gunzips an IDX file and writes its payload as a .npy of `descr` with the IDX's dimensions.
    static func write(of idx: String, descr: String, to path: String) throws {
        let gunzip = try MPIRun.runProcess(["sh", "-c", "gzip -dc '\(idx)' > '\(path).raw'"], timeout: 60)
        guard gunzip.status == 0 else { throw TestFailure("gzip -dc \(idx): \(gunzip.output)") }
        let raw = try Data(contentsOf: URL(fileURLWithPath: path + ".raw"))
        try FileManager.default.removeItem(atPath: path + ".raw")
        let ndim = Int(raw[3])
        let dims = (0 ..< ndim).map { i in (0 ..< 4).reduce(0) { $0 << 8 | Int(raw[4 + 4 * i + $1]) } }
        let payload = raw.dropFirst(4 + 4 * ndim)
        let shape = dims.count == 1 ? "(\(dims[0]),)" : "(" + dims.map(String.init).joined(separator: ", ") + ")"
        var header = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }".utf8)
        while (10 + header.count + 1) % 64 != 0 { header.append(0x20) }
        header.append(0x0A)
        var out = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.count & 0xFF), UInt8(header.count >> 8)] + header)
        if descr == "<i8" {
            for b in payload { withUnsafeBytes(of: Int64(b).littleEndian) { out.append(contentsOf: $0) } }
        } else {
            out.append(payload)
        }
        try out.write(to: URL(fileURLWithPath: path))
    }
}
