import ArgumentParser
import Collectives
import Foundation
import NeuralNet
import Optimizers
import Training

/// `ringsgd bench compute`: one core, one full training step (forward, loss, backward, and the
/// optimizer update: SGD momentum for the classifiers, AdamW for the GPT) on a batch shaped
/// as the real data (Fashion-MNIST images; windows of bytes for configs/tiny-gpt.yaml's GPT),
/// warm-up then timed steps. `--config` times any config's model instead, on the first samples
/// of its training set, with its optimizer: e.g. configs/fashion-resnet.yaml.
struct BenchCompute: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compute",
        abstract: "Samples/s and GFLOP/s of a full training step on one core."
    )

    enum Model: String, ExpressibleByArgument, CaseIterable { case mlp, cnn, gpt }

    @Option(help: "Model (\(Model.allCases.map(\.rawValue).joined(separator: ", "))). Default: mlp.")
    var model: Model?
    @Option(help: "A config whose model and optimizer to time, on its training set's first samples (instead of --model).")
    var config: String?
    // `.unconditional`: a negative value reaches validate() and its message (see `Generate`).
    @Option(parsing: .unconditional, help: "Batch size (samples; windows of 128 tokens for gpt). Default: 128, gpt 16, a config's global batch.")
    var batch: Int?
    @Option(parsing: .unconditional, help: "Untimed warm-up steps.")
    var warmup: Int = 5
    @Option(parsing: .unconditional, help: "Timed steps (the median and the fastest reported).")
    var steps: Int = 30
    @Option(help: "Write the result as JSON to this file.")
    var json: String?

    func validate() throws {
        if let batch, batch < 1 { throw ValidationError("--batch must be ≥ 1, got \(batch)") }
        if model != nil && config != nil { throw ValidationError("give --model or --config, not both") }
        if steps < 1 { throw ValidationError("--steps must be ≥ 1, got \(steps)") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0, got \(warmup)") }
        if let json { try OutputFile.check(json, option: "--json") }
    }

    func run() throws {
        BLASThreads.set(1)
        if let config { return try run(config: config, batch: self.batch) }
        let model = self.model ?? .mlp
        let batch = self.batch ?? (model == .gpt ? 16 : 128)
        let net: NeuralNet.Model, optimizer: Optimizer
        switch model {
        case .gpt:
            net = try GPT(GPTSpec())
            // nanoGPT's groups, as the peer's torch_step.py: no decay on biases and norm weights.
            let adam = try Adam(parameterCount: net.parameters.count, beta1: 0.9, beta2: 0.95, weightDecay: 0.1, decoupled: true)
            adam.exemptFromDecay = net.parameters.views.filter { $0.shape.count < 2 }.map(\.range)
            optimizer = adam
        case .mlp, .cnn:
            let spec: ModelSpec = model == .mlp ? .mlp(hidden: ModelSpec.defaultMLPHidden, dropout: 0) : .cnn
            net = try spec.build(inputShape: [1, 28, 28], classes: 10)
            optimizer = try SGD(parameterCount: net.parameters.count, momentum: 0.9)
        }
        net.initialize(seed: 0)
        net.reserve(batch: batch)
        var generator = SeededGenerator(seed: 1)
        let input = (0 ..< batch * net.inputSize).map { _ in model == .gpt ? Float(generator.next() % 256) : generator.uniform(-1, 2) }
        let labels = (0 ..< batch * net.labelsPerSample).map { _ in Int32(generator.next() % UInt64(net.classes)) }
        try report(net, name: model.rawValue, batch: batch,
                   perStep: time(net, optimizer, input: input, labels: labels, batch: batch))
    }

    /// `--config`: the config's model and optimizer (at its learning rate) on the first `batch`
    /// training samples (by default the global batch: one process's step).
    private func run(config path: String, batch: Int?) throws {
        let config = try TrainingConfig.load(path: path, overrides: [])
        let batch = batch ?? config.globalBatch
        let train = try config.loadDatasets().train
        guard train.count >= batch else { throw ValidationError("--batch \(batch) is larger than \(path)'s training set (\(train.count) samples)") }
        let net = try config.makeModel(for: train)
        net.initialize(seed: config.seed)
        net.reserve(batch: batch)
        let optimizer = try config.makeOptimizer(parameters: net.parameters)
        var input = [Float](repeating: 0, count: batch * net.inputSize), labels = [Int32](repeating: 0, count: batch * net.labelsPerSample)
        input.withUnsafeMutableBufferPointer { x in
            labels.withUnsafeMutableBufferPointer { y in train.fill(Array(0 ..< batch)[...], input: x.baseAddress!, labels: y.baseAddress!) }
        }
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        try report(net, name: name, batch: batch, perStep: time(net, optimizer, input: input, labels: labels, batch: batch, lr: config.lr))
    }

    /// The median and the fastest time of one step: gradients, then the optimizer's update. The
    /// fastest is what a step costs when nothing else runs on the core; on a shared virtual
    /// machine, whose neighbours slow whole seconds of a run, it moves far less than the median.
    private func time(_ net: NeuralNet.Model, _ optimizer: Optimizer, input: [Float], labels: [Int32], batch: Int,
                      lr: Double = 0.01) throws -> (median: Double, fastest: Double) {
        var times: [Double] = []
        try input.withUnsafeBufferPointer { x in
            try labels.withUnsafeBufferPointer { y in
                for i in 0 ..< warmup + steps {
                    let start = ContinuousClock.now
                    _ = try net.computeGradients(input: x, labels: y, batch: batch)
                    optimizer.step(parameters: net.parameters.parameters, gradients: net.parameters.gradients, lr: lr)
                    let elapsed = ContinuousClock.now - start
                    if i >= warmup { times.append(elapsed.seconds) }
                }
            }
        }
        return (median(times), times.min() ?? 0)
    }

    private func report(_ net: NeuralNet.Model, name: String, batch: Int, perStep: (median: Double, fastest: Double)) throws {
        let samplesPerSecond = Double(batch) / perStep.median
        let gflops = net.trainingFlopsPerSample * samplesPerSecond / 1e9
        print("bench compute: \(net.summary)")
        print("bench compute: OpenBLAS kernels \(BLASKernels.coreName)"
              + (ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { " (OPENBLAS_CORETYPE=\($0))" } ?? "")
              + "; convolution products by \(ConvolutionProducts.description)")
        let tokens = net.labelsPerSample > 1 ? String(format: " (%.0f tokens/s)", samplesPerSecond * Double(net.labelsPerSample)) : ""
        print(String(format: "model %@ batch %d: %.0f samples/s%@, %.2f ms/step, %.1f GFLOP/s (median of %d steps, fastest %.2f ms, 1 thread; GFLOP/s counts direct-convolution FLOPs, which Winograd layers do fewer of)",
                     name, batch, samplesPerSecond, tokens, perStep.median * 1e3, gflops, steps, perStep.fastest * 1e3))
        if let json {
            var object: [String: Any] = ["model": name, "batch": batch,
                                         "samples_per_second": samplesPerSecond, "gflops": gflops,
                                         "median_step_ms": perStep.median * 1e3, "fastest_step_ms": perStep.fastest * 1e3]
            if net.labelsPerSample > 1 { object["tokens_per_second"] = samplesPerSecond * Double(net.labelsPerSample) }
            try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).write(to: URL(fileURLWithPath: json), options: .atomic)
        }
    }
}
