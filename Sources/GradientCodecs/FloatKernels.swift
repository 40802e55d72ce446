/// Element-wise kernels shared by the codecs and the ring's fp32 path.
///
/// Plain loops over raw pointers: with `-target-cpu haswell` LLVM vectorises each to AVX2
/// (8 floats per instruction, unrolled). Measured in `ringsgd bench allreduce`.
public enum FloatKernels {
    /// `destination[i] += source[i]`. Unaligned loads are fine: payloads start at any byte.
    @inlinable
    public static func add(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] += source[i] }
    }

    /// `destination[i] = (destination[i] + source[i]) * factor`: the ring owner's last
    /// reduction and its division by n, in one pass over memory.
    @inlinable
    public static func addThenScale(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>,
                                    by factor: Float, count: Int) {
        for i in 0..<count { destination[i] = (destination[i] + source[i]) * factor }
    }

    /// `destination[i] += factor · source[i]`, one fused multiply-add each (a momentum carried
    /// into, and back out of, the compressed all-reduce: `MomentumCarrying`).
    @inlinable
    public static func add(_ source: UnsafePointer<Float>, times factor: Float, into destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] = destination[i].addingProduct(source[i], factor) }
    }

    /// `buffer[i] *= factor`.
    @inlinable
    public static func scale(_ buffer: UnsafeMutablePointer<Float>, by factor: Float, count: Int) {
        for i in 0..<count { buffer[i] *= factor }
    }
}
