import NeuralNet
import XCTest

/// Finite-difference checks: for a sample of parameters θ_i, the analytic gradient equals
/// (L(θ + εe_i) − L(θ − εe_i)) / 2ε. Every layer's backward is exercised because the check
/// covers the parameters *before* it (their gradient flows through its input gradient).
extension XCTestCase {
    /// `tokens`: the input is token ids below `model.classes` (a language model), not uniform
    /// values. `uniform`: every parameter is redrawn in ±uniform after the model's own
    /// initialisation — a GPT's N(0, 0.02) leaves gradients too small for a finite difference
    /// to tell a wrong one from a right one. `absolute`: the absolute part of the tolerance.
    /// Every view must have at least one sampled gradient of more than 4× `absolute` (errors of
    /// about a quarter then fail): a view whose sampled gradients are all below the tolerance
    /// would pass whatever its backward gave — but for the views in `vanishing`, whose gradient
    /// is zero by construction (a bias before a batch norm), which are checked to be ≈ 0.
    func checkGradients(_ model: Model, batch: Int, samples: Int = 60, seed: UInt64 = 3, epsilon: Float = 3e-3,
                        tokens: Bool = false, uniform: Float? = nil, absolute: Double = 5e-4, trainingLoss: Bool = false,
                        vanishing: Set<String> = [], label: String = "",
                        file: StaticString = #filePath, line: UInt = #line) throws {
        model.initialize(seed: seed)
        var generator = SeededGenerator(seed: seed + 1)
        if let uniform { for i in model.parameters.parameters.indices { model.parameters.parameters[i] = generator.uniform(-uniform, uniform) } }
        let input = (0 ..< batch * model.inputSize).map { _ in
            tokens ? Float(generator.next() % UInt64(model.classes)) : generator.uniform(-1, 1)
        }
        let labels = (0 ..< batch * model.labelsPerSample).map { _ in Int32(generator.next() % UInt64(model.classes)) }
        // `trainingLoss`: the loss of a training pass (a batch norm normalises with the batch's
        // statistics there, with the running ones in evaluation).
        func loss() throws -> Double {
            try input.withUnsafeBufferPointer { x in
                try labels.withUnsafeBufferPointer { y in
                    trainingLoss ? try model.computeGradients(input: x, labels: y, batch: batch).loss
                                 : try model.evaluate(input: x, labels: y, batch: batch).loss
                }
            }
        }
        try input.withUnsafeBufferPointer { x in
            try labels.withUnsafeBufferPointer { y in _ = try model.computeGradients(input: x, labels: y, batch: batch) }
        }
        let analytic = Array(model.parameters.gradients)
        let p = model.parameters.parameters
        for view in model.parameters.views {
            var largest = 0.0
            for _ in 0 ..< max(1, samples / model.parameters.views.count) {
                let i = view.offset + Int(generator.next() % UInt64(view.count))
                let saved = p[i], eps = epsilon
                p[i] = saved + eps
                let plus = try loss()
                p[i] = saved - eps
                let minus = try loss()
                p[i] = saved
                let numeric = (plus - minus) / Double(2 * eps)
                let error = abs(numeric - Double(analytic[i]))
                XCTAssertLessThanOrEqual(error, absolute + 2e-2 * abs(numeric),
                                         "\(label)\(view.name)[\(i - view.offset)]: analytic \(analytic[i]), numeric \(numeric)",
                                         file: file, line: line)
                largest = max(largest, abs(numeric))
            }
            if vanishing.contains(view.name) {
                XCTAssertLessThanOrEqual(largest, absolute, "\(label)\(view.name) is named as zero by construction: \(largest)", file: file, line: line)
                continue
            }
            XCTAssertGreaterThan(largest, 4 * absolute, "\(label)\(view.name): every sampled gradient is below 4× the tolerance \(absolute): the check could not fail",
                                 file: file, line: line)
        }
    }
}

final class GradientCheckTests: XCTestCase {
    func testLinearAndReLU() throws {
        try checkGradients(Sequential([Flatten(), Linear(12, 7), ReLU(), Linear(7, 5), ReLU(), Linear(5, 3)],
                                      inputShape: [12]), batch: 4)
    }

