import Foundation
import GradientSync
import NeuralNet
import Training
import XCTest

/// Config files and `--set` values: every mistake is one line naming the key or the place.
final class ConfigTests: XCTestCase {
    func error(_ yaml: String?, _ overrides: [String] = []) -> String {
        do { _ = try TrainingConfig(yaml: yaml, source: "c.yaml", overrides: overrides); return "no error" } catch { return "\(error)" }
    }

    func testEmptyConfigIsAnErrorNotSilentDefaults() {
        for text in ["", "\n\n", "# only a comment\n"] {
            XCTAssertTrue(error(text).contains("c.yaml is empty"), error(text))
        }
    }

    func testDuplicateKeysAreRejectedWithTheirLine() {
        let message = error("train:\n  epochs: 3\n  epochs: 4\n")
        XCTAssertTrue(message.contains("duplicate key 'train.epochs' (line 3)"), message)
        XCTAssertTrue(error("train: {epochs: 1}\ntrain: {epochs: 2}\n").contains("duplicate key 'train'"))
    }

    func testInvalidYAMLNamesLineAndColumnOnOneLine() {
        let message = error("train:\n  epochs: [1, 2\n")
        XCTAssertTrue(message.hasPrefix("c.yaml is not valid YAML: line "), message)
        XCTAssertFalse(message.contains("\n"), "one line: \(message)")
        XCTAssertTrue(error("just a scalar").contains("must be a YAML mapping"))
        // A tab that indents is named (the parser says "found character that cannot start any token").
        XCTAssertEqual(error("train:\n\tepochs: 3\n"), "c.yaml is not valid YAML: line 2 is indented with a tab; YAML indents with spaces only")
        XCTAssertEqual(error("train:\n  \tepochs: 3\n"), "c.yaml is not valid YAML: line 2 is indented with a tab; YAML indents with spaces only")
    }

