import ArgumentParser
import FileFormats
import Foundation
import Training

/// `ringsgd bench target`: time to a target for several ways of synchronising — every step,
/// local SGD and DiLoCo at several H — each with several codecs, through a launcher (this
/// machine, the simulated cluster, a hostfile), tabulated and plotted as quality against
/// training time and against bytes sent.
///
/// Why a mode of its own: methods that synchronise rarely trade steps for bytes, so their
/// step time says little; what a user wants is how soon the model is good enough and what it
/// cost the links. Every figure is the trainer's own (curve.jsonl: training seconds with
/// evaluations and checkpoint writes excluded, bytes this rank sent; summary.json), never a guess from the YAML.
struct BenchTarget: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "target",
        abstract: "Time to a target: train with sync modes × codecs; write target.csv, target.json and target.svg.",
        discussion: """
        Examples:
          ringsgd bench target --config configs/fashion-cnn.yaml --ranks 2 \\
              --sync every_step,diloco:50 --codecs none,int8 --set train.epochs=1
          ringsgd bench target --config configs/fashion-cnn.yaml \\
              --launcher simcluster --rate 100mbit --ranks 4 \\
              --sync every_step,local_sgd:50,diloco:10,diloco:50,diloco:200 \\
              --codecs none,int8,sign --target test_accuracy=0.91
        --sync lists comm.sync values, with H after a colon for local_sgd
        and diloco, and comm.* settings of that run after further colons
        (diloco:50:fragments=4:outer_delay=2). Lossy codecs run with error feedback. Each run evaluates
        every --eval-every-steps steps; the time to the target is that of the
        first evaluation reaching it. --peer LABEL=FILE adds a curve printed by
        ../shared/peer/torch_ddp.py --eval-every-steps (its final JSON line).
        """
    )

    @Option(help: "Training config (YAML).")
    var config: String = "configs/fashion-cnn.yaml"

    @Option(parsing: .unconditional, help: "Ranks per run.")
    var ranks: Int = 2

    @Option(help: "Comma-separated comm.sync values, H after a colon: every_step, local_sgd:50, diloco:50.")
    var sync: String = "every_step,diloco:50"

    @OptionGroup var codecs: BenchCodecList

    @Option(help: "The target, METRIC=VALUE (test_accuracy, test_loss, val_loss, perplexity).")
    var target: String = "test_accuracy=0.91"

    @Option(parsing: .unconditional, help: "Evaluate every N steps (the curve's resolution).")
    var evalEverySteps: Int = 100

    @Flag(help: "Stop each run at the target (faster; the final-quality column is then the target's).")
    var stopAtTarget = false

    @OptionGroup var launch: BenchLauncher

    @Option(name: .customLong("set"), help: "Extra config override KEY=VALUE for every run (repeatable).")
    var overrides: [String] = []

    @Option(help: "A peer's curve, LABEL=FILE: the output of torch_ddp.py --eval-every-steps (repeatable).")
    var peer: [String] = []

    @Option(parsing: .unconditional, help: "Runs of every configuration, alternating (each round's order rotated by one); a row is the median run by time to target.")
    var rounds: Int = 1

    @Option(help: "Output directory (default: runs/target-<time>).")
    var out: String?

    @Flag(help: "Tabulate runs already in --out that ran with the same arguments (their summary.json and curve.jsonl) instead of running them again.")
    var reuse = false

    func validate() throws {
        guard FileManager.default.fileExists(atPath: config) else {
            throw ValidationError("config \(config) does not exist; pass --config with a YAML file such as configs/fashion-cnn.yaml")
        }
        guard ranks >= 1, evalEverySteps >= 1, rounds >= 1 else { throw ValidationError("--ranks, --eval-every-steps and --rounds must be ≥ 1") }
        try launch.check(rankCounts: [ranks])
        _ = try syncModes()
        try codecs.check()
        let goal: TrainingTarget
        do { goal = try TrainingTarget(parsing: target) } catch { throw ValidationError("\(error)") }
        _ = try peerCurves(for: goal)
        try BenchScaling.refuseOverrides(overrides, ofKeys: ["comm.sync": "--sync", "comm.sync_every": "--sync", "comm.codec": "--codecs",
                                                             "comm.error_feedback": "the codec (on for lossy ones)",
                                                             "train.eval_every_steps": "--eval-every-steps"], command: "bench target")
    }


    /// `every_step`, `local_sgd:H`, `diloco:H`, each optionally followed by `:KEY=VALUE` of
    /// `comm.*` for that run alone (`diloco:50:fragments=4:outer_delay=2`) → (mode, H, overrides).
    func syncModes() throws -> [(mode: String, every: Int?, extra: [String])] {
        try sync.split(separator: ",").map { item in
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: ":").map(String.init)
            let extra = parts.dropFirst(parts.first == "every_step" ? 1 : 2)
            guard extra.allSatisfy({ $0.contains("=") && !$0.hasPrefix("=") }) else {
                throw ValidationError("--sync \(item): what follows the mode (and H) must be comm.* settings KEY=VALUE, e.g. diloco:50:fragments=4")
            }
            // What the row's label and --codecs already say is not set again behind them.
            if let taken = extra.first(where: { ["codec", "sync", "sync_every", "error_feedback"].contains($0.split(separator: "=")[0]) }) {
                throw ValidationError("--sync \(item): \(taken) is set by the mode, H and --codecs; remove it")
            }
            if let clash = overrides.first(where: { o in extra.contains { o.hasPrefix("comm." + $0.split(separator: "=")[0] + "=") } }) {
                throw ValidationError("--set \(clash) and --sync \(item) both set it; keep one")
            }
            switch parts.first {
            case "every_step"?: return ("every_step", nil, extra.map { "comm." + $0 })
            case "local_sgd"?, "diloco"?:
                guard parts.count >= 2, let h = Int(parts[1]), h >= 1 else { throw ValidationError("--sync \(item): H must be a whole number ≥ 1 (\(parts[0]):H)") }
                return (parts[0], h, extra.map { "comm." + $0 })
            default:
                throw ValidationError("--sync: '\(item)' is not every_step, local_sgd:H or diloco:H")
            }
        }
    }

    /// The peers' curves in `goal`'s metric. torch_ddp.py's curve holds one metric a point —
    /// test accuracy for a classifier, the validation loss for the GPT (its final line names
    /// which) — so perplexity is exp of its loss, and a metric it has not got is refused.
    func peerCurves(for goal: TrainingTarget) throws -> [(label: String, points: [TargetRow.Point])] {
        try peer.map { item in
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else { throw ValidationError("--peer expects LABEL=FILE, got '\(item)'") }
            let label = String(item[..<eq]), path = String(item[item.index(after: eq)...])
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("--peer \(label): cannot read \(path)") }
            for line in text.split(separator: "\n").reversed() {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let curve = object["curve"] as? [[String: Any]] else { continue }
                let peerMetric: TrainingTarget.Metric = object["val_loss"] != nil ? .valLoss : .testAccuracy
                let convert: (Double) -> Double
                switch (peerMetric, goal.metric) {
                case (.valLoss, .valLoss), (.testAccuracy, .testAccuracy): convert = { $0 }
                case (.valLoss, .perplexity): convert = { Foundation.exp($0) }
                default:
                    throw ValidationError("--peer \(label): \(path)'s curve holds \(peerMetric.rawValue), which --target \(goal.metric.rawValue) cannot be read from; use --target \(peerMetric.rawValue)=…\(peerMetric == .valLoss ? " or perplexity=…" : "")")
                }
                return (label, curve.compactMap { p in
                    guard let step = p["step"] as? Int, let seconds = p["train_seconds"] as? Double, let metric = p["metric"] as? Double else { return nil }
                    return TargetRow.Point(step: step, seconds: seconds, metric: convert(metric), bytes: nil)
                })
            }
            throw ValidationError("--peer \(label): \(path) has no JSON line with a curve; run torch_ddp.py with --eval-every-steps")
        }
    }

    func run() throws {
        setvbuf(stdout, nil, _IOLBF, 0)
        let goal = try TrainingTarget(parsing: target)
        let root = BenchScaling.packageRoot.path
        let outDirectory = out ?? "runs/target-\(BenchScaling.timestamp())"
        try FileManager.default.createDirectory(atPath: outDirectory, withIntermediateDirectories: true)
        let link = launch.launcher == "simcluster" ? "\(ranks / launch.ranksPerHost) hosts × \(launch.ranksPerHost), \(launch.rate)"
            : launch.launcher == "local" ? "one host" : launch.launcher
        print("# ringsgd bench target: \(config), \(ranks) ranks, \(link), target \(goal)")
        let wall = ContinuousClock.now
        // Every configuration once a round, each round's order rotated by one (as bench scaling).
        var configurations: [(label: String, name: String, settings: [String])] = []
        for (mode, every, extra) in try syncModes() {
            for codec in codecs.list {
                let label = (every.map { "\(mode):\($0)" } ?? mode) + extra.map { ":" + $0.dropFirst(5) }.joined() + " " + codec
                let name = label.replacingOccurrences(of: " ", with: "-").replacingOccurrences(of: ":", with: "_")
                    .replacingOccurrences(of: "+", with: "_").replacingOccurrences(of: "=", with: "")
                var settings = ["--set", "comm.sync=\(mode)", "--set", "comm.codec=\(codec)",
                                "--set", "comm.error_feedback=\(codec == "none" || codec == "fp32" ? "false" : "true")",
                                "--set", "train.eval_every_steps=\(evalEverySteps)"]
                if let every { settings += ["--set", "comm.sync_every=\(every)"] }
                for setting in extra { settings += ["--set", setting] }
                configurations.append((label, name, settings))
            }
        }
        var runs: [[TargetRow]] = Array(repeating: [], count: configurations.count)
        for round in 0 ..< rounds {
            for position in configurations.indices {
                let which = (position + round) % configurations.count, (label, name, settings) = configurations[which]
                let runDirectory = (outDirectory as NSString).appendingPathComponent(name + (rounds > 1 ? "-r\(round + 1)" : ""))
                var train = ["train", "--config", config, "--run-dir", runDirectory, "--overwrite"] + settings
                if stopAtTarget { train += ["--target", target] }
                for o in overrides { train += ["--set", o] }
                try runOnce(label: label, train: train, runDirectory: runDirectory, root: root)
                let run = try TargetRow(label: label, runDirectory: runDirectory, target: goal, base: nil)
                runs[which].append(run)
                print("# round \(round + 1)/\(rounds): \(label): " + (run.secondsToTarget.map { String(format: "target at %.1f s", $0) } ?? "target not reached"))
            }
        }
        print(TargetRow.header)
        var rows: [TargetRow] = []
        for (which, configuration) in configurations.enumerated() {
            // The median run by time to target (a run that never reached it counts as the
            // slowest; of an even number, the faster of the two middle ones, as bench scaling's).
            let sorted = runs[which].sorted { ($0.secondsToTarget ?? .infinity) < ($1.secondsToTarget ?? .infinity) }
            let median = sorted[(sorted.count - 1) / 2]
            let row = TargetRow(label: configuration.label, points: median.points, target: goal, base: rows.first, bytesTotal: median.bytesTotal,
                                rounds: runs[which].map(\.secondsToTarget))
            rows.append(row)
            print(row.line)
        }
        for (label, points) in try peerCurves(for: goal) {
            let row = TargetRow(label: label, points: points, target: goal, base: rows.first)
            rows.append(row)
            print(row.line)
        }
        let seconds = (ContinuousClock.now - wall).seconds
        try TargetReport(config: config, link: link, target: goal.description, rows: rows, wallSeconds: seconds).write(to: outDirectory)
        print("# speed-up and bytes ÷ (both to the target) and total ÷ (bytes of the whole runs) are against the first row; wall \(String(format: "%.0f", seconds)) s")
        print("# wrote \(outDirectory)/target.csv, target.json, target.svg")
    }
}

