import COpenBLAS

/// Row-major single-precision GEMM, C = alpha·op(A)·op(B) + beta·C, on OpenBLAS's
/// `cblas_sgemm`. Shapes: op(A) is m×k, op(B) is k×n, C is m×n; leading dimensions are the
/// row lengths of the matrices as stored.
@inline(__always)
public func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
           alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
           b: UnsafePointer<Float>, ldb: Int,
           beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Which of OpenBLAS's kernel sets this process runs ("Haswell", "SkylakeX", …).
public enum BLASKernels {
    public static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }
    /// OpenBLAS's build ("OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY …"), for bug reports.
    public static var configuration: String { openblas_get_config().map { String(cString: $0) } ?? "unknown" }
}

/// OpenBLAS's thread count for this process (ringsgd runs one rank per core: 1).
public enum BLASThreads {
    public static func set(_ threads: Int) { openblas_set_num_threads(Int32(threads)) }
    public static var current: Int { Int(openblas_get_num_threads()) }
}
