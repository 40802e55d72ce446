/// The matrix products of the convolutions (`Conv2d`'s im2col GEMMs, the Winograd
/// convolutions' 36 products a chunk), each by whichever computes it faster here: ringsgd's own
/// register blocks (`RegisterBlockedGEMM`) where OpenBLAS runs 8-lane (AVX2) kernels, OpenBLAS
/// everywhere else (16-lane AVX-512 kernels, the narrow ones of old CPUs, names it does not know).
///
/// Why the split: on an AMD EPYC (Zen 3) with OpenBLAS's Zen kernels our blocks did the thin
/// products in half to three quarters of OpenBLAS's time (`RegisterBlockedGEMM`), and
/// fashion-resnet at np 2 trained 13–35 % faster (three alternating rounds). Our blocks are
/// compiled for AVX2 (`Package.swift`'s `-target-cpu haswell`), so where OpenBLAS has
/// AVX-512 kernels its arithmetic is up to twice as wide: an earlier session measured there
/// (Zen 4, Cooperlake kernels) an 8-lane kernel of ours at 2.5× OpenBLAS's time for the same
/// 16×196×16 products. Until our blocks are measured to win there, those machines keep
/// OpenBLAS; so do kernel sets narrower than AVX2 (never measured) and unknown ones.
public enum ConvolutionProducts {
    /// Whether the convolutions use `RegisterBlockedGEMM`: decided once, from the kernels
    /// OpenBLAS loaded (`BLASKernels.coreName`) — only for its AVX2 sets, the ones measured.
    /// Tests set it to run the convolutions both ways; nothing else should, and never while a
    /// model runs.
    public static var useRegisterBlocks: Bool = BLASKernelChoice.width(ofKernels: BLASKernels.coreName) == .avx2

    /// Which code computes the convolutions' products, for `bench compute`'s report.
    public static var description: String {
        useRegisterBlocks ? "ringsgd's register blocks (OpenBLAS for weight gradients wider than 16)" : "OpenBLAS"
    }

    /// C = A·B, or Aᵀ·B when `transposeA` (row-major, C overwritten).
    @inline(__always)
    static func multiply(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, transposeA: Bool,
                         b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if useRegisterBlocks {
            RegisterBlockedGEMM.multiply(m: m, n: n, k: k, a: a, lda: lda, transposeA: transposeA, b: b, ldb: ldb, c: c, ldc: ldc)
        } else {
            sgemm(transposeA: transposeA, transposeB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: 0, c: c, ldc: ldc)
        }
    }

    /// C = A·Bᵀ, or C += A·Bᵀ when `accumulate` (the weight gradients): by our dot products only
    /// where B has at most 16 rows. They beat OpenBLAS only while its panels are thin — on the
    /// Zen 3 EPYC, 36 products of 16×16×196 in 57 µs against 81, 32×16×784 in 487 against 583,
    /// but 32×32×112 even (135 against 136) and 64×64×56 or 64×288×441 at 0.6–0.7× OpenBLAS's
    /// speed (a 3 × 4 block in place of 2 × 4 changed none of these).
    @inline(__always)
    static func multiplyTransposedB(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                                    b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        if useRegisterBlocks && n <= 16 {
            RegisterBlockedGEMM.multiplyTransposedB(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                                                    accumulate: accumulate)
        } else {
            sgemm(transposeA: false, transposeB: true, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                  beta: accumulate ? 1 : 0, c: c, ldc: ldc)
        }
    }
}
