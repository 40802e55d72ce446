import Collectives
import Foundation
import MPITransport
import Training

/// Runs one MPI job body and turns every failure into one line on stderr and a non-zero exit.
///
/// Errors that every rank raises together — after an `Agreement`, or a collective check that
/// all ranks evaluate on the same gathered values — end with `MPI_Finalize` and exit code 1,
/// reported once by rank 0. Any other error may be this rank's alone, with peers blocked in a
/// collective, so the rank that saw it reports it and calls `MPI_Abort`, which ends the whole
/// job instead of letting it hang.
enum MPIJob {
    /// `afterStall`: how the command goes on once a stalled rank (`CollectiveError.stalled`,
    /// past the deadline that `deadlineSetting` sets) is found — the end of the line that names it.
    static func run(afterStall: String = "run it again", deadlineSetting: String = "comm.timeout_seconds",
                    _ body: (MPITransport) throws -> Void) -> Never {
        let runtime = MPIRuntime.shared
        let transport: MPITransport
        do {
            transport = try runtime.worldTransport()
        } catch let error as MPISettingError {
            fail("\(error)")   // a bad setting, not a missing mpirun
        } catch {
            fail("cannot initialise MPI: \(error). Run under mpirun (launch/local.sh NP …)")
        }
        do {
            try body(transport)
            try transport.barrier()
            runtime.finalize()
            exit(0)
        } catch let error as CollectiveError {
            CheckpointWriter.finishPendingWrites(within: 30)
            switch error {
            case .lengthMismatch, .disagreement:
                finishTogether("\(error)", transport: transport)
            case .stalled:   // names this rank already; its peers cannot be waited for
                printError("\(error.description(deadlineSetting: deadlineSetting)), then \(afterStall)")
                runtime.abort(code: 1)
            default:
                printError("rank \(transport.rank): \(error)")
                runtime.abort(code: 1)
            }
        } catch let error as AgreedError {
            CheckpointWriter.finishPendingWrites(within: 30)
            finishTogether(error.message, transport: transport)
        } catch {
            CheckpointWriter.finishPendingWrites(within: 30)
            printError("rank \(transport.rank): \(error)")
            runtime.abort(code: 1)
        }
    }

    /// Every rank raised the same error at the same point: rank 0 reports it once, and all
    /// finalise cleanly (no peer is left waiting, so no MPI_Abort).
    static func finishTogether(_ message: String, transport: MPITransport) -> Never {
        if transport.rank == 0 { printError(message) }
        MPIRuntime.shared.finalize()
        exit(1)
    }

    static func printError(_ message: String) {
        FileHandle.standardError.write(Data("ringsgd: error: \(message)\n".utf8))
    }

    static func fail(_ message: String) -> Never {
        printError(message)
        exit(1)
    }
}