extension BenchTarget {
    /// Runs one training job (or, with --reuse, takes the finished run of exactly these arguments).
    func runOnce(label: String, train: [String], runDirectory: String, root: String) throws {
        let log = runDirectory + ".log", argumentsFile = runDirectory + ".args"
        let starter = launch.command(root: root, ranks: ranks)
        // --reuse takes a run only if it ran with exactly these arguments, and to its end.
        let asked = (starter + train).joined(separator: " ")
        let finished = reuse && FileManager.default.fileExists(atPath: runDirectory + "/summary.json")
            && (try? String(contentsOfFile: argumentsFile, encoding: .utf8)) == asked
        if !finished { try? FileManager.default.removeItem(atPath: argumentsFile) }
        let status = finished ? 0 : try BenchScaling.execute(starter + train, log: log)
        guard status == 0 else {
            let tail = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").last.map(String.init) ?? ""
            throw ValidationError("the run \(label) failed (exit \(status)): \(tail) — full output in \(log)")
        }
        if !finished { try asked.write(toFile: argumentsFile, atomically: true, encoding: .utf8) }
    }
}

/// One run: its curve, and what the table says of it.
struct TargetRow: Encodable {
    struct Point: Encodable { let step: Int, seconds: Double, metric: Double, bytes: Double? }
    let label: String
    let points: [Point]
    let finalMetric: Double?
    let trainSeconds: Double?
    let secondsToTarget: Double?, stepToTarget: Int?, bytesToTarget: Double?
    let bytesTotal: Double?
    let speedup: Double?, bytesRatio: Double?, bytesTotalRatio: Double?
    /// Every round's seconds to the target (nil: not reached), in round order; empty for a peer's curve.
    let roundSecondsToTarget: [Double?]

