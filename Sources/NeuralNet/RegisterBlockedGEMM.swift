/// C = A·B or Aᵀ·B (row-major, beta 0) for the thin products of the convolutions, computed
/// straight from A and B in register blocks: 4 rows × 24 columns of C in twelve 8-lane
/// accumulators, one row of B's strip loaded and each of A's four values broadcast per step of k.
///
/// Used where OpenBLAS runs AVX2 kernels (`ConvolutionProducts`). Why not OpenBLAS there: for
/// the Winograd products (`WinogradConvolution`: K = 16…64 channels, N = one chunk's few
/// hundred tiles, 36 products a chunk) OpenBLAS copies both operands into packed panels and,
/// for beta 0, zeroes C in a pass of its own before its kernel adds into it; at these sizes
/// those passes cost about as much as the arithmetic (`perf` of fashion-resnet at np 2 on an
/// AMD EPYC (Zen 3) with Zen kernels: `sgemm_beta` 5.5 %, the four copy routines 8.7 %, the
/// kernel 24 % of all cycles). Here B's strip (24 columns × K rows: 1.5–6 KB for the Winograd
/// products) and A's four rows stay in L1 while the block runs, and C is written once. A
/// standalone benchmark on that machine, fastest of 7 × 50 runs of 36 products each, ours
/// against OpenBLAS: 16×196×16 in 50 µs against 123, 32×112×32 110 against 169, 64×56×64 207
/// against 281; and im2col's shapes in fashion-resnet (K = 144 or 288, B's strip then 14–27 KB,
/// from L2): 32×784×144 3.5 ms against 4.2, 64×441×288 8.0 against 7.7 (even), Aᵀ·B of
/// 144×784×32 3.2 against 4.9 and 288×441×64 7.0 against 8.6.
///
/// Every value of C is the same sum whichever block computes it: starting from 0, A(i, k)·B[k][j]
/// added for k = 0, 1, … in order, each as one fused multiply-add (`addingProduct`), so the
/// result does not depend on N's split into chunks or on the block widths (tested against
/// that scalar loop, bit for bit).
public enum RegisterBlockedGEMM {
    /// C[i][j] = Σ_k A(i, k)·B[k][j] for i < m, j < n, where A(i, k) is `a[i·lda + k]`, or
    /// `a[k·lda + i]` when `transposeA` (C = Aᵀ·B for a stored A of k rows). B's rows are `ldb`
    /// apart, C's `ldc`; C's previous values are not read.
    public static func multiply(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, transposeA: Bool,
                                b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let rowStep = transposeA ? 1 : lda, kStep = transposeA ? lda : 1
        var j = 0
        while j + 24 <= n { columns(Strip24.self, j, m, k, a, rowStep, kStep, b, ldb, c, ldc); j += 24 }
        while j + 8 <= n { columns(SIMD8<Float>.self, j, m, k, a, rowStep, kStep, b, ldb, c, ldc); j += 8 }
        while j + 4 <= n { columns(SIMD4<Float>.self, j, m, k, a, rowStep, kStep, b, ldb, c, ldc); j += 4 }
        while j < n { columns(Float.self, j, m, k, a, rowStep, kStep, b, ldb, c, ldc); j += 1 }
    }

    /// C = A·Bᵀ, or C += A·Bᵀ when `accumulate`: C[i][j] (+)= Σ_k A[i][k]·B[j][k] for i < m, j < n,
    /// A's rows `lda` apart and B's `ldb` (the weight gradients: dU = dM·Vᵀ, dW = dY·colsᵀ).
    /// Each value is a dot product of two contiguous rows: 2 rows of A × 4 rows of B in eight
    /// 8-lane accumulators over k, then summed across the lanes, the last k mod 8 terms added
    /// one by one — for every value the same sum, whichever block computes it (eight chains of
    /// fused multiply-adds over k ≡ lane mod 8, summed across the lanes by `sum()`, then the
    /// tail's fused multiply-adds in order; tested bit for bit). The order differs from
    /// `multiply`'s.
    public static func multiplyTransposedB(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                                           b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                                           accumulate: Bool) {
        var i = 0
        while i + 2 <= m {
            var j = 0
            while j + 4 <= n {
                dotProducts2x4(k, a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc, accumulate)
                j += 4
            }
            while j < n {
                for r in 0 ..< 2 { dotProduct(k, a + (i + r) * lda, b + j * ldb, c + (i + r) * ldc + j, accumulate) }
                j += 1
            }
            i += 2
        }
        if i < m {
            for j in 0 ..< n { dotProduct(k, a + i * lda, b + j * ldb, c + i * ldc + j, accumulate) }
        }
    }

