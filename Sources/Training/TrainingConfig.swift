import Datasets
import FileFormats
import Foundation
import GradientCodecs
import GradientSync
import ModelFiles
import NeuralNet
import Optimizers

/// Everything a run is made of, read from YAML (every key documented in docs/configuration.md).
public struct TrainingConfig {
    public var seed: UInt64 = 0

    public var modelKind = "mlp"                   // model.kind: mlp | cnn | linear (shorthands for layer lists) | gpt
    public var gpt: GPTSpec?                       // model.gpt.* (model.kind: gpt)
    public var layers: [LayerSpec]?                // model.layers: the model as a list of layers
    public var hidden = ModelSpec.defaultMLPHidden // model.hidden (mlp)
    public var dropout = 0.0                       // model.dropout (mlp)
    public var batchNorm = "sync"                  // model.batchnorm: sync | local | broadcast (models with batch norms)

    public var dataset = "fashion-mnist"           // data.dataset: fashion-mnist | idx | npy | synthetic | text | tokens
    public var textPaths = ["/usr/share/games/fortunes"]   // data.text (text): files or directories, read as bytes
    public var validationFraction = 0.1            // data.val_fraction (text): the held-out tail
    public var validationWindows = 0               // data.val_windows (text, tokens): 0 = every window at stride block_size
    public var windowStride = 0                    // data.stride (text, tokens): training windows start every stride tokens (0: block_size)
    public var trainTokens = "", validationTokens = ""   // data.train_tokens, data.val_tokens (tokens): uint16 files
    public var trainImages = "", trainLabels = ""  // data.train_images, data.train_labels (idx, npy)
    public var testImages = "", testLabels = ""    // data.test_images, data.test_labels (idx, npy)
    public var classes = 0                         // data.classes (idx, npy; 0: the largest label + 1)
    public var normalization: Normalization?       // data.mean and data.std (nil: the dataset's own)
    public var dataDirectory = FashionMNIST.defaultDirectory
    public var cacheDirectory = ""                 // data.cache_dir ("" = ~/.cache/ringsgd)
    public var syntheticFeatures = 784, syntheticClasses = 10
    public var syntheticTrainSize = 60_000, syntheticTestSize = 10_000

    public var epochs = 5                          // train.epochs
    public var maxSteps = 0                        // train.max_steps (0: no limit)
    public var globalBatch = 128                   // train.global_batch (samples per optimizer step, all ranks)
    public var accumulateSteps = 1                 // train.accumulate_steps: micro-batches per optimizer step
    public var clipGradNorm = 0.0                  // train.clip_grad_norm (0: off)
    public var logEverySteps = 100                 // train.log_every_steps
    public var evalBatch = 1000                    // train.eval_batch
    public var evalEverySteps = 0                  // train.eval_every_steps: also evaluate every N steps, into curve.jsonl (0: epoch ends only)

    public var optimizer = "sgd"                   // optimizer.name
    public var lr = 0.05, momentum = 0.9, dampening = 0.0, nesterov = false, weightDecay = 0.0
    public var betas = [0.9, 0.999], eps = 1e-8, amsgrad = false
    public var alpha = 0.99, centered = false, trustCoefficient = 0.001
    /// optimizer.lr_batch: the global batch lr (and schedule.max_lr) was tuned for; both are
    /// then scaled by train.global_batch / lr_batch — Goyal et al. 2017's linear scaling rule,
    /// η = 0.1·kn/256 for ResNet-50, written for a batch that is set, not for a number of ranks
    /// (train.global_batch stays the same on any number of ranks). 0: lr as given.
    public var lrBatch = 0
    public var decay = "all"                       // optimizer.decay: all | matrices (no decay on biases and norms; gpt's default)

    public var schedule = "cosine"                 // schedule.name
    public var scheduleInterval = "step"           // schedule.interval: step | epoch
    public var warmup = 0, warmupStartFactor = 0.1
    public var stepSize = 30, gamma = 0.1, milestones: [Int] = [], etaMin = 0.0, tMax = 0
    public var startFactor = 1.0 / 3, endFactor = 1.0, totalIters = 5, maxLR = 0.0, pctStart = 0.3
    public var cycleMomentum = true, baseMomentum = 0.85, maxMomentum = 0.95   // onecycle (PyTorch's defaults)

    public var allReduceAlgorithm = "ring"         // comm.algorithm: ring | mpi (MPI_Allreduce, fp32)
    public var topology = "auto"                   // comm.topology: auto (hierarchical when hosts have k > 1 ranks) | flat
    public var codec = "none"                      // comm.codec
    public var compressor = "none"                 // comm.compressor: none | powersgd
    public var powerSGDRank = 4                    // comm.powersgd.rank
    public var powerSGDStartStep = 10              // comm.powersgd.start_step (plain all-reduce before)
    public var powerSGDMinCompressionRate = 2.0    // comm.powersgd.min_compression_rate (DDP's default)
    public var powerSGDErrorFeedback = true        // comm.powersgd.error_feedback (DDP: on)
    public var errorFeedback = true                // comm.error_feedback (lossy codecs keep their error; exact ones have none)
    public var compressMomentum = Toggle.auto      // comm.compress_momentum: compress g + s·momentum (MomentumCarrying)
    public var uncompressedWarmupSteps = 0         // comm.warmup_steps
    public var segmentBytes = 0                    // comm.segment_bytes (0: the ring's default for the codec)
    public var sharedMemory = true                 // comm.shared_memory
    public var bucketBytes = 25 << 20              // comm.bucket_bytes (0: one bucket)
    public var overlap = true                      // comm.overlap: average buckets during backward
    /// `comm.timeout_seconds` where a config does not set it, and at start-up where a rank cannot read its config.
    public static let defaultTimeoutSeconds = 300.0
    public var timeoutSeconds = defaultTimeoutSeconds  // comm.timeout_seconds: longest wait for a peer (0: forever)
    public var syncMode = "every_step"             // comm.sync: every_step | local_sgd | diloco (TrainingConfig+Sync.swift)
    public var syncEvery = 0                       // comm.sync_every: H local steps between outer steps
    public var syncWarmupSteps = 0                 // comm.sync_warmup_steps: every-step averaging before local steps
    public var outerOptimizer = ""                 // comm.outer.optimizer: nesterov | sgd | average
    public var outerLR = 1.0, outerMomentum = 0.0  // comm.outer.lr, comm.outer.momentum
    public var fragments = 1, outerDelay = 0       // comm.fragments, comm.outer_delay (streaming DiLoCo)
    public var outerMix = 0.0                      // comm.outer_mix: α, the local parameters' weight when a fragment's average is applied