    /// A ringsgd run: curve.jsonl and summary.json of `runDirectory`.
    init(label: String, runDirectory: String, target: TrainingTarget, base: TargetRow?) throws {
        let text = (try? String(contentsOfFile: runDirectory + "/curve.jsonl", encoding: .utf8)) ?? ""
        let points = text.split(separator: "\n").compactMap { line -> Point? in
            guard let p = try? JSONDecoder.ringsgd.decode(CurvePoint.self, from: Data(line.utf8)) else { return nil }
            let metric = target.metric == .testAccuracy ? p.test_accuracy : target.metric == .perplexity ? (p.perplexity ?? .nan) : p.test_loss
            return Point(step: p.step, seconds: p.train_seconds, metric: metric, bytes: p.bytes_sent)
        }
        guard !points.isEmpty else { throw ValidationError("\(runDirectory)/curve.jsonl holds no evaluation; rebuild ringsgd (swift build -c release)") }
        let summary = try JSONDecoder.ringsgd.decode(RunSummary.self, from: Data(contentsOf: URL(fileURLWithPath: runDirectory + "/summary.json")))
        self.init(label: label, points: points, target: target, base: base, bytesTotal: summary.bytes_sent)
    }

    init(label: String, points: [Point], target: TrainingTarget, base: TargetRow?, bytesTotal: Double? = nil, rounds: [Double?] = []) {
        (self.label, self.points, self.bytesTotal, self.roundSecondsToTarget) = (label, points, bytesTotal, rounds)
        finalMetric = points.last?.metric
        trainSeconds = points.last?.seconds
        let reached = points.first { target.metric == .testAccuracy ? $0.metric >= target.value : $0.metric <= target.value }
        (secondsToTarget, stepToTarget, bytesToTarget) = (reached?.seconds, reached?.step, reached?.bytes ?? nil)
        let seconds = reached?.seconds
        speedup = base?.secondsToTarget.flatMap { b in seconds.map { b / $0 } }
        // On the speed-up's footing, to the target; and over the whole runs, apart.
        let toTarget = reached?.bytes ?? nil
        bytesRatio = base?.bytesToTarget.flatMap { b in toTarget.flatMap { $0 > 0 ? b / $0 : nil } }
        bytesTotalRatio = base?.bytesTotal.flatMap { b in bytesTotal.flatMap { $0 > 0 ? b / $0 : nil } }
    }

