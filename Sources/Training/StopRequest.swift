import Foundation

/// A request from outside to stop the run at its next checkpoint: SIGUSR1 to any rank
/// (mpirun forwards SIGUSR1 and SIGUSR2 to every rank of its job).
///
/// Why: `launch/elastic.sh` grows a job back when a lost host answers again — it asks the
/// job to stop where nothing is lost (a checkpoint boundary) and relaunches it on the larger
/// set of hosts with `--resume`. The signal reaches ranks at different moments, so the ranks
/// agree at each checkpoint whether any of them has been asked (`Trainer.stopIsRequested`),
/// and all stop at the same step.
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
