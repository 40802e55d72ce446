import ArgumentParser
import FileFormats
import Foundation
import Training

/// `ringsgd bench scaling`: the same training job at several rank counts and codecs, through
/// a launcher (this machine, the simulated cluster, or a hostfile), tabulated and plotted.
///
/// Run it directly, not under mpirun: it starts one job per (ranks, codec) and round and reads
/// each job's `summary.json`. Every figure is the trainer's own (samples/s excludes evaluation
/// and checkpoint writes), and so is every input to a derived one: the step time is the run's
/// own global batch over its samples/s, per-step times divide by the steps it ran — never what
/// this command guesses from the YAML, which `--set` overrides and the trainer's defaults would
/// make wrong. Speed-up and efficiency are against the smallest rank count of the same codec.
///
/// `--rounds` R runs every configuration R times, one round after another, each round's order
/// rotated by one, so that drift and a noisy neighbour on shared machines favour none (single
/// runs here spread by ±15 %); a row is the configuration's median run (for an even R the
/// faster of the middle two), with the other rounds' samples/s beside it as the spread.
struct BenchScaling: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scaling",
        abstract: "Scaling benchmark: train at several rank counts and codecs; write scaling.csv, scaling.json and scaling.svg.",
        discussion: """
        Examples:
          ringsgd bench scaling --config configs/fashion-mlp.yaml --ranks 1,2
          ringsgd bench scaling --config configs/synthetic-large.yaml \\
              --launcher simcluster --rate 1gbit --ranks 1,2,4 \\
              --codecs none,fp16,int8,int8+zstd
          ringsgd bench scaling --config configs/fashion-cnn.yaml \\
              --launcher hostfile:hosts --ranks 8,16,32
        Lossy codecs run with error feedback. With --launcher simcluster,
        ranks are spread over ranks / ranks-per-host simulated hosts, each
        link shaped to --rate.
        """
    )

    @Option(help: "Training config (YAML).")
    var config: String = "configs/fashion-mlp.yaml"

    @Option(help: "Comma-separated rank counts.")
    var ranks: String = "1,2"

    @OptionGroup var codecs: BenchCodecList

    @Option(parsing: .unconditional, help: "Training steps per run.")
    var steps: Int = 100

    @Option(parsing: .unconditional, help: "Runs of every configuration, alternating: each round runs them all, its order rotated; a row is the median run.")
    var rounds: Int = 3

    @Option(parsing: .unconditional, help: "Samples per rank per step (weak scaling); default: the config's global batch at every rank count (strong scaling).")
    var perRankBatch: Int?

    @OptionGroup var launch: BenchLauncher

    @Option(name: .customLong("set"), help: "Extra config override KEY=VALUE for every run (repeatable).")
    var overrides: [String] = []

    @Option(help: "Output directory (default: runs/scaling-<time>).")
    var out: String?

    func validate() throws {
        guard FileManager.default.fileExists(atPath: config) else {
            throw ValidationError("config \(config) does not exist; pass --config with a YAML file such as configs/fashion-mlp.yaml")
        }
        guard let list = Self.counts(ranks), !list.isEmpty else {
            throw ValidationError("--ranks must be comma-separated whole numbers ≥ 1, got '\(ranks)'")
        }
        try launch.check(rankCounts: list)
        guard steps >= 1, rounds >= 1, (perRankBatch ?? 1) >= 1 else {
            throw ValidationError("--steps, --rounds and --per-rank-batch must be ≥ 1")
        }
        try codecs.check()
        let own = ["train.max_steps": "--steps", "comm.codec": "--codecs", "comm.error_feedback": "the codec (on for lossy ones)"]
            .merging(perRankBatch != nil ? ["train.global_batch": "--per-rank-batch"] : [:]) { a, _ in a }
        try Self.refuseOverrides(overrides, ofKeys: own, command: "bench scaling")
    }

    /// A `--set` of a key the bench sets for every run would silently overrule what each row's
    /// label says (its codec, its step count): refused, naming the option that sets it.
    static func refuseOverrides(_ overrides: [String], ofKeys own: [String: String], command: String) throws {
        for o in overrides {
            let key = String(o.split(separator: "=", maxSplits: 1).first ?? "")
            if let option = own[key] {
                throw ValidationError("--set \(o): \(command) sets \(key) for every run, from \(option); remove the --set")
            }
        }
    }

    static func counts(_ text: String) -> [Int]? {
        let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard values.allSatisfy({ ($0 ?? 0) >= 1 }) else { return nil }
        return values.map { $0! }
    }


    /// The checkout's root: where `launch/` is (the binary lives in .build/release).
    static var packageRoot: URL {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for up in ["../..", "../../.."] {   // .build/release/ or .build/<triple>/release/
            let candidate = binary.appendingPathComponent(up).standardized
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("launch/local.sh").path) { return candidate }
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }

    func run() throws {
        setvbuf(stdout, nil, _IOLBF, 0)   // a line as each run ends (the table after the last), also into a file or pipe
        let rankCounts = Set(Self.counts(ranks)!).sorted()   // smallest first: the baseline
        let root = Self.packageRoot.path
        let outDirectory = out ?? "runs/scaling-\(Self.timestamp())"
        try FileManager.default.createDirectory(atPath: outDirectory, withIntermediateDirectories: true)
        let link = launch.launcher == "simcluster" ? launch.rate : launch.launcher == "local" ? "shared memory (one host)" : launch.launcher
        print("# ringsgd bench scaling: \(config), \(steps) steps per run, \(rounds) round\(rounds == 1 ? "" : "s") (order rotating, median run), launcher \(launch.launcher)"
              + (launch.launcher == "simcluster" ? " (\(launch.ranksPerHost) ranks per host, links \(launch.rate))" : ""))
        let wall = ContinuousClock.now
        let configurations = codecs.list.flatMap { codec in rankCounts.map { (codec: codec, ranks: $0) } }
        var runs: [[ScalingSummary]] = Array(repeating: [], count: configurations.count)
        for round in 0 ..< rounds {
            for position in configurations.indices {
                let which = (position + round) % configurations.count, (codec, n) = configurations[which]
                let summary = try runOnce(codec: codec, ranks: n, round: round, into: outDirectory, root: root)
                runs[which].append(summary)
                print(String(format: "# round %d/%d: %d ranks, %@: %.0f samples/s", round + 1, rounds, n, codec, summary.rate))
            }
        }
        print("# samples/s, step_ms, speedup and eff: after each run's first \(Trainer.warmupSteps) steps (steady, as the peer counts) when it ran more than \(2 * Trainer.warmupSteps); compute, comm and codec ms: averages over every step")
        print(ScalingRow.header)
        var rows: [ScalingRow] = []
        for (which, (codec, n)) in configurations.enumerated() {
            let sorted = runs[which].sorted { $0.rate < $1.rate }
            let median = sorted[sorted.count / 2]
            guard let globalBatch = median.global_batch else {
                throw ValidationError("a summary.json of \(n) ranks, \(codec) has no global_batch: the step time needs the run's own; rebuild ringsgd (swift build -c release)")
            }
            let base = rows.first { $0.codec == codec }   // rank counts in increasing order
            let row = ScalingRow(ranks: n, hosts: launch.launcher == "simcluster" ? n / launch.ranksPerHost : nil, link: link, codec: codec,
                                 codecUsed: median.codec, summary: median, globalBatch: globalBatch, base: base,
                                 rounds: runs[which].map(\.rate))
            rows.append(row)
            print(row.line)
        }
        let seconds = (ContinuousClock.now - wall).seconds
        try ScalingReport(config: config, link: link, steps: steps, rows: rows, wallSeconds: seconds).write(to: outDirectory)
        print("# wall \(String(format: "%.0f", seconds)) s; peak RSS per rank ≤ \(String(format: "%.0f", rows.map(\.peakRSS).max() ?? 0)) MiB")
        print("# wrote \(outDirectory)/scaling.csv, scaling.json, scaling.svg")
    }

    /// One run of `codec` at `n` ranks (round `round`, counted from 0), its summary.
    private func runOnce(codec: String, ranks n: Int, round: Int, into outDirectory: String, root: String) throws -> ScalingSummary {
        let name = "np\(n)-\(codec.replacingOccurrences(of: ":", with: "_").replacingOccurrences(of: "+", with: "_"))"
            + (rounds > 1 ? "-r\(round + 1)" : "")
        let runDirectory = (outDirectory as NSString).appendingPathComponent(name)
        var train = ["train", "--config", config, "--run-dir", runDirectory, "--overwrite",
                     "--set", "train.max_steps=\(steps)", "--set", "comm.codec=\(codec)",
                     "--set", "comm.error_feedback=\(codec == "none" || codec == "fp32" ? "false" : "true")"]
        if let perRankBatch { train += ["--set", "train.global_batch=\(perRankBatch * n)"] }
        for o in overrides { train += ["--set", o] }
        let log = runDirectory + ".log"
        let status = try Self.execute(launch.command(root: root, ranks: n) + train, log: log)
        guard status == 0 else {
            let tail = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").last.map(String.init) ?? ""
            throw ValidationError("the run at \(n) ranks with codec \(codec) failed (exit \(status)): \(tail) — full output in \(log)")
        }
        return try JSONDecoder.ringsgd.decode(ScalingSummary.self, from: Data(contentsOf: URL(fileURLWithPath: runDirectory + "/summary.json")))
    }

    static func execute(_ command: [String], log: String) throws -> Int32 {
        guard FileManager.default.createFile(atPath: log, contents: nil) else {
            throw ValidationError("cannot create \(log); choose a writable --out directory")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    static func timestamp() -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        return f.string(from: Date())
    }
}

