import Foundation
import XCTest

/// `launch/elastic.sh`: a job that heals itself, on simulated hosts (network namespaces whose
/// processes are killed or whose links go down) and on this host through `--discover`, under
/// real mpirun. Every job is bounded; simulated-host tests skip, saying why, where namespaces
/// cannot be created.
final class ElasticTests: XCTestCase {
    static let script = MPIRun.packageRoot.path + "/launch/elastic.sh"
    /// The launcher runs .build/release/ringsgd as it is: skip where it is not built, fail where it is stale.
    override func setUpWithError() throws { _ = try MPIRun.built("ringsgd") }
    /// fashion-mlp for 2 epochs of global batch 128 (936 steps), a checkpoint every 100 steps.
    static let train = ["train", "--config", MPIRun.packageRoot.appendingPathComponent("configs/fashion-mlp.yaml").path,
                        "--set", "train.epochs=2", "--set", "checkpoint.every_steps=100", "--set", "train.log_every_steps=100"]
    static let totalSteps = 936

    func temporaryPath(_ name: String) -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-\(name)-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Polls `condition` every 0.1 s for at most `seconds` while the job runs; throws, with
    /// what the job printed, if it never holds.
    func waitFor(_ job: BackgroundJob, _ what: String, within seconds: Double, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return }
            guard job.process.isRunning else { break }
            usleep(100_000)
        }
        if condition() { return }
        throw TestFailure("waited \(Int(seconds)) s for \(what); the job \(job.process.isRunning ? "still runs" : "ended"). It printed:\n\(job.output)")
    }

    /// Simulated host `host`'s namespace and link, from the supervisor's first lines.
    func simulatedHost(_ host: String, of job: BackgroundJob) throws -> (namespace: String, link: String) {
        try waitFor(job, "the line naming \(host)'s namespace", within: 60) { job.output.contains("simulated host \(host) is") }
        let line = try XCTUnwrap(job.output.split(separator: "\n").first { $0.contains("simulated host \(host) is") })
        let namespace = try XCTUnwrap(line.range(of: #"namespace \S+,"#, options: .regularExpression).map { line[$0].dropFirst(10).dropLast() })
        let link = try XCTUnwrap(line.range(of: #"link \S+$"#, options: .regularExpression).map { line[$0].dropFirst(5) })
        return (String(namespace), String(link))
    }

    /// Powers a simulated host off (every process in it killed) or only cuts its link.
    func cut(_ host: (namespace: String, link: String), killing: Bool) throws {
        XCTAssertEqual(try MPIRun.runProcess(["ip", "link", "set", host.link, "down"], timeout: 10).status, 0)
        guard killing else { return }
        let pids = try MPIRun.runProcess(["ip", "netns", "pids", host.namespace], timeout: 10).output.split(separator: "\n").compactMap { Int32($0) }
        XCTAssertFalse(pids.isEmpty, "the host ran something")
        for pid in pids { kill(pid, SIGKILL) }
    }

    /// Nothing the supervisor made is left: no namespace or interface, no rank.
    /// No simulated host left, and — for a job that started ranks in `runDirectory` — no rank.
    func assertNothingLeft(_ runDirectory: String?, file: StaticString = #filePath, line: UInt = #line) throws {
        let ours = try SimulatedClusterTests.simulatedHostsLeft(tag: "re")
        XCTAssertTrue(ours.isEmpty, "left behind: \(ours)", file: file, line: line)
        guard let runDirectory else { return }
        let ranks = try MPIRun.runProcess(["pgrep", "-f", "--", "--run-dir \(runDirectory)( |$)"], timeout: 10).output
        XCTAssertEqual(ranks.trimmingCharacters(in: .whitespacesAndNewlines), "", "ranks left behind", file: file, line: line)
    }

    func lines(_ job: BackgroundJob, containing text: String) -> [String] {
        job.output.split(separator: "\n").map(String.init).filter { $0.contains(text) }
    }

    /// Property: one of 3 simulated hosts powered off after the first checkpoint (its
    /// processes killed, its link down) — the supervisor relaunches on the 2 survivors from
    /// the newest checkpoint without a human, redoing at most one checkpoint interval; when
    /// the host's link comes back the job grows back to 3 hosts at a checkpoint, and finishes
    /// every step with replicas identical. Each event is one line, the last sums them up, and
    /// nothing is left running.
    func testAPoweredOffHostIsDroppedAndTheJobGrowsBackWhenItReturns() throws {
        try SimulatedClusterTests.requireNamespaces()
        let dir = temporaryPath("elastic")
        let job = try BackgroundJob([Self.script, "--simulated-hosts", "3", "--rate", "1gbit", "--min-hosts", "2", "--cooldown", "2", "--"]
                                    + Self.train + ["--run-dir", dir], log: dir + ".log")
        let h2 = try simulatedHost("h2", of: job)
        try waitFor(job, "the checkpoint of step 100", within: 120) { FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000100.ckpt") }
        try cut(h2, killing: true)
        let cutAt = Date()
        try waitFor(job, "training again on the 2 hosts left", within: 60) { job.output.contains("training again on 2 hosts") }
        print("elastic: from the kill to training again: \(String(format: "%.1f", Date().timeIntervalSince(cutAt))) s")
        XCTAssertEqual(try MPIRun.runProcess(["ip", "link", "set", h2.link, "up"], timeout: 10).status, 0)
        XCTAssertTrue(job.end(within: 300), "the job must finish within 300 s:\n\(job.output)")
        XCTAssertEqual(job.process.terminationStatus, 0, job.output)

        let lost = lines(job, containing: "elastic: lost host h2 at step ")
        XCTAssertEqual(lost.count, 1, job.output)
        let again = try XCTUnwrap(lines(job, containing: "elastic: training again on 2 hosts from step ").first, job.output)
        let redone = try XCTUnwrap(Int(again.components(separatedBy: "; ").last?.split(separator: " ").first ?? ""), again)
        XCTAssertLessThanOrEqual(redone, 100 + 10, "at most one checkpoint interval (and the steps before the supervisor noticed): \(again)")
        XCTAssertEqual(lines(job, containing: "elastic: host h2 answers: growing to 3 hosts at the next checkpoint").count, 1, job.output)
        XCTAssertEqual(lines(job, containing: "elastic: training again on 3 hosts from step ").count, 1, job.output)
        XCTAssertTrue(job.lastLine.hasPrefix("elastic: done in ") && job.lastLine.contains("1 restarts, 1 hosts lost (h2), 1 added back (h2)"),
                      "last line: \(job.lastLine)")
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as? [String: Any])
        XCTAssertEqual(summary["steps"] as? Int, Self.totalSteps)
        XCTAssertTrue(job.output.contains("replicas identical"), job.output)
        try assertNothingLeft(dir)
    }

    /// Property: with a run directory on each host's own disk (`--local-dir`), cutting the
    /// link of rank 0's host — which holds no process of the survivors, and whose disk they
    /// cannot read — the supervisor notices by its probe (not after comm.timeout_seconds),
    /// and the job continues on the 2 others from the checkpoint their own disks hold
    /// (checkpoint.replicate: per_host wrote one on every host), to the last step.
    func testRankZerosHostCutOffWithNodeLocalDisksLosesNoCheckpoint() throws {
        try SimulatedClusterTests.requireNamespaces()
        let disk = temporaryPath("disk")
        let dir = disk + "/run"
        let job = try BackgroundJob([Self.script, "--simulated-hosts", "3", "--rate", "1gbit", "--min-hosts", "2", "--local-dir", disk, "--"]
                                    + Self.train + ["--run-dir", dir], log: disk + ".log")
        let h1 = try simulatedHost("h1", of: job)
        try waitFor(job, "step 200 (the checkpoint of step 100 on disk)", within: 120) { job.output.contains("step 200/\(Self.totalSteps)") }
        XCTAssertTrue(job.output.contains("checkpoints: one copy in each of 3 run directories"), job.output)
        try cut(h1, killing: false)
        XCTAssertTrue(job.end(within: 300), "the job must finish within 300 s:\n\(job.output)")
        XCTAssertEqual(job.process.terminationStatus, 0, job.output)
        XCTAssertEqual(lines(job, containing: "elastic: host h1 stopped answering at step").count, 1, job.output)
        XCTAssertTrue(job.output.contains("resuming from \(dir)/checkpoints/step-"), job.output)
        XCTAssertEqual(lines(job, containing: "elastic: training again on 2 hosts from step ").count, 1, job.output)
        XCTAssertTrue(job.lastLine.contains("1 restarts, 1 hosts lost (h1), 0 added back"), "last line: \(job.lastLine)")
        XCTAssertTrue(job.output.contains("done: test accuracy") && job.output.contains("(resumed at "), job.output)
        // The disks stay: the survivors' hold the last checkpoint, the lost host's only earlier ones.
        let last = String(format: "step-%08d.ckpt", Self.totalSteps)
        for host in ["h2", "h3"] {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: "\(disk)/.simulated-disk-\(host)/run/checkpoints")) ?? []
            XCTAssertTrue(files.contains(last), "\(host)'s disk holds \(files)")
        }
        let lost = (try? FileManager.default.contentsOfDirectory(atPath: "\(disk)/.simulated-disk-h1/run/checkpoints")) ?? []
        XCTAssertFalse(lost.isEmpty || lost.contains(last), "h1's disk holds \(lost)")
        try assertNothingLeft(dir)
    }

    /// Property: a stop the supervisor did not ask for — SIGUSR1 to a rank from outside, what
    /// SLURM sends before the time limit (`#SBATCH --signal=USR1@300`) — ends the supervision
    /// with exit 0 and the run saved at the replica check after it (no periodic checkpoints
    /// here), and no relaunch: a relaunched job would only be killed at the limit.
    func testAStopFromOutsideEndsTheSupervisionWithoutARelaunch() throws {
        let dir = temporaryPath("outside")
        let job = try BackgroundJob([Self.script, "--discover", "echo localhost:2", "--"] + Self.train
                                    + ["--set", "checkpoint.every_steps=0", "--run-dir", dir], log: dir + ".log")
        let rank = try job.rank(of: dir, when: "step 200 was logged") { job.output.contains("step 200/\(Self.totalSteps)") }
        try BackgroundJob.send(SIGUSR1, to: rank)
        try waitFor(job, "the supervisor to end", within: 120) { !job.process.isRunning }
        XCTAssertEqual(job.process.terminationStatus, 0, job.output)
        XCTAssertTrue(job.lastLine.contains("on a request from outside") && job.lastLine.contains("not relaunching"), "last line: \(job.lastLine)\n\(job.output)")
        XCTAssertFalse(job.output.contains("relaunching on"), job.output)
        let step = try XCTUnwrap(job.output.range(of: #"stopped at step \d+ on request"#, options: .regularExpression)
            .flatMap { Int(job.output[$0].split(separator: " ")[3]) }, job.output)
        XCTAssertTrue(step % 100 == 0 && step > 200 && step < Self.totalSteps, "stopped at \(step): a replica check (every 100) after the signal")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoints/step-\(String(format: "%08d", step)).ckpt"), job.output)
    }

    /// Property: `--discover` runs the job on the hosts a command lists (here this host, as
    /// "localhost:2") under the run identity the supervisor chose, and ends with the summing-up line; a job that fails on healthy hosts (a
    /// config error) ends the supervisor for good with ringsgd's own line and no relaunch.
    func testDiscoveryRunsTheJobAndAConfigErrorIsNotRetried() throws {
        let dir = temporaryPath("discover")
        let short = ["train"] + TrainUnderMPIRunTests.short + ["--run-dir", dir]
        let run = try MPIRun.runProcess([Self.script, "--discover", "echo localhost:2", "--"] + short, timeout: 180)
        assertSucceeded(run, "elastic on discovered hosts")
        XCTAssertTrue(run.output.contains("elastic: launching on 1 hosts (localhost), 2 ranks"), run.output)
        // A fresh run's identity is the supervisor's from the first launch (not learnt from the
        // job's output, which a first job that dies early never prints): the job runs under it.
        let announced = try XCTUnwrap(run.output.range(of: #"2 ranks, run [0-9a-f]{16}"#, options: .regularExpression).map { String(run.output[$0].suffix(16)) },
                                      run.output)
        XCTAssertTrue(run.output.contains("run id \(announced)"), run.output)
        let last = run.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(last.hasPrefix("elastic: done in ") && last.contains("0 restarts, 0 hosts lost"), "last line: \(last)")

        let bad = try MPIRun.runProcess([Self.script, "--discover", "echo localhost 2", "--"] + short + ["--set", "optimizer.lr=-1"], timeout: 180)
        XCTAssertNotEqual(bad.status, 0)
        let line = bad.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(line.hasPrefix("ringsgd: error:") && line.contains("optimizer.lr"), "last line: \(line)\n\(bad.output)")
        XCTAssertFalse(bad.output.contains("relaunching"), bad.output)
    }

    /// Property: bad input to the supervisor is one line and a non-zero exit, with nothing
    /// left running: too few hosts for --min-hosts, a discovery command that fails or prints
    /// garbage, a missing hostfile, a command other than train, the simulated hosts' options
    /// with real hosts — and --max-restarts used up.
    func testBadInputAndExhaustedRestartsAreOneLine() throws {
        let short = ["train"] + TrainUnderMPIRunTests.short
        for (options, arguments, expected) in [
            (["--discover", "false"], short, "elastic: error: --discover 'false': the command failed"),
            (["--discover", "echo hello world"], short, "elastic: error: --discover 'echo hello world': it printed 'hello world', not 'host slots'"),
            (["--hostfile", "/nonexistent/hosts"], short, "elastic: error: --hostfile /nonexistent/hosts does not exist"),
            (["--discover", "echo localhost 2", "--max-restarts", "x"], short, "elastic: error: --max-restarts must be a whole number, got 'x'"),
            (["--discover", "echo localhost 2"], ["bench", "allreduce"], "elastic: error: put 'train' and its arguments after --: only training heals itself"),
            // The simulated hosts' own options, with real hosts: refused, not ignored.
            (["--discover", "echo localhost 2", "--rate", "1gbit"], short, "elastic: error: --rate shapes the simulated hosts' links: it goes with --simulated-hosts"),
            (["--discover", "echo localhost 2", "--ranks-per-host", "2"], short, "elastic: error: --ranks-per-host is the simulated hosts' slots: it goes with --simulated-hosts"),
        ] {
            let outcome = try MPIRun.runProcess([Self.script] + options + ["--"] + arguments, timeout: 60)
            XCTAssertNotEqual(outcome.status, 0, "\(options)")
            let lines = outcome.output.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "one line: \(outcome.output)")
            XCTAssertTrue(lines.last?.hasPrefix(expected) ?? false, "\(options): \(outcome.output)")
        }
        try SimulatedClusterTests.requireNamespaces()
        let few = try MPIRun.runProcess([Self.script, "--simulated-hosts", "2", "--rate", "1gbit", "--min-hosts", "3", "--"] + short, timeout: 120)
        XCTAssertNotEqual(few.status, 0)
        XCTAssertTrue(few.output.hasSuffix("elastic: error: --min-hosts 3 is more than the 2 hosts there are; lower it or add hosts\n"), few.output)
        try assertNothingLeft(nil)   // refused before any rank started: the hosts only

        let dir = temporaryPath("restarts")
        let job = try BackgroundJob([Self.script, "--simulated-hosts", "2", "--rate", "1gbit", "--max-restarts", "0", "--"]
                                    + Self.train + ["--run-dir", dir], log: dir + ".log")
        let h2 = try simulatedHost("h2", of: job)
        try waitFor(job, "the checkpoint of step 100", within: 120) { FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000100.ckpt") }
        try cut(h2, killing: true)
        XCTAssertTrue(job.end(within: 60), "the supervisor must give up within 60 s:\n\(job.output)")
        XCTAssertNotEqual(job.process.terminationStatus, 0)
        XCTAssertTrue(job.lastLine.hasPrefix("elastic: error: the job failed 1 times, more than --max-restarts 0 (last: lost host h2 at step ")
                      && job.lastLine.contains("nothing is running"), "last line: \(job.lastLine)")
        try assertNothingLeft(dir)
    }
}