    public var checkEverySteps = 100               // consistency.check_every_steps
    public var injectNonFiniteAt: [Int] = []       // consistency.inject_nonfinite_at (fault injection)
    public var injectNonFiniteOuterAt: [Int] = []  // consistency.inject_nonfinite_outer_at: outer steps after these steps get a non-finite Δ on one rank
    public var injectDivergenceAt: [Int] = []      // consistency.inject_divergence_at: after these steps one value of the last rank moves by an ulp
    public var checkpointEverySteps = 0            // checkpoint.every_steps (0: only at the end)
    public var checkpointKeep = 3                  // checkpoint.keep
    public var checkpointReplicate = "per_host"    // checkpoint.replicate: per_host | rank0 (CheckpointReplication.swift)
    public var checkpointAsync = true              // checkpoint.async: write off the training thread (CheckpointWriter.swift)

    /// The largest `comm.segment_bytes`: a segment is one message, with its buffers, per peer.
    public static let maxSegmentBytes = 1 << 30

    /// The config as read, canonical: sorted `key: value` lines (hashed; stored in checkpoints).
    public private(set) var canonicalText = ""

    public init() {}

    /// Parses YAML (nil: the defaults) and `--set` overrides; throws a ConfigError naming the
    /// key on any problem. `testOnly`: for an evaluation, which reads only the test files of
    /// idx or npy data (the training files need not be named).
    /// `refusingIdleKeys`: whether keys that would do nothing with the chosen optimizer,
    /// schedule or compressor are refused — for a config the user gives; a checkpoint's config
    /// (`init(canonicalText:)`) is read as it was accepted when it was written.
    public init(yaml: String?, source: String, overrides: [String] = [], testOnly: Bool = false, refusingIdleKeys: Bool = true) throws {
        var r = try ConfigReader(yaml: yaml, source: source)
        for o in overrides { try r.override(o) }
        seed = UInt64(try r.int("seed", default: 0, min: 0))
        modelKind = try r.string("model.kind", default: modelKind, allowed: ["mlp", "cnn", "linear", "gpt"])
        if modelKind == "gpt" {
            var g = GPTSpec()
            g.layers = try r.int("model.gpt.layers", default: g.layers, min: 1)
            g.heads = try r.int("model.gpt.heads", default: g.heads, min: 1)
            g.embed = try r.int("model.gpt.embed", default: g.embed, min: 1)
            g.blockSize = try r.int("model.gpt.block_size", default: g.blockSize, min: 1)
            g.vocab = try r.int("model.gpt.vocab", default: g.vocab, min: 2)
            g.dropout = try r.double("model.gpt.dropout", default: g.dropout, min: 0, max: 1, exclusiveMax: true)
            g.tieEmbeddings = try r.bool("model.gpt.tie_embeddings", default: g.tieEmbeddings)
            if let problem = g.problem { throw ConfigError(problem) }
            gpt = g
        }
        hidden = try r.ints("model.hidden", default: hidden, min: 1)
        if let wide = hidden.first(where: { $0 > LayerSpec.largestWidth }) {
            throw ConfigError("model.hidden sizes must be at most \(LayerSpec.largestWidth), got \(wide)")
        }
        dropout = try r.double("model.dropout", default: dropout, min: 0, max: 1, exclusiveMax: true)
        if let list = r.node("model.layers") {
            if let shorthand = ["model.kind", "model.hidden", "model.dropout"].first(where: r.has) {
                throw ConfigError("model.layers describes the whole model; remove \(shorthand) (model.kind is a shorthand for a layer list)")
            }
            layers = try LayerListReader.read(list)
        }
        batchNorm = try r.string("model.batchnorm", default: batchNorm, allowed: ["sync", "local", "broadcast"])
        if r.has("model.batchnorm") && !(layers ?? []).contains(where: \.containsBatchNorm) {
            throw ConfigError("model.batchnorm applies to models with batch norm layers (batchnorm2d, batchnorm1d, a residual projection); this model has none: remove it")
        }
        dataset = try r.string("data.dataset", default: modelKind == "gpt" ? "text" : dataset,
                               allowed: ["fashion-mnist", "idx", "npy", "synthetic", "text", "tokens"])
        try readTokenData(&r, testOnly: testOnly)
        trainImages = try r.string("data.train_images", default: trainImages)
        trainLabels = try r.string("data.train_labels", default: trainLabels)
        testImages = try r.string("data.test_images", default: testImages)
        testLabels = try r.string("data.test_labels", default: testLabels)
        classes = try r.int("data.classes", default: classes, min: 0, max: Int(LabelledArrays.classLimit))
        if classes == 1 { throw ConfigError("data.classes must be ≥ 2 (or 0: the largest label + 1), got 1") }
        let mean = try r.double("data.mean", default: 0), std = try r.double("data.std", default: 1, min: 0, exclusiveMin: true)
        if r.has("data.mean") != r.has("data.std") {
            throw ConfigError("data.mean and data.std go together; give both (the dataset's own are used when neither is given)")
        }
        if r.has("data.mean") { normalization = Normalization(mean: mean, std: std) }
        let files = ["data.train_images", "data.train_labels", "data.test_images", "data.test_labels"]
        if ["idx", "npy"].contains(dataset) {
            if let missing = files.dropFirst(testOnly ? 2 : 0).first(where: { !r.has($0) }) {
                throw ConfigError("data.dataset: \(dataset) needs \(files.joined(separator: ", ")) (\(dataset == "idx" ? "IDX files, gzipped or not" : ".npy files")); \(missing) is missing")
            }
        } else if let stray = (files + ["data.classes"]).first(where: r.has) {
            throw ConfigError("\(stray) is read only with data.dataset: idx or npy (data.dataset is \(dataset))")
        }
        if dataset == "synthetic" && normalization != nil {
            throw ConfigError("data.mean and data.std do not apply to data.dataset: synthetic (its values are generated normalised)")
        }
        if refusingIdleKeys && dataset != "synthetic", let stray = r.values.keys.sorted().first(where: { $0.hasPrefix("data.synthetic.") }) {
            throw ConfigError("\(stray) is read only with data.dataset: synthetic (data.dataset is \(dataset)); remove it, or set data.dataset: synthetic")
        }
        // data.dir is Fashion-MNIST's folder alone: with idx or npy data the files are named
        // one by one, so a relative name is not looked up in it (text and tokens say so apart).
        // Its default named outright (configs/fashion-mlp.yaml does) misleads no one: a config
        // whose data.dataset is changed with --set keeps working.
        dataDirectory = try r.string("data.dir", default: dataDirectory)
        if refusingIdleKeys && ["idx", "npy", "synthetic"].contains(dataset) && r.has("data.dir") && dataDirectory != FashionMNIST.defaultDirectory {
            throw ConfigError("data.dir is the Fashion-MNIST folder, read only with data.dataset: fashion-mnist (data.dataset is \(dataset)); "
                              + (dataset == "synthetic" ? "" : "give each file's whole path in data.train_images … data.test_labels, and ")
                              + "remove it (from the config file, or with --set data.dir=null)")
        }
        if refusingIdleKeys && dataset == "synthetic" && r.has("data.cache_dir") {
            throw ConfigError("data.cache_dir does not apply to data.dataset: synthetic (its samples are computed, nothing is cached); remove it (from the config file, or with --set data.cache_dir=null)")
        }
        cacheDirectory = try r.string("data.cache_dir", default: cacheDirectory)
        syntheticFeatures = try r.int("data.synthetic.features", default: syntheticFeatures, min: 1, max: ModelDescription.largestSample)
        syntheticClasses = try r.int("data.synthetic.classes", default: syntheticClasses, min: 2, max: ModelDescription.mostClasses)
        syntheticTrainSize = try r.int("data.synthetic.train_size", default: syntheticTrainSize, min: 1)
        syntheticTestSize = try r.int("data.synthetic.test_size", default: syntheticTestSize, min: 1)
        if dataset == "synthetic" {
            // Samples are computed from (seed, index) when read, never stored; what grows with
            // the size is the sampler's order and an evaluation's indices, 8 bytes a sample.
            for (key, samples) in [("data.synthetic.train_size", syntheticTrainSize), ("data.synthetic.test_size", syntheticTestSize)] {
                let bytes = Double(samples) * 8
                if let exceeded = MachineMemory.exceeded(by: bytes, half: true) {
                    throw ConfigError("\(key) \(samples) needs \(MachineMemory.gigabytes(bytes)) for the samples' order (8 bytes a sample), \(exceeded); make it smaller")
                }
            }
        }
        // At most a million: epochs × steps per epoch must stay a step count.
        epochs = try r.int("train.epochs", default: epochs, min: 1, max: 1_000_000)
        maxSteps = try r.int("train.max_steps", default: maxSteps, min: 0)
        globalBatch = try r.int("train.global_batch", default: globalBatch, min: 1)
        accumulateSteps = try r.int("train.accumulate_steps", default: accumulateSteps, min: 1)
        clipGradNorm = try r.double("train.clip_grad_norm", default: clipGradNorm, min: 0)
        logEverySteps = try r.int("train.log_every_steps", default: logEverySteps, min: 1)
        // A GPT's evaluation reserves the training buffers for its batch (≈ 13 MB a window for
        // configs/tiny-gpt.yaml's model): 16 windows, not 1000.
        evalBatch = try r.int("train.eval_batch", default: modelKind == "gpt" ? 16 : evalBatch, min: 1)
        evalEverySteps = try r.int("train.eval_every_steps", default: evalEverySteps, min: 0)
        // A GPT's defaults are nanoGPT's train.py's: AdamW at 1e-3, betas (0.9, 0.95), weight
        // decay 0.1 on matrices only.
        optimizer = try r.string("optimizer.name", default: gpt != nil ? "adamw" : optimizer, allowed: ["sgd", "adam", "adamw", "rmsprop", "lamb", "lars"])
        let nanoGPTDefaults = gpt != nil && ["adam", "adamw"].contains(optimizer)
        lr = try r.double("optimizer.lr", default: nanoGPTDefaults ? 1e-3 : lr, min: 0)
        momentum = try r.double("optimizer.momentum", default: optimizer == "sgd" || optimizer == "lars" ? momentum : 0, min: 0, max: 1)
        dampening = try r.double("optimizer.dampening", default: dampening, min: 0, max: 1)
        nesterov = try r.bool("optimizer.nesterov", default: nesterov)
        weightDecay = try r.double("optimizer.weight_decay", default: optimizer == "adamw" ? (nanoGPTDefaults ? 0.1 : 0.01) : 0, min: 0)
        betas = try r.doubles("optimizer.betas", default: nanoGPTDefaults ? [0.9, 0.95] : betas)
        eps = try r.double("optimizer.eps", default: optimizer == "lamb" ? 1e-6 : eps, min: 0, exclusiveMin: true)
        amsgrad = try r.bool("optimizer.amsgrad", default: amsgrad)
        alpha = try r.double("optimizer.alpha", default: alpha, min: 0, max: 1)
        centered = try r.bool("optimizer.centered", default: centered)
        trustCoefficient = try r.double("optimizer.trust_coefficient", default: trustCoefficient, min: 0, exclusiveMin: true)
        lrBatch = try r.int("optimizer.lr_batch", default: lrBatch, min: 0)
        // Multiplied lr by the ranks while the global batch stayed the same: one config trained
        // differently at each -np (and changed its rate when an elastic run shrank). A
        // checkpoint's config still reads (evaluate, generate and export need no rate).
        if r.has("optimizer.scale_lr_with_world_size") {
            _ = try r.bool("optimizer.scale_lr_with_world_size", default: false)   // read, so not an unknown key
            guard !refusingIdleKeys else { throw ConfigError("optimizer.scale_lr_with_world_size is gone: train.global_batch is the same on any number of ranks, so scaling lr by the ranks made one config train differently at each -np; to scale lr with the batch (Goyal et al.), set optimizer.lr_batch to the global batch your lr was tuned for") }
        }
        decay = try r.string("optimizer.decay", default: nanoGPTDefaults ? "matrices" : decay,
                             allowed: ["all", "matrices"])
        if decay == "matrices" && !["adam", "adamw", "lars", "lamb"].contains(optimizer) {
            throw ConfigError("optimizer.decay: matrices applies to adam, adamw (nanoGPT's parameter groups), lars and lamb (their skip lists: no decay, no trust ratio on biases and norm weights); \(optimizer) decays every parameter: remove it or choose one of those")
        }
        schedule = try r.string("schedule.name", default: schedule,
                                allowed: ["constant", "step", "multistep", "exponential", "cosine", "linear", "onecycle"])
        scheduleInterval = try r.string("schedule.interval", default: scheduleInterval, allowed: ["step", "epoch"])
        warmup = try r.int("schedule.warmup", default: warmup, min: 0)
        warmupStartFactor = try r.double("schedule.warmup_start_factor", default: warmupStartFactor, min: 0, max: 1, exclusiveMin: true)
        if refusingIdleKeys && warmup == 0 && r.has("schedule.warmup_start_factor") {
            throw ConfigError("schedule.warmup_start_factor is where a warm-up starts, and schedule.warmup is 0 (none): set schedule.warmup to its steps, or remove it")
        }
        stepSize = try r.int("schedule.step_size", default: stepSize, min: 1)
        gamma = try r.double("schedule.gamma", default: gamma, min: 0, exclusiveMin: true)
        milestones = try r.ints("schedule.milestones", default: milestones, min: 0)
        etaMin = try r.double("schedule.eta_min", default: etaMin, min: 0)
        tMax = try r.int("schedule.t_max", default: tMax, min: 0)
        startFactor = try r.double("schedule.start_factor", default: startFactor, min: 0, max: 1, exclusiveMin: true)
        endFactor = try r.double("schedule.end_factor", default: endFactor, min: 0, max: 1)
        totalIters = try r.int("schedule.total_iters", default: totalIters, min: 1)
        maxLR = try r.double("schedule.max_lr", default: maxLR, min: 0)
        pctStart = try r.double("schedule.pct_start", default: pctStart, min: 0, max: 1)
        cycleMomentum = try r.bool("schedule.cycle_momentum", default: cycleMomentum)
        baseMomentum = try r.double("schedule.base_momentum", default: baseMomentum, min: 0, max: 1, exclusiveMax: true)
        maxMomentum = try r.double("schedule.max_momentum", default: maxMomentum, min: baseMomentum, max: 1, exclusiveMax: true)
        allReduceAlgorithm = try r.string("comm.algorithm", default: allReduceAlgorithm, allowed: ["ring", "mpi"])
        topology = try r.string("comm.topology", default: topology, allowed: ["auto", "flat"])
        // Lower case once, here: the registry reads any case, and every rule below compares names.
        codec = try r.string("comm.codec", default: codec).lowercased()
        compressor = try r.string("comm.compressor", default: compressor, allowed: ["none", "powersgd"])
        powerSGDRank = try r.int("comm.powersgd.rank", default: powerSGDRank, min: 1)
        powerSGDStartStep = try r.int("comm.powersgd.start_step", default: powerSGDStartStep, min: 0)
        powerSGDMinCompressionRate = try r.double("comm.powersgd.min_compression_rate", default: powerSGDMinCompressionRate, min: 0)
        powerSGDErrorFeedback = try r.bool("comm.powersgd.error_feedback", default: powerSGDErrorFeedback)
        errorFeedback = try r.bool("comm.error_feedback", default: errorFeedback)
        compressMomentum = Toggle(rawValue: try r.toggle("comm.compress_momentum", default: "auto"))!
        uncompressedWarmupSteps = try r.int("comm.warmup_steps", default: uncompressedWarmupSteps, min: 0)
        // Exact steps before an exact all-reduce change nothing (the momentum carry's rounding
        // aside, where it is asked for).
        if refusingIdleKeys && uncompressedWarmupSteps > 0 && compressor != "powersgd"
            && (allReduceAlgorithm == "mpi" || (["none", "fp32"].contains(codec) && compressMomentum != .on)) {
            throw ConfigError("comm.warmup_steps runs the first steps uncompressed, and \(allReduceAlgorithm == "mpi" ? "comm.algorithm: mpi" : "comm.codec: \(codec)") compresses none: remove it, or set a lossy comm.codec (or comm.compressor: powersgd)")
        }
        segmentBytes = try r.int("comm.segment_bytes", default: segmentBytes, min: 0)
        if (1 ... 3).contains(segmentBytes) {
            throw ConfigError("comm.segment_bytes must be 0 (the ring's default) or ≥ 4 (one float), got \(segmentBytes)")
        }
        if segmentBytes > Self.maxSegmentBytes {
            throw ConfigError("comm.segment_bytes \(segmentBytes) exceeds \(Self.maxSegmentBytes) (1 GiB): a segment is one message and its receive buffer; use 0 (the ring's default) or a smaller size")
        }
        if refusingIdleKeys && allReduceAlgorithm == "mpi" && r.has("comm.segment_bytes") {
            throw ConfigError("comm.segment_bytes sizes our ring's messages; comm.algorithm: mpi is OpenMPI's MPI_Allreduce, which has none: remove it, or use comm.algorithm: ring")
        }
        if refusingIdleKeys && allReduceAlgorithm == "mpi" && r.has("comm.topology") {
            throw ConfigError("comm.topology chooses between our flat and hierarchical rings; comm.algorithm: mpi is OpenMPI's MPI_Allreduce, which chooses its own: remove it, or use comm.algorithm: ring")
        }
        sharedMemory = try r.bool("comm.shared_memory", default: sharedMemory)
        bucketBytes = try r.int("comm.bucket_bytes", default: bucketBytes, min: 0)
        overlap = try r.bool("comm.overlap", default: overlap)
        timeoutSeconds = try r.double("comm.timeout_seconds", default: timeoutSeconds, min: 0)
        try readSync(&r)
        checkEverySteps = try r.int("consistency.check_every_steps", default: checkEverySteps, min: 0)
        injectNonFiniteAt = try r.ints("consistency.inject_nonfinite_at", default: injectNonFiniteAt, min: 0)
        injectNonFiniteOuterAt = try r.ints("consistency.inject_nonfinite_outer_at", default: injectNonFiniteOuterAt, min: 0)
        injectDivergenceAt = try r.ints("consistency.inject_divergence_at", default: injectDivergenceAt, min: 0)
        checkpointEverySteps = try r.int("checkpoint.every_steps", default: checkpointEverySteps, min: 0)
        checkpointKeep = try r.int("checkpoint.keep", default: checkpointKeep, min: 1)
        checkpointReplicate = try r.string("checkpoint.replicate", default: checkpointReplicate, allowed: ["per_host", "rank0"])
        checkpointAsync = try r.bool("checkpoint.async", default: checkpointAsync)
        if let stray = r.values.keys.sorted().first(where: { $0.hasPrefix("model.gpt.") }), modelKind != "gpt" {
            throw ConfigError("\(stray) applies to model.kind: gpt only (model.kind is \(modelKind)); remove it, or set model.kind: gpt")
        }
        try r.rejectUnknownKeys()
        if codec != "auto" {
            do { _ = try CodecRegistry.make(codec) } catch { throw ConfigError("comm.codec: \(error) (or auto: measured at start)") }
        }
        if compressor == "powersgd" && (allReduceAlgorithm == "mpi" || codec == "auto") {
            throw ConfigError("comm.compressor: powersgd runs on our ring with a fixed comm.codec for the vectors; it cannot be combined with comm.algorithm: mpi or comm.codec: auto")
        }
        if compressMomentum == .on && compressor == "powersgd" {
            throw ConfigError("comm.compress_momentum applies to comm.codec's all-reduce; comm.compressor: powersgd averages gradients (its own error feedback keeps it accurate): set one of them")
        }
        if allReduceAlgorithm == "mpi" && !["none", "fp32"].contains(codec) {
            throw ConfigError("comm.algorithm: mpi runs MPI_Allreduce in fp32 and takes no codec (comm.codec is \(codec)); use comm.algorithm: ring to compress")
        }
        // Keys that exist but would do nothing with the chosen model or optimizer: refused, not ignored.
        if let stray = ["model.hidden", "model.dropout"].first(where: r.has), modelKind != "mlp" {
            throw ConfigError("\(stray) applies to model.kind: mlp only (model.kind is \(modelKind)); remove it, or describe the model with model.layers")
        }
        if refusingIdleKeys, compressor != "powersgd", let stray = r.values.keys.sorted().first(where: { $0.hasPrefix("comm.powersgd.") }) {
            throw ConfigError("\(stray) applies to comm.compressor: powersgd only (comm.compressor is \(compressor)); set comm.compressor: powersgd, or remove it")
        }
        if let stray = ["optimizer.nesterov", "optimizer.dampening"].first(where: r.has), optimizer != "sgd" {
            throw ConfigError("\(stray) applies to optimizer.name: sgd only (torch.optim.SGD's; \(optimizer) has none); remove it")
        }
        for (key, users) in Self.optimizerKeyUsers where refusingIdleKeys && r.has(key) && !users.contains(optimizer) {
            throw ConfigError("\(key) applies to optimizer.name: \(users.joined(separator: ", ")) (\(optimizer) has none); remove it (from the config file, or with --set \(key)=null)")
        }
        // PyTorch's OneCycleLR overwrites the momentum (SGD's, RMSProp's, LARS's) every step.
        if refusingIdleKeys && schedulesMomentum && r.has("optimizer.momentum") {
            throw ConfigError("optimizer.momentum does nothing under schedule.name: onecycle, which sets the momentum every step between schedule.base_momentum and schedule.max_momentum; remove it (from the config file, or with --set optimizer.momentum=null), or set schedule.cycle_momentum: false")
        }
        // …and Adam's and LAMB's β₁ (β₂ stays the config's): a β₁ other than where the cycle starts would be lost.
        if refusingIdleKeys && schedulesMomentum && r.has("optimizer.betas") && betas.count == 2 && betas[0] != maxMomentum {
            throw ConfigError("optimizer.betas' β₁ (\(betas[0])) does nothing under schedule.name: onecycle, which sets β₁ every step between schedule.base_momentum and schedule.max_momentum (\(baseMomentum)–\(maxMomentum)); write β₁ as schedule.max_momentum (optimizer.betas: [\(maxMomentum), \(betas[1])]), or set schedule.cycle_momentum: false")
        }
        if refusingIdleKeys && schedule == "onecycle" && !cycleMomentum,
           let stray = ["schedule.base_momentum", "schedule.max_momentum"].first(where: r.has) {
            throw ConfigError("\(stray) does nothing with schedule.cycle_momentum: false (the momentum stays the optimizer's own); remove it, or set schedule.cycle_momentum: true")
        }
        // OneCycleLR warms up itself, from max_lr/25: a warm-up before it would climb to
        // optimizer.lr, drop 25-fold and climb again.
        if refusingIdleKeys && schedule == "onecycle" && warmup > 0 {
            throw ConfigError("schedule.warmup does not combine with schedule.name: onecycle, which warms up itself (from max_lr/25 over schedule.pct_start of the steps): after the warm-up the rate would drop 25-fold and climb again; remove schedule.warmup, or lengthen schedule.pct_start")
        }
        for (key, users) in Self.scheduleKeyUsers where refusingIdleKeys && r.has(key) && !users.contains(schedule) {
            throw ConfigError("\(key) applies to schedule.name: \(users.joined(separator: ", ")) (schedule.name is \(schedule)); remove it (from the config file, or with --set \(key)=null), or choose one of those")
        }
        if betas.count != 2 { throw ConfigError("optimizer.betas must be a list of two numbers, got \(betas)") }
        // PyTorch's range (its "Invalid beta parameter at index i"), said in the key's own terms.
        for (i, beta) in betas.enumerated() where !(beta >= 0 && beta < 1) {
            throw ConfigError("optimizer.betas[\(i)] must be in [0, 1), got \(beta)")
        }
        // The given keys, and the effective value of every key whose default has changed, so
        // that a checkpoint written under the old default resumes with the change reported
        // ("comm.error_feedback: (default) → true") instead of silently.
        var entries = r.values.mapValues(\.scalarOrListText)
        for (key, value) in [("comm.error_feedback", "\(errorFeedback)"), ("comm.compress_momentum", compressMomentum.rawValue)] where entries[key] == nil {
            entries[key] = value
        }
        canonicalText = entries.keys.sorted().map { "\($0): \(entries[$0]!)" }.joined(separator: "\n")
    }