/// The fields of a run's summary.json (`RunSummary`) that the table uses.
struct ScalingSummary: Decodable {
    let samples_per_second: Double
    /// Samples/s after the first `Trainer.warmupSteps` steps (the rate over every step for a run
    /// of 20 steps or fewer; nil only in summaries written before the field existed).
    let steady_samples_per_second: Double?
    /// The run's rate as the table gives it: the steady one (the peer's footing).
    var rate: Double { steady_samples_per_second ?? samples_per_second }
    /// Samples per optimizer step over all ranks, as the run used it (config, `--set`, default).
    /// Optional only so that a summary without it is a clear error rather than a decoding one.
    let global_batch: Int?
    let steps: Int
    let resumed_from_step: Int
    let compute_seconds: Double
    let comm_seconds: Double
    let codec_seconds: Double
    let wire_bytes_per_step: Double?
    let test_accuracy: Double
    let peak_rss_mb: Double
    let codec: String
}

/// One (ranks, codec) run.
struct ScalingRow: Encodable {
    let ranks: Int
    let hosts: Int?
    let link: String
    let codec: String
    let codecUsed: String
    let samplesPerSecond: Double
    /// The run's global batch and the steps it ran (after any resume), from its summary.
    let globalBatch: Int
    let steps: Int
    let stepSeconds: Double
    let speedup: Double
    let efficiency: Double
    let computePerStep: Double, commPerStep: Double, codecPerStep: Double
    let wireBytesPerStep: Double?
    let testAccuracy: Double
    let peakRSS: Double
    /// Every round's samples/s, in round order (the row is the median one's).
    let roundSamplesPerSecond: [Double]