    static let header = [ScalingRow.pad("run", -22), ScalingRow.pad("final", 8), ScalingRow.pad("to_target_s", 12), ScalingRow.pad("steps", 6),
                         ScalingRow.pad("MB_to_target", 13), ScalingRow.pad("MB_total", 10), ScalingRow.pad("bytes÷", 8), ScalingRow.pad("total÷", 8),
                         ScalingRow.pad("speed-up", 9), ScalingRow.pad("train_s", 8)].joined(separator: " ")

    var line: String {
        let f = { (v: Double?, format: String) in v.map { String(format: format, $0) } ?? "-" }
        return [ScalingRow.pad(label, -22), ScalingRow.pad(f(finalMetric, "%.4f"), 8), ScalingRow.pad(f(secondsToTarget, "%.1f"), 12),
                ScalingRow.pad(stepToTarget.map(String.init) ?? "-", 6), ScalingRow.pad(f(bytesToTarget.map { $0 / 1e6 }, "%.2f"), 13),
                ScalingRow.pad(f(bytesTotal.map { $0 / 1e6 }, "%.2f"), 10), ScalingRow.pad(f(bytesRatio, "%.0f×"), 8),
                ScalingRow.pad(f(bytesTotalRatio, "%.0f×"), 8),
                ScalingRow.pad(f(speedup, "%.2f×"), 9), ScalingRow.pad(f(trainSeconds, "%.1f"), 8)].joined(separator: " ")
    }

