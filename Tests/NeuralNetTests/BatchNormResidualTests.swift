import Foundation
import NeuralNet
import XCTest

/// Batch normalisation, global average pooling and residual blocks: gradients by finite
/// differences (training-mode losses: batch statistics), batch norm against a Double reference
/// with PyTorch's running-statistics update, PyTorch's state_dict names for buffers.
final class BatchNormResidualTests: XCTestCase {
    func testBatchNorm2dGradients() throws {
        try checkGradients(Sequential([Conv2d(2, 3, kernel: 3, padding: 1), BatchNorm(channels: 3, dimensions: 2), ReLU(), Flatten(), Linear(48, 3)],
                                      inputShape: [2, 4, 4]), batch: 3, uniform: 0.6, absolute: 5e-4, trainingLoss: true,
                           vanishing: ["0.bias"])   // the batch norm takes the channel's mean off: its bias does nothing
    }

    func testBatchNorm1dGradients() throws {
        try checkGradients(Sequential([Linear(5, 6), BatchNorm(channels: 6, dimensions: 1), ReLU(), Linear(6, 3)], inputShape: [5]),
                           batch: 4, uniform: 0.8, absolute: 5e-4, trainingLoss: true, vanishing: ["0.bias"])
    }

    /// `nn.BatchNorm1d` on [C, L] samples: each channel's statistics over the batch and the L
    /// positions (a sequence's), as on [C] over the batch alone.
    func testBatchNorm1dOverSequencesGradients() throws {
        let norm = BatchNorm(channels: 3, dimensions: 1)
        let model = try Sequential([norm, Flatten(), Linear(15, 3)], inputShape: [3, 5])
        XCTAssertEqual(norm.valuesPerSample, 5)
        try checkGradients(model, batch: 2, uniform: 0.8, absolute: 5e-4, trainingLoss: true)
        // Its input gradient (a first layer is asked for none above): that of BatchNorm2d, whose
        // dx is checked through a convolution, on the same values as [C, L, 1] — output, dx
        // and running statistics, bit for bit.
        var generator = SeededGenerator(seed: 21)
        let x = (0 ..< 4 * 15).map { _ in generator.uniform(-1, 2) }, dy = (0 ..< 4 * 15).map { _ in generator.uniform(-1, 1) }
        var results: [[Float]] = []
        for (layer, shape) in [(BatchNorm(channels: 3, dimensions: 1), [3, 5]), (BatchNorm(channels: 3, dimensions: 2), [3, 5, 1])] {
            let model = try Sequential([layer, Flatten(), Linear(15, 3)], inputShape: shape)
            model.initialize(seed: 1)
            let gamma = model.parameters.parameters(of: model.parameters.views[0]), beta = model.parameters.parameters(of: model.parameters.views[1])
            gamma[0] = 1.5; gamma[1] = -0.5; beta[2] = 0.25
            model.reserve(batch: 4)
            let y = x.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: layer.forward($0.baseAddress!, batch: 4, training: true), count: 60)) }
            let dx = dy.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: layer.backward($0.baseAddress!, batch: 4, needsInputGradient: true)!, count: 60)) }
            results.append(y + dx + Array(model.parameters.buffers) + Array(model.parameters.gradients))
        }
        XCTAssertEqual(results[0], results[1])
    }

    func testGlobalAveragePoolGradients() throws {
        try checkGradients(Sequential([Conv2d(1, 4, kernel: 3, padding: 1), GlobalAvgPool2d(), Linear(4, 3)], inputShape: [1, 5, 5]),
                           batch: 2, uniform: 0.8, absolute: 5e-4)
    }

    /// Residual blocks the test above does not reach, fused and unfused: one with no ReLU after
    /// it (its sum made plainly, or by its last batch norm with no mask), and one on flat [C]
    /// features (linear and batchnorm1d: planes of one value, whose mask is one pass).
    func testResidualBlocksWithoutAReLUAfterOrOnFlatFeaturesGradients() throws {
        let norm1d = LayerSpec.batchnorm1d(eps: 1e-5, momentum: 0.1), norm2d = LayerSpec.batchnorm2d(eps: 1e-5, momentum: 0.1)
        let flat = LayerSpec.residual(layers: [.linear(out: 6), norm1d, .relu, .linear(out: 6), norm1d], shortcut: "identity")
        let planes = LayerSpec.residual(layers: [.conv2d(out: 3, kernel: 3, stride: 1, padding: 1, bias: false), norm2d, .relu,
                                                 .conv2d(out: 3, kernel: 3, stride: 1, padding: 1, bias: false), norm2d], shortcut: "identity")
        let stem: [LayerSpec] = [.conv2d(out: 3, kernel: 3, stride: 1, padding: 1, bias: false), norm2d, .relu]
        // ε per case: 2e-3 crosses the kinks of the planes' ReLUs (normalised activations sit near
        // them), below 1e-3 the flat cases' differences are rounding noise.
        let cases: [(name: String, spec: [LayerSpec], shape: [Int], epsilon: Float, absolute: Double)] = [
            ("flat, a ReLU after", [.linear(out: 6), flat, .relu, .linear(out: nil)], [5], 2e-3, 1.5e-4),
            ("flat, nothing after", [.linear(out: 6), flat, .linear(out: nil)], [5], 2e-3, 1.5e-4),
            ("planes, nothing after", stem + [planes, .globalavgpool2d, .linear(out: nil)], [2, 5, 5], 5e-4, 2.5e-4),
        ]
        for (name, spec, shape, epsilon, absolute) in cases {
            for fused in [true, false] {
                let model = try Sequential(ModelSpec.layers(spec).layers(inputShape: shape, classes: 3), inputShape: shape, fusesPasses: fused)
                // The block's linear layers' biases come right before a batch norm, which takes
                // each feature's mean off: their gradient is zero by construction.
                try checkGradients(model, batch: 4, samples: 120, epsilon: epsilon, uniform: 0.6, absolute: absolute, trainingLoss: true,
                                   vanishing: ["1.layers.0.bias", "1.layers.3.bias"], label: "\(name), fused \(fused): ")
            }
        }
    }

    /// Both shortcuts: identity, and a projection (1×1 stride-2 convolution + batch norm).
    func testResidualBlockGradients() throws {
        for projection in [false, true] {
            let spec: [LayerSpec] = [
                .conv2d(out: 3, kernel: 3, stride: 1, padding: 1, bias: false), .batchnorm2d(eps: 1e-5, momentum: 0.1), .relu,
                .residual(layers: [.conv2d(out: projection ? 4 : 3, kernel: 3, stride: projection ? 2 : 1, padding: 1, bias: false),
                                   .batchnorm2d(eps: 1e-5, momentum: 0.1), .relu,
                                   .conv2d(out: projection ? 4 : 3, kernel: 3, stride: 1, padding: 1, bias: false), .batchnorm2d(eps: 1e-5, momentum: 0.1)],
                          shortcut: projection ? "projection" : "identity"),
                .relu, .globalavgpool2d, .linear(out: nil)]
            let model = try ModelSpec.layers(spec).build(inputShape: [2, 6, 6], classes: 3)
            // ε 2e-3: normalised activations sit near the ReLUs' kinks, which a wider step crosses.
            try checkGradients(model, batch: 3, samples: 120, epsilon: 2e-3, uniform: 0.6, absolute: 1.5e-4, trainingLoss: true)
        }
    }

    /// Property: a ReLU fused into the batch norm or residual sum before it (`fuseReLUs`), and
    /// a block's sum made by its last batch norm (`fuseResidualSums`), give the same bits as
    /// the separate passes — logits, loss, every gradient, the running statistics, and
    /// evaluation's logits — with a projection block and a nested block; and the fusion
    /// happened (the ReLUs pass through, the blocks sum in their batch norms).
    func testFusedReLUsGiveTheSameBitsAsSeparateLayers() throws {
        let bn = LayerSpec.batchnorm2d(eps: 1e-5, momentum: 0.1)
        let spec: [LayerSpec] = [
            .conv2d(out: 3, kernel: 3, stride: 1, padding: 1, bias: false), bn, .relu,
            .residual(layers: [.conv2d(out: 3, kernel: 3, stride: 1, padding: 1, bias: false), bn, .relu,
                               .residual(layers: [.conv2d(out: 3, kernel: 3, stride: 1, padding: 1, bias: false), bn], shortcut: "identity"),
                               .relu], shortcut: "identity"),
            .relu,
            .residual(layers: [.conv2d(out: 4, kernel: 3, stride: 2, padding: 1, bias: false), bn, .relu,
                               .conv2d(out: 4, kernel: 3, stride: 1, padding: 1, bias: false), bn],
                      shortcut: "projection"),
            .relu, .globalavgpool2d, .linear(out: nil)]
        let shape = [2, 9, 9], batch = 5
        func model(fused: Bool) throws -> Sequential {
            let m = try Sequential(ModelSpec.layers(spec).layers(inputShape: shape, classes: 3), inputShape: shape, fusesPasses: fused)
            m.initialize(seed: 7)
            return m
        }
        let fused = try model(fused: true), separate = try model(fused: false)
        func relus(_ layers: [Layer]) -> [ReLU] {
            layers.flatMap { layer -> [ReLU] in
                (layer as? ReLU).map { [$0] } ?? (layer as? Residual).map { relus($0.layers + $0.shortcut) } ?? []
            }
        }
        XCTAssertEqual(relus(fused.layers).map(\.isFused), Array(repeating: true, count: 6))
        XCTAssertEqual(relus(separate.layers).map(\.isFused), Array(repeating: false, count: 6))
        XCTAssertEqual(fused.layers.compactMap { ($0 as? Residual)?.sumsInLastNorm }, [false, true])
        XCTAssertEqual(separate.layers.compactMap { ($0 as? Residual)?.sumsInLastNorm }, [false, false])
        // Every parameter drawn anew, the same in both models: batch norms' γ of both signs and
        // β ≠ 0, so that the recomputed pre-activation x̂·γ + β, not x̂, must set the mask.
        for m in [fused, separate] {
            var draw = SeededGenerator(seed: 11)
            for i in 0 ..< m.parameters.count { m.parameters.parameters[i] = Float.random(in: -1 ... 1, using: &draw) }
        }
        var generator = SeededGenerator(seed: 3)
        // Values near zero as well, so that many pre-activations sit on both sides of the kink.
        let input = (0 ..< batch * shape.reduce(1, *)).map { _ in Float.random(in: -1 ... 1, using: &generator) }
        let labels: [Int32] = (0 ..< batch).map { Int32($0 % 3) }
        var losses: [Double] = []
        for m in [fused, separate] {
            let result = try input.withUnsafeBufferPointer { x in
                try labels.withUnsafeBufferPointer { try m.computeGradients(input: x, labels: $0, batch: batch, forwardDone: nil, unitDone: nil) }
            }
            losses.append(result.loss)
        }
        XCTAssertEqual(losses[0].bitPattern, losses[1].bitPattern)
        // Bit patterns: −0 against +0 is a difference too.
        XCTAssertEqual(fused.parameters.gradients.map(\.bitPattern), separate.parameters.gradients.map(\.bitPattern), "gradients differ")
        XCTAssertEqual(fused.parameters.buffers.map(\.bitPattern), separate.parameters.buffers.map(\.bitPattern), "running statistics differ")
        XCTAssertGreaterThan(fused.parameters.gradients.filter { $0 != 0 }.count, fused.parameters.count / 2)
        let logits = try [fused, separate].map { m in
            try input.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: try m.forward($0, batch: batch, training: false), count: batch * 3)) }
        }
        XCTAssertEqual(logits[0].map(\.bitPattern), logits[1].map(\.bitPattern), "evaluation's logits differ")
    }

    /// Property: batch norms whose training statistics the convolution before them adds as it
    /// writes each chunk of images, whose input gradient it makes plane by plane as its
    /// backward reads it, whose output the convolution after them makes plane by plane as it
    /// reads it, in forward and backward (`fuseConvolutionsWithBatchNorms`), and whose
    /// backward sums the layer that writes their dy adds plane by plane (that convolution's
    /// input gradient, a block's ReLU mask for the batch norms ending its paths), give the same
    /// bits as batch norms that make all of them over the whole batch themselves — loss, every
    /// gradient, the running statistics, evaluation's logits — with every parameter drawn at
    /// random (γ ≠ 1, β ≠ 0), over several chunks: batch 10 of 28×28 images, so the stem's
    /// im2col (1→16, 6 images a chunk) takes 6 + 4, the Winograd F(4×4) convolutions at 28×28
    /// (16→16, 4 images) 4 + 4 + 2, the stride-2 im2col (16→32, 3 images) 3 + 3 + 3 + 1, the
    /// Winograd one at 14×14 (32→32, 7 images) 7 + 3 and the 1×1 im2col (32→48, 8 images) 8 + 2
    /// — asserted, so that a new chunk size cannot make the test single-chunk; over two steps
    /// with an evaluation of another batch size between them, so that the sums of one batch
    /// must not leak into the next. Every batch norm right after a convolution is fused, and so
    /// is every one before a convolution: Winograd's and im2col's, through a fused ReLU and
    /// directly; and the test asserts that the fused statistics and backward sums were the ones
    /// used (a norm that fell back to its own pass would give the same bits).
    func testBatchNormPassesMadeByTheConvolutionGiveTheSameBits() throws {
        let bn = LayerSpec.batchnorm2d(eps: 1e-5, momentum: 0.1)
        // Two convolutions with a bias (im2col's and Winograd's bias gradient from the planes they make).
        let spec: [LayerSpec] = [
            .conv2d(out: 16, kernel: 3, stride: 1, padding: 1, bias: true), bn, .relu,
            .residual(layers: [.conv2d(out: 16, kernel: 3, stride: 1, padding: 1, bias: false), bn, .relu,
                               .conv2d(out: 16, kernel: 3, stride: 1, padding: 1, bias: true), bn], shortcut: "identity"),
            .relu,
            .residual(layers: [.conv2d(out: 32, kernel: 3, stride: 2, padding: 1, bias: false), bn, .relu,
                               .conv2d(out: 32, kernel: 3, stride: 1, padding: 1, bias: false), bn,
                               .conv2d(out: 48, kernel: 1, stride: 1, padding: 0, bias: false), bn], shortcut: "projection"),
            .relu, .globalavgpool2d, .linear(out: nil)]
        let shape = [1, 28, 28], batch = 10
        let fused = try perturbedModel(spec, shape: shape, fused: true), separate = try perturbedModel(spec, shape: shape, fused: false)
        func norms(_ layers: [Layer]) -> [BatchNorm] {
            layers.flatMap { layer -> [BatchNorm] in
                (layer as? BatchNorm).map { [$0] } ?? (layer as? Residual).map { norms($0.layers + $0.shortcut) } ?? []
            }
        }
        func convolutions(_ layers: [Layer]) -> [Conv2d] {
            layers.flatMap { layer -> [Conv2d] in
                (layer as? Conv2d).map { [$0] } ?? (layer as? Residual).map { convolutions($0.layers + $0.shortcut) } ?? []
            }
        }
        let algorithms = convolutions(fused.layers).map(\.algorithm)
        XCTAssertEqual(algorithms.first, .im2col, "the stem")
        XCTAssertEqual(Array(algorithms[1 ... 2]), [.winograd4x4, .winograd4x4], "the 16→16 convolutions at 28×28")
        for convolution in convolutions(fused.layers).prefix(6) {
            XCTAssertTrue(convolution.imagesPerChunk < batch && batch % convolution.imagesPerChunk != 0,
                          "\(convolution.summary): \(convolution.imagesPerChunk) images a chunk must leave a partial chunk of \(batch)")
        }
        XCTAssertEqual(algorithms[4 ... 5], [.winograd4x4, .im2col], "the convolutions after a batch norm at 14×14")
        XCTAssertEqual(convolutions(fused.layers).map { $0.followingNorm.map(ObjectIdentifier.init) },
                       norms(fused.layers).map { ObjectIdentifier($0) }, "each convolution is paired with the batch norm after it")
        XCTAssertTrue(norms(fused.layers).allSatisfy(\.leavesInputGradientToConvolution))
        let fusedNorms = norms(fused.layers)
        XCTAssertEqual(convolutions(fused.layers).map { $0.precedingNorm.map(ObjectIdentifier.init) },
                       [nil, nil, fusedNorms[1], nil, fusedNorms[3], fusedNorms[4], nil].map { $0.map(ObjectIdentifier.init) },
                       "each convolution right after a batch norm (and its fused ReLU) is paired with it")
        XCTAssertEqual(fusedNorms.map(\.leavesOutputToConvolution), [false, true, false, true, true, false, false])
        XCTAssertEqual(convolutions(separate.layers).map { $0.followingNorm == nil && $0.precedingNorm == nil }, Array(repeating: true, count: 7))
        XCTAssertFalse(norms(separate.layers).contains { $0.leavesInputGradientToConvolution || $0.leavesOutputToConvolution })
        try assertSameBits(fused, separate, shape: shape, batch: batch, evaluated: 5, what: "the ResNet-like model") { step in
            XCTAssertEqual(fusedNorms.map(\.neighbourMadeStatistics), Array(repeating: true, count: 7), "step \(step)")
            // The stem's norm takes the first block's input gradient, which no layer pairs with it.
            XCTAssertEqual(fusedNorms.map(\.neighbourMadeGradientSums), [false] + Array(repeating: true, count: 6), "step \(step)")
            XCTAssertFalse(norms(separate.layers).contains { $0.neighbourMadeStatistics || $0.neighbourMadeGradientSums })
        }
    }

    /// A 3-class model of `spec`, its passes fused or not, initialised and then moved off
    /// PyTorch's initial values (seeded) so that no γ = 1, β = 0 hides an error.
    private func perturbedModel(_ spec: [LayerSpec], shape: [Int], fused: Bool) throws -> Sequential {
        let m = try Sequential(ModelSpec.layers(spec).layers(inputShape: shape, classes: 3), inputShape: shape, fusesPasses: fused)
        m.initialize(seed: 5)
        var generator = SeededGenerator(seed: 11)
        for i in m.parameters.parameters.indices { m.parameters.parameters[i] += Float.random(in: -0.5 ... 0.5, using: &generator) }
        return m
    }

    /// Two steps on the same random inputs (labels of 3 classes), then an evaluation of the first
    /// `evaluated` samples after each: `fused` and `separate` must agree in every bit — loss,
    /// gradients, running statistics, logits. `afterStep` adds a test's own checks.
    private func assertSameBits(_ fused: Sequential, _ separate: Sequential, shape: [Int], batch: Int, evaluated: Int, what: String,
                                afterStep: (Int) -> Void = { _ in }) throws {
        var generator = SeededGenerator(seed: 9)
        for step in 0 ..< 2 {
            let input = (0 ..< batch * shape.reduce(1, *)).map { _ in Float.random(in: -1 ... 2, using: &generator) }
            let labels: [Int32] = (0 ..< batch).map { Int32(($0 + step) % 3) }
            var losses: [Double] = []
            for m in [fused, separate] {
                let result = try input.withUnsafeBufferPointer { x in
                    try labels.withUnsafeBufferPointer { try m.computeGradients(input: x, labels: $0, batch: batch, forwardDone: nil, unitDone: nil) }
                }
                losses.append(result.loss)
            }
            XCTAssertEqual(losses[0].bitPattern, losses[1].bitPattern, "\(what), step \(step)")
            afterStep(step)
            XCTAssertEqual(fused.parameters.gradients.map(\.bitPattern), separate.parameters.gradients.map(\.bitPattern), "\(what), step \(step): gradients differ")
            XCTAssertEqual(fused.parameters.buffers.map(\.bitPattern), separate.parameters.buffers.map(\.bitPattern), "\(what), step \(step): running statistics differ")
            let logits = try [fused, separate].map { m in
                try Array(input.prefix(evaluated * shape.reduce(1, *))).withUnsafeBufferPointer {
                    Array(UnsafeBufferPointer(start: try m.forward($0, batch: evaluated, training: false), count: evaluated * 3))
                }
            }
            XCTAssertEqual(logits[0].map(\.bitPattern), logits[1].map(\.bitPattern), "\(what), step \(step): evaluation's logits differ")
        }
    }

    /// Property: residual blocks that pass their backward gradients through the model's three
    /// shared buffers (`GradientPool`), and convolutions sharing one pair of scratch matrices
    /// (`ConvolutionScratch`), give the same bits as a buffer per layer — loss and every
    /// gradient, over two steps on different inputs (a gradient left in a shared buffer must
    /// not leak into the next) — for identity and projection blocks, a block wider inside than
    /// at its ends (the pool must hold its widest gradient), a projection block of one
    /// convolution (whose dy is the masked gradient itself), im2col and Winograd convolutions
    /// at two image sizes and four channel shapes, and beside a block that keeps its own
    /// buffers (it holds a nested block).
    func testSharedBuffersGiveTheSameBits() throws {
        let bn = LayerSpec.batchnorm2d(eps: 1e-5, momentum: 0.1)
        func conv(_ out: Int, stride: Int = 1) -> LayerSpec { .conv2d(out: out, kernel: 3, stride: stride, padding: 1, bias: false) }
        let spec: [LayerSpec] = [
            conv(8), bn, .relu,
            .residual(layers: [conv(8), bn, .relu, conv(8), bn], shortcut: "identity"), .relu,
            .residual(layers: [conv(8), bn, .relu, .residual(layers: [conv(8), bn], shortcut: "identity"), .relu], shortcut: "identity"), .relu,
            .residual(layers: [conv(16, stride: 2), bn, .relu, conv(16), bn], shortcut: "projection"), .relu,
            .residual(layers: [conv(64), bn, .relu, conv(16), bn], shortcut: "identity"), .relu,
            .residual(layers: [conv(24, stride: 2)], shortcut: "projection"), .relu,
            .globalavgpool2d, .linear(out: nil)]
        let shape = [2, 10, 10], batch = 4
        let models = try [true, false].map { shares in
            let m = try Sequential(ModelSpec.layers(spec).layers(inputShape: shape, classes: 3), inputShape: shape, sharesBuffers: shares)
            m.initialize(seed: 9)
            var draw = SeededGenerator(seed: 12)
            for i in 0 ..< m.parameters.count { m.parameters.parameters[i] = Float.random(in: -1 ... 1, using: &draw) }
            m.reserve(batch: batch)
            return m
        }
        XCTAssertEqual(models[0].layers.compactMap { ($0 as? Residual)?.sharesGradients }, [true, false, true, true, true])
        XCTAssertEqual(models[1].layers.compactMap { ($0 as? Residual)?.sharesGradients }, [false, false, false, false, false])
        var generator = SeededGenerator(seed: 4)
        for step in 0 ..< 2 {
            let input = (0 ..< batch * shape.reduce(1, *)).map { _ in Float.random(in: -1 ... 1, using: &generator) }
            let labels: [Int32] = (0 ..< batch).map { Int32(($0 + step) % 3) }
            let losses = try models.map { m in
                try input.withUnsafeBufferPointer { x in
                    try labels.withUnsafeBufferPointer { try m.computeGradients(input: x, labels: $0, batch: batch, forwardDone: nil, unitDone: nil).loss }
                }
            }
            XCTAssertEqual(losses[0].bitPattern, losses[1].bitPattern, "step \(step)")
            XCTAssertEqual(models[0].parameters.gradients.map(\.bitPattern), models[1].parameters.gradients.map(\.bitPattern), "step \(step)")
            XCTAssertGreaterThan(models[0].parameters.gradients.filter { $0 != 0 }.count, models[0].parameters.count / 2)
        }
    }

    /// Training: (x − μ_B)/√(σ²_B + eps)·γ + β per channel, running mean and (unbiased)
    /// variance moved by momentum 0.1, num_batches_tracked 1; evaluation: the running statistics.
    /// eps is 0.5, so that leaving it out or misplacing it moves every value by far more than
    /// the tolerance (at PyTorch's 1e-5 and variances near 2, by less than 1e-5).
    func testBatchNormMatchesTheDefinitionAndPyTorchsRunningUpdate() throws {
        let eps = 0.5
        let norm = BatchNorm(channels: 2, dimensions: 2, epsilon: Float(eps), momentum: 0.1)
        let model = try Sequential([norm, Flatten(), Linear(8, 2)], inputShape: [2, 2, 2])
        model.initialize(seed: 1)
        let gamma = model.parameters.parameters(of: model.parameters.views[0]), beta = model.parameters.parameters(of: model.parameters.views[1])
        gamma[0] = 1.5; gamma[1] = -0.5; beta[0] = 0.25; beta[1] = 2
        var generator = SeededGenerator(seed: 7)
        let batch = 3, x = (0 ..< batch * 8).map { _ in generator.uniform(-2, 3) }
        model.reserve(batch: batch)
        let y = x.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: norm.forward($0.baseAddress!, batch: batch, training: true), count: batch * 8)) }
        let buffers = model.parameters.bufferViews
        XCTAssertEqual(buffers.map(\.name), ["0.running_mean", "0.running_var", "0.num_batches_tracked"])
        XCTAssertEqual(buffers.map(\.shape), [[2], [2], []])
        for c in 0 ..< 2 {
            let values = (0 ..< batch).flatMap { b in (0 ..< 4).map { Double(x[(b * 2 + c) * 4 + $0]) } }
            let mean = values.reduce(0, +) / 12, variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 12
            for b in 0 ..< batch {
                for i in 0 ..< 4 {
                    let expected = (Double(x[(b * 2 + c) * 4 + i]) - mean) / (variance + eps).squareRoot() * Double(gamma[c]) + Double(beta[c])
                    XCTAssertEqual(Double(y[(b * 2 + c) * 4 + i]), expected, accuracy: 1e-5)
                }
            }
            XCTAssertEqual(Double(model.parameters.buffer(of: buffers[0])[c]), 0.1 * mean, accuracy: 1e-6)
            XCTAssertEqual(Double(model.parameters.buffer(of: buffers[1])[c]), 0.9 + 0.1 * variance * 12 / 11, accuracy: 1e-5)
        }
        XCTAssertEqual(model.parameters.buffer(of: buffers[2])[0], 1)
        // Evaluation uses the running statistics and changes none of them.
        let before = Array(model.parameters.buffers)
        let z = x.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: norm.forward($0.baseAddress!, batch: batch, training: false), count: batch * 8)) }
        XCTAssertEqual(Array(model.parameters.buffers), before)
        // Every value of both channels (one value checked a channel-indexing or eps error only for channel 0).
        for c in 0 ..< 2 {
            let mean = Double(model.parameters.buffer(of: buffers[0])[c]), variance = Double(model.parameters.buffer(of: buffers[1])[c])
            for b in 0 ..< batch {
                for i in 0 ..< 4 {
                    let at = (b * 2 + c) * 4 + i
                    XCTAssertEqual(Double(z[at]), (Double(x[at]) - mean) / (variance + eps).squareRoot() * Double(gamma[c]) + Double(beta[c]), accuracy: 1e-5)
                }
            }
        }
    }

    /// A fixed momentum over two batches: running = (1 − m)·running + m·batch each time, so the
    /// first batch's statistics decay by (1 − m) at the second — m = 0.25, and the variance
    /// starting from 1 (not 0), so that a dropped or misplaced (1 − m) term shows.
    func testAFixedMomentumDecaysTheEarlierBatches() throws {
        let m = 0.25
        let norm = BatchNorm(channels: 2, dimensions: 2, momentum: Float(m))
        let model = try Sequential([norm, Flatten(), Linear(8, 2)], inputShape: [2, 2, 2])
        model.initialize(seed: 1)
        let buffers = model.parameters.bufferViews, batch = 3
        model.reserve(batch: batch)
        var generator = SeededGenerator(seed: 5)
        var mean = [0.0, 0.0], variance = [1.0, 1.0]
        for k in 1 ... 2 {
            let x = (0 ..< batch * 8).map { _ in generator.uniform(-2, 3) + Float(2 * k) }
            _ = x.withUnsafeBufferPointer { norm.forward($0.baseAddress!, batch: batch, training: true) }
            for c in 0 ..< 2 {
                let values = (0 ..< batch).flatMap { b in (0 ..< 4).map { Double(x[(b * 2 + c) * 4 + $0]) } }
                let mu = values.reduce(0, +) / 12
                mean[c] = (1 - m) * mean[c] + m * mu
                variance[c] = (1 - m) * variance[c] + m * values.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / 11
                XCTAssertEqual(Double(model.parameters.buffer(of: buffers[0])[c]), mean[c], accuracy: 1e-5, "mean after \(k)")
                XCTAssertEqual(Double(model.parameters.buffer(of: buffers[1])[c]), variance[c], accuracy: 1e-5, "variance after \(k)")
            }
        }
    }

    /// PyTorch's `momentum=None`: after k training batches the running mean is the plain mean
    /// of the k batch means and the running variance that of the k unbiased batch variances
    /// (factor 1/num_batches_tracked), whatever the starting buffers were (1/1 replaces them
    /// at the first batch); a fixed momentum of 0.1 would give neither.
    func testMomentumNoneKeepsTheCumulativeAverageOfEveryBatchsStatistics() throws {
        let norm = BatchNorm(channels: 2, dimensions: 2, momentum: nil)
        let model = try Sequential([norm, Flatten(), Linear(8, 2)], inputShape: [2, 2, 2])
        model.initialize(seed: 1)
        XCTAssertTrue(norm.pytorchModule.contains("momentum=None"), norm.pytorchModule)
        let buffers = model.parameters.bufferViews
        let batch = 3
        model.reserve(batch: batch)
        var generator = SeededGenerator(seed: 11)
        var means = [[Double]](repeating: [], count: 2), variances = [[Double]](repeating: [], count: 2)
        for k in 1 ... 4 {
            // Batches of different centres and spreads, so that any weighting but 1/k shows.
            let x = (0 ..< batch * 8).map { _ in generator.uniform(-2, 3) * Float(k) + Float(3 * k) }
            _ = x.withUnsafeBufferPointer { norm.forward($0.baseAddress!, batch: batch, training: true) }
            for c in 0 ..< 2 {
                let values = (0 ..< batch).flatMap { b in (0 ..< 4).map { Double(x[(b * 2 + c) * 4 + $0]) } }
                let mean = values.reduce(0, +) / 12
                means[c].append(mean)
                variances[c].append(values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 11)
                let scale = Double(k) * 4
                XCTAssertEqual(Double(model.parameters.buffer(of: buffers[0])[c]), means[c].reduce(0, +) / Double(k), accuracy: 1e-5 * scale, "mean after \(k)")
                XCTAssertEqual(Double(model.parameters.buffer(of: buffers[1])[c]), variances[c].reduce(0, +) / Double(k),
                               accuracy: 1e-5 * scale * scale, "variance after \(k)")
            }
            XCTAssertEqual(model.parameters.buffer(of: buffers[2])[0], Float(k))
        }
    }

    /// Property: the fusions the builder makes give the bits of the unfused layers — loss,
    /// gradients, running statistics and evaluation logits, over two steps — also where no
    /// other test reaches them: a batch norm as the first layer (asked for no input gradient)
    /// before a convolution, a VGG-like chain of norm → convolution outside residual blocks, a
    /// stride-2 convolution after a norm (a bottleneck's 3×3), Winograd on 7×7 planes with a
    /// first-layer convolution making its norm's statistics, and a block on 2×2 planes.
    func testFusionsOutsideTheResNetsShapesGiveTheSameBits() throws {
        let bn = LayerSpec.batchnorm2d(eps: 1e-5, momentum: 0.1)
        func conv(_ out: Int, _ kernel: Int = 3, stride: Int = 1) -> LayerSpec {
            .conv2d(out: out, kernel: kernel, stride: stride, padding: kernel / 2, bias: false)
        }
        let cases: [(String, [LayerSpec], [Int], Int)] = [
            ("norm first, then a VGG-like chain", [bn, .relu, conv(8), bn, .relu, conv(8), bn, .relu, .maxpool2d(kernel: 2), conv(16, stride: 2), bn, .relu,
                                                   .globalavgpool2d, .linear(out: nil)], [8, 12, 12], 5),
            ("a bottleneck with its stride on the 3×3", [conv(8, 1), bn, .relu, .residual(layers: [conv(8, 1), bn, .relu, conv(8, stride: 2), bn, .relu, conv(16, 1), bn],
                                                                                  shortcut: "projection"), .relu, .globalavgpool2d, .linear(out: nil)], [8, 9, 9], 4),
            ("Winograd on 7×7, first layer", [conv(8), bn, .relu, conv(8), bn, .relu, .globalavgpool2d, .linear(out: nil)], [8, 7, 7], 3),
            ("a block on 2×2 planes", [.residual(layers: [conv(4, stride: 2), bn, .relu, conv(4), bn], shortcut: "projection"), .relu,
                                       .globalavgpool2d, .linear(out: nil)], [2, 4, 4], 3),
        ]
        for (name, spec, shape, batch) in cases {
            let fused = try perturbedModel(spec, shape: shape, fused: true), separate = try perturbedModel(spec, shape: shape, fused: false)
            let fusedConvolutions = fused.layers.flatMap { ($0 as? Conv2d).map { [$0] } ?? ($0 as? Residual).map { $0.layers.compactMap { $0 as? Conv2d } } ?? [] }
            XCTAssertTrue(fusedConvolutions.contains { $0.followingNorm != nil }, "\(name): something is fused")
            if name.hasPrefix("Winograd") { XCTAssertEqual(fusedConvolutions.map(\.algorithm), [.winograd4x4, .winograd4x4], name) }
            if name.hasPrefix("norm first") || name.hasPrefix("a bottleneck") {
                XCTAssertTrue(fusedConvolutions.contains { $0.precedingNorm != nil && $0.stride == (name.hasPrefix("a bottleneck") ? 2 : 1) }, name)
            }
            try assertSameBits(fused, separate, shape: shape, batch: batch, evaluated: batch, what: name)
        }
    }

    /// The reducer sees [Σx per channel, Σx² per channel, count] in forward, and its result is
    /// what normalises: a reducer that adds a second batch of m zeros (as another rank holding
    /// zeros would) gives, on this batch's rows, exactly a plain batch norm over both batches —
    /// outputs and running statistics (the global count in the unbiased variance).
    func testReducerSumsAreTheGlobalBatchsStatistics() throws {
        let batch = 3, c = 2, s = 4
        var generator = SeededGenerator(seed: 9)
        let x = (0 ..< batch * c * s).map { _ in generator.uniform(-1, 2) }
        let reduced = BatchNorm(channels: c, dimensions: 2)
        var seen: [Double] = []
        reduced.statisticsReducer = { sums in
            seen = Array(sums)
            sums[2 * c] *= 2   // the other "rank" adds m zeros: Σx and Σx² unchanged, count doubled
        }
        let plain = BatchNorm(channels: c, dimensions: 2)
        var outputs: [[Float]] = [], buffers: [[Float]] = []
        for (norm, input) in [(reduced, x), (plain, x + [Float](repeating: 0, count: batch * c * s))] {
            let rows = input.count / (c * s)
            let model = try Sequential([norm, Flatten(), Linear(c * s, 2)], inputShape: [c, 2, 2])
            model.initialize(seed: 1)
            model.reserve(batch: rows)
            let y = input.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: norm.forward($0.baseAddress!, batch: rows, training: true), count: batch * c * s)) }
            outputs.append(y)
            buffers.append(model.parameters.bufferViews.flatMap { Array(model.parameters.buffer(of: $0)) })
        }
        for ch in 0 ..< c {
            let values = (0 ..< batch).flatMap { b in (0 ..< s).map { Double(x[(b * c + ch) * s + $0]) } }
            XCTAssertEqual(seen[ch], values.reduce(0, +), accuracy: 1e-9)
            XCTAssertEqual(seen[c + ch], values.map { $0 * $0 }.reduce(0, +), accuracy: 1e-9)
        }
        XCTAssertEqual(seen[2 * c], Double(batch * s), "the count of this rank's values per channel")
        for (a, b) in zip(outputs[0], outputs[1]) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        for (a, b) in zip(buffers[0], buffers[1]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    /// Property: `sync`'s backward — Σdy and Σdy·x̂ scaled by the rank's gradient weight w,
    /// summed over ranks by the reducer, unscaled — gives this rank's rows of a plain batch
    /// norm's input gradient over both ranks' batches: w·dx(sync) equals the plain dx for the
    /// output gradient [w·dy₁; dy₂] (the trainer scales each rank's gradient by w in the
    /// all-reduce). A second "rank" is emulated by the reducer: in forward it adds the other
    /// batch's Σx, Σx² and count, in backward its Σdy₂ and Σdy₂·x̂₂ under the global statistics.
    func testSyncBackwardIsThePlainBackwardOverBothRanksBatches() throws {
        let batch = 3, c = 2, s = 4, eps = 1e-5
        var generator = SeededGenerator(seed: 11)
        let x1 = (0 ..< batch * c * s).map { _ in generator.uniform(-1, 2) }, x2 = (0 ..< batch * c * s).map { _ in generator.uniform(-2, 1) }
        let dy1 = (0 ..< batch * c * s).map { _ in generator.uniform(-1, 1) }, dy2 = (0 ..< batch * c * s).map { _ in generator.uniform(-1, 1) }
        func channel(_ v: [Float], _ ch: Int) -> [Double] { (0 ..< batch).flatMap { b in (0 ..< s).map { Double(v[(b * c + ch) * s + $0]) } } }
        for w in [1.0, 0.8] {
            let synced = BatchNorm(channels: c, dimensions: 2), plain = BatchNorm(channels: c, dimensions: 2)
            var calls = 0
            synced.gradientWeight = w
            synced.statisticsReducer = { sums in
                calls += 1
                for ch in 0 ..< c {
                    let other = channel(x2, ch)
                    if calls == 1 {   // forward: the other batch's statistics
                        sums[ch] += other.reduce(0, +); sums[c + ch] += other.map { $0 * $0 }.reduce(0, +)
                    } else {          // backward: its gradient sums under the global statistics
                        let all = channel(x1, ch) + other, n = Double(all.count)
                        let mean = all.reduce(0, +) / n, rstd = 1 / ((all.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / n) + eps).squareRoot()
                        let g = channel(dy2, ch)
                        sums[ch] += g.reduce(0, +)
                        sums[c + ch] += zip(g, other).map { $0 * ($1 - mean) * rstd }.reduce(0, +)
                    }
                }
                if calls == 1 { sums[2 * c] += Double(batch * s) }
            }
            var results: [[Float]] = []
            for (norm, input, gradient) in [(synced, x1, dy1), (plain, x1 + x2, dy1.map { Float(w) * $0 } + dy2)] {
                let rows = input.count / (c * s)
                let model = try Sequential([norm, Flatten(), Linear(c * s, 2)], inputShape: [c, 2, 2])
                model.initialize(seed: 1)
                let gamma = model.parameters.parameters(of: model.parameters.views[0])
                gamma[0] = 1.5; gamma[1] = -0.5
                model.reserve(batch: rows)
                _ = input.withUnsafeBufferPointer { norm.forward($0.baseAddress!, batch: rows, training: true) }
                let dx = gradient.withUnsafeBufferPointer { norm.backward($0.baseAddress!, batch: rows, needsInputGradient: true)! }
                results.append(Array(UnsafeBufferPointer(start: dx, count: batch * c * s)))
            }
            XCTAssertEqual(calls, 2, "one reduction in forward, one in backward")
            for (a, b) in zip(results[0], results[1]) { XCTAssertEqual(Float(w) * a, b, accuracy: 1e-5, "w \(w)") }
        }
    }

    /// Layer lists with residual blocks name parameters and buffers as a PyTorch module with
    /// `layers` and `shortcut` sub-Sequentials would.
    /// Property: a block whose strides multiply past its input (1024 × 1024 on 32×32) builds
    /// a projection the size of the input's, not a stride² buffer (2⁴⁰ floats) or an overflow,
    /// and its forward runs: the shortcut reads position 0, whatever the stride past the input.
    func testAProjectionOfStridesPastTheInputIsBuilt() throws {
        let conv = LayerSpec.conv2d(out: 4, kernel: 3, stride: 1024, padding: 1, bias: false)
        let model = try ModelSpec.layers([.residual(layers: [conv, conv], shortcut: "projection"), .globalavgpool2d, .linear(out: nil)])
            .build(inputShape: [3, 32, 32], classes: 2)
        let shortcut = try XCTUnwrap((model.layers[0] as? Residual)?.shortcut.first as? Conv2d)
        XCTAssertEqual(shortcut.stride, 32)
        model.initialize(seed: 1)
        let x = [Float](repeating: 0.5, count: 2 * 3 * 32 * 32)
        let logits = try x.withUnsafeBufferPointer { try model.forward($0, batch: 2, training: false) }
        XCTAssertTrue(logits[0].isFinite && logits[3].isFinite)
    }

    /// Property: a convolution whose stride passes its padded input (2¹⁶ on 8×8) gives the one
    /// output position a stride of 10 gives, without a stride² buffer (2³² floats).
    func testAStrideBeyondThePaddedInputGivesTheOnePosition() throws {
        var outputs: [[Float]] = []
        for stride in [1 << 16, 10] {
            let conv = Conv2d(1, 2, kernel: 3, stride: stride, padding: 1)
            let model = try Sequential([conv, Flatten(), Linear(2, 2)], inputShape: [1, 8, 8])
            model.initialize(seed: 3)
            model.reserve(batch: 1)
            let x = (0 ..< 64).map { Float($0 % 5) - 2 }
            outputs.append(x.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: conv.forward($0.baseAddress!, batch: 1, training: false), count: 2)) })
        }
        XCTAssertEqual(outputs[0], outputs[1])
    }

    func testResidualNamesAreAPyTorchModulesStateDict() throws {
        let model = try ModelSpec.layers([
            .residual(layers: [.conv2d(out: 4, kernel: 3, stride: 2, padding: 1, bias: false), .batchnorm2d(eps: 1e-5, momentum: 0.1)], shortcut: "projection"),
            .globalavgpool2d, .linear(out: nil)]).build(inputShape: [2, 4, 4], classes: 3)
        XCTAssertEqual(model.parameters.views.map(\.name), ["0.layers.0.weight", "0.layers.1.weight", "0.layers.1.bias",
                                                           "0.shortcut.0.weight", "0.shortcut.1.weight", "0.shortcut.1.bias", "2.weight", "2.bias"])
        XCTAssertEqual(model.parameters.bufferViews.map(\.name).filter { $0.hasSuffix("running_var") }, ["0.layers.1.running_var", "0.shortcut.1.running_var"])
        XCTAssertEqual(model.parameters.views[3].shape, [4, 2, 1, 1])
        XCTAssertTrue(model.pytorchModule.contains("Residual(nn.Sequential(nn.Conv2d(2, 4, kernel_size=3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4)), nn.Sequential(nn.Conv2d(2, 4, kernel_size=1, stride=2, padding=0, bias=False), nn.BatchNorm2d(4)))"), model.pytorchModule)
        // The shortcut's batch norm takes the block's eps and momentum (torchvision's downsample).
        let tuned = try ModelSpec.layers([
            .residual(layers: [.conv2d(out: 4, kernel: 3, stride: 2, padding: 1, bias: false), .batchnorm2d(eps: 1e-3, momentum: 0.01)], shortcut: "projection"),
            .globalavgpool2d, .linear(out: nil)]).build(inputShape: [2, 4, 4], classes: 3)
        XCTAssertTrue(tuned.pytorchModule.contains("nn.Sequential(nn.Conv2d(2, 4, kernel_size=1, stride=2, padding=0, bias=False), nn.BatchNorm2d(4, eps=0.001, momentum=0.01))"),
                      tuned.pytorchModule)
        XCTAssertThrowsError(try ModelSpec.layers([.residual(layers: [.conv2d(out: 4, kernel: 3, stride: 1, padding: 1)], shortcut: "identity"),
                                                   .flatten, .linear(out: nil)]).build(inputShape: [2, 4, 4], classes: 3)) { error in
            XCTAssertTrue("\(error)".contains("use shortcut: projection"), "\(error)")
        }
    }
}