    /// The config a checkpoint was written with (its canonical text: one `key: value` per line,
    /// each read back as a `--set`), then `overrides`.
    public init(canonicalText text: String, overrides: [String] = [], testOnly: Bool = false) throws {
        let assignments = Self.canonicalEntries(text).map { "\($0.key)=\($0.value)" }
        try self.init(yaml: nil, source: "the checkpoint's config", overrides: assignments + overrides, testOnly: testOnly, refusingIdleKeys: false)
    }

    /// The `key: value` lines of a canonical config text, in order.
    static func canonicalEntries(_ text: String) -> [(key: String, value: String)] {
        text.split(separator: "\n").compactMap { line -> (key: String, value: String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let value = line[colon...].dropFirst()
            return (String(line[..<colon]), value.trimmingCharacters(in: .whitespaces))
        }
    }

    /// Reads a config file; `path` errors name the file and what is wrong with it.
    public static func load(path: String, overrides: [String]) throws -> TrainingConfig {
        let hint = "pass --config with a YAML file such as configs/fashion-mlp.yaml"
        let data = try readConfigBytes(path, hint: hint)
        guard let text = String(bytes: data, encoding: .utf8), !text.contains("\0") else {
            throw ConfigError("\(path) is not a YAML config (not UTF-8 text); \(hint)")
        }
        return try TrainingConfig(yaml: text, source: path, overrides: overrides)
    }

    /// Configs larger than this are refused: no YAML config comes near it, and a pipe that
    /// never ends must not be read until memory runs out.
    static let largestConfigBytes = 16 << 20

    /// The bytes of a regular file or a named pipe (a config written on the fly by another
    /// program), read to their end rather than by a size a pipe has not got; other kinds of
    /// file are refused at once. Like `cat`, a pipe's open waits for its writer. POSIX calls,
    /// so that errno is the failing call's own (Foundation's was stale: "No such file or
    /// directory" for a FIFO).
    static func readConfigBytes(_ path: String, hint: String) throws -> [UInt8] {
        func failure(_ reason: String) -> ConfigError { ConfigError("cannot read config file \(path): \(reason); \(hint)") }
        func tooLarge() -> ConfigError { ConfigError("config file \(path) is larger than \(largestConfigBytes >> 20) MiB: not a YAML config; \(hint)") }
        var info = stat()
        guard stat(path, &info) == 0 else {
            guard errno == ENOENT else { throw failure(String(cString: strerror(errno))) }
            // A relative path is read from the current directory — not the checkout's, when a
            // launcher is run from elsewhere: say which.
            guard path.hasPrefix("/") else {
                throw ConfigError("cannot read config file \(path): it does not exist in \(FileManager.default.currentDirectoryPath); give its path from there, or an absolute one")
            }
            throw failure("it does not exist")
        }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: throw failure("it is a directory")
        case S_IFREG: guard info.st_size <= largestConfigBytes else { throw tooLarge() }
        case S_IFIFO: break
        default: throw failure("it is not a regular file or a named pipe")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure(String(cString: strerror(errno)))
            }
            if count == 0 { return bytes }
            bytes += chunk[0 ..< count]
            guard bytes.count <= largestConfigBytes else { throw tooLarge() }   // a pipe, or a file grown since stat
        }
    }

    /// The keys whose values differ between two canonical config texts, as "key: a → b"
    /// (a key absent on one side shows its default as "(default)"), in key order.
    /// Keys ringsgd no longer reads (a checkpoint may hold them): not a change to report.
    static let retiredKeys: Set<String> = ["optimizer.scale_lr_with_world_size"]

    public static func differences(_ a: String, _ b: String) -> [String] {
        func entries(_ text: String) -> [String: String] {
            Dictionary(canonicalEntries(text).filter { !retiredKeys.contains($0.key) }.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        }
        let left = entries(a), right = entries(b)
        return Set(left.keys).union(right.keys).sorted().compactMap { key in
            left[key] == right[key] ? nil : "\(key): \(left[key] ?? "(default)") → \(right[key] ?? "(default)")"
        }
    }

    /// A setting that can also be left to ringsgd (`auto`).
    public enum Toggle: String { case auto, on = "true", off = "false" }

    /// `comm.compress_momentum: auto`: on for the sign codec (with or without a block size or
    /// zstd), whose accuracy depends on it — sign + error feedback alone trains fashion-cnn to
    /// 0.85–0.87 against fp32's 0.92, with the momentum carried to fp32's — and off otherwise
    /// (int8 and the 16-bit codecs reach fp32's accuracy with error feedback alone).
    public var carriesMomentumByDefault: Bool { codec.hasPrefix("sign") && compressor != "powersgd" && syncMode == "every_step" }

    /// What the gradient synchronizer is told (`comm.*` and the seed).
    public var syncSettings: SyncSettings {
        var s = SyncSettings()
        s.algorithm = allReduceAlgorithm == "mpi" ? .mpi : .ring
        s.codec = codec
        s.errorFeedback = errorFeedback
        s.warmupSteps = uncompressedWarmupSteps
        s.segmentBytes = segmentBytes > 0 ? segmentBytes : nil
        s.overlap = overlap
        s.seed = seed
        if compressor == "powersgd" {
            s.powerSGD = PowerSGDSettings(rank: powerSGDRank, startStep: powerSGDStartStep,
                                          minCompressionRate: powerSGDMinCompressionRate, errorFeedback: powerSGDErrorFeedback)
        }
        return s
    }

    /// A 64-bit hash of the canonical config: ranks compare it before training.
    public var hash: UInt64 { FastHash.hash(Array(canonicalText.utf8)) }

    /// The layer list of a classifier (model.kind mlp, cnn, linear or model.layers; empty for gpt).
    public var modelSpec: ModelSpec {
        if let layers { return .layers(layers) }
        switch modelKind {
        case "cnn": return .cnn
        case "linear": return .linear
        default: return .mlp(hidden: hidden, dropout: Float(dropout))
        }
    }

    /// `data.cache_dir`, or by default the XDG cache directory: `$XDG_CACHE_HOME/ringsgd`,
    /// else `$HOME/.cache/ringsgd` (the environment first, as every XDG tool reads it, so
    /// that a job can move the cache by setting HOME or XDG_CACHE_HOME).
    public var resolvedCacheDirectory: String {
        guard cacheDirectory.isEmpty else { return cacheDirectory }
        let environment = ProcessInfo.processInfo.environment
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") { return xdg + "/ringsgd" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return (home as NSString).appendingPathComponent(".cache/ringsgd")
    }

    /// The optimizer for a model's flat parameters (layer ranges for LAMB/LARS).
    public func makeOptimizer(parameters: FlatParameters) throws -> Optimizer {
        let count = parameters.count, layers = parameters.views.map(\.range)
        // optimizer.decay: matrices — tensors of fewer than two dimensions (biases, norm weights) exempt.
        let exempt = decay == "matrices" ? parameters.views.map { $0.shape.count < 2 } : []
        // OneCycleLR sets the momentum every step (PyTorch does so even for SGD built with
        // momentum 0): the optimizer starts at max_momentum so that its momentum state exists —
        // Adam's and LAMB's β₁ too, as PyTorch's OneCycleLR sets them when it is built (a
        // warm-up before it runs with them).
        let momentum = schedulesMomentum ? maxMomentum : self.momentum, beta1 = schedulesMomentum ? maxMomentum : betas[0]
        do {
            switch optimizer {
            case "sgd": return try SGD(parameterCount: count, momentum: momentum, dampening: dampening, weightDecay: weightDecay, nesterov: nesterov)
            case "adam", "adamw":
                let adam = try Adam(parameterCount: count, beta1: beta1, beta2: betas[1], eps: eps, weightDecay: weightDecay,
                                    decoupled: optimizer == "adamw", amsgrad: amsgrad)
                adam.exemptFromDecay = zip(layers, exempt).filter(\.1).map(\.0)
                return adam
            case "rmsprop":
                return try RMSProp(parameterCount: count, alpha: alpha, eps: eps, weightDecay: weightDecay, momentum: momentum, centered: centered)
            case "lamb": return try LAMB(parameterCount: count, layers: layers, beta1: beta1, beta2: betas[1], eps: eps, weightDecay: weightDecay,
                                         exempt: exempt)
            default: return try LARS(parameterCount: count, layers: layers, momentum: momentum, weightDecay: weightDecay, trustCoefficient: trustCoefficient,
                                     exempt: exempt)
            }
        } catch let error as HyperparameterError {
            throw ConfigError("optimizer: \(error.message)")
        }
    }

    /// The optimizers each optimizer key is a hyperparameter of (`makeOptimizer`): the key
    /// given with another is refused, as it would do nothing.
    static let optimizerKeyUsers: [(String, [String])] = [
        ("optimizer.momentum", ["sgd", "rmsprop", "lars"]), ("optimizer.betas", ["adam", "adamw", "lamb"]),
        ("optimizer.eps", ["adam", "adamw", "lamb", "rmsprop"]), ("optimizer.amsgrad", ["adam", "adamw"]),
        ("optimizer.alpha", ["rmsprop"]), ("optimizer.centered", ["rmsprop"]), ("optimizer.trust_coefficient", ["lars"]),
    ]
    /// The schedules each schedule key is a parameter of (`makeSchedule`); warm-up and the
    /// interval apply to every one.
    static let scheduleKeyUsers: [(String, [String])] = [
        ("schedule.step_size", ["step"]), ("schedule.gamma", ["step", "multistep", "exponential"]), ("schedule.milestones", ["multistep"]),
        ("schedule.eta_min", ["cosine"]), ("schedule.t_max", ["cosine"]),
        ("schedule.start_factor", ["linear"]), ("schedule.end_factor", ["linear"]), ("schedule.total_iters", ["linear"]),
        ("schedule.max_lr", ["onecycle"]), ("schedule.pct_start", ["onecycle"]), ("schedule.cycle_momentum", ["onecycle"]),
        ("schedule.base_momentum", ["onecycle"]), ("schedule.max_momentum", ["onecycle"]),
    ]

    /// A rate tuned for a global batch of `lrBatch`, at this run's: Goyal et al. 2017,
    /// "Accurate, Large Minibatch SGD", §2.1 — when the minibatch grows k-fold, multiply the
    /// learning rate by k (with warm-up, `schedule.warmup`, for large k).
    public func linearlyScaled(_ rate: Double) -> Double {
        lrBatch > 0 ? rate * Double(globalBatch) / Double(lrBatch) : rate
    }

    /// Whether the schedule sets the optimizer's momentum (or β₁) every step.
    public var schedulesMomentum: Bool { schedule == "onecycle" && cycleMomentum }

    /// The schedule over `total` units (steps or epochs per schedule.interval), with optional
    /// linear warm-up (SequentialLR semantics), its rates scaled to the global batch
    /// (`optimizer.lr_batch`).
    public func makeSchedule(total: Int) throws -> LearningRateSchedule {
        let base = linearlyScaled(lr)
        let afterWarmup = max(1, total - warmup)
        do {
            try checkLearningRate(base)
            let main: LearningRateSchedule
            switch schedule {
            case "constant": main = ConstantLR(base: base)
            case "step": main = try StepLR(base: base, stepSize: stepSize, gamma: gamma)
            case "multistep": main = try MultiStepLR(base: base, milestones: milestones, gamma: gamma)
            case "exponential": main = try ExponentialLR(base: base, gamma: gamma)
            case "linear": main = try LinearLR(base: base, startFactor: startFactor, endFactor: endFactor, totalIters: totalIters)
            case "onecycle":
                main = try OneCycleLR(maxLR: maxLR > 0 ? linearlyScaled(maxLR) : base, totalSteps: max(2, afterWarmup), pctStart: pctStart,
                                      momentumRange: cycleMomentum ? (baseMomentum, maxMomentum) : nil)
            default: main = try CosineAnnealingLR(base: base, tMax: tMax > 0 ? tMax : afterWarmup, etaMin: etaMin)
            }
            guard warmup > 0 else { return main }
            return try SequentialLR([LinearLR(base: base, startFactor: warmupStartFactor, totalIters: warmup), main],
                                    milestones: [warmup])
        } catch let error as HyperparameterError {
            throw ConfigError("schedule: \(error.message)")
        }
    }
}

import Yams
extension Node {
    var scalarOrListText: String {
        switch self {
        case let .scalar(s): return s.string
        case let .sequence(items): return "[" + items.map(\.scalarOrListText).joined(separator: ", ") + "]"
        case let .mapping(pairs): return "{" + pairs.map { "\($0.key.scalarOrListText): \($0.value.scalarOrListText)" }.joined(separator: ", ") + "}"
        }
    }
}
