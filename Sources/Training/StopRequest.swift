import Foundation

/// A request from outside to stop the run, with a checkpoint, at its next periodic checkpoint,
/// replica check (`consistency.check_every_steps`), evaluation or epoch end, whichever comes first: SIGUSR1 to any
/// rank (mpirun forwards SIGUSR1 and SIGUSR2 to every rank of its job; SLURM sends it to every
/// task before the time limit with `#SBATCH --signal=USR1@…`, as `launch/slurm.sbatch` asks).
///
/// Why: `launch/elastic.sh` grows a job back when a lost host answers again — it asks the
/// job to stop where nothing is lost and relaunches it on the larger set of hosts with
/// `--resume`; a batch job near its time limit stops with its steps saved instead of being
/// killed after its last checkpoint. The signal reaches ranks at different moments, so the
/// ranks agree at each of those steps whether any of them has been asked
/// (`Trainer.stopIsRequested`), and all stop at the same step.
public final class StopRequest: @unchecked Sendable {
    public static let shared = StopRequest()
    private let lock = NSLock()
    private var requested = false
    private var source: DispatchSourceSignal?

    public init() {}

    /// Handles SIGUSR1 from now on (instead of its default action, which ends the process).
    public func listen() {
        lock.lock(); defer { lock.unlock() }
        guard source == nil else { return }
        signal(SIGUSR1, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global(qos: .utility))
        source.setEventHandler { [weak self] in self?.request() }
        source.resume()
        self.source = source
    }

    /// Asks for the stop (what the signal does; tests call it directly).
    public func request() {
        lock.lock(); requested = true; lock.unlock()
    }

    public var isRequested: Bool {
        lock.lock(); defer { lock.unlock() }
        return requested
    }
}
