/// GELU with GPT-2's tanh approximation (PyTorch `nn.GELU(approximate="tanh")`,
/// Hendrycks & Gimpel 2016): y = ½·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³).
///
/// dy/dx = ½·(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²) with t = tanh(u); the forward
/// keeps t so that backward evaluates no second tanh.
public final class GELU: Layer {
    private var size = 0
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer(), tanhs = ActivationBuffer()
    private var input: UnsafePointer<Float>?
    static let scale = Float((2 / Double.pi).squareRoot()), cubic: Float = 0.044715

    public init() {}
    public var summary: String { "GELU(tanh)" }
    public var pytorchModule: String { "nn.GELU(approximate=\"tanh\")" }

    public func outputShape(for input: [Int]) throws -> [Int] {
        size = input.reduce(1, *)
        return input
    }

    public func reserve(batch: Int) {
        output.reserve(batch * size); inputGrad.reserve(batch * size); tanhs.reserve(batch * size)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        input = x
        let y = output.pointer, t = tanhs.pointer
        for i in 0 ..< batch * size {
            (y[i], t[i]) = Self.value(x[i])
        }
        return UnsafePointer(y)
    }

    /// GELU(v) and the tanh it used (kept for backward; the GPT decoder calls this too).
    @inline(__always) static func value(_ v: Float) -> (y: Float, tanh: Float) {
        let t = FastMath.tanh(scale * (v + cubic * v * v * v))
        return (0.5 * v * (1 + t), t)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        guard needsInputGradient else { return nil }
        let x = input!, t = tanhs.pointer, dx = inputGrad.pointer
        for i in 0 ..< batch * size {
            let v = x[i], th = t[i]
            let derivative = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * Self.scale * (1 + 3 * Self.cubic * v * v)
            dx[i] = dy[i] * derivative
        }
        return UnsafePointer(dx)
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        (Double(10 * size), 0, Double(10 * size))
    }
}

/// Element-wise functions the hot loops call, branch-free and inlined so that LLVM vectorises
/// the loops around them (a call to libm's expf keeps a loop scalar: GELU's forward was 8 % of
/// a GPT step on it).
enum FastMath {
    /// e^x as Cephes' `expf` computes it: x = n·ln 2 + r with |r| ≤ ½ ln 2 (ln 2 split in two
    /// parts so n·ln 2 is exact), e^r by a degree-7 polynomial, 2ⁿ put into the exponent bits.
    /// Within 2 ulp of the true value on [−87.3, 88.3], the arguments clamped there (so e^x
    /// is never ∞ or a denormal: ≈ 1e-38 below, 2e38 above; from 88.38 on, n would be 128,
    /// past the largest exponent).
    ///
    /// n is rounded by adding 1.5·2²³ (the float addition rounds to an integer, which then sits
    /// in the low mantissa bits): no rounding call and no trapping Float→Int conversion, which
    /// would each keep the loop from vectorising.
    @inline(__always) static func exp(_ x: Float) -> Float {
        let x = min(max(x, -87.3), 88.3)
        let magic: Float = 12_582_912, shifted = x * 1.442_695_04 + magic
        let n = shifted - magic
        let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
        var p: Float = 1.987_569_15e-4
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        let e = p * r * r + r + 1
        return e * Float(bitPattern: (shifted.bitPattern &- magic.bitPattern &+ 127) << 23)
    }

    /// tanh from one exponential: tanh(u) = 1 − 2/(e^{2u} + 1), ±1 at the extremes.
    @inline(__always) static func tanh(_ u: Float) -> Float {
        1 - 2 / (exp(2 * u) + 1)
    }
}
