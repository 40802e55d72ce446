import FileFormats
import Foundation
import XCTest

/// A tiny GPT (2 blocks, width 32, windows of 32 bytes) on real text from the fortunes package,
/// under real mpirun: every codec keeps replicas identical and reports validation loss and
/// tokens/s, averaging during backward is bit-identical to averaging after it (with two
/// micro-batches), resume is bit-identical and continues curve.jsonl, the timeline names the
/// blocks, generate's cache matches full passes, an export read back with --init-from
/// reproduces the validation loss, bad input is one line.
final class GPTUnderMPIRunTests: XCTestCase {
    static let corpus = "/usr/share/games/fortunes/goedel"

    static let tiny = ["--config", MPIRun.packageRoot.appendingPathComponent("configs/tiny-gpt.yaml").path,
                       "--set", "model.gpt.layers=2", "--set", "model.gpt.heads=2", "--set", "model.gpt.embed=32",
                       "--set", "model.gpt.block_size=32",
                       "--set", "data.text=\(corpus)", "--set", "data.val_windows=8", "--set", "data.stride=8",
                       "--set", "train.max_steps=8", "--set", "train.global_batch=8", "--set", "train.eval_batch=4",
                       "--set", "consistency.check_every_steps=4", "--set", "checkpoint.every_steps=4",
                       "--set", "comm.bucket_bytes=16384"]

    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: Self.corpus) else {
            throw XCTSkip("\(Self.corpus) is missing: the fortunes package is not installed (launch/setup.sh installs it)")
        }
    }

    func train(np: Int = 2, _ extra: [String], dir: String) throws -> MPIRun.Outcome {
        let outcome = try MPIRun.run(np: np, ["train"] + Self.tiny + ["--run-dir", dir] + extra, timeout: 180)
        assertSucceeded(outcome, "train gpt np \(np) \(extra)")
        return outcome
    }

    /// Property: with every codec (error feedback on), sign with its momentum carry and
    /// PowerSGD (bias-free and embedding matrices included), the replicas end identical and the
    /// summary reports a finite validation loss, its perplexity and tokens/s.
    func testEveryCodecKeepsReplicasIdentical() throws {
        let variants: [[String]] = [[], ["--set", "comm.codec=fp16"], ["--set", "comm.codec=bf16"], ["--set", "comm.codec=int8"],
                                    ["--set", "comm.codec=sign"],
                                    ["--set", "comm.compressor=powersgd", "--set", "comm.powersgd.start_step=2", "--set", "comm.powersgd.rank=2"]]
        for variant in variants {
            let dir = temporaryDirectory()
            let outcome = try train(variant, dir: dir)
            XCTAssertTrue(outcome.output.contains("replicas identical"), outcome.output)
            XCTAssertTrue(outcome.output.contains("tokens/s"), outcome.output)
            let s = try summary(dir)
            let loss = try XCTUnwrap(s["test_loss"] as? Double, "\(variant): \(s)")
            // Below a uniform guess (ln 256 = 5.545) after 8 steps.
            XCTAssertTrue(loss.isFinite && loss > 0 && loss < 5.45, "\(variant): validation loss \(loss)")
            XCTAssertEqual(s["perplexity"] as? Double ?? 0, Foundation.exp(loss), accuracy: 1e-6 * Foundation.exp(loss))
            XCTAssertGreaterThan(s["tokens_per_second"] as? Double ?? 0, 0)
            // The peer's measure: steady windows/s × block_size (32 tokens a window).
            let steady = try XCTUnwrap(s["steady_samples_per_second"] as? Double, "\(s)")
            XCTAssertEqual(s["steady_tokens_per_second"] as? Double ?? 0, 32 * steady, accuracy: 1e-9 * steady)
            if variant.contains("comm.codec=sign") { XCTAssertTrue(outcome.output.contains("momentum carried"), outcome.output) }
            // Every matrix of the GPT, the bias-free embedding (the tied head) included: 2 blocks × 4 + wte + wpe.
            if variant.contains("comm.compressor=powersgd") { XCTAssertTrue(outcome.output.contains("PowerSGD rank 2 on 10 matrices"), outcome.output) }
        }
    }

    /// Property: averaging buckets during backward (the tied embedding's bucket last) and
    /// accumulating two micro-batches give the same bits as averaging after backward.
    func testOverlapIsBitIdenticalWithAccumulation() throws {
        var hashes: [String?] = []
        for overlap in ["true", "false"] {
            let dir = temporaryDirectory()
            _ = try train(["--set", "comm.overlap=\(overlap)", "--set", "train.accumulate_steps=2", "--set", "comm.codec=int8"], dir: dir)
            hashes.append(parameterHash(dir))
        }
        XCTAssertNotNil(hashes[0])
        XCTAssertEqual(hashes[0], hashes[1])
    }

    /// Property: stopping after step 4 and resuming ends on the bits of the uninterrupted run
    /// (int8 with error feedback, dropout on: masks are a function of seed, rank and step), and
    /// curve.jsonl holds each evaluation once, in step order, its time axis going on.
    func testResumeIsBitIdentical() throws {
        let extra = ["--set", "comm.codec=int8", "--set", "model.gpt.dropout=0.1", "--set", "train.eval_every_steps=2"]
        let straight = temporaryDirectory(), stopped = temporaryDirectory()
        _ = try train(extra, dir: straight)
        _ = try train(extra + ["--stop-after", "6"], dir: stopped)
        // As if the run had died after evaluating step 6 but before its checkpoint: the resume
        // starts at step 4, and the curve's point at 6 must not appear twice.
        try FileManager.default.removeItem(atPath: stopped + "/checkpoints/step-00000006.ckpt")
        assertResumed(try train(extra + ["--resume"], dir: stopped), dir: stopped, from: 4)
        assertSameParameters(straight, stopped)
        for dir in [straight, stopped] {
            let points = try String(contentsOfFile: dir + "/curve.jsonl", encoding: .utf8).split(separator: "\n").map {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
            XCTAssertEqual(points.map { $0["step"] as? Int }, [2, 4, 6, 8], "\(dir)/curve.jsonl")
            let seconds = points.compactMap { $0["train_seconds"] as? Double }
            XCTAssertEqual(seconds.count, points.count, "every point has its training seconds: \(points)")
            XCTAssertEqual(seconds, seconds.sorted(), "training seconds only grow")
        }
        func lastLoss(_ dir: String) throws -> Double? {
            let line = try String(contentsOfFile: dir + "/curve.jsonl", encoding: .utf8).split(separator: "\n").last.map(String.init) ?? ""
            return (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["test_loss"] as? Double
        }
        XCTAssertNotNil(try lastLoss(straight))
        XCTAssertEqual(try lastLoss(straight), try lastLoss(stopped))
    }

    /// The timeline names the GPT's units (embeddings, blocks) in its backward spans.
    func testTimelineNamesTheBlocks() throws {
        let dir = temporaryDirectory(), trace = dir + "/trace.json"
        _ = try train(["--timeline", trace], dir: dir)
        let text = try String(contentsOfFile: trace, encoding: .utf8)
        XCTAssertTrue(text.contains("h.1") && text.contains("embeddings"), String(text.prefix(2000)))
    }

    /// Property: generate's key/value cache writes the same text as a full forward pass per
    /// token (greedy, past block_size, under either rule for a full context); an export read back with
    /// --init-from (and a zero learning rate) gives the run's validation loss exactly.
    func testGenerateExportAndInitFrom() throws {
        let dir = temporaryDirectory()
        _ = try train([], dir: dir)
        let binary = try MPIRun.binary
        for rule in ["slide", "halve"] {
            var texts: [String] = []
            for extra in [[String](), ["--no-cache"]] {
                let outcome = try MPIRun.runProcess([binary, "generate", "--run-dir", dir, "--prompt", "God", "--tokens", "60", "--temperature", "0",
                                                     "--full-context", rule] + extra, timeout: 60)
                XCTAssertEqual(outcome.status, 0, outcome.output)
                texts.append(outcome.output.components(separatedBy: "\n").filter { !$0.hasPrefix("generating ") && !$0.contains("tokens/s") }.joined(separator: "\n"))
            }
            XCTAssertGreaterThan(texts[0].utf8.count, 40)
            XCTAssertEqual(texts[0], texts[1], rule)
        }
        assertOneLineError(try MPIRun.runProcess([binary, "generate", "--run-dir", dir, "--full-context", "crop"], timeout: 60),
                           "--full-context must be one of slide, halve, got 'crop'")

        let export = dir + "/tiny.safetensors"
        let exported = try MPIRun.runProcess([binary, "export", "--run-dir", dir, "--out", export], timeout: 60)
        XCTAssertEqual(exported.status, 0, exported.output)
        XCTAssertTrue(exported.output.contains("lm_head.weight"), exported.output)
        // The parameters it counts are the model's: the tied head's copy of the embedding is listed, not counted.
        let listed = exported.output.split(separator: "\n").filter { $0.hasPrefix("  ") && !$0.contains("lm_head.weight") }.map { line in
            line.split(separator: "[").last!.dropLast().split(separator: ",").reduce(1) { $0 * Int($1.trimmingCharacters(in: .whitespaces))! }
        }
        XCTAssertTrue(exported.output.contains("(\(listed.reduce(0, +)) parameters)"), exported.output)
        let again = temporaryDirectory()
        _ = try train(["--init-from", export, "--set", "optimizer.lr=0", "--set", "train.max_steps=1"], dir: again)
        let loss = try XCTUnwrap(try summary(dir)["test_loss"] as? Double)
        XCTAssertEqual(try summary(again)["test_loss"] as? Double, loss)
        // As safetensors.torch.save_model writes a tied model: the shared tensor under
        // "lm_head.weight" only, without "transformer.wte.weight".
        let (tensors, metadata) = try Safetensors.decode(Array(try Data(contentsOf: URL(fileURLWithPath: export))))
        XCTAssertTrue(tensors.contains { $0.name == "lm_head.weight" })
        let headOnly = dir + "/head-only.safetensors"
        try Data(Safetensors.encode(tensors.filter { $0.name != "transformer.wte.weight" }, metadata: metadata)).write(to: URL(fileURLWithPath: headOnly))
        let fromHead = temporaryDirectory()
        _ = try train(["--init-from", headOnly, "--set", "optimizer.lr=0", "--set", "train.max_steps=1"], dir: fromHead)
        XCTAssertEqual(try summary(fromHead)["test_loss"] as? Double, loss)

        let mismatch = try MPIRun.run(np: 2, ["train"] + Self.tiny + ["--run-dir", temporaryDirectory(), "--init-from", export,
                                                                   "--set", "model.gpt.embed=64"], timeout: 120)
        assertOneLineError(mismatch, "--init-from \(export): ")
        XCTAssertTrue(mismatch.output.contains("transformer.wte.weight has shape [256, 32], the model [256, 64]"), mismatch.output)
    }

    /// Property: a byte model whose vocabulary is larger than 256 (text labels no id above 255,
    /// but those ids keep a probability) writes only bytes: at a high temperature, where ids
    /// above 255 would be drawn, generate neither traps nor writes anything but sampled bytes.
    func testGenerateFromAByteModelWithAVocabularyAbove256WritesBytes() throws {
        let dir = temporaryDirectory()
        _ = try train(["--set", "model.gpt.vocab=512", "--set", "train.max_steps=1"], dir: dir)
        // The text is random bytes, seldom UTF-8: kept in a file and counted as bytes.
        let text = dir + "/generated"
        let outcome = try MPIRun.runProcess(["sh", "-c", "exec \"$0\" generate --run-dir \"$1\" --prompt God --tokens 400 --temperature 5 --seed 3 > \"$2\"",
                                             try MPIRun.binary, dir, text], timeout: 60)
        XCTAssertEqual(outcome.status, 0, outcome.output)
        XCTAssertTrue(outcome.output.contains("400 tokens in "), outcome.output)
        // The prompt, one byte per token, the closing newline.
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: text)).count, 3 + 400 + 1)
        // A prompt of bytes that are not UTF-8 (Latin-1 "été") is fed as those bytes, not as
        // U+FFFD's three (Swift's decoding of the argument), in both forms of the option.
        for form in ["--prompt \"$(printf '\\351t\\351')\"", "--prompt=\"$(printf '\\351t\\351')\""] {
            let latin1 = try MPIRun.runProcess(["sh", "-c", "exec \"$0\" generate --run-dir \"$1\" \(form) --tokens 1 --temperature 0 > \"$2\"",
                                                try MPIRun.binary, dir, text], timeout: 60)
            XCTAssertEqual(latin1.status, 0, latin1.output)
            XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: text)).prefix(3)), [0xE9, 0x74, 0xE9], form)
        }
        // A prompt that itself reads "--prompt=…" is the whole value, as the parser read it.
        let nested = try MPIRun.runProcess(["sh", "-c", "exec \"$0\" generate --run-dir \"$1\" --prompt --prompt=Go --tokens 1 --temperature 0 > \"$2\"",
                                            try MPIRun.binary, dir, text], timeout: 60)
        XCTAssertEqual(nested.status, 0, nested.output)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: text)).prefix(11)), Array("--prompt=Go".utf8))
    }

    /// Property: a model of token ids (trained on token files) needs a prompt of ids — without
    /// one, generate says so on one line — and reads ids separated by any white space.
    func testGenerateFromATokenModelReadsIdsAndNeedsThem() throws {
        let dir = temporaryDirectory()
        // Token files as nanoGPT's prepare.py writes them: little-endian uint16, here a cycle of 0 … 49.
        var tokens = Data()
        for i in 0 ..< 4096 { tokens.append(contentsOf: [UInt8(i % 50), 0]) }
        for name in ["train.bin", "val.bin"] { XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: tokens)) }
        let config = dir + "/tokens.yaml"
        XCTAssertTrue(FileManager.default.createFile(atPath: config, contents: Data("""
            model: {kind: gpt, gpt: {layers: 1, heads: 1, embed: 8, block_size: 8, vocab: 50}}
            data: {dataset: tokens, train_tokens: \(dir)/train.bin, val_tokens: \(dir)/val.bin, val_windows: 4}
            train: {global_batch: 4, max_steps: 2, eval_batch: 4}

            """.utf8)))
        let run = dir + "/run"
        assertSucceeded(try MPIRun.run(np: 2, ["train", "--config", config, "--run-dir", run], timeout: 120), "train on token files")
        let binary = try MPIRun.binary
        assertOneLineError(try MPIRun.runProcess([binary, "generate", "--run-dir", run, "--tokens", "5"], timeout: 60),
                           "this model's tokens are ids, not bytes (trained on tokens): give --prompt with token ids below 50, separated by spaces")
        let generated = try MPIRun.runProcess([binary, "generate", "--run-dir", run, "--tokens", "5", "--prompt", "1\n2\t 3"], timeout: 60)
        XCTAssertEqual(generated.status, 0, generated.output)
        let ids = try XCTUnwrap(generated.output.components(separatedBy: "\n").first { $0.hasPrefix("1 2 3 ") }, generated.output)
        XCTAssertEqual(ids.split(separator: " ").count, 3 + 5, generated.output)
        assertOneLineError(try MPIRun.runProcess([binary, "generate", "--run-dir", run, "--prompt", "1 50"], timeout: 60),
                           "--prompt: '50' is not a token id below 50")
    }

    func testBadInputsAreOneLineErrors() throws {
        let odd = temporaryDirectory() + "/odd.bin"
        _ = FileManager.default.createFile(atPath: odd, contents: Data([1, 0, 2]))
        let cases: [([String], String)] = [
            (["--set", "model.kind=mlp"], "data.dataset: text is a language-modelling dataset; it needs model.kind: gpt"),
            (["--set", "data.dataset=tokens", "--set", "data.train_tokens=\(odd)", "--set", "data.val_tokens=\(odd)"],
             "data.train_tokens \(odd) has an odd length (3 bytes)"),
            (["--set", "data.text=/nonexistent/corpus"], "data.text: /nonexistent/corpus does not exist"),
            (["--set", "model.gpt.embed=31"], "model.gpt.embed (31) must be a positive multiple of model.gpt.heads (2)"),
            (["--init-from", "/nonexistent.safetensors"], "cannot open --init-from /nonexistent.safetensors: No such file or directory; give a .safetensors file"),
        ]
        for (extra, expected) in cases {
            // Token files: a config of their own (tiny-gpt.yaml names a data.text).
            var tiny = Self.tiny
            if extra.contains("data.dataset=tokens") {
                let config = temporaryDirectory() + "/tokens.yaml"
                _ = FileManager.default.createFile(atPath: config, contents: Data("model: {kind: gpt, gpt: {layers: 1, heads: 1, embed: 8, block_size: 4}}\n".utf8))
                tiny = ["--config", config]
            }
            let outcome = try MPIRun.run(np: 2, ["train"] + tiny + ["--run-dir", temporaryDirectory()] + extra, timeout: 120)
            assertOneLineError(outcome, expected)
        }
    }
}
