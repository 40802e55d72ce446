import ArgumentParser
import Foundation
import Training

/// Which checkpoint `evaluate` and `export` read: a run directory's newest valid one, or a
/// file given by name.
struct CheckpointChoice: ParsableArguments {
    @Option(help: "Run directory whose newest valid checkpoint is read (evaluate and export write their results there by default).")
    var runDir: String?

    @Option(help: "Read this checkpoint file instead of the run directory's newest.")
    var checkpoint: String?

    func validate() throws {
        if runDir == nil && checkpoint == nil { throw ValidationError("pass --run-dir DIR (its newest checkpoint) or --checkpoint FILE") }
    }

    /// The checkpoint and where it was read.
    func locate() throws -> (checkpoint: Checkpoint, path: String) {
        try Checkpoint.locate(file: checkpoint, runDirectory: runDir ?? ".")
    }

    /// `name` in the run directory, nil without one.
    func inRunDirectory(_ name: String) -> String? {
        runDir.map { ($0 as NSString).appendingPathComponent(name) }
    }
}
