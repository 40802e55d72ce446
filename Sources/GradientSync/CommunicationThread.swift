import Foundation

/// One thread per rank that runs the gradient all-reduces, in the order they are submitted,
/// while the training thread goes on with backward.
///
/// Why one thread, in submission order: every rank must make the same collective calls in
/// the same order, and one thread that takes buckets first-in first-out does that by
/// construction. MPI sees calls from two threads (this one during backward, the training
/// thread between steps for agreements and checks), never at the same time — the training
/// thread calls MPI only after `waitForAll` — which is what `MPI_THREAD_SERIALIZED` permits
/// (`MPIRuntime` asks for it and fails clearly if it is not granted).
///
/// A job's error is kept and rethrown by `waitForAll`; later jobs of that round are skipped
/// (the collective is broken; the caller ends the job, as the ring's own errors do).
final class CommunicationThread {
    private let condition = NSCondition()
    private var queue: [() throws -> Void] = []
    private var running = false, stopping = false
    private var failure: Error?
    private var thread: Thread?

    init() {
        let thread = Thread { self.loop() }   // holds self until `stop` ends the loop
        thread.name = "ringsgd-comm"
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    /// Runs `job` on the communication thread after every job submitted before it.
    func submit(_ job: @escaping () throws -> Void) {
        condition.lock()
        queue.append(job)
        condition.broadcast()
        condition.unlock()
    }

    /// Returns once every submitted job has run; rethrows the first error among them.
    func waitForAll() throws { try drain(clearingFailure: true) }

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
    func runAndWait(_ job: @escaping () throws -> Void) throws {
        submit(job)
        try drain(clearingFailure: false)
    }

    /// Ends the thread (after the jobs already submitted).
    func stop() {
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
