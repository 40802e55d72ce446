import XCTest

/// The ring on real OpenMPI, np 2, 3, 4: agrees with MPI_Allreduce, and every rank holds
/// bit-identical results (`ringsgd check allreduce` states the properties it checks).
final class AllReduceUnderMPIRunTests: XCTestCase {
    func testRingMatchesMPIAllreduceAndIsBitIdenticalAtNp2To4() throws {
        for np in 2 ... 4 {
            for segmentBytes in ["4096", "1048576"] {
                let outcome = try MPIRun.run(np: np, ["check", "allreduce", "--counts", "0,1,\(np - 1),1000003",
                                                      "--segment-bytes", segmentBytes], timeout: 120)
                assertSucceeded(outcome, "check allreduce at np \(np), segments of \(segmentBytes) B")
                XCTAssertEqual(outcome.output.components(separatedBy: " PASS").count - 1, 4, outcome.output)
            }
        }
    }

    /// Buffers in an MPI shared-memory window: the fp32 ring's zero-copy steps agree with
    /// MPI_Allreduce, are bit-identical across ranks, and equal the message ring bit for bit.
    func testZeroCopyRingInASharedWindowAtNp2To4() throws {
        for np in 2 ... 4 {
            let outcome = try MPIRun.run(np: np, ["check", "allreduce", "--buffers", "shared",
                                                  "--counts", "0,1,\(np - 1),1000003"], timeout: 120)
            assertSucceeded(outcome, "check allreduce --buffers shared at np \(np)")
            XCTAssertEqual(outcome.output.components(separatedBy: "shared_equals_messages=true").count - 1, 4, outcome.output)
            XCTAssertEqual(outcome.output.components(separatedBy: "path=zero-copy").count - 1, 3, outcome.output)   // count 0 returns at once
        }
    }

    func testEveryCodecIsBitIdenticalAcrossRanksAtNp2To4() throws {
        for np in 2 ... 4 {
            for codec in ["fp16", "bf16", "int8", "int8sr:128", "sign", "fp16+zstd", "int8+zstd:1", "sign+zstd", "zstd"] {
                let outcome = try MPIRun.run(np: np, ["check", "allreduce", "--codec", codec, "--counts", "0,1,\(np - 1),100003",
                                                      "--segment-bytes", "16384"], timeout: 120)
                assertSucceeded(outcome, "check allreduce --codec \(codec) at np \(np)")
                XCTAssertEqual(outcome.output.components(separatedBy: "identical_across_ranks=true").count - 1, 4, outcome.output)
            }
        }
    }

    func testRingOverTCPTransport() throws {
        let outcome = try MPIRun.run(np: 2, ["check", "allreduce", "--counts", "5,65537"],
                                     timeout: 120, mpiArguments: ["--mca", "btl", "tcp,self"])
        assertSucceeded(outcome, "check allreduce over btl tcp,self")
    }

