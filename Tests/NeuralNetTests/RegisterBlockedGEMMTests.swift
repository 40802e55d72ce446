import NeuralNet
import XCTest

/// The convolutions' own products (`RegisterBlockedGEMM`) against their definitions, on every
/// split of m and n into its register blocks (4 rows and 1; 24, 8, 4 and 1 columns; 2 × 4
/// dot products and the single ones left over), with leading dimensions wider than the
/// matrices and a guard row after C that nothing may write.
final class RegisterBlockedGEMMTests: XCTestCase {
    private func random(_ count: Int, seed: UInt64) -> [Float] {
        var g = SeededGenerator(seed: seed)
        return (0 ..< count).map { _ in g.uniform(-1, 1) }
    }

    /// Property: every value of C = A·B and of C = Aᵀ·B is, bit for bit, the sum that starts at 0
    /// and adds A(i, k)·B[k][j] for k in order, each as one fused multiply-add — whichever block
    /// computed it — and C's columns beyond n (inside ldc) and the row after C are left as they
    /// were; k = 0 gives zeros.
    func testMultiplyIsTheFusedSumInOrderForEveryBlockSplit() {
        for (m, n, k) in [(1, 1, 1), (4, 24, 3), (5, 53, 7), (3, 29, 16), (9, 37, 2), (8, 4, 1), (7, 61, 33), (16, 196, 16), (3, 29, 0)] {
            for transposeA in [false, true] {
                let lda = (transposeA ? m : k) + 3, ldb = n + 5, ldc = n + 2
                let a = random(max(1, (transposeA ? k : m) * lda), seed: 1), b = random(max(1, k * ldb), seed: 2)
                var c = [Float](repeating: 7, count: (m + 1) * ldc)
                RegisterBlockedGEMM.multiply(m: m, n: n, k: k, a: a, lda: lda, transposeA: transposeA, b: b, ldb: ldb, c: &c, ldc: ldc)
                for i in 0 ... m {
                    for j in 0 ..< ldc {
                        var want: Float = 7
                        if i < m && j < n {
                            want = 0
                            for t in 0 ..< k { want.addProduct(transposeA ? a[t * lda + i] : a[i * lda + t], b[t * ldb + j]) }
                        }
                        XCTAssertEqual(c[i * ldc + j].bitPattern, want.bitPattern,
                                       "C[\(i)][\(j)] of \(m)×\(n)×\(k), transposeA \(transposeA)")
                    }
                }
            }
        }
    }

    /// Property: every value of C = A·Bᵀ is, bit for bit, the sum its doc comment states — eight
    /// chains of fused multiply-adds over k ≡ lane (mod 8), summed across the lanes as
    /// `SIMD8.sum()` sums, then the last k mod 8 terms by fused multiply-adds in order — and
    /// C += A·Bᵀ adds that sum to C's value; whichever block (2 × 4 or single) computed it, with
    /// m and n on and off the blocks and k below, at and between multiples of 8 (and 0). Columns
    /// beyond n and the row after C are left as they were. The values also equal the dot
    /// products computed in Double, to float rounding.
    func testMultiplyTransposedBIsItsStatedSumForEveryBlockSplit() {
        for (m, n, k) in [(1, 1, 1), (2, 4, 8), (3, 5, 13), (16, 16, 196), (7, 9, 3), (6, 17, 40), (32, 144, 9), (3, 6, 0)] {
            for accumulate in [false, true] {
                let lda = k + 1, ldb = k + 6, ldc = n + 3
                let a = random(m * lda, seed: 3), b = random(n * ldb, seed: 4), start = random((m + 1) * ldc, seed: 5)
                var c = start
                RegisterBlockedGEMM.multiplyTransposedB(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: &c, ldc: ldc,
                                                       accumulate: accumulate)
                for i in 0 ... m {
                    for j in 0 ..< ldc {
                        let index = i * ldc + j
                        guard i < m && j < n else {
                            XCTAssertEqual(c[index].bitPattern, start[index].bitPattern, "C[\(i)][\(j)] outside C was written")
                            continue
                        }
                        var lanes = SIMD8<Float>(), t = 0
                        while t + 8 <= k {
                            for lane in 0 ..< 8 { lanes[lane].addProduct(a[i * lda + t + lane], b[j * ldb + t + lane]) }
                            t += 8
                        }
                        var sum = lanes.sum()
                        while t < k { sum.addProduct(a[i * lda + t], b[j * ldb + t]); t += 1 }
                        let want = accumulate ? start[index] + sum : sum
                        XCTAssertEqual(c[index].bitPattern, want.bitPattern, "C[\(i)][\(j)] of \(m)×\(n)×\(k), accumulate \(accumulate)")
                        var exact = accumulate ? Double(start[index]) : 0
                        for t in 0 ..< k { exact += Double(a[i * lda + t]) * Double(b[j * ldb + t]) }
                        XCTAssertEqual(Double(c[index]), exact, accuracy: 1e-5 * max(1, Double(k).squareRoot()),
                                       "C[\(i)][\(j)] of \(m)×\(n)×\(k) against Double")
                    }
                }
            }
        }
    }