    func testConv2dStride1Padding1() throws {
        try checkGradients(Sequential([Conv2d(2, 3, kernel: 3, padding: 1), ReLU(), Conv2d(3, 2, kernel: 3, padding: 1),
                                       Flatten(), Linear(2 * 5 * 6, 4)], inputShape: [2, 5, 6]), batch: 3,
                           epsilon: 1e-3)   // a ReLU between: a wider step crosses its kinks
    }

    func testConv2dWinograd() throws {
        try checkGradients(Sequential([Conv2d(2, 3, kernel: 3, padding: 1, algorithm: .winograd), ReLU(),
                                       Conv2d(3, 2, kernel: 3, padding: 1, algorithm: .winograd), Flatten(), Linear(2 * 5 * 6, 4)],
                                      inputShape: [2, 5, 6]), batch: 3, epsilon: 1e-3)
    }

    func testConv2dStride2NoPadding() throws {
        try checkGradients(Sequential([Conv2d(1, 2, kernel: 3), Conv2d(2, 3, kernel: 2, stride: 2, padding: 1),
                                       Flatten(), Linear(3 * 3 * 3, 3)], inputShape: [1, 7, 6]), batch: 2)
    }

    func testMaxPool2d() throws {
        try checkGradients(Sequential([Conv2d(1, 2, kernel: 3, padding: 1), MaxPool2d(2), Conv2d(2, 2, kernel: 3, padding: 1),
                                       MaxPool2d(2), Flatten(), Linear(2 * 2 * 2, 3)], inputShape: [1, 8, 9]), batch: 3,
                           epsilon: 1e-3)   // small ε: a larger step can change which input wins a window
    }

    /// MaxPool2d's general path (kernel 3, stride 3, a remainder left in each direction), which
    /// the 2 × 2 test does not reach.
    func testMaxPool2dKernel3() throws {
        try checkGradients(Sequential([Conv2d(1, 2, kernel: 3, padding: 1), MaxPool2d(3), Flatten(), Linear(2 * 2 * 2, 3)],
                                      inputShape: [1, 7, 8]), batch: 3, epsilon: 1e-3, uniform: 0.8)
    }

    /// Property: dropout keeps each value with probability 1 − p and scales it by 1/(1 − p)
    /// (PyTorch's `nn.Dropout`), and backward multiplies by the same mask — at p = 0.2, where
    /// keeping with probability p, or scaling by 1/p, would show (at p = 0.5 they would not).
    func testDropoutKeepsOneMinusPAndScalesByItsInverse() throws {
        let count = 100_000, dropout = Dropout(probability: 0.2, seed: 5)
        _ = try dropout.outputShape(for: [count])
        dropout.reserve(batch: 1)
        let ones = [Float](repeating: 1, count: count), dy = (0 ..< count).map { Float($0 % 7) - 3 }
        let y = ones.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: dropout.forward($0.baseAddress!, batch: 1, training: true), count: count)) }
        XCTAssertTrue(y.allSatisfy { $0 == 0 || $0 == 1.25 }, "every value dropped or scaled by 1/(1 − p)")
        let dropped = Double(y.filter { $0 == 0 }.count) / Double(count)
        XCTAssertEqual(dropped, 0.2, accuracy: 0.005, "the share dropped is p")
        let dx = dy.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: dropout.backward($0.baseAddress!, batch: 1, needsInputGradient: true)!, count: count)) }
        XCTAssertEqual(dx, zip(dy, y).map(*), "dx = dy · mask")
    }

    func testDropoutInTrainingUsesTheSameMaskForForwardAndBackward() throws {
        // With p = 0.5 the finite difference must use the same mask: evaluate() turns dropout
        // off, so instead check that gradients of dropped units are exactly zero and that
        // evaluation is the identity (inverted dropout).
        let dropout = Dropout(probability: 0.5, seed: 9)
        let model = try Sequential([Flatten(), Linear(6, 8), dropout, Linear(8, 3)], inputShape: [6])
        model.initialize(seed: 1)
        let x: [Float] = (0 ..< 12).map { Float($0) / 6 - 1 }, y: [Int32] = [0, 2]
        _ = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try model.computeGradients(input: xs, labels: $0, batch: 2) } }
        let g = model.parameters.gradients(of: model.parameters.views[2])   // 3.weight [3, 8]: the forward's mask
        let g1 = model.parameters.gradients(of: model.parameters.views[0])  // 1.weight [8, 6]: backward's mask
        // A unit dropped for both samples has a zero column in the next layer's weight gradient
        // (its output was zero) and, if backward applies the same mask, a zero row in the layer
        // before's (no gradient passed through it); a unit kept for either has neither.
        let dropped = (0 ..< 8).filter { unit in (0 ..< 3).allSatisfy { g[$0 * 8 + unit] == 0 } }
        XCTAssertGreaterThan(dropped.count, 0, "some units must have been dropped for both samples")
        XCTAssertLessThan(dropped.count, 8, "some units must have been kept")
        for unit in 0 ..< 8 {
            let rowIsZero = (0 ..< 6).allSatisfy { g1[unit * 6 + $0] == 0 }
            XCTAssertEqual(rowIsZero, dropped.contains(unit), "unit \(unit): backward's mask must be forward's")
        }
        // Evaluation is the identity (inverted dropout scales in training instead).
        let values: [Float] = (0 ..< 16).map { Float($0) - 7.5 }
        let out = values.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: dropout.forward($0.baseAddress!, batch: 2, training: false), count: 16)) }
        XCTAssertEqual(out, values)
    }

    func testWholeMLP() throws {
        try checkGradients(ModelSpec.mlp(hidden: [32, 16], dropout: 0).build(inputShape: [1, 6, 6], classes: 10), batch: 5)
    }

    func testWholeCNN() throws {
        // The configured cnn at its real shape (28×28, 3136 → 128): the gradient of every view.
        try checkGradients(ModelSpec.cnn.build(inputShape: [1, 28, 28], classes: 10), batch: 2, samples: 40)
    }
}