    static let columns = ["run", "final_metric", "seconds_to_target", "step_to_target", "bytes_to_target_per_rank", "bytes_total_per_rank",
                          "bytes_to_target_ratio_vs_first", "bytes_total_ratio_vs_first", "speedup_to_target_vs_first", "train_seconds",
                          "rounds_seconds_to_target"]
    var csv: String {
        let f = { (v: Double?) in v.map { String(format: "%.6g", $0) } ?? "" }
        let fields = [label, f(finalMetric), f(secondsToTarget), stepToTarget.map(String.init) ?? "", f(bytesToTarget), f(bytesTotal),
                      f(bytesRatio), f(bytesTotalRatio), f(speedup), f(trainSeconds), roundSecondsToTarget.map { $0.map { String(format: "%.3f", $0) } ?? "-" }.joined(separator: " ")]
        // Quoted where a field holds a comma or a quote (a --peer label may).
        return fields.map { $0.contains(",") || $0.contains("\"") ? "\"\($0.replacingOccurrences(of: "\"", with: "\"\""))\"" : $0 }.joined(separator: ",")
    }
}

/// target.csv, target.json and the plot (gnuplot, SVG): quality against training time and
/// against bytes sent, one line per run, the target as a horizontal line.
struct TargetReport: Encodable {
    let config: String, link: String, target: String
    let rows: [TargetRow]
    let wallSeconds: Double

    func write(to directory: String) throws {
        let csv = ([TargetRow.columns.joined(separator: ",")] + rows.map(\.csv)).joined(separator: "\n") + "\n"
        try csv.write(toFile: directory + "/target.csv", atomically: true, encoding: .utf8)
        try JSONEncoder.benchmarkReport.encode(self).write(to: URL(fileURLWithPath: directory + "/target.json"))
        var data = ""
        for row in rows {
            data += "# \(row.label)\n" + row.points.map { "\($0.seconds) \($0.metric) \($0.bytes.map { String($0 / 1e6) } ?? "NaN")\n" }.joined() + "\n\n"
        }
        try data.write(toFile: directory + "/target.dat", atomically: true, encoding: .utf8)
        let value = target.split(separator: "=").last.map(String.init) ?? "0"
        let title = "\((config as NSString).lastPathComponent), \(link): \(target)".replacingOccurrences(of: "\"", with: "'")
        let lines = { (x: Int) in
            rows.enumerated().map { "'target.dat' index \($0.offset) using \(x):2 with linespoints lw 2 pt 7 ps 0.5 title '\($0.element.label)'" }
                .joined(separator: ", ") + ", \(value) with lines dt 2 lc rgb '#888888' title 'target'"
        }
        let script = """
        set terminal svg size 1200,480 dynamic font 'sans,11' background '#ffffff' noenhanced
        set output 'target.svg'
        set multiplot layout 1,2 title "\(title)"
        set grid
        set key \(target.hasPrefix("test_accuracy") ? "bottom" : "top") right font ',10'
        set ylabel '\(target.split(separator: "=").first ?? "")'
        set xlabel 'training seconds (evaluations and checkpoints excluded)'
        set title 'quality against time'
        plot \(lines(1))
        set logscale x
        set xlabel 'MB sent per rank (log)'
        set title 'quality against bytes'
        unset key
        plot \(lines(3))
        unset multiplot

        """
        try script.write(toFile: directory + "/target.gp", atomically: true, encoding: .utf8)
        try BenchScaling.gnuplot("target.gp", in: directory)
    }
}
