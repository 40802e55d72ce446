import ArgumentParser
import Foundation

/// `ringsgd` — distributed data-parallel SGD over MPI. Run it under `mpirun`
/// (`launch/local.sh`, `launch/hostfile.sh`, `launch/slurm.sbatch`).
@main
struct RingSGD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringsgd",
        abstract: "Distributed data-parallel SGD with a compressed ring all-reduce over MPI.",
        discussion: "Launch under mpirun: launch/local.sh 2 train --config configs/fashion-mlp.yaml",
        subcommands: [Train.self, Evaluate.self, Export.self, Bench.self, Check.self]
    )

    /// Under mpirun every rank parses the same arguments: rank 0 alone reports a mistake in
    /// them, on one line (ranks printing at once interleave character by character), and
    /// every rank exits non-zero — before MPI starts, so no rank waits for another.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            let environment = ProcessInfo.processInfo.environment
            let rank = environment["OMPI_COMM_WORLD_RANK"] ?? environment["PMIX_RANK"] ?? "0"
            if code == .success { if rank == "0" { exit(withError: error) } else { Foundation.exit(0) } }
            if rank == "0" {
                let subcommand = CommandLine.arguments.dropFirst().prefix { !$0.hasPrefix("-") }.joined(separator: " ")
                FileHandle.standardError.write(Data("ringsgd: error: \(message(for: error)) (see 'ringsgd \(subcommand) --help')\n".utf8))
            }
            Foundation.exit(code.rawValue)
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print figures (run the communication ones under mpirun).",
        subcommands: [BenchAllReduce.self, BenchCompute.self, BenchScaling.self]
    )
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Correctness checks run under mpirun by the test suite.",
        subcommands: [CheckAllReduce.self]
    )
}