final class LossAndShapeTests: XCTestCase {
    func testCrossEntropyMatchesHandComputedValues() throws {
        // logits [0, ln 2, ln 3] → softmax [1/6, 2/6, 3/6]; label 2 → loss ln 2; argmax 2 → correct.
        // logits [1000, 0, -1000] (overflow if computed naively), label 1 → loss 1000; wrong.
        let ce = SoftmaxCrossEntropy(classes: 3)
        let logits: [Float] = [0, Float(0.6931471805599453), Float(1.0986122886681098), 1000, 0, -1000]
        let labels: [Int32] = [2, 1]
        let result = try logits.withUnsafeBufferPointer { z in
            try labels.withUnsafeBufferPointer { try ce.evaluate(logits: z.baseAddress!, labels: $0.baseAddress!, batch: 2, gradient: true) }
        }
        XCTAssertEqual(result.loss, (0.6931471805599453 + 1000) / 2, accuracy: 1e-4)
        XCTAssertEqual(result.correct, 1)
        let g = ce.lastGradient
        XCTAssertEqual(g[0], 1.0 / 6 / 2, accuracy: 1e-6)
        XCTAssertEqual(g[2], (0.5 - 1) / 2, accuracy: 1e-6)
        XCTAssertEqual(g[4], -0.5, accuracy: 1e-6)      // softmax ≈ [1, 0, 0], label 1
    }

    /// Property: large logits lose no precision — two equal logits of 1e5 give ln 2 and a
    /// gradient of ±½ whose row sums to 0 (adding the max back before subtracting rounded the
    /// log-sum-exp to 1e5's spacing: 0.6953 and ±0.501).
    func testCrossEntropyOfLargeLogitsIsExact() throws {
        let ce = SoftmaxCrossEntropy(classes: 2)
        let logits: [Float] = [1e5, 1e5], labels: [Int32] = [0]
        let result = try logits.withUnsafeBufferPointer { z in
            try labels.withUnsafeBufferPointer { try ce.evaluate(logits: z.baseAddress!, labels: $0.baseAddress!, batch: 1, gradient: true) }
        }
        XCTAssertEqual(result.loss, 0.6931471805599453, accuracy: 1e-6)
        XCTAssertEqual(ce.lastGradient[0], -0.5, accuracy: 1e-6)
        XCTAssertEqual(ce.lastGradient[1], 0.5, accuracy: 1e-6)
    }

