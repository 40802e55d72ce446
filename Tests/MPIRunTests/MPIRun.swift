import Foundation
import XCTest

/// Runs the real `ringsgd` binary under real `mpirun`, bounded by a timeout, capturing
/// output. The suite never hangs: past the timeout mpirun's process group is killed and the
/// test fails with everything the ranks printed.
enum MPIRun {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The release binary the README's commands build (`RINGSGD_BINARY` overrides).
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["RINGSGD_BINARY"] { return path }
        return packageRoot.appendingPathComponent(".build/release/ringsgd").path
    }

    struct Outcome {
        let status: Int32
        let output: String
        let timedOut: Bool
        /// Wall-clock seconds until the job ended.
        var seconds = 0.0
    }

    static func run(np: Int, _ arguments: [String], timeout: TimeInterval = 120,
                    mpiArguments: [String] = []) throws -> Outcome {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("ringsgd binary not found at \(binary): run `swift build -c release` first (launch/test.sh does)")
        }
        var command = ["mpirun", "-np", "\(np)", "--oversubscribe", "-x", "OPENBLAS_NUM_THREADS=1"]
        if getuid() == 0 { command.append("--allow-run-as-root") }
        command += mpiArguments + [binary] + arguments
        return try runProcess(command, timeout: timeout)
    }

    /// An MPMD launch: one rank per entry, each with its own `ringsgd` arguments and extra
    /// environment (`-x NAME=value`) — how a test gives one rank a different view of the world.
    static func runRanks(_ ranks: [(arguments: [String], environment: [String])], timeout: TimeInterval = 120) throws -> Outcome {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("ringsgd binary not found at \(binary): run `swift build -c release` first (launch/test.sh does)")
        }
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
        process.environment = environment
        try process.run()
        let started = Date()
        let deadline = started.addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                kill(-process.processIdentifier, SIGKILL)
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
        if process.isRunning { kill(-process.processIdentifier, SIGKILL) }
        try? handle.close()
        try? FileManager.default.removeItem(atPath: log)
    }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
    var lastLine: String { output.split(separator: "\n").last.map(String.init) ?? "" }

    /// The pids of the ringsgd ranks training into `runDirectory`, in increasing order.
    static func rankPIDs(runDirectory: String) throws -> [Int32] {
        try MPIRun.runProcess(["pgrep", "-f", "^[^ ]*ringsgd train .*--run-dir \(runDirectory)( |$)"], timeout: 10).output
            .split(separator: "\n").compactMap { Int32($0) }.sorted()
    }

    /// The last of `ranks` rank pids once `ready` holds (polled for ≤ 60 s), or 0.
    func rank(of runDirectory: String, ranks: Int = 2, once ready: () -> Bool) throws -> Int32 {
        for _ in 0 ..< 600 {
            usleep(100_000)
            guard ready() else { continue }
            let pids = try Self.rankPIDs(runDirectory: runDirectory)
            if pids.count == ranks { return pids[ranks - 1] }
        }
        return 0
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
