import ArgumentParser

/// `ringsgd` — distributed data-parallel SGD over MPI. Run it under `mpirun`
/// (`launch/local.sh`, `launch/hostfile.sh`, `launch/slurm.sbatch`).
@main
struct RingSGD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringsgd",
        abstract: "Distributed data-parallel SGD with a compressed ring all-reduce over MPI.",
        discussion: "Launch under mpirun: launch/local.sh 2 train --config configs/fashion-mlp.yaml",
        subcommands: [Train.self, Bench.self, Check.self]
    )
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print figures (run the communication ones under mpirun).",
        subcommands: [BenchAllReduce.self, BenchCompute.self]
    )
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Correctness checks run under mpirun by the test suite.",
        subcommands: [CheckAllReduce.self]
    )
}