    func testWrongInputShapeIsAClearError() throws {
        let model = try ModelSpec.mlp(hidden: [8], dropout: 0).build(inputShape: [1, 28, 28], classes: 10)
        let x = [Float](repeating: 0, count: 700)
        XCTAssertThrowsError(try x.withUnsafeBufferPointer { try model.forward($0, batch: 1, training: false) }) { error in
            XCTAssertTrue("\(error)".contains("expected batch 1 × [1, 28, 28] = 784"), "\(error)")
        }
        XCTAssertThrowsError(try Sequential([Conv2d(3, 4, kernel: 3)], inputShape: [1, 8, 8])) { error in
            XCTAssertTrue("\(error)".contains("expects input [3, H, W]"), "\(error)")
        }
    }

    func testParameterLayoutFollowsPyTorchStateDictOrder() throws {
        let model = try ModelSpec.cnn.build(inputShape: [1, 28, 28], classes: 10)
        XCTAssertEqual(model.parameters.views.map(\.name),
                       ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias"])
        XCTAssertEqual(model.parameters.views.map(\.count), [288, 32, 18432, 64, 401408, 128, 1280, 10])
        for (a, b) in zip(model.parameters.views, model.parameters.views.dropFirst()) {
            XCTAssertGreaterThanOrEqual(b.offset, a.offset + a.count, "views must not overlap")
        }
    }

    func testInitialisationIsPyTorchsBoundAndDeterministic() throws {
        let a = try ModelSpec.mlp(hidden: [512, 256], dropout: 0).build(inputShape: [1, 28, 28], classes: 10)
        let b = try ModelSpec.mlp(hidden: [512, 256], dropout: 0).build(inputShape: [1, 28, 28], classes: 10)
        a.initialize(seed: 5); b.initialize(seed: 5)
        XCTAssertEqual(Array(a.parameters.parameters), Array(b.parameters.parameters))
        let w = a.parameters.parameters(of: a.parameters.views[0])
        let bound = 1 / Float(784).squareRoot()
        XCTAssertLessThanOrEqual(w.map(abs).max()!, bound)
        XCTAssertGreaterThan(w.map(abs).max()!, 0.99 * bound)   // uses the whole range
    }
}

final class MaxPoolTieTests: XCTestCase {
    /// Property: ties go to the first maximum in row-major order (PyTorch's CPU kernel), and
    /// backward routes the whole gradient there and nowhere else.
    func testTiesGoToTheFirstMaximumInRowMajorOrder() throws {
        let pool = MaxPool2d(2)
        _ = try pool.outputShape(for: [1, 2, 6])
        pool.reserve(batch: 1)
        // Windows: all equal → 0; [0 2 / 2 0] → 1; [0 0 / 3 3] → 2.
        let x: [Float] = [1, 1, 0, 2, 0, 0,
                          1, 1, 2, 0, 3, 3]
        let y = x.withUnsafeBufferPointer { pool.forward($0.baseAddress!, batch: 1, training: true) }
        XCTAssertEqual([y[0], y[1], y[2]], [1, 2, 3])
        let dy: [Float] = [10, 20, 30]
        let dx = dy.withUnsafeBufferPointer { pool.backward($0.baseAddress!, batch: 1, needsInputGradient: true)! }
        XCTAssertEqual(Array(UnsafeBufferPointer(start: dx, count: 12)),
                       [10, 0, 0, 20, 0, 0,
                        0, 0, 0, 0, 30, 0])
    }
}

extension MaxPoolTieTests {
    /// Property: a NaN wins its window, as in PyTorch's kernel (`val > maxval || isnan(val)`,
    /// the last NaN in row-major order), on the 2×2 path and the general one (kernel 3): a
    /// finite max does not hide it, and backward routes the gradient to it.
    func testANaNWinsItsWindow() throws {
        for (kernel, width) in [(2, 4), (3, 6)] {
            let pool = MaxPool2d(kernel)
            _ = try pool.outputShape(for: [1, kernel, width])
            pool.reserve(batch: 1)
            // Window 0: a NaN after a larger finite value; window 1: two NaNs, the later one wins.
            var x = [Float](repeating: 0, count: kernel * width)
            x[0] = 5; x[1] = .nan
            x[kernel] = .nan; x[(kernel - 1) * width + kernel] = .nan
            let y = x.withUnsafeBufferPointer { pool.forward($0.baseAddress!, batch: 1, training: true) }
            XCTAssertTrue(y[0].isNaN && y[1].isNaN, "kernel \(kernel): \(y[0]), \(y[1])")
            let dy: [Float] = [10, 20]
            let dx = dy.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: pool.backward($0.baseAddress!, batch: 1, needsInputGradient: true)!, count: kernel * width)) }
            XCTAssertEqual(dx[1], 10, "kernel \(kernel)")
            XCTAssertEqual(dx[(kernel - 1) * width + kernel], 20, "kernel \(kernel): the last NaN")
            XCTAssertEqual(dx.reduce(0, +), 30)
        }
    }
}

