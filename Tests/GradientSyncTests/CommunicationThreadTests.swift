import Foundation
import GradientSync
import XCTest

/// The communication thread's order: every rank must make the same collective calls in the
/// same order, so a job waited for (a synchronised batch norm's collective) must come after
/// every job submitted before it, wherever it runs.
final class CommunicationThreadTests: XCTestCase {
    private struct Failed: Error, Equatable { let id: Int }

    /// A list the jobs append to, from whichever thread runs them.
    private final class Log: @unchecked Sendable {
        private let lock = NSLock()
        private var entries: [String] = []
        func append(_ s: String) { lock.lock(); entries.append(s); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return entries }
    }

    /// Property: a job waited for while earlier jobs are still queued runs on the communication
    /// thread after all of them; one waited for when the thread is idle runs on the caller's
    /// thread, after the earlier ones too; submission order holds throughout.
    func testAWaitedJobRunsAfterEveryEarlierJobQueuedOrInPlace() throws {
        let thread = CommunicationThread()
        defer { thread.stop() }
        let log = Log(), caller = pthread_self()
        func elsewhere() -> Bool { pthread_equal(pthread_self(), caller) == 0 }
        thread.submit { Thread.sleep(forTimeInterval: 0.5); log.append("slow") }
        for i in 0 ..< 20 { thread.submit { log.append("job \(i)") } }
        var queuedRanThere = false
        try thread.runAndWait { queuedRanThere = elsewhere(); log.append("waited 1") }
        XCTAssertTrue(queuedRanThere, "with jobs still queued, the waited job takes its turn on the communication thread")

        var idleRanThere = true
        try thread.runAndWait { idleRanThere = elsewhere(); log.append("waited 2") }
        XCTAssertFalse(idleRanThere, "an idle thread: the waited job runs in place")

        thread.submit { log.append("job 20") }
        try thread.waitForAll()
        XCTAssertEqual(log.all, ["slow"] + (0 ..< 20).map { "job \($0)" } + ["waited 1", "waited 2", "job 20"])
    }

    /// Property: a job waited for while the thread runs a job, with nothing else queued, still
    /// takes its turn on the communication thread after that job — never in place beside it,
    /// which would put two threads in MPI at once.
    func testAWaitedJobNeverRunsBesideARunningJob() throws {
        let thread = CommunicationThread()
        defer { thread.stop() }
        let log = Log(), caller = pthread_self(), started = DispatchSemaphore(value: 0)
        thread.submit { started.signal(); Thread.sleep(forTimeInterval: 0.2); log.append("running") }
        started.wait()   // the job is running and the queue is empty
        var ranElsewhere = false
        try thread.runAndWait { ranElsewhere = pthread_equal(pthread_self(), caller) == 0; log.append("waited") }
        XCTAssertTrue(ranElsewhere, "with a job running, the waited job runs on the communication thread")
        XCTAssertEqual(log.all, ["running", "waited"])
    }

    /// Property: an earlier job's failure skips a waited job, in place or queued, and is
    /// rethrown by it and kept for `waitForAll`; a waited job's own failure in place is kept too.
    func testFailuresAreRethrownAndKeptOnBothPaths() throws {
        let thread = CommunicationThread()
        defer { thread.stop() }
        let started = DispatchSemaphore(value: 0)
        thread.submit { started.signal(); Thread.sleep(forTimeInterval: 0.2); throw Failed(id: 1) }
        started.wait()   // the failing job is running: the waited job takes the queued path
        var ran = false
        XCTAssertThrowsError(try thread.runAndWait { ran = true }) { XCTAssertEqual($0 as? Failed, Failed(id: 1)) }
        XCTAssertFalse(ran, "queued, a job after a failure is skipped")
        // Idle now, with the failure kept: the in-place path skips as well.
        XCTAssertThrowsError(try thread.runAndWait { ran = true }) { XCTAssertEqual($0 as? Failed, Failed(id: 1)) }
        XCTAssertFalse(ran, "in place, a job after a failure is skipped")
        XCTAssertThrowsError(try thread.waitForAll()) { XCTAssertEqual($0 as? Failed, Failed(id: 1)) }
        try thread.waitForAll()   // cleared by the call that reported it

        XCTAssertThrowsError(try thread.runAndWait { throw Failed(id: 2) }) { XCTAssertEqual($0 as? Failed, Failed(id: 2)) }
        thread.submit { ran = true }
        XCTAssertThrowsError(try thread.waitForAll()) { XCTAssertEqual($0 as? Failed, Failed(id: 2)) }
        XCTAssertFalse(ran, "a bucket after a failed waited job is skipped")
    }
}