    func testAllReduceBenchmarkWritesJSON() throws {
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-bench-\(UUID()).json")
        let outcome = try MPIRun.run(np: 2, ["bench", "allreduce", "--min-bytes", "4096", "--max-bytes", "65536",
                                             "--warmup", "1", "--iterations", "3", "--json", json.path], timeout: 120)
        assertSucceeded(outcome, "bench allreduce")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
        XCTAssertEqual(object["np"] as? Int, 2)
        let results = object["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["bytes"] as! Int }, [4096, 16384, 65536])
        for r in results {
            for key in ["ring_us", "mpi_us", "ring_busbw_GBps", "mpi_busbw_GBps"] {
                XCTAssertGreaterThan(r[key] as? Double ?? 0, 0, "\(key) in \(r)")
            }
        }
    }

    /// Property: benchmark and check options that would crash, measure nothing or pass
    /// vacuously are one-line errors (a negative warm-up crashed or timed fewer steps than it
    /// said; `--counts 1k` checked nothing and passed; one rank printed NaN and failed its
    /// JSON), and a count list with spaces checks every count it names.
    func testBenchmarkInputsThatWouldMeasureNothingAreOneLineErrors() throws {
        let dump = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-dump-\(UUID())").path
        try Data(count: 16).write(to: URL(fileURLWithPath: dump))
        try Data("[]".utf8).write(to: URL(fileURLWithPath: dump + ".views.json"))
        defer { for path in [dump, dump + ".views.json"] { try? FileManager.default.removeItem(atPath: path) } }
        let config = MPIRun.packageRoot.appendingPathComponent("configs/fashion-mlp.yaml").path
        let cases: [([String], String)] = [
            (["bench", "allreduce", "--warmup=-1"], "--warmup must be ≥ 0, got -1"),
            (["bench", "allreduce", "--min-bytes", "1001"], "--min-bytes must be whole floats"),
            (["bench", "allreduce", "--segment-bytes", "2"], "--segment-bytes must be ≥ 4"),
            (["bench", "allreduce", "--max-bytes", "4096"], "bench allreduce needs 2 or more ranks"),
            (["bench", "allreduce", "--compressor", "powersgd", "--gradient", dump, "--topology", "hierarchical"], "--topology, --min-bytes and --max-bytes do not apply"),
            (["check", "allreduce", "--counts", "1k"], "--counts must be comma-separated element counts ≥ 0"),
            (["check", "allreduce", "--counts", "3,-2"], "--counts must be comma-separated element counts ≥ 0"),
            (["check", "allreduce", "--tolerance=-1"], "--tolerance must be > 0"),
            (["bench", "compute", "--warmup=-3"], "--warmup must be ≥ 0, got -3"),
            // A --set of a key the bench sets per row overruled the row's label (every "none" row ran int8).
            (["bench", "target", "--config", config, "--target", "test_accuracy=0.8", "--set", "comm.codec=int8"],
             "--set comm.codec=int8: bench target sets comm.codec for every run, from --codecs"),
            (["bench", "scaling", "--config", config, "--set", "train.max_steps=5"], "bench scaling sets train.max_steps for every run, from --steps"),
        ]
        // Refused before any rank starts (the one-rank case as MPI's singleton): no mpirun needed,
        // which would cost 2 s a case.
        for (arguments, expected) in cases {
            assertOneLineError(try MPIRun.runProcess([try MPIRun.binary] + arguments, timeout: 60), expected)
        }
        let spaced = try MPIRun.run(np: 2, ["check", "allreduce", "--counts", "0, 1, 3"])
        assertSucceeded(spaced, "check allreduce --counts '0, 1, 3'")
        for count in [0, 1, 3] { XCTAssertTrue(spaced.output.contains(" count=\(count) "), "count \(count) checked: \(spaced.output)") }
    }

    /// Property: PowerSGD is timed on a real dumped gradient with its layer shapes (written by
    /// `train --dump-gradient`), each rank r reporting its wire bytes — 1/172, 1/99 and 1/53
    /// of the fp32 ring's for the mlp at r = 1, 2, 4 — beside the fp32 ring and MPI_Allreduce.
    func testPowerSGDBenchmarkRunsOnADumpedGradientWithItsShapes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-bench-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = MPIRun.packageRoot.appendingPathComponent("configs/fashion-mlp.yaml").path
        assertSucceeded(try MPIRun.run(np: 1, ["train", "--config", config, "--set", "train.max_steps=20", "--run-dir", dir,
                                               "--dump-gradient", dir + "/mlp.grad"]), "dump")
        let outcome = try MPIRun.run(np: 2, ["bench", "allreduce", "--compressor", "powersgd", "--gradient", dir + "/mlp.grad",
                                             "--warmup", "1", "--iterations", "2", "--json", dir + "/bench.json"], timeout: 120)
        assertSucceeded(outcome, "bench allreduce --compressor powersgd")
        let results = (try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/bench.json"))) as! [String: Any])["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["rank"] as! Int }, [1, 2, 4])
        XCTAssertEqual(results.map { Int((1 / ($0["wire_ratio"] as! Double)).rounded()) }, [172, 99, 53], outcome.output)
        let missing = try MPIRun.run(np: 1, ["bench", "allreduce", "--compressor", "powersgd", "--gradient", config])
        assertOneLineError(missing, "--compressor powersgd needs --gradient FILE and its layer shapes FILE.views.json")
    }

    /// Property: `--buffers auto` follows mpirun's BTL list: shared memory when it names vader,
    /// messages when it leaves it out ("tcp,self") or excludes it ("^vader").
    func testAutomaticBuffersFollowTheBTLList() throws {
        for (btl, expected) in [("vader,self", "buffers=shared"), ("tcp,self", "buffers=private"), ("^vader", "buffers=private")] {
            let outcome = try MPIRun.run(np: 2, ["check", "allreduce", "--buffers", "auto", "--counts", "1000"], mpiArguments: ["--mca", "btl", btl])
            assertSucceeded(outcome, "--buffers auto with --mca btl \(btl)")
            XCTAssertTrue(outcome.output.contains(expected), "\(btl): \(outcome.output)")
        }
    }

    func testUnknownCodecIsAOneLineErrorWithTheValidNames() throws {
        let outcome = try MPIRun.run(np: 2, ["check", "allreduce", "--codec", "fp12"], timeout: 60)
        XCTAssertNotEqual(outcome.status, 0, outcome.output)
        XCTAssertFalse(outcome.timedOut)
        XCTAssertTrue(outcome.output.contains("unknown codec 'fp12'"), outcome.output)
        XCTAssertFalse(outcome.output.contains("Fatal error"), outcome.output)
    }
}