final class PoolReLUOrderTests: XCTestCase {
    /// Property: Conv → MaxPool → ReLU computes exactly (bit for bit, values and every
    /// gradient) what the peer's Conv → ReLU → MaxPool does, negative windows included.
    func testPoolThenReLUEqualsReLUThenPoolBitForBit() throws {
        func model(_ poolFirst: Bool) throws -> Sequential {
            let activation: [Layer] = poolFirst ? [MaxPool2d(2), ReLU()] : [ReLU(), MaxPool2d(2)]
            return try Sequential([Conv2d(1, 4, kernel: 3, padding: 1)] + activation + [Flatten(), Linear(4 * 5 * 5, 3)],
                                  inputShape: [1, 10, 10])
        }
        let a = try model(true), b = try model(false)
        a.initialize(seed: 4); b.initialize(seed: 4)
        var g = SeededGenerator(seed: 8)
        let x = (0 ..< 6 * 100).map { _ in g.uniform(-2, 1) }   // mostly negative: many all-negative windows
        let y: [Int32] = [0, 1, 2, 0, 1, 2]
        let ra = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try a.computeGradients(input: xs, labels: $0, batch: 6) } }
        let rb = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try b.computeGradients(input: xs, labels: $0, batch: 6) } }
        XCTAssertEqual(ra.loss, rb.loss)
        XCTAssertEqual(Array(a.parameters.gradients).map(\.bitPattern), Array(b.parameters.gradients).map(\.bitPattern))
    }
}

