import Collectives
import InProcessTransport
import Training
import XCTest

/// A failure that one rank meets alone becomes the same error on every rank, carrying that
/// rank's own message: no rank is left waiting in the next collective.
final class AgreementTests: XCTestCase {
    struct Local: Error, CustomStringConvertible { let description: String }

    func testAFailureOnOneRankIsRaisedOnEveryRankWithThatRanksMessage() throws {
        for failing in [0, 2] {
            let outcomes = try InProcessCluster.run(size: 3) { transport -> String in
                do {
                    _ = try Agreement.run("read the config", over: transport) {
                        if transport.rank == failing { throw Local(description: "cannot read config file x.yaml") }
                        return 1
                    }
                    return "no error"
                } catch {
                    // The ranks can still talk afterwards: nobody was left in a collective.
                    _ = try RingAllGather.gather(Int32(transport.rank), over: transport)
                    return "\(error)"
                }
            }
            let expected = failing == 0 ? "cannot read config file x.yaml" : "rank 2: cannot read config file x.yaml"
            XCTAssertEqual(outcomes, Array(repeating: expected, count: 3))
        }
    }

    func testFailuresOnSeveralRanksNameThemAll() throws {
        let outcomes = try InProcessCluster.run(size: 4) { transport -> String in
            do {
                try Agreement.run("load the dataset", over: transport) {
                    if transport.rank % 2 == 1 { throw Local(description: "rank-local problem") }
                }
                return "no error"
            } catch { return "\(error)" }
        }
        XCTAssertEqual(Set(outcomes), ["rank 1: rank-local problem (ranks 1, 3 could not load the dataset)"])
    }

    /// Every rank failing alike (one shared file, one argument) reads as the plain message:
    /// a rank prefix would only distract.
    func testTheSameFailureOnEveryRankIsThePlainMessage() throws {
        let outcomes = try InProcessCluster.run(size: 3) { transport -> String in
            do {
                try Agreement.run("read the config", over: transport) { throw Local(description: "cannot read config file x.yaml") }
                return "no error"
            } catch { return "\(error)" }
        }
        XCTAssertEqual(outcomes, Array(repeating: "cannot read config file x.yaml", count: 3))
    }

    func testRankZerosDecisionOrErrorReachesEveryRank() throws {
        let values = try InProcessCluster.run(size: 3) { transport in
            try Agreement.fromRankZero("pick", over: transport) { Array("checkpoint bytes".utf8) }
        }
        XCTAssertEqual(values.map { String(decoding: $0, as: UTF8.self) }, Array(repeating: "checkpoint bytes", count: 3))
        let errors = try InProcessCluster.run(size: 3) { transport -> String in
            do { _ = try Agreement.fromRankZero("pick", over: transport) { throw Local(description: "no valid checkpoint") }; return "" }
            catch { return "\(error)" }
        }
        XCTAssertEqual(errors, Array(repeating: "no valid checkpoint", count: 3))
    }

    func testRanksStartedDifferentlyFailTogetherNamingTheDifference() throws {
        let outcomes = try InProcessCluster.run(size: 2) { transport -> String in
            let config = try TrainingConfig(yaml: nil, source: "t", overrides: transport.rank == 1 ? ["optimizer.lr=0.2"] : ["optimizer.lr=0.1"])
            do { try Agreement.requireSameStart(config: config, resume: false, over: transport); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(outcomes.allSatisfy { $0.contains("ranks disagree on the config hash: rank 1 differs from rank 0 in optimizer.lr: 0.1 → 0.2") }, "\(outcomes)")
        let resume = try InProcessCluster.run(size: 3) { transport -> String in
            let config = try TrainingConfig(yaml: nil, source: "t")
            do { try Agreement.requireSameStart(config: config, resume: transport.rank == 0, over: transport); return "" } catch { return "\(error)" }
        }
        XCTAssertEqual(Set(resume), ["ranks disagree on --resume (given to rank 0 only); pass it to every rank or to none"])
    }
}
