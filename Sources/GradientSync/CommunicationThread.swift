import Foundation

/// One thread per rank that runs the gradient all-reduces, in the order they are submitted,
/// while the training thread goes on with backward.
///
/// Why one thread, in submission order: every rank must make the same collective calls in
/// the same order, and one thread that takes buckets first-in first-out does that by
/// construction. MPI sees calls from two threads (this one during backward, the training
/// thread between steps for agreements and checks), never at the same time — the training
/// thread calls MPI only after `waitForAll`, or in `runAndWait` when this thread is idle —
/// which is what `MPI_THREAD_SERIALIZED` permits
/// (`MPIRuntime` asks for it and fails clearly if it is not granted).
///
/// A job's error is kept and rethrown by `waitForAll`; later jobs of that round are skipped
/// (the collective is broken; the caller ends the job, as the ring's own errors do).
public final class CommunicationThread {
    private let condition = NSCondition()
    private var queue: [() throws -> Void] = []
    private var running = false, stopping = false
    private var failure: Error?
    private var thread: Thread?

    public init() {
        let thread = Thread { self.loop() }   // holds self until `stop` ends the loop
        thread.name = "ringsgd-comm"
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    /// Runs `job` on the communication thread after every job submitted before it.
    public func submit(_ job: @escaping () throws -> Void) {
        condition.lock()
        enqueue(job)
        condition.unlock()
    }

    /// Returns once every submitted job has run; rethrows the first error among them.
    public func waitForAll() throws { try drain(clearingFailure: true) }

    /// Waits until every submitted job has run; rethrows the first failure, cleared or kept.
    private func drain(clearingFailure: Bool) throws {
        condition.lock()
        while !queue.isEmpty || running { condition.wait() }
        let error = failure
        if clearingFailure { failure = nil }
        condition.unlock()
        if let error { throw error }
    }

    /// Runs `job` after every job submitted before it and returns when it has run — the training
    /// thread's own collective (a synchronised batch norm) in its place among the buckets. A
    /// failure (this job's or an earlier one's, which skips it) is rethrown and *kept*, so that
    /// later buckets are skipped and `waitForAll` reports it too. Only the training thread
    /// submits, so an empty queue and an idle thread mean `job` is done.
    ///
    /// When nothing is queued or running, `job` runs here, on the calling thread: the
    /// communication thread is idle and stays so (only the caller submits), so MPI still sees
    /// one thread at a time, and the job comes after every earlier one as it would in the
    /// queue. Why: a batch norm's forward collectives always find the queue empty, and the two
    /// thread hand-offs of each (a wake-up there, one back) cost fashion-resnet about 3 % of a
    /// step at np 2 (26 collectives a step, timeline medians: 87.7 / 84.4 ms a step with the
    /// hand-offs, 81.3 / 85.7 / 84.7 in place, 79.6 / 84.1 / 85.3 with `comm.overlap: false`).
    public func runAndWait(_ job: @escaping () throws -> Void) throws {
        condition.lock()
        guard queue.isEmpty && !running else {
            enqueue(job)
            condition.unlock()
            try drain(clearingFailure: false)
            return
        }
        let earlier = failure
        condition.unlock()
        if let earlier { throw earlier }
        do { try job() } catch {
            condition.lock()
            if failure == nil { failure = error }
            condition.unlock()
            throw error
        }
    }

    /// Queues `job` and wakes the thread; the caller holds the lock.
    private func enqueue(_ job: @escaping () throws -> Void) {
        queue.append(job)
        condition.broadcast()
    }

    /// Ends the thread (after the jobs already submitted).
    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping { condition.wait() }
            if queue.isEmpty && stopping { condition.unlock(); return }
            let job = queue.removeFirst()
            running = true
            let skip = failure != nil
            condition.unlock()
            var error: Error?
            if !skip {
                do { try job() } catch let e { error = e }
            }
            condition.lock()
            running = false
            if let error, failure == nil { failure = error }
            condition.broadcast()
            condition.unlock()
        }
    }
}