final class WinogradTests: XCTestCase {
    /// Property: Winograd F(2×2, 3×3) and F(4×4, 3×3) compute the same convolution as im2col —
    /// output, loss, and every gradient (weights, bias, and the input gradient through the layer
    /// before) — up to float rounding (1e-5 of the scale for F(2×2), 1e-4 for F(4×4), whose
    /// matrices' entries reach 5 and 1/24), on even and odd image sizes (partial edge tiles;
    /// rows of 1 to 15 tiles, which the transforms' blocks overlap or spill past) and batches
    /// that do not fill the last chunk (28×28, batch 26: 5 × 5 + 1 images for F(2×2), 9 + 9 + 8
    /// for F(4×4)).
    func testWinogradMatchesIm2colOnEvenAndOddShapes() throws {
        for (channels, height, width, batch) in [(8, 14, 14, 5), (9, 7, 5, 3), (16, 1, 3, 2), (8, 4, 4, 67), (8, 9, 17, 2), (8, 6, 16, 3),
                                                 (8, 2, 1, 3), (8, 3, 8, 3), (8, 5, 11, 2), (8, 28, 28, 26), (8, 5, 24, 2), (8, 4, 32, 2),
                                                 (8, 6, 36, 2), (8, 3, 60, 2)] {
            func model(_ algorithm: Conv2d.Algorithm) throws -> Sequential {
                // 9 × 7 = 63 channel pairs: F(4×4)'s weight transform runs 7 blocks of 8 and 7 alone.
                try Sequential([Conv2d(channels, 9, kernel: 3, padding: 1, algorithm: .im2col),
                                Conv2d(9, 7, kernel: 3, padding: 1, algorithm: algorithm), ReLU(),
                                Flatten(), Linear(7 * height * width, 4)], inputShape: [channels, height, width])
            }
          for (algorithm, tolerance) in [(Conv2d.Algorithm.winograd, 1e-5), (.winograd4x4, 1e-4)] {
            let reference = try model(.im2col), winograd = try model(algorithm)
            XCTAssertEqual((winograd.layers[1] as! Conv2d).algorithm, algorithm)
            if height == 28 {   // the last chunk short: 5 × 5 + 1 images for F(2×2), 9 + 9 + 8 for F(4×4)
                XCTAssertEqual((winograd.layers[1] as! Conv2d).imagesPerChunk, algorithm == .winograd ? 5 : 9, "\(algorithm) at 28×28")
            }
            reference.initialize(seed: 11); winograd.initialize(seed: 11)
            var g = SeededGenerator(seed: 12)
            let x = (0 ..< batch * reference.inputSize).map { _ in g.uniform(-1, 1) }
            let y = (0 ..< batch).map { _ in Int32(g.next() % 4) }
            func run(_ m: Sequential) throws -> Double {
                try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try m.computeGradients(input: xs, labels: $0, batch: batch).loss } }
            }
            let lossR = try run(reference), lossW = try run(winograd)
            XCTAssertEqual(lossW, lossR, accuracy: tolerance * max(1, abs(lossR)), "\(algorithm): loss at \(channels)×\(height)×\(width)")
            for view in reference.parameters.views {
                let a = reference.parameters.gradients(of: view), b = winograd.parameters.gradients(of: view)
                let scale = max(a.map(abs).max()!, 1e-6)
                let worst = zip(a, b).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(worst, Float(tolerance) * scale, "\(algorithm): \(view.name) at \(channels)×\(height)×\(width), batch \(batch)")
            }
          }
        }
    }

    /// Property: the transforms' SIMD width changes no bit — lanes of 8, 4 and 1 tile give the
    /// same loss and gradients (the first conv's weight gradients carry the Winograd layer's input
    /// gradient), on rows of tiles shorter than (a block spills
    /// into the next row's tiles), equal to, and between multiples of the lane width (the last
    /// block of a row overlaps the one before), over several images and channels, with and
    /// without a bias.
    func testWinogradLaneWidthsGiveTheSameBits() throws {
        // Tiles per row n = ⌈width/2⌉ for F(2×2): 1 (a block spills over several rows and images; no
        // column pairs), 2, 3, 4 (exactly 4 lanes; 4 pairs), 5, 6, 7 (8 lanes spilling), 8, 9
        // (overlapping), 14 and 15; for F(4×4) n = ⌈width/4⌉: 1 to 8, 9 (36) and 15 (60). The 28×28
        // batch of 25 fills more than one chunk for both (6 and 11 images), the last one smaller.
        // F(4×4) pairs rows of 4 tiles in 8 lanes and rows of 2 in 4 (`PairedQuads`, `PairedPairs`)
        // when the rows of tiles pair up: 6×13 and 14×14 (2 and 4 rows of 4), 7×7, 8×8, 16×5 and
        // 5×7 (2, 2, 4 and 2 rows of 2); 9×15 and 4×5 (3 and 1 rows) keep the single-row blocks;
        // 14×14 at batch 75 and 7×7 at batch 281 span three chunks of F(4×4) (35 and 140 images).
        for (height, width, bias, batch) in [(3, 1, true, 3), (2, 2, false, 3), (5, 3, true, 3), (4, 5, false, 3), (7, 7, false, 3),
                                             (3, 8, true, 3), (4, 10, true, 3), (5, 11, false, 3), (6, 13, false, 3), (9, 15, true, 3),
                                             (6, 17, false, 3), (28, 28, false, 25), (3, 30, true, 3), (3, 24, false, 2),
                                             (2, 36, true, 2), (2, 60, false, 2), (14, 14, true, 5), (8, 8, false, 3), (16, 5, true, 3),
                                             (5, 7, false, 4), (14, 14, false, 75), (7, 7, true, 281)] {
          for algorithm in [Conv2d.Algorithm.winograd, .winograd4x4] {
            func model(lanes: Int) throws -> Sequential {
                try Sequential([Conv2d(2, 8, kernel: 3, padding: 1, algorithm: .im2col), ReLU(),
                                Conv2d(8, 5, kernel: 3, padding: 1, bias: bias, algorithm: algorithm, winogradLanes: lanes),
                                Flatten(), Linear(5 * height * width, 3)], inputShape: [2, height, width])
            }
            let models = try [8, 4, 1].map { try model(lanes: $0) }
            var g = SeededGenerator(seed: 7)
            let x = (0 ..< batch * 2 * height * width).map { _ in g.uniform(-1, 1) }, y = (0 ..< batch).map { Int32($0 % 3) }
            var results: [[UInt32]] = []
            for m in models {
                m.initialize(seed: 3)
                let loss = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try m.computeGradients(input: xs, labels: $0, batch: batch).loss } }
                results.append([UInt32(truncatingIfNeeded: loss.bitPattern)] + m.parameters.gradients.map(\.bitPattern))
            }
            // The three ran different transforms: 1 lane is scalar, the others SIMD blocks.
            let blocks = models.map { ($0.layers[2] as! Conv2d).winogradBlocks }
            XCTAssertEqual(blocks[2], "rows of 1 lane", "\(algorithm) at \(height)×\(width)")
            XCTAssertNotNil(blocks[0], "\(algorithm) at \(height)×\(width): 8 lanes ran Winograd")
            XCTAssertNotNil(blocks[1], "\(algorithm) at \(height)×\(width): 4 lanes ran Winograd")
            XCTAssertNotEqual(blocks[0], blocks[2], "\(algorithm) at \(height)×\(width)")
            XCTAssertNotEqual(blocks[1], blocks[2], "\(algorithm) at \(height)×\(width)")
            if algorithm == .winograd4x4 {
                // The blocks the comment above names: a change to the lane choice must not leave
                // the paired kernels untested while every other assertion holds.
                let shape = "\(height)×\(width)"
                let expected = ["6×13": "pairs of rows in 8 lanes", "14×14": "pairs of rows in 8 lanes", "7×7": "pairs of rows in 4 lanes",
                                "8×8": "pairs of rows in 4 lanes", "16×5": "pairs of rows in 4 lanes", "5×7": "pairs of rows in 4 lanes",
                                "9×15": "rows of 4 lanes", "4×5": "rows of 4 lanes"][shape]
                if let expected { XCTAssertEqual(blocks[0], expected, "F(4×4) at \(shape), 8 lanes at most") }
            }
            // The batches named as several chunks are several chunks (a new chunk size must not
            // make them single-chunk unnoticed).
            let chunk = (models[0].layers[2] as! Conv2d).imagesPerChunk
            if batch == 25 { XCTAssertLessThan(chunk, batch, "\(algorithm) at 28×28: more than one chunk") }
            if batch == 75 || batch == 281, algorithm == .winograd4x4 {
                XCTAssertEqual((batch + chunk - 1) / chunk, 3, "F(4×4) at \(height)×\(width), batch \(batch): three chunks of \(chunk)")
            }
            XCTAssertEqual(results[0], results[2], "\(algorithm): 8 lanes against 1 at \(height)×\(width), batch \(batch)")
            XCTAssertEqual(results[1], results[2], "\(algorithm): 4 lanes against 1 at \(height)×\(width), batch \(batch)")
          }
        }
    }

    func testAutomaticChoice() throws {
        let cnn = try ModelSpec.cnn.build(inputShape: [1, 28, 28], classes: 10)
        let convolutions = cnn.layers.compactMap { $0 as? Conv2d }
        XCTAssertEqual(convolutions.map(\.algorithm), [.im2col, .winograd4x4], "1 input channel: im2col; 32: Winograd F(4×4, 3×3)")
    }
}

