import NeuralNet
import XCTest

/// Conv2d against the definition, computed directly in Double: y[n, o, i, j] = b[o] +
/// Σ_{c, p, q} w[o, c, p, q] · x[n, c, i·s − pad + p, j·s − pad + q] (zero outside the image),
/// and its input gradient, the adjoint: dx[n, c, h, w] = Σ over the outputs that read x[n, c, h, w].
final class ConvolutionTests: XCTestCase {
    /// Property: im2col's forward output, weight and bias gradients and input gradient equal the
    /// definition to float rounding, for strides 1, 2 (the even/odd-split path) and 3, kernels
    /// 1, 3 and 5, paddings 0, 1 and 2 (padding whole rows of the polyphase planes), on even
    /// and odd image sizes, with and without a bias.
    func testIm2colMatchesTheDefinition() throws {
        let cases: [(c: Int, o: Int, k: Int, s: Int, pad: Int, h: Int, w: Int, bias: Bool)] = [
            (3, 4, 3, 2, 1, 7, 7, true), (3, 4, 3, 2, 1, 8, 6, false), (2, 5, 1, 2, 0, 9, 10, false), (2, 3, 3, 2, 0, 9, 11, true),
            (2, 3, 3, 1, 1, 5, 6, true), (2, 3, 3, 1, 2, 5, 9, false), (2, 2, 3, 3, 1, 10, 8, true), (1, 2, 3, 2, 1, 1, 2, true),
            (2, 3, 5, 2, 2, 9, 8, false), (2, 2, 5, 3, 2, 11, 7, false),
            // Rows of 14 and 8 column pairs: the split's SIMD blocks, the last one overlapping.
            (3, 4, 3, 2, 1, 5, 28, false), (2, 3, 1, 2, 0, 4, 17, true),
            // Kernel 1 with padding, on a plane one column wide.
            (2, 3, 1, 2, 1, 5, 1, true)]
        for t in cases {
            let conv = Conv2d(t.c, t.o, kernel: t.k, stride: t.s, padding: t.pad, bias: t.bias, algorithm: .im2col)
            let model = try Sequential([conv, Flatten(), Linear(try conv.outputShape(for: [t.c, t.h, t.w]).reduce(1, *), 2)],
                                       inputShape: [t.c, t.h, t.w])
            model.initialize(seed: 2)
            let (oh, ow) = ((t.h + 2 * t.pad - t.k) / t.s + 1, (t.w + 2 * t.pad - t.k) / t.s + 1)
            let batch = 2
            var g = SeededGenerator(seed: 4)
            let x = (0 ..< batch * t.c * t.h * t.w).map { _ in g.uniform(-1, 1) }
            let dy = (0 ..< batch * t.o * oh * ow).map { _ in g.uniform(-1, 1) }
            model.reserve(batch: batch)
            // A forward of another input first: what it leaves in the layer's buffers (the
            // polyphase planes' padding is written once, never again) must not reach the next.
            let other = x.map { $0 * -2 + 1 }
            _ = other.withUnsafeBufferPointer { conv.forward($0.baseAddress!, batch: batch, training: true) }
            let y = x.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: conv.forward($0.baseAddress!, batch: batch, training: true), count: dy.count)) }
            // A backward with another dy first: every gradient buffer then holds stale values, so a
            // pass that adds to what it should overwrite (stride 2's col2im merge skips zeroing the
            // input gradient) cannot pass for right.
            let stale = dy.map { $0 * -3 + 1 }
            _ = stale.withUnsafeBufferPointer { conv.backward($0.baseAddress!, batch: batch, needsInputGradient: true) }
            let dx = dy.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: conv.backward($0.baseAddress!, batch: batch, needsInputGradient: true)!, count: x.count)) }
            let views = model.parameters.views
            let w = Array(model.parameters.parameters(of: views[0]))
            let b = t.bias ? Array(model.parameters.parameters(of: views[1])) : [Float](repeating: 0, count: t.o)
            let dw = Array(model.parameters.gradients(of: views[0]))
            let db = t.bias ? Array(model.parameters.gradients(of: views[1])) : []
            var yRef = [Double](repeating: 0, count: y.count), dxRef = [Double](repeating: 0, count: x.count)
            var dwRef = [Double](repeating: 0, count: w.count), dbRef = [Double](repeating: 0, count: b.count)
            for n in 0 ..< batch {
                for o in 0 ..< t.o {
                    for i in 0 ..< oh {
                        for j in 0 ..< ow {
                            let out = ((n * t.o + o) * oh + i) * ow + j
                            var sum = Double(b[o])
                            dbRef[o] += Double(dy[out])
                            for c in 0 ..< t.c {
                                for p in 0 ..< t.k {
                                    for q in 0 ..< t.k {
                                        let r = i * t.s - t.pad + p, s = j * t.s - t.pad + q
                                        guard r >= 0, r < t.h, s >= 0, s < t.w else { continue }
                                        let input = ((n * t.c + c) * t.h + r) * t.w + s, weight = ((o * t.c + c) * t.k + p) * t.k + q
                                        sum += Double(w[weight]) * Double(x[input])
                                        dxRef[input] += Double(w[weight]) * Double(dy[out])
                                        dwRef[weight] += Double(x[input]) * Double(dy[out])
                                    }
                                }
                            }
                            yRef[out] = sum
                        }
                    }
                }
            }
            let shape = "\(t.c)→\(t.o), k \(t.k), stride \(t.s), pad \(t.pad), \(t.h)×\(t.w), bias \(t.bias)"
            for (name, got, want) in [("output", y, yRef), ("input gradient", dx, dxRef), ("weight gradient", dw, dwRef),
                                      ("bias gradient", db, t.bias ? dbRef : [])] {
                let worst = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
                XCTAssertLessThanOrEqual(worst, 1e-5 * max(1, want.map(abs).max() ?? 0), "\(name), \(shape)")
            }
        }
    }

    /// Property: backward(dy, addingTo: a) — a residual block's sum of its paths, made as each
    /// input-gradient plane is — gives, bit for bit, the input gradient plus a, and the same
    /// weight gradient, for Winograd F(4×4) and F(2×2) and for im2col at strides 1 and 2 — and
    /// over batches of two or more chunks (the addend's planes must follow the batch's).
    func testBackwardAddingToEqualsTheSumBitForBit() throws {
        let cases: [(conv: Conv2d, c: Int, h: Int, w: Int, batch: Int)] = [
            (Conv2d(8, 8, kernel: 3, padding: 1, bias: false), 8, 10, 9, 3),
            (Conv2d(8, 5, kernel: 3, padding: 1, algorithm: .winograd), 8, 7, 12, 3),
            (Conv2d(3, 4, kernel: 3, stride: 2, padding: 1, bias: false), 3, 9, 10, 3),
            (Conv2d(8, 4, kernel: 1, stride: 2, bias: false), 8, 8, 7, 3),
            (Conv2d(2, 3, kernel: 3, padding: 1), 2, 6, 5, 3),
            // Several chunks: Winograd F(4×4) takes 4 images of 16×28×28 a chunk, im2col 4 of 3×64×64.
            (Conv2d(16, 16, kernel: 3, padding: 1, bias: false), 16, 28, 28, 10),
            (Conv2d(3, 4, kernel: 3, stride: 2, padding: 1, bias: false), 3, 64, 64, 5)]
        for t in cases {
            let conv = t.conv, batch = t.batch
            let outputShape = try conv.outputShape(for: [t.c, t.h, t.w])
            let model = try Sequential([conv, Flatten(), Linear(outputShape.reduce(1, *), 2)], inputShape: [t.c, t.h, t.w])
            model.initialize(seed: 5)
            model.reserve(batch: batch)
            var g = SeededGenerator(seed: 6)
            let x = (0 ..< batch * t.c * t.h * t.w).map { _ in g.uniform(-1, 1) }
            let dy = (0 ..< batch * outputShape.reduce(1, *)).map { _ in g.uniform(-1, 1) }
            let addend = (0 ..< x.count).map { _ in g.uniform(-1, 1) }
            _ = x.withUnsafeBufferPointer { conv.forward($0.baseAddress!, batch: batch, training: true) }
            let view = model.parameters.views[0]
            let dx = dy.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: conv.backward($0.baseAddress!, batch: batch, needsInputGradient: true)!, count: x.count)) }
            let dw = Array(model.parameters.gradients(of: view))
            let summed = dy.withUnsafeBufferPointer { d in
                addend.withUnsafeBufferPointer { a in Array(UnsafeBufferPointer(start: conv.backward(d.baseAddress!, batch: batch, addingTo: a.baseAddress!), count: x.count)) }
            }
            XCTAssertEqual(summed.map(\.bitPattern), zip(dx, addend).map { ($0 + $1).bitPattern }, "\(conv.summary), \(conv.algorithm), batch \(batch)")
            XCTAssertEqual(Array(model.parameters.gradients(of: view)).map(\.bitPattern), dw.map(\.bitPattern), "\(conv.summary)")
        }
    }
}