    /// Property: the convolutions compute the same function whether their products are ours or
    /// OpenBLAS's (`ConvolutionProducts.useRegisterBlocks`, which the CPU otherwise decides):
    /// loss and every gradient within float rounding (1e-4 of the scale), through Winograd
    /// F(4×4) and F(2×2), im2col at stride 2 (3×3, and the 1×1 projection) and stride 1, with
    /// weight gradients whose B has at most 16 rows (ours) and more (OpenBLAS's), over a batch of
    /// several chunks.
    func testConvolutionsGiveTheSameFunctionWithEitherProducts() throws {
        let saved = ConvolutionProducts.useRegisterBlocks
        defer { ConvolutionProducts.useRegisterBlocks = saved }
        func model() throws -> Sequential {
            try Sequential([Conv2d(3, 12, kernel: 3, padding: 1, algorithm: .im2col), ReLU(),
                            Conv2d(12, 12, kernel: 3, padding: 1, bias: false), ReLU(),
                            Conv2d(12, 10, kernel: 3, padding: 1, algorithm: .winograd), ReLU(),
                            Conv2d(10, 20, kernel: 3, stride: 2, padding: 1), ReLU(),
                            Conv2d(20, 24, kernel: 1, stride: 2), ReLU(),
                            Flatten(), Linear(24 * 4 * 4, 5)], inputShape: [3, 13, 14])
        }
        var g = SeededGenerator(seed: 21)
        let batch = 40
        let x = (0 ..< batch * 3 * 13 * 14).map { _ in g.uniform(-1, 1) }, y = (0 ..< batch).map { _ in Int32(g.next() % 5) }
        var results: [(loss: Double, gradients: [Float], algorithms: [Conv2d.Algorithm])] = []
        for ours in [true, false] {
            ConvolutionProducts.useRegisterBlocks = ours
            let m = try model()
            m.initialize(seed: 22)
            let loss = try x.withUnsafeBufferPointer { xs in try y.withUnsafeBufferPointer { try m.computeGradients(input: xs, labels: $0, batch: batch).loss } }
            results.append((loss, Array(m.parameters.gradients), m.layers.compactMap { ($0 as? Conv2d)?.algorithm }))
        }
        XCTAssertEqual(results[0].algorithms, [.im2col, .winograd4x4, .winograd, .im2col, .im2col])
        XCTAssertEqual(results[0].loss, results[1].loss, accuracy: 1e-4 * max(1, abs(results[1].loss)))
        let scale = results[1].gradients.map(abs).max()!
        let worst = zip(results[0].gradients, results[1].gradients).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "gradients with our products against OpenBLAS's")
        XCTAssertNotEqual(results[0].gradients.map(\.bitPattern), results[1].gradients.map(\.bitPattern),
                          "the two settings ran the same code: the switch did nothing")
    }
}