/// A step's result may depend only on the parameters and that step's input: no layer may
/// carry activations, padding or scratch from one call to the next. (Winograd's padded input
/// plane once shared its buffer with the input-gradient accumulator, so every forward after a
/// backward read the previous gradient as padding, and a resumed cnn run diverged.)
final class StatelessStepTests: XCTestCase {
    func batch(_ model: Sequential, _ size: Int, seed: UInt64) -> ([Float], [Int32]) {
        var generator = SeededGenerator(seed: seed)
        return ((0 ..< size * model.inputSize).map { _ in generator.uniform(-1, 1) },
                (0 ..< size).map { _ in Int32(generator.next() % UInt64(model.classes)) })
    }

    /// One training step and one evaluation of `data`, as bit patterns: the loss, every
    /// parameter gradient and the evaluation logits.
    func step(_ model: Sequential, _ data: ([Float], [Int32])) throws -> (loss: UInt64, gradients: [UInt32], logits: [UInt32]) {
        let size = data.1.count
        let result = try data.0.withUnsafeBufferPointer { x in
            try data.1.withUnsafeBufferPointer { y in try model.computeGradients(input: x, labels: y, batch: size) }
        }
        let gradients = model.parameters.gradients.map(\.bitPattern)
        let logits = try data.0.withUnsafeBufferPointer { x in
            let output = try model.forward(x, batch: size, training: false)
            return (0 ..< size * model.classes).map { output[$0].bitPattern }
        }
        return (result.loss.bitPattern, gradients, logits)
    }