    /// `base`: the same codec's row at the smallest rank count (nil: this is it).
    init(ranks: Int, hosts: Int?, link: String, codec: String, codecUsed: String, summary s: ScalingSummary, globalBatch: Int, base: ScalingRow?,
         rounds: [Double]) {
        roundSamplesPerSecond = rounds
        (self.ranks, self.hosts, self.link, self.codec, self.codecUsed) = (ranks, hosts, link, codec, codecUsed)
        self.globalBatch = globalBatch
        self.steps = s.steps - s.resumed_from_step
        let steps = Double(max(1, self.steps))
        samplesPerSecond = s.rate
        // samples/s is (steps · global batch) / training seconds, so this is seconds per step.
        stepSeconds = Double(globalBatch) / max(s.rate, 1e-9)
        let baseRanks = Double(base?.ranks ?? ranks), baseRate = base?.samplesPerSecond ?? s.rate
        speedup = s.rate / baseRate
        efficiency = speedup / (Double(ranks) / baseRanks)
        (computePerStep, commPerStep, codecPerStep) = (s.compute_seconds / steps, s.comm_seconds / steps, s.codec_seconds / steps)
        wireBytesPerStep = s.wire_bytes_per_step
        testAccuracy = s.test_accuracy
        peakRSS = s.peak_rss_mb
    }

    static let columns = ["ranks", "hosts", "link", "codec", "codec_used", "samples_per_second", "step_seconds", "speedup", "efficiency",
                          "compute_s_per_step", "comm_s_per_step", "codec_s_per_step", "wire_bytes_per_step_per_rank", "test_accuracy", "peak_rss_mb",
                          "global_batch", "steps", "rounds_samples_per_second"]
    static let header = [pad("ranks", 5), pad("hosts", 5), pad("codec", -14), pad("samples/s", 11), pad("step_ms", 9), pad("speedup", 8),
                         pad("eff", 5), pad("compute_ms", 11), pad("comm_ms", 9), pad("codec_ms", 9), pad("wire_MB/step", 13), pad("test_acc", 9), "rounds (samples/s)"].joined(separator: " ")

    var line: String {
        [Self.pad("\(ranks)", 5), Self.pad(hosts.map(String.init) ?? "-", 5), Self.pad(codec == codecUsed ? codec : "\(codec)→\(codecUsed)", -14),
         Self.pad(String(format: "%.0f", samplesPerSecond), 11), Self.pad(String(format: "%.2f", stepSeconds * 1e3), 9),
         Self.pad(String(format: "%.2f", speedup), 8), Self.pad(String(format: "%.0f%%", efficiency * 100), 5),
         Self.pad(String(format: "%.2f", computePerStep * 1e3), 11), Self.pad(String(format: "%.2f", commPerStep * 1e3), 9),
         Self.pad(String(format: "%.2f", codecPerStep * 1e3), 9), Self.pad(wireBytesPerStep.map { String(format: "%.3f", $0 / 1e6) } ?? "?", 13),
         Self.pad(String(format: "%.4f", testAccuracy), 9), roundSamplesPerSecond.map { String(format: "%.0f", $0) }.joined(separator: "/")].joined(separator: " ")
    }