    /// C's 2 × 4 values at c, from A's rows a, a + lda and B's rows b … b + 3·ldb.
    @inline(__always)
    private static func dotProducts2x4(_ k: Int, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                       _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool) {
        typealias V = SIMD8<Float>
        var s00 = V(), s01 = V(), s02 = V(), s03 = V(), s10 = V(), s11 = V(), s12 = V(), s13 = V()
        let a1 = a + lda, b1 = b + ldb, b2 = b + 2 * ldb, b3 = b + 3 * ldb
        var t = 0
        while t + 8 <= k {
            let x0 = V(loading: a + t), x1 = V(loading: a1 + t)
            var y = V(loading: b + t)
            s00.addProduct(x0, y); s10.addProduct(x1, y)
            y = V(loading: b1 + t)
            s01.addProduct(x0, y); s11.addProduct(x1, y)
            y = V(loading: b2 + t)
            s02.addProduct(x0, y); s12.addProduct(x1, y)
            y = V(loading: b3 + t)
            s03.addProduct(x0, y); s13.addProduct(x1, y)
            t += 8
        }
        var sums = (SIMD4(s00.sum(), s01.sum(), s02.sum(), s03.sum()), SIMD4(s10.sum(), s11.sum(), s12.sum(), s13.sum()))
        while t < k {
            let y = SIMD4(b[t], b1[t], b2[t], b3[t])
            sums.0.addProduct(SIMD4(repeating: a[t]), y); sums.1.addProduct(SIMD4(repeating: a1[t]), y)
            t += 1
        }
        if accumulate { sums.0 += SIMD4(loading: c); sums.1 += SIMD4(loading: c + ldc) }
        sums.0.store(c); sums.1.store(c + ldc)
    }

    /// One value of C: the dot product of A's row a and B's row b, summed as `dotProducts2x4` sums.
    @inline(__always)
    private static func dotProduct(_ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                   _ c: UnsafeMutablePointer<Float>, _ accumulate: Bool) {
        var s = SIMD8<Float>(), t = 0
        while t + 8 <= k { s.addProduct(SIMD8(loading: a + t), SIMD8(loading: b + t)); t += 8 }
        var sum = s.sum()
        while t < k { sum.addProduct(a[t], b[t]); t += 1 }
        c[0] = accumulate ? c[0] + sum : sum
    }

    /// The strip of C's columns that starts at j, four rows at a time, then one.
    @inline(__always)
    private static func columns<S: ColumnStrip>(_: S.Type, _ j: Int, _ m: Int, _ k: Int, _ a: UnsafePointer<Float>,
                                                _ rowStep: Int, _ kStep: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                                _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        var i = 0
        while i + 4 <= m {
            fourRows(S.self, k, a + i * rowStep, rowStep, kStep, b + j, ldb, c + i * ldc + j, ldc)
            i += 4
        }
        while i < m {
            oneRow(S.self, k, a + i * rowStep, kStep, b + j, ldb, c + i * ldc + j)
            i += 1
        }
    }

    @inline(__always)
    private static func fourRows<S: ColumnStrip>(_: S.Type, _ k: Int, _ a: UnsafePointer<Float>, _ rowStep: Int, _ kStep: Int,
                                                 _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        var c0 = S(), c1 = S(), c2 = S(), c3 = S()
        var pa = a, pb = b
        for _ in 0 ..< k {
            let row = S(loading: pb)
            c0.add(pa[0], times: row); c1.add(pa[rowStep], times: row)
            c2.add(pa[2 * rowStep], times: row); c3.add(pa[3 * rowStep], times: row)
            pa += kStep; pb += ldb
        }
        c0.store(c); c1.store(c + ldc); c2.store(c + 2 * ldc); c3.store(c + 3 * ldc)
    }

    @inline(__always)
    private static func oneRow<S: ColumnStrip>(_: S.Type, _ k: Int, _ a: UnsafePointer<Float>, _ kStep: Int,
                                               _ b: UnsafePointer<Float>, _ ldb: Int, _ c: UnsafeMutablePointer<Float>) {
        var c0 = S()
        var pa = a, pb = b
        for _ in 0 ..< k {
            c0.add(pa[0], times: S(loading: pb))
            pa += kStep; pb += ldb
        }
        c0.store(c)
    }
}

/// Consecutive columns of a row of C or B that one register block holds: 24 (three 8-lane
/// vectors), 8, 4 or 1. Unaligned loads and stores: B's and C's rows start anywhere.
protocol ColumnStrip {
    init()
    init(loading p: UnsafePointer<Float>)
    func store(_ p: UnsafeMutablePointer<Float>)
    /// self += a·row, each lane one fused multiply-add.
    mutating func add(_ a: Float, times row: Self)
}

/// Three 8-lane vectors: 4 rows × 24 columns take 12 of AVX2's 16 registers, leaving room
/// for B's row and A's broadcast value.
struct Strip24: ColumnStrip {
    var low: SIMD8<Float>, middle: SIMD8<Float>, high: SIMD8<Float>
    @inline(__always) init() { (low, middle, high) = (SIMD8(), SIMD8(), SIMD8()) }
    @inline(__always) init(loading p: UnsafePointer<Float>) {
        (low, middle, high) = (SIMD8(loading: p), SIMD8(loading: p + 8), SIMD8(loading: p + 16))
    }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) { low.store(p); middle.store(p + 8); high.store(p + 16) }
    @inline(__always) mutating func add(_ a: Float, times row: Strip24) {
        let x = SIMD8<Float>(repeating: a)
        low.addProduct(x, row.low); middle.addProduct(x, row.middle); high.addProduct(x, row.high)
    }
}

extension SIMD8: ColumnStrip where Scalar == Float {
    @inline(__always) mutating func add(_ a: Float, times row: Self) { addProduct(Self(repeating: a), row) }
}

extension SIMD4: ColumnStrip where Scalar == Float {
    @inline(__always) mutating func add(_ a: Float, times row: Self) { addProduct(Self(repeating: a), row) }
}

extension Float: ColumnStrip {
    @inline(__always) mutating func add(_ a: Float, times row: Float) { addProduct(a, row) }
}
