import ArgumentParser
import FileFormats
import Foundation

/// How a benchmark starts each of its runs — this machine, the simulated cluster, or a
/// hostfile — for `bench scaling` and `bench target`, which run whole training jobs one after
/// another and read what each wrote.
struct BenchLauncher: ParsableArguments {
    @Option(help: "How ranks start: local (this machine), simcluster (simulated hosts, needs root), or hostfile:PATH.")
    var launcher: String = "local"

    @Option(help: "simcluster: each host's link rate (tc units: 100mbit, 1gbit, 10gbit, …, or none).")
    var rate: String = "1gbit"

    @Option(parsing: .unconditional, help: "simcluster: ranks on each simulated host.")
    var ranksPerHost: Int = 1

    /// The launcher's name and the rank counts it will be asked for.
    func check(rankCounts: [Int]) throws {
        guard launcher == "local" || launcher == "simcluster" || launcher.hasPrefix("hostfile:") else {
            throw ValidationError("--launcher must be local, simcluster or hostfile:PATH, got '\(launcher)'")
        }
        guard ranksPerHost >= 1 else { throw ValidationError("--ranks-per-host must be ≥ 1") }
        if launcher == "simcluster", let bad = rankCounts.first(where: { $0 % ranksPerHost != 0 }) {
            throw ValidationError("--ranks \(bad) is not a multiple of --ranks-per-host \(ranksPerHost): every simulated host runs the same number of ranks")
        }
    }

    /// The command that starts a run of `n` ranks, to which `ringsgd`'s arguments are appended.
    func command(root: String, ranks n: Int) -> [String] {
        if launcher == "simcluster" {
            return [root + "/launch/simcluster.sh", "--hosts", "\(n / ranksPerHost)", "--ranks-per-host", "\(ranksPerHost)", "--rate", rate, "--"]
        }
        if launcher.hasPrefix("hostfile:") { return [root + "/launch/hostfile.sh", String(launcher.dropFirst(9)), "\(n)"] }
        return [root + "/launch/local.sh", "\(n)"]
    }
}

/// The codecs a benchmark runs each configuration with (`bench scaling`, `bench target`).
struct BenchCodecList: ParsableArguments {
    @Option(help: "Comma-separated codecs (comm.codec values; lossy ones run with error feedback).")
    var codecs: String = "none"

    var list: [String] { codecs.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }

    func check() throws {
        if list.isEmpty { throw ValidationError("--codecs is empty; give comm.codec values such as none,int8") }
    }
}

extension JSONEncoder {
    /// The benchmarks' JSON reports (`scaling.json`, `target.json`): keys sorted and in
    /// snake_case, as `summary.json` writes them; NaN and ±Infinity as strings
    /// (`JSONEncoder.sorted`), so that a diverged run's figure cannot fail the report; indented.
    static var benchmarkReport: JSONEncoder {
        let encoder = JSONEncoder.sorted
        encoder.outputFormatting.insert(.prettyPrinted)
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }
}