    /// Right-aligned in `width` columns (left-aligned for a negative width).
    static func pad(_ text: String, _ width: Int) -> String {
        let fill = String(repeating: " ", count: max(0, abs(width) - text.count))
        return width < 0 ? text + fill : fill + text
    }

    var csv: String {
        let fields: [String] = ["\(ranks)", hosts.map(String.init) ?? "", link, codec, codecUsed, String(format: "%.1f", samplesPerSecond),
                                String(format: "%.6f", stepSeconds), String(format: "%.4f", speedup), String(format: "%.4f", efficiency),
                                String(format: "%.6f", computePerStep), String(format: "%.6f", commPerStep), String(format: "%.6f", codecPerStep),
                                wireBytesPerStep.map { String(format: "%.0f", $0) } ?? "", String(format: "%.4f", testAccuracy), String(format: "%.1f", peakRSS),
                                "\(globalBatch)", "\(steps)", roundSamplesPerSecond.map { String(format: "%.1f", $0) }.joined(separator: " ")]
        return fields.map { $0.contains(",") || $0.contains("\"") ? "\"\($0.replacingOccurrences(of: "\"", with: "\"\""))\"" : $0 }.joined(separator: ",")
    }

    enum CodingKeys: String, CodingKey {
        case ranks, hosts, link, codec
        case codecUsed = "codec_used", samplesPerSecond = "samples_per_second", stepSeconds = "step_seconds", speedup, efficiency
        case computePerStep = "compute_s_per_step", commPerStep = "comm_s_per_step", codecPerStep = "codec_s_per_step"
        case wireBytesPerStep = "wire_bytes_per_step_per_rank", testAccuracy = "test_accuracy", peakRSS = "peak_rss_mb"
        case globalBatch = "global_batch", steps, roundSamplesPerSecond = "rounds_samples_per_second"
    }
}

/// scaling.csv, scaling.json and the plot (gnuplot, SVG).
struct ScalingReport: Encodable {
    let config: String
    let link: String
    let steps: Int
    let rows: [ScalingRow]
    let wallSeconds: Double

    func write(to directory: String) throws {
        let csv = ([ScalingRow.columns.joined(separator: ",")] + rows.map(\.csv)).joined(separator: "\n") + "\n"
        try csv.write(toFile: directory + "/scaling.csv", atomically: true, encoding: .utf8)
        try JSONEncoder.benchmarkReport.encode(self).write(to: URL(fileURLWithPath: directory + "/scaling.json"))
        try plot(directory)
    }

    /// Two panels — samples/s and efficiency against ranks — one line per codec.
    func plot(_ directory: String) throws {
        let codecs = rows.map(\.codec).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        var data = ""
        for codec in codecs {
            data += "# \(codec)\n"
            for row in rows where row.codec == codec { data += "\(row.ranks) \(row.samplesPerSecond) \(row.efficiency * 100)\n" }
            data += "\n\n"
        }
        try data.write(toFile: directory + "/scaling.dat", atomically: true, encoding: .utf8)
        let title = "\((config as NSString).lastPathComponent), \(steps) steps per run, link: \(link)"
        let lines = { (column: Int) in
            codecs.enumerated().map { "'scaling.dat' index \($0.offset) using 1:\(column) with linespoints lw 2 pt 7 title '\($0.element)'" }.joined(separator: ", ")
        }
        let script = """
        set terminal svg size 1000,420 dynamic font 'sans,12' background '#ffffff' noenhanced
        set output 'scaling.svg'
        set multiplot layout 1,2 title "\(title.replacingOccurrences(of: "\"", with: "'"))"
        set grid
        set key top left
        set xlabel 'ranks'
        set ylabel 'samples/s'
        set yrange [0:*]
        set title 'throughput'
        plot \(lines(2))
        set ylabel 'efficiency (%)'
        set yrange [0:*]
        set title 'scaling efficiency vs the smallest run'
        plot \(lines(3))
        unset multiplot

        """
        try script.write(toFile: directory + "/scaling.gp", atomically: true, encoding: .utf8)
        try BenchScaling.gnuplot("scaling.gp", in: directory)
    }
}

extension BenchScaling {
    /// Runs gnuplot on `script` in `directory`; a missing gnuplot says how to install it.
    static func gnuplot(_ script: String, in directory: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["gnuplot", script]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch {
            throw ValidationError("cannot run gnuplot (\(error)); install it with launch/setup.sh (Debian package gnuplot-nox). The CSV and JSON are written")
        }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw ValidationError("gnuplot failed on \(directory)/\(script): \(message.split(separator: "\n").first ?? ""); install gnuplot with launch/setup.sh")
        }
    }
}
