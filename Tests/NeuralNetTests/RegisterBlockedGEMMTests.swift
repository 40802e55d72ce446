import NeuralNet
import XCTest

/// The convolutions' own products (`RegisterBlockedGEMM`) against their definitions, on every
/// split of m and n into its register blocks (4 rows and 1; 24, 8, 4 and 1 columns; 2 × 4
/// dot products and the single ones left over), with leading dimensions wider than the matrices.
final class RegisterBlockedGEMMTests: XCTestCase {
    private func random(_ count: Int, seed: UInt64) -> [Float] {
        var g = SeededGenerator(seed: seed)
        return (0 ..< count).map { _ in g.uniform(-1, 1) }
    }

    /// Property: every value of C = A·B and of C = Aᵀ·B is, bit for bit, the sum that starts at 0
    /// and adds A(i, k)·B[k][j] for k in order, each as one fused multiply-add — whichever block
    /// computed it — and C's columns beyond n (inside ldc) are left as they were.
    func testMultiplyIsTheFusedSumInOrderForEveryBlockSplit() {
        for (m, n, k) in [(1, 1, 1), (4, 24, 3), (5, 53, 7), (3, 29, 16), (9, 37, 2), (8, 4, 1), (7, 61, 33), (16, 196, 16)] {
            for transposeA in [false, true] {
                let lda = (transposeA ? m : k) + 3, ldb = n + 5, ldc = n + 2
                let a = random((transposeA ? k : m) * lda, seed: 1), b = random(k * ldb, seed: 2)
                var c = [Float](repeating: 7, count: m * ldc)
                RegisterBlockedGEMM.multiply(m: m, n: n, k: k, a: a, lda: lda, transposeA: transposeA, b: b, ldb: ldb, c: &c, ldc: ldc)
                for i in 0 ..< m {
                    for j in 0 ..< ldc {
                        var want: Float = 7
                        if j < n {
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

    /// Property: C = A·Bᵀ and C += A·Bᵀ equal the dot products computed in Double to float
    /// rounding, with m and n on and off the 2 × 4 blocks and k below, at and between multiples
    /// of 8; columns beyond n are left as they were.
    func testMultiplyTransposedBMatchesTheDotProducts() {
        for (m, n, k) in [(1, 1, 1), (2, 4, 8), (3, 5, 13), (16, 16, 196), (7, 9, 3), (6, 17, 40), (32, 144, 9)] {
            for accumulate in [false, true] {
                let lda = k + 1, ldb = k + 6, ldc = n + 3
                let a = random(m * lda, seed: 3), b = random(n * ldb, seed: 4), start = random(m * ldc, seed: 5)
                do {
                    var c = start
                    RegisterBlockedGEMM.multiplyTransposedB(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: &c, ldc: ldc,
                                                           accumulate: accumulate)
                    for i in 0 ..< m {
                        for j in 0 ..< ldc {
                            let index = i * ldc + j
                            guard j < n else {
                                XCTAssertEqual(c[index].bitPattern, start[index].bitPattern, "C[\(i)][\(j)] beyond n was written")
                                continue
                            }
                            var want = accumulate ? Double(start[index]) : 0
                            for t in 0 ..< k { want += Double(a[i * lda + t]) * Double(b[j * ldb + t]) }
                            XCTAssertEqual(Double(c[index]), want, accuracy: 1e-5 * max(1, Double(k).squareRoot()),
                                           "C[\(i)][\(j)] of \(m)×\(n)×\(k), accumulate \(accumulate)")
                        }
                    }
                }
            }
        }
    }
}