    func testNonTextConfigFileSaysItIsNotYAML() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-\(UUID().uuidString).yaml").path
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data([0x7f, 0x45, 0x4c, 0x46, 0xff, 0xfe, 0x00, 0x01])))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try TrainingConfig.load(path: path, overrides: [])) {
            XCTAssertTrue("\($0)".contains("is not a YAML config (not UTF-8 text)"), "\($0)")
        }
        XCTAssertThrowsError(try TrainingConfig.load(path: "/nonexistent.yaml", overrides: [])) {
            XCTAssertTrue("\($0)".contains("cannot read config file /nonexistent.yaml: it does not exist"), "\($0)")
        }
        XCTAssertThrowsError(try TrainingConfig.load(path: "/tmp", overrides: [])) {
            XCTAssertTrue("\($0)".contains("it is a directory"), "\($0)")
        }
        // A device is refused at once, not read until memory runs out; so is a file too large
        // for any config.
        XCTAssertThrowsError(try TrainingConfig.load(path: "/dev/zero", overrides: [])) {
            XCTAssertTrue("\($0)".contains("cannot read config file /dev/zero: it is not a regular file or a named pipe"), "\($0)")
        }
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x23, count: 17 << 20)))
        XCTAssertThrowsError(try TrainingConfig.load(path: path, overrides: [])) {
            XCTAssertTrue("\($0)".contains("is larger than 16 MiB: not a YAML config"), "\($0)")
        }
    }

    /// Property: a config read from a named pipe (written on the fly by another program) is
    /// read to its end and gives the config its text gives (a pipe has no size to read by).
    func testAConfigFromAFIFOLoadsLikeItsText() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = directory + "/config.yaml", text = "seed: 7\ntrain: {epochs: 3, global_batch: 32}\n"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0, "mkfifo")
        let writer = Thread {
            guard let handle = FileHandle(forWritingAtPath: fifo) else {
                XCTFail("cannot open \(fifo) for writing")
                close(open(fifo, O_RDWR | O_NONBLOCK))   // a writer comes and goes: the reader's open returns, and it reads nothing
                return
            }
            handle.write(Data(text.utf8))
            try? handle.close()
        }
        writer.start()
        let loaded = try TrainingConfig.load(path: fifo, overrides: ["train.epochs=4"])
        let expected = try TrainingConfig(yaml: text, source: fifo, overrides: ["train.epochs=4"])
        XCTAssertEqual(loaded.canonicalText, expected.canonicalText)
        XCTAssertEqual(loaded.epochs, 4)
        XCTAssertEqual(loaded.seed, 7)
    }

    func testSegmentBytesBelowOneFloatAreRejected() {
        for bytes in 1 ... 3 {
            XCTAssertTrue(error(nil, ["comm.segment_bytes=\(bytes)"]).contains("comm.segment_bytes must be 0 (the ring's default) or ≥ 4"))
        }
        XCTAssertEqual(error(nil, ["comm.segment_bytes=4"]), "no error")
        XCTAssertEqual(error(nil, ["comm.segment_bytes=0"]), "no error")
        // A segment is one message and its receive buffers: bounded well below MPI's 32-bit counts.
        XCTAssertTrue(error(nil, ["comm.segment_bytes=3000000000"]).contains("comm.segment_bytes 3000000000 exceeds 1073741824 (1 GiB)"))
        XCTAssertEqual(error(nil, ["comm.segment_bytes=1073741824"]), "no error")
    }

    /// Property: a mistyped key names the key it most likely meant — the same name in another
    /// section, or one edit away — and otherwise lists the section's keys.
    func testNearMissKeysSuggestTheKeyMeant() {
        XCTAssertTrue(error(nil, ["train.lr=0.1"]).contains("unknown config key 'train.lr'; did you mean optimizer.lr?"), error(nil, ["train.lr=0.1"]))
        XCTAssertTrue(error(nil, ["optimizer.momentun=0.5"]).contains("did you mean optimizer.momentum?"), error(nil, ["optimizer.momentun=0.5"]))
        XCTAssertTrue(error(nil, ["comm.codex=int8"]).contains("did you mean comm.codec?"), error(nil, ["comm.codex=int8"]))
        // Its own section first: not comm.warmup_steps, another setting of the same name.
        XCTAssertTrue(error(nil, ["schedule.warmup_steps=5"]).contains("did you mean schedule.warmup?"), error(nil, ["schedule.warmup_steps=5"]))
        XCTAssertTrue(error(nil, ["optimizer.zzz=1"]).contains("known keys in optimizer:"), error(nil, ["optimizer.zzz=1"]))
    }

    /// Property: error feedback is on by default (a lossy codec keeps its error unless told not
    /// to); comm.compress_momentum defaults to auto, which carries the momentum for the sign
    /// codec only.
    func testLossyCodecsGetErrorFeedbackAndSignTheMomentumByDefault() throws {
        XCTAssertTrue(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.codec=int8"]).errorFeedback)
        XCTAssertFalse(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.codec=int8", "comm.error_feedback=false"]).errorFeedback)
        XCTAssertTrue(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.codec=sign"]).carriesMomentumByDefault)
        XCTAssertTrue(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.codec=sign:64+zstd"]).carriesMomentumByDefault)
        XCTAssertFalse(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.codec=int8"]).carriesMomentumByDefault)
        XCTAssertEqual(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.compress_momentum=false"]).compressMomentum, .off)
        XCTAssertTrue(error(nil, ["comm.compress_momentum=maybe"]).contains("comm.compress_momentum must be auto, true or false"))
        XCTAssertEqual(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.compress_momentum=yes"]).compressMomentum, .on, "YAML's boolean spellings")
        XCTAssertEqual(try TrainingConfig(yaml: nil, source: "t", overrides: ["comm.compress_momentum=Off"]).compressMomentum, .off)
        // The effective values of keys whose defaults changed are recorded, so that a resume of a
        // run written under the old defaults reports the change instead of making it silently.
        let old = "comm.codec: int8\nseed: 0"
        let now = try TrainingConfig(canonicalText: old)
        XCTAssertTrue(TrainingConfig.differences(old, now.canonicalText).contains("comm.error_feedback: (default) → true"),
                      "\(TrainingConfig.differences(old, now.canonicalText))")
        XCTAssertEqual(TrainingConfig.differences(now.canonicalText, try TrainingConfig(canonicalText: now.canonicalText).canonicalText), [])
    }

    /// Property: a key that exists but would do nothing with the chosen model, optimizer or
    /// data is a one-line error naming it, not silently ignored.
    func testKeysThatWouldBeIgnoredAreRefused() {
        let cases: [([String], String)] = [
            (["model.kind=cnn", "model.hidden=[64]"], "model.hidden applies to model.kind: mlp only (model.kind is cnn)"),
            (["model.kind=linear", "model.dropout=0.1"], "model.dropout applies to model.kind: mlp only (model.kind is linear)"),
            (["optimizer.name=lars", "optimizer.nesterov=true"], "optimizer.nesterov applies to optimizer.name: sgd only"),
            (["optimizer.name=rmsprop", "optimizer.dampening=0.1"], "optimizer.dampening applies to optimizer.name: sgd only"),
            (["data.dataset=synthetic", "data.synthetic.test_size=0"], "data.synthetic.test_size must be ≥ 1"),
            (["comm.powersgd.rank=8"], "comm.powersgd.rank applies to comm.compressor: powersgd only (comm.compressor is none); set comm.compressor: powersgd, or remove it"),
            (["optimizer.name=adam", "optimizer.momentum=0.9"], "optimizer.momentum applies to optimizer.name: sgd, rmsprop, lars (adam has none); remove it (from the config file, or with --set optimizer.momentum=null)"),
            (["optimizer.name=sgd", "optimizer.betas=[0.9, 0.99]"], "optimizer.betas applies to optimizer.name: adam, adamw, lamb (sgd has none)"),
            (["optimizer.name=lamb", "optimizer.amsgrad=true"], "optimizer.amsgrad applies to optimizer.name: adam, adamw (lamb has none)"),
            (["optimizer.name=sgd", "optimizer.trust_coefficient=0.01"], "optimizer.trust_coefficient applies to optimizer.name: lars (sgd has none)"),
            (["schedule.name=cosine", "schedule.gamma=0.5"], "schedule.gamma applies to schedule.name: step, multistep, exponential (schedule.name is cosine); remove it (from the config file, or with --set schedule.gamma=null), or choose one of those"),
            (["schedule.name=step", "schedule.max_lr=0.3"], "schedule.max_lr applies to schedule.name: onecycle (schedule.name is step)"),
            (["schedule.warmup_start_factor=0.5"], "schedule.warmup_start_factor is where a warm-up starts, and schedule.warmup is 0"),
            (["comm.algorithm=mpi", "comm.segment_bytes=65536"], "comm.segment_bytes sizes our ring's messages; comm.algorithm: mpi"),
            (["data.synthetic.features=10"], "data.synthetic.features is read only with data.dataset: synthetic (data.dataset is fashion-mnist)"),
            (["comm.algorithm=mpi", "comm.topology=flat"], "comm.topology chooses between our flat and hierarchical rings; comm.algorithm: mpi"),
            (["data.dataset=synthetic", "data.dir=/data"], "data.dir is the Fashion-MNIST folder, read only with data.dataset: fashion-mnist (data.dataset is synthetic); remove it"),
            (["data.dataset=idx", "data.dir=/data", "data.train_images=a", "data.train_labels=b", "data.test_images=c", "data.test_labels=d"],
             "data.dir is the Fashion-MNIST folder, read only with data.dataset: fashion-mnist (data.dataset is idx); give each file's whole path"),
            (["data.dataset=synthetic", "data.cache_dir=/tmp/c"], "data.cache_dir does not apply to data.dataset: synthetic"),
        ]
        for (overrides, expected) in cases {
            XCTAssertTrue(error(nil, overrides).contains(expected), "\(overrides): \(error(nil, overrides))")
        }
        XCTAssertEqual(error(nil, ["model.kind=mlp", "model.hidden=[64]", "optimizer.name=sgd", "optimizer.nesterov=true"]), "no error")
        XCTAssertEqual(error(nil, ["comm.compressor=powersgd", "comm.powersgd.rank=8"]), "no error")
        XCTAssertEqual(error(nil, ["data.dir=/data", "data.cache_dir=/tmp/c", "comm.topology=flat"]), "no error")   // fashion-mnist, our ring
        XCTAssertEqual(error(nil, ["data.dataset=synthetic", "data.dir=/usr/share/datasets/fashion-mnist"]), "no error")   // its default, named
        XCTAssertEqual(error(nil, ["optimizer.name=rmsprop", "optimizer.momentum=0.9", "optimizer.eps=1e-6", "optimizer.alpha=0.9"]), "no error")
        // A key of the file taken away with --set KEY=null: its default holds; a mistyped one is named.
        XCTAssertEqual(error("optimizer: {name: sgd, momentum: 0.9}\n", ["optimizer.name=adam", "optimizer.momentum=null"]), "no error")
        // A section written as a value names the key it meant.
        XCTAssertTrue(error("optimizer: sgd\n", []).contains("gives a value to the section optimizer") && error("optimizer: sgd\n", []).hasSuffix("e.g. optimizer: {name: sgd}"),
                      error("optimizer: sgd\n", []))
        XCTAssertTrue(error(nil, ["optimizer.momentun=null"]).contains("unknown config key 'optimizer.momentun'; did you mean optimizer.momentum?"),
                      error(nil, ["optimizer.momentun=null"]))
        // A checkpoint's config is read as it was accepted when written (evaluate, generate and
        // export of a run from before these keys were refused).
        XCTAssertNoThrow(try TrainingConfig(canonicalText: "optimizer.momentum: 0.9\noptimizer.name: adam\nschedule.gamma: 0.5"))
        XCTAssertEqual(error(nil, ["schedule.name=multistep", "schedule.gamma=0.5", "schedule.milestones=[3]", "schedule.warmup=2"]), "no error")
        XCTAssertEqual(error(nil, ["schedule.warmup=5", "schedule.warmup_start_factor=0.5", "comm.segment_bytes=65536",
                                   "data.dataset=synthetic", "data.synthetic.features=10"]), "no error")
    }

    /// Property: configs that would hang (an alias bomb: 40 anchors, each naming the last
    /// twice, 2⁴⁰ values), overflow the parser's stack (deep nesting) or break the one-line
    /// error (a newline inside a quoted key or string) are refused with one line.
    func testHostileYAMLIsOneLineErrorNotAHangOrACrash() {
        let bomb = (["a0: &a0 {x: 1}"] + (1 ... 40).map { "a\($0): &a\($0) {p: *a\($0 - 1), q: *a\($0 - 1)}" }).joined(separator: "\n")
        XCTAssertTrue(error(bomb).contains("expands to more than 100000 values"), error(bomb))
        let deep = "a: " + String(repeating: "[", count: 5000)
        XCTAssertTrue(error(deep).contains("nests more than 64 levels deep"), error(deep))
        XCTAssertTrue(error(nil, ["optimizer.betas=" + String(repeating: "[", count: 5000)]).contains("nests more than 64 levels deep"))
        // Ways around a text scan that a review found: an apostrophe in a plain scalar, stray
        // closing brackets, compact sequence markers, an escaped quote.
        for hidden in ["a: it's\nb: " + String(repeating: "[", count: 5000),
                       "a: x" + String(repeating: "]", count: 5000) + "\nb: " + String(repeating: "[", count: 5000),
                       "a:\n" + String(repeating: "- ", count: 5000) + "x",
                       "a: \"q\\\"\"\nb: " + String(repeating: "[", count: 5000)] {
            XCTAssertTrue(error(hidden).contains("nests more than 64 levels deep"), String(error(hidden).prefix(200)))
        }
        let newline = error("model: {kind: \"a\\nb\"}\n")
        XCTAssertTrue(newline.contains("got 'a\\nb'") && !newline.contains("\n"), newline)
        // Sizes no model has, which overflowed or tried to allocate petabytes when the model was built.
        XCTAssertTrue(error("model: {layers: [conv2d: {out: 1, kernel: 1, padding: 4611686018427387904}, flatten, linear]}\n")
            .contains("model.layers[0]: conv2d padding must be in 0…1024, got 4611686018427387904"))
        XCTAssertTrue(error(nil, ["model.hidden=[1000000000000]"]).contains("model.hidden sizes must be at most 1048576"))
        XCTAssertTrue(error(nil, ["model.kind=gpt", "model.gpt.block_size=9223372036854775807"]).contains("model.gpt.block_size must be at most 1048576"))
        // An ordinary config nests a handful of levels, with brackets in quoted strings and comments.
        XCTAssertEqual(error("train: {epochs: 1}  # [[[[\ndata: {text: ['[[[[.txt']}\nmodel: {kind: gpt}\n"), "no error")
    }

    func testCodecNamesWithParametersTheyDoNotTakeAreRejected() {
        XCTAssertTrue(error(nil, ["comm.codec=none:7"]).contains("none takes no parameter"), error(nil, ["comm.codec=none:7"]))
        XCTAssertTrue(error(nil, ["comm.codec=int8:0"]).contains("block size must be an integer in 1…1048576, got '0'"))
        XCTAssertTrue(error(nil, ["comm.codec=zstd:99"]).contains("zstd level must be an integer in 1…22, got '99'"))
    }

    func testLearningRateIsValidatedWhereTheScheduleIsBuilt() throws {
        let config = try TrainingConfig(yaml: nil, source: "t", overrides: ["schedule.name=onecycle", "schedule.max_lr=0.5"])
        XCTAssertNoThrow(try config.makeSchedule(total: 100))
        XCTAssertTrue(error(nil, ["optimizer.lr=-0.1"]).contains("optimizer.lr must be ≥ 0.0, got -0.1"))
    }

    /// Property: optimizer.lr_batch scales lr and onecycle's max_lr by global_batch / lr_batch
    /// (Goyal et al.'s rule follows the batch), the same at every world size — the schedule
    /// no longer takes one — and the old per-rank scaling key is refused with the remedy.
    func testLearningRatesScaleWithTheBatchTheyWereTunedFor() throws {
        let scaled = try TrainingConfig(yaml: nil, source: "t", overrides: ["schedule.name=constant", "optimizer.lr=0.1",
                                                                             "optimizer.lr_batch=256", "train.global_batch=1024"])
        XCTAssertEqual(try scaled.makeSchedule(total: 10).learningRate(at: 0), 0.4, accuracy: 1e-12)
        let asGiven = try TrainingConfig(yaml: nil, source: "t", overrides: ["schedule.name=constant", "optimizer.lr=0.1", "train.global_batch=1024"])
        XCTAssertEqual(try asGiven.makeSchedule(total: 10).learningRate(at: 0), 0.1, accuracy: 1e-12)
        let cycle = try TrainingConfig(yaml: nil, source: "t", overrides: ["schedule.name=onecycle", "schedule.max_lr=0.2", "schedule.pct_start=0.3",
                                                                            "optimizer.lr_batch=64", "train.global_batch=32"])
        XCTAssertEqual(try cycle.makeSchedule(total: 10).learningRate(at: 2), 0.1, accuracy: 1e-12, "the peak, at half the batch")
        let old = error(nil, ["optimizer.scale_lr_with_world_size=true"])
        XCTAssertTrue(old.contains("optimizer.scale_lr_with_world_size is gone") && old.contains("optimizer.lr_batch"), old)
        XCTAssertTrue(error(nil, ["optimizer.scale_lr_with_world_size=false"]).contains("is gone"), "refused in a user's config even when false")
        XCTAssertNoThrow(try TrainingConfig(canonicalText: "optimizer.scale_lr_with_world_size: false"), "a checkpoint written with it off still reads")
        XCTAssertNoThrow(try TrainingConfig(canonicalText: "optimizer.scale_lr_with_world_size: true"), "and with it on: evaluate and generate need no rate")
        XCTAssertEqual(TrainingConfig.differences("optimizer.scale_lr_with_world_size: false\nseed: 1", "seed: 1"), [], "a retired key is no change on resume")
        XCTAssertTrue(error(nil, ["optimizer.lr_batch=-1"]).contains("optimizer.lr_batch"))
    }

    /// Property: uncompressed warm-up steps where nothing is compressed (an exact codec, or
    /// MPI_Allreduce) are refused as a key that does nothing; with a lossy codec or PowerSGD, read.
    func testUncompressedWarmUpStepsNeedSomethingCompressed() throws {
        XCTAssertTrue(error(nil, ["comm.codec=none", "comm.warmup_steps=5"]).contains("comm.warmup_steps runs the first steps uncompressed, and comm.codec: none compresses none"))
        XCTAssertTrue(error(nil, ["comm.algorithm=mpi", "comm.warmup_steps=5"]).contains("and comm.algorithm: mpi compresses none"))
        XCTAssertEqual(error(nil, ["comm.codec=int8", "comm.warmup_steps=5"]), "no error")
        XCTAssertEqual(error(nil, ["comm.compressor=powersgd", "comm.warmup_steps=5"]), "no error")
        XCTAssertEqual(error(nil, ["comm.codec=none", "comm.warmup_steps=0"]), "no error")
    }

    func testOneCycleSchedulesMomentumByDefaultAndTheOptimizerHasItsState() throws {
        let config = try TrainingConfig(yaml: nil, source: "t", overrides: ["schedule.name=onecycle"])
        XCTAssertTrue(config.schedulesMomentum)
        let schedule = try config.makeSchedule(total: 100)
        XCTAssertEqual(schedule.momentum(at: 0)!, 0.95, accuracy: 1e-12)
        XCTAssertEqual(schedule.momentum(at: 29)!, 0.85, accuracy: 1e-12, "momentum is lowest where the rate peaks")
        let off = try TrainingConfig(yaml: nil, source: "t", overrides: ["schedule.name=onecycle", "schedule.cycle_momentum=false"])
        XCTAssertNil(try off.makeSchedule(total: 100).momentum(at: 0))
        // A momentum the schedule would overwrite every step is refused; without the cycle it is read.
        XCTAssertTrue(error(nil, ["schedule.name=onecycle", "optimizer.momentum=0.9"]).contains("optimizer.momentum does nothing under schedule.name: onecycle"))
        XCTAssertEqual(error(nil, ["schedule.name=onecycle", "schedule.cycle_momentum=false", "optimizer.momentum=0.9"]), "no error")
        // Adam's β₁ is cycled too: one other than the cycle's start is refused, β₂ kept.
        XCTAssertTrue(error(nil, ["schedule.name=onecycle", "optimizer.name=adam", "optimizer.betas=[0.8, 0.99]"])
            .contains("optimizer.betas' β₁ (0.8) does nothing under schedule.name: onecycle"))
        let kept = try TrainingConfig(yaml: nil, source: "t", overrides: ["schedule.name=onecycle", "optimizer.name=adam", "optimizer.betas=[0.95, 0.99]"])
        XCTAssertEqual(kept.betas, [0.95, 0.99])
        XCTAssertEqual(error(nil, ["schedule.name=onecycle", "schedule.cycle_momentum=false", "optimizer.name=adam", "optimizer.betas=[0.8, 0.99]"]), "no error")
        // The cycle's bounds with no cycle, and a warm-up before OneCycle's own: refused.
        for key in ["schedule.base_momentum=0.8", "schedule.max_momentum=0.9"] {
            XCTAssertTrue(error(nil, ["schedule.name=onecycle", "schedule.cycle_momentum=false", key])
                .contains("\(key.prefix { $0 != "=" }) does nothing with schedule.cycle_momentum: false"), key)
        }
        XCTAssertTrue(error(nil, ["schedule.name=onecycle", "schedule.warmup=10"]).contains("schedule.warmup does not combine with schedule.name: onecycle"))
        XCTAssertEqual(error(nil, ["schedule.name=cosine", "schedule.warmup=10"]), "no error")
    }

    /// Property: the difference list names exactly the keys whose values differ, both ways.
    func testDifferencesNameEachChangedKey() throws {
        let a = try TrainingConfig(yaml: "train: {max_steps: 40}\noptimizer: {lr: 0.1}\n", source: "a")
        let b = try TrainingConfig(yaml: "train: {max_steps: 80}\noptimizer: {lr: 0.1}\nseed: 3\n", source: "b")
        XCTAssertEqual(TrainingConfig.differences(a.canonicalText, b.canonicalText), ["seed: (default) → 3", "train.max_steps: 40 → 80"])
        XCTAssertEqual(TrainingConfig.differences(a.canonicalText, a.canonicalText), [])
    }
}

/// `model.layers`: every mistake in a layer list is one line naming the item's index.
final class LayerListConfigTests: XCTestCase {
    func testLayerListsParseWithDefaults() throws {
        let config = try TrainingConfig(yaml: """
            model:
              layers:
                - conv2d: {out: 8, kernel: 5}
                - relu
                - maxpool2d: {kernel: 2}
                - flatten
                - dropout
                - linear: {out: 32}
                - linear
            """, source: "test")
        XCTAssertEqual(config.modelSpec.expanded, [.conv2d(out: 8, kernel: 5, stride: 1, padding: 0), .relu, .maxpool2d(kernel: 2), .flatten,
                                                   .dropout(p: 0.5), .linear(out: 32), .linear(out: nil)])
    }

    func testMistakesNameTheLayer() {
        let cases: [(String, String)] = [
            ("[conv3d]", "model.layers[0]: unknown layer 'conv3d' (known: linear, conv2d, maxpool2d, relu, flatten, dropout, batchnorm2d, batchnorm1d, globalavgpool2d, residual)"),
            ("[flatten, {conv2d: {out: 8}}]", "model.layers[1] (conv2d): missing field 'kernel' (required: out, kernel)"),
            ("[{conv2d: {out: 8, kernel: 3, kernal: 3}}]", "model.layers[0] (conv2d): unknown field 'kernal' (fields: out, kernel, bias, padding, stride)"),
            ("[{linear: {out: many}}]", "model.layers[0] (linear): out must be an integer, got many"),
            ("[{linear: {out: 0}}]", "model.layers[0] (linear): out must be ≥ 1, got 0"),
            ("[{dropout: {p: 1}}]", "model.layers[0] (dropout): p must be a number in [0, 1), got 1"),
            ("[{relu: {inplace: true}}]", "model.layers[0] (relu): unknown field 'inplace' (relu takes no fields)"),
            ("[{linear: 10}]", "model.layers[0] (linear): its fields must be a mapping"),
            ("[]", "model.layers is empty"),
            ("relu", "model.layers must be a list of layers"),
        ]
        for (list, expected) in cases {
            XCTAssertThrowsError(try TrainingConfig(yaml: nil, source: "test", overrides: ["model.layers=\(list)"])) { error in
                XCTAssertTrue("\(error)".hasPrefix(expected), "\(error)\nexpected: \(expected)")
            }
        }
        XCTAssertThrowsError(try TrainingConfig(yaml: nil, source: "test", overrides: ["model.kind=cnn", "model.layers=[flatten, linear]"])) { error in
            XCTAssertTrue("\(error)".contains("remove model.kind"), "\(error)")
        }
    }
}

/// `model.kind: gpt` and its data: nanoGPT's defaults, and every key that would do nothing refused.
final class GPTConfigTests: XCTestCase {
    func error(_ yaml: String?, _ overrides: [String] = []) -> String {
        do { _ = try TrainingConfig(yaml: yaml, source: "c.yaml", overrides: overrides); return "no error" } catch { return "\(error)" }
    }

    func testGPTDefaultsAreNanoGPTs() throws {
        let config = try TrainingConfig(yaml: "model: {kind: gpt}\n", source: "c.yaml")
        XCTAssertEqual(config.gpt, GPTSpec())
        XCTAssertEqual(config.dataset, "text")
        XCTAssertEqual(config.optimizer, "adamw")
        XCTAssertEqual(config.lr, 1e-3)
        XCTAssertEqual(config.betas, [0.9, 0.95])
        XCTAssertEqual(config.weightDecay, 0.1)
        XCTAssertEqual(config.decay, "matrices")
        XCTAssertEqual(config.evalBatch, 16)
        // With SGD none of Adam's defaults applies.
        let sgd = try TrainingConfig(yaml: "model: {kind: gpt}\noptimizer: {name: sgd}\n", source: "c.yaml")
        XCTAssertEqual(sgd.lr, 0.05)
        XCTAssertEqual(sgd.decay, "all")
    }

    func testKeysThatWouldDoNothingAreRefused() {
        let cases: [(String, String)] = [
            ("model: {kind: mlp, gpt: {layers: 2}}\n", "model.gpt.layers applies to model.kind: gpt only"),
            ("model: {kind: gpt}\ndata: {mean: 0.5, std: 0.2}\n", "data.mean does not apply to data.dataset: text"),
            ("model: {kind: gpt}\ndata: {dataset: fashion-mnist}\n", "model.kind: gpt trains on token windows"),
            ("data: {dataset: text}\n", "data.dataset: text is a language-modelling dataset; it needs model.kind: gpt"),
            ("model: {kind: gpt}\ndata: {train_tokens: a.bin}\n", "data.train_tokens is read only with data.dataset: tokens"),
            ("model: {kind: gpt}\ndata: {dataset: tokens, train_tokens: a.bin}\n", "data.val_tokens is missing"),
            ("data: {stride: 4}\n", "data.stride is read only with data.dataset: text or tokens"),
            ("model: {kind: gpt, gpt: {vocab: 100}}\n", "model.gpt.vocab must be ≥ 256"),
            ("model: {kind: gpt}\noptimizer: {name: sgd, decay: matrices}\n", "optimizer.decay: matrices applies to adam, adamw (nanoGPT's parameter groups), lars and lamb"),
            ("model: {kind: gpt, gpt: {block_size: 1}}\n", "model.gpt.block_size must be ≥ 2"),
        ]
        for (yaml, expected) in cases {
            let message = error(yaml)
            XCTAssertTrue(message.contains(expected), "\(yaml): \(message)")
            XCTAssertFalse(message.contains("\n"), message)
        }
    }
}

/// Residual blocks and batch norms in layer lists: every mistake one line naming the place.
final class ResidualConfigTests: XCTestCase {
    func error(_ yaml: String) -> String {
        do { _ = try TrainingConfig(yaml: yaml, source: "c.yaml"); return "no error" } catch { return "\(error)" }
    }

    func testMistakesAreOneLineNamingThePlace() {
        let cases: [(String, String)] = [
            ("model: {batchnorm: local}\n", "model.batchnorm applies to models with batch norm layers"),
            ("model: {batchnorm: sync, layers: [flatten, linear]}\n", "model.batchnorm applies to models with batch norm layers"),
            ("model: {layers: [conv2d: {out: 4, kernel: 3}, batchnorm2d: {momentum: 2}, flatten, linear]}\n",
             "model.layers[1] (batchnorm2d): momentum must be a number in [0, 1], or none for the cumulative average, got 2"),
            ("model: {layers: [residual: {layers: [relu], shortcut: sideways}, flatten, linear]}\n",
             "model.layers[0] (residual): shortcut must be identity or projection, got sideways"),
            ("model: {layers: [residual: {layers: [relu, {conv2d: {out: 4}}]}, flatten, linear]}\n",
             "model.layers[0].layers[1] (conv2d): missing field 'kernel'"),
            ("model: {layers: [residual: {shortcut: projection}, flatten, linear]}\n", "model.layers[0] (residual): missing field 'layers'"),
        ]
        for (yaml, expected) in cases {
            let message = error(yaml)
            XCTAssertTrue(message.contains(expected), "\(yaml): \(message)")
            XCTAssertFalse(message.contains("\n"), message)
        }
        XCTAssertEqual(error("model: {batchnorm: broadcast, layers: [conv2d: {out: 4, kernel: 3, bias: false}, batchnorm2d, globalavgpool2d, linear]}\n"), "no error")
    }
}

extension ResidualConfigTests {
    /// Values that would overflow a step count or could not fit in memory are one line naming
    /// the key — before any data is generated or memory allocated.
    func testSizesBeyondTheMachineAreOneLineNamingTheKey() {
        let cases: [(String, String)] = [
            ("train: {epochs: 9223372036854775807}\n", "train.epochs must be ≤ 1000000"),
            ("data: {dataset: synthetic, synthetic: {train_size: 1000000000000}}\n", "data.synthetic.train_size 1000000000000 needs 8000.0 GB for the samples' order"),
            ("data: {dataset: synthetic, synthetic: {test_size: 100000000000, features: 4096}}\n", "data.synthetic.test_size 100000000000 needs 800.0 GB"),
            ("optimizer: {name: sgd, momentum: 1.5}\n", "optimizer.momentum must be ≤ 1.0, got 1.5"),
            ("model: {layers: [conv2d: {out: 4, kernel: 3}, batchnorm2d: {eps: 1e-40}, flatten, linear]}\n", "eps must be a finite number ≥ 1e-30, got 1e-40"),
        ]
        for (yaml, expected) in cases {
            let message = error(yaml)
            XCTAssertTrue(message.contains(expected), "\(yaml): \(message)")
            XCTAssertFalse(message.contains("\n"), message)
        }
    }

    /// The parameter count known before the model is built is the built model's (within the
    /// flat buffer's alignment padding), for a layer list and a GPT.
    func testTheCheckedParameterCountIsTheModels() throws {
        let layers = try TrainingConfig(yaml: "model: {layers: [conv2d: {out: 4, kernel: 3, padding: 1, bias: false}, batchnorm2d, residual: {shortcut: projection, layers: [conv2d: {out: 8, kernel: 3, stride: 2, padding: 1, bias: false}, batchnorm2d]}, globalavgpool2d, linear]}\n", source: "c.yaml")
        let checked = CheckedModel.layers(try ModelSpec.layers(layers.layers!).layers(inputShape: [1, 8, 8], classes: 3), inputShape: [1, 8, 8])
        let built = try checked.build(gradientStorage: nil).parameters
        XCTAssertEqual(checked.parameterCount, built.views.reduce(0) { $0 + $1.count })
        for tied in [true, false] {
            var spec = GPTSpec(layers: 2, heads: 2, embed: 32, blockSize: 16, vocab: 256)
            spec.tieEmbeddings = tied
            let gpt = try GPT(spec)
            XCTAssertEqual(CheckedModel.gpt(spec).parameterCount, gpt.parameters.views.reduce(0) { $0 + $1.count }, "tied \(tied)")
        }
    }
    /// `momentum: none` (and YAML's null) is PyTorch's momentum=None, down to the module a
    /// projection shortcut builds (it takes its block's last batch norm's); a number stays one.
    func testBatchNormMomentumNoneIsTheCumulativeAverage() throws {
        for word in ["none", "null", "~", "None"] {
            let config = try TrainingConfig(yaml: "model: {layers: [conv2d: {out: 4, kernel: 3, padding: 1, bias: false}, batchnorm2d: {momentum: \(word)}, "
                                            + "residual: {shortcut: projection, layers: [conv2d: {out: 8, kernel: 3, stride: 2, padding: 1, bias: false}, batchnorm2d: {momentum: \(word)}]}, "
                                            + "globalavgpool2d, linear]}\n", source: "c.yaml")
            guard case .batchnorm2d(_, let momentum)? = config.layers?[1] else { return XCTFail("\(word): \(String(describing: config.layers))") }
            XCTAssertNil(momentum, word)
            let model = try ModelSpec.layers(config.layers!).build(inputShape: [1, 8, 8], classes: 3)
            XCTAssertEqual(model.pytorchModule.components(separatedBy: "momentum=None").count - 1, 3, model.pytorchModule)
        }
        let config = try TrainingConfig(yaml: "model: {layers: [conv2d: {out: 4, kernel: 3}, batchnorm2d: {momentum: 0.25}, flatten, linear]}\n", source: "c.yaml")
        guard case .batchnorm2d(_, let momentum)? = config.layers?[1] else { return XCTFail("\(String(describing: config.layers))") }
        XCTAssertEqual(momentum, 0.25)
    }
}

/// `comm.sync`, `comm.outer.*` and `--target`: every mistake one line naming the key.
final class LocalStepsConfigTests: XCTestCase {
    func error(_ yaml: String) -> String {
        do { _ = try TrainingConfig(yaml: yaml, source: "c.yaml"); return "no error" } catch { return "\(error)" }
    }

    func testMistakesAreOneLineNamingTheKey() {
        let cases: [(String, String)] = [
            ("comm: {sync: diloco, sync_every: 0}\n", "comm.sync_every must be ≥ 1, got 0"),
            ("comm: {sync: every_step, sync_every: 10}\n", "comm.sync_every applies to comm.sync: local_sgd or diloco"),
            ("comm: {sync_warmup_steps: 10}\n", "comm.sync_warmup_steps applies to comm.sync: local_sgd or diloco"),
            ("comm: {sync: sometimes}\n", "comm.sync must be one of every_step, local_sgd, diloco, got 'sometimes'"),
            ("comm: {sync: diloco, outer: {lr: 0}}\n", "comm.outer.lr must be > 0.0, got 0.0"),
            ("comm: {sync: diloco, outer: {lr: -1}}\n", "comm.outer.lr must be > 0.0"),
            ("comm: {sync: local_sgd, outer: {lr: 0.5}}\n", "comm.outer.lr: comm.sync: local_sgd averages the parameters"),
            ("comm: {sync: diloco, outer: {optimizer: average, momentum: 0.9}}\n", "comm.outer.momentum: comm.outer.optimizer: average"),
            ("comm: {sync: diloco, outer: {optimizer: nesterov, momentum: 0}}\n", "comm.outer.momentum must be > 0 with comm.outer.optimizer: nesterov"),
            ("comm: {sync: diloco, outer: {optimizer: adam}}\n", "comm.outer.optimizer must be one of nesterov, sgd, average"),
            ("comm: {sync: diloco, compressor: powersgd}\n", "comm.compressor: powersgd compresses gradients step by step and is not supported with comm.sync: diloco"),
            ("comm: {sync: local_sgd, codec: sign, compress_momentum: true}\n", "comm.compress_momentum carries the optimizer's momentum"),
            ("comm: {sync: diloco}\nmodel: {layers: [conv2d: {out: 4, kernel: 3}, batchnorm2d, flatten, linear]}\n", "with batch norm layers is not supported yet"),
            ("comm: {sync: diloco, sync_every: 4, fragments: 5}\n", "comm.fragments 5 exceeds comm.sync_every 4"),
            ("comm: {sync: diloco, sync_every: 8, fragments: 4, outer_delay: 3}\n", "comm.outer_delay 3 exceeds H/P = 8/4 = 2 steps"),
            ("comm: {fragments: 2}\n", "comm.fragments applies to comm.sync: local_sgd or diloco"),
            ("comm: {sync: diloco, outer_mix: 1}\n", "comm.outer_mix must be < 1.0, got 1.0"),
            ("comm: {sync: diloco, sync_every: 8, outer_delay: 8}\n", "comm.outer_delay 8 must be below comm.sync_every 8 with one fragment"),
            ("comm: {sync: diloco, fragments: 2, outer_delay: 1, overlap: false}\n", "comm.outer_delay overlaps a fragment's all-reduce with local steps on the communication thread"),
            ("consistency: {inject_nonfinite_outer_at: [3]}\n", "consistency.inject_nonfinite_outer_at applies to comm.sync: local_sgd or diloco"),
        ]
        for (yaml, expected) in cases {
            let message = error(yaml)
            XCTAssertTrue(message.contains(expected), "\(yaml): \(message)")
            XCTAssertFalse(message.contains("\n"), message)
        }
    }

    /// Property: DiLoCo's defaults are the paper's (Nesterov, lr 0.7, momentum 0.9, H = 50 unless
    /// given), local SGD averages, and sign does not carry the momentum (there is no every-step all-reduce).
    func testDefaults() throws {
        let diloco = try TrainingConfig(yaml: "comm: {sync: diloco, codec: sign}\n", source: "c.yaml")
        XCTAssertEqual(diloco.outerSettings, OuterSettings(every: 50, warmupSteps: 0, rule: .nesterov, lr: 0.7, momentum: 0.9))
        XCTAssertFalse(diloco.carriesMomentumByDefault)
        let local = try TrainingConfig(yaml: "comm: {sync: local_sgd, sync_every: 8}\n", source: "c.yaml")
        XCTAssertEqual(local.outerSettings, OuterSettings(every: 8, warmupSteps: 0, rule: .average, lr: 1, momentum: 0))
        XCTAssertNil(try TrainingConfig(yaml: "comm: {sync: every_step}\n", source: "c.yaml").outerSettings)
    }

    func testTargetsAreCheckedAgainstTheModel() {
        func message(_ text: String, languageModel: Bool = false) -> String {
            do { try TrainingTarget(parsing: text).check(languageModel: languageModel); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(message("test_accuracy=0.91"), "no error")
        XCTAssertEqual(message("val_loss=2.5", languageModel: true), "no error")
        XCTAssertTrue(message("val_loss=2.5").contains("this model is a classifier, evaluated by test_accuracy and test_loss"))
        XCTAssertTrue(message("test_accuracy=0.5", languageModel: true).contains("this model is a language model"))
        XCTAssertTrue(message("accuracy=0.9").contains("--target expects METRIC=VALUE with METRIC one of test_accuracy"))
        XCTAssertTrue(message("test_accuracy=high").contains("'high' is not a number"))
        XCTAssertTrue(message("test_accuracy=91").contains("must be in (0, 1]"))
        XCTAssertTrue(message("test_loss=0").contains("must be > 0"))
        // Perplexity is exp(loss) ≥ 1: a target below 1 could never be reached.
        XCTAssertTrue(message("perplexity=0.5", languageModel: true).contains("--target perplexity must be ≥ 1 (it is exp(val_loss)), got 0.5"))
        XCTAssertEqual(message("perplexity=1.5", languageModel: true), "no error")
    }
}