    /// Property: after steps on other batches (and an evaluation at another batch size), a model
    /// gives bit for bit what a freshly built model with the same parameters gives.
    func testEveryModelKindGivesTheSameResultFreshAndAfterEarlierSteps() throws {
        let specs: [(ModelSpec, [Int])] = [(.cnn, [1, 12, 8]), (.mlp(hidden: [16, 16], dropout: 0), [1, 6, 5]), (.linear, [1, 6, 5])]
        for (spec, shape) in specs {
            let used = try spec.build(inputShape: shape, classes: 4), fresh = try spec.build(inputShape: shape, classes: 4)
            used.initialize(seed: 5); fresh.initialize(seed: 5)
            used.reserve(batch: 9); fresh.reserve(batch: 9)
            for seed in UInt64(10) ..< 13 { _ = try step(used, batch(used, 9, seed: seed)) }
            _ = try step(used, batch(used, 3, seed: 20))
            let target = batch(used, 7, seed: 99)
            let a = try step(used, target), b = try step(fresh, target)
            XCTAssertEqual(a.loss, b.loss, "\(spec): loss")
            XCTAssertEqual(a.gradients, b.gradients, "\(spec): gradients")
            XCTAssertEqual(a.logits, b.logits, "\(spec): evaluation logits")
        }
    }

    /// The same property for Winograd alone, on an odd shape (partial edge tiles), with the
    /// input gradient asked for so the accumulator is exercised.
    func testWinogradConvolutionCarriesNoStateBetweenCalls() throws {
        func model() throws -> Sequential {
            try Sequential([Conv2d(2, 8, kernel: 3, padding: 1), ReLU(),
                            Conv2d(8, 3, kernel: 3, padding: 1, algorithm: .winograd), Flatten(), Linear(3 * 5 * 7, 4)],
                           inputShape: [2, 5, 7])
        }
        let used = try model(), fresh = try model()
        used.initialize(seed: 1); fresh.initialize(seed: 1)
        for seed in UInt64(0) ..< 3 { _ = try step(used, batch(used, 4, seed: seed)) }
        let target = batch(used, 4, seed: 42)
        XCTAssertEqual(try step(used, target).gradients, try step(fresh, target).gradients)
    }

    /// Dropout masks are a function of (seed, rank, layer, step): reproducible, and different
    /// for two layers of the same width, for two ranks and for two steps.
    func testDropoutLayersDrawIndependentReproducibleMasks() throws {
        let model = try ModelSpec.mlp(hidden: [32, 32], dropout: 0.5).build(inputShape: [1, 4, 4], classes: 3)
        let dropouts = model.layers.compactMap { $0 as? Dropout }
        XCTAssertEqual(dropouts.count, 2)
        model.reseedDropout(seed: 7, rank: 0, step: 3)
        let first = dropouts.map(\.generator)
        XCTAssertNotEqual(first[0], first[1], "two dropout layers must not share a mask stream")
        model.reseedDropout(seed: 7, rank: 0, step: 3)
        XCTAssertEqual(dropouts.map(\.generator), first, "same (seed, rank, step): same masks")
        model.reseedDropout(seed: 7, rank: 1, step: 3)
        XCTAssertNotEqual(dropouts[0].generator, first[0], "ranks draw different masks")
        model.reseedDropout(seed: 7, rank: 0, step: 4)
        XCTAssertNotEqual(dropouts[0].generator, first[0], "steps draw different masks")
    }
}
