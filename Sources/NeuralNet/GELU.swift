import Foundation

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
            let v = x[i]
            t[i] = FastMath.tanh(Self.scale * (v + Self.cubic * v * v * v))
            y[i] = 0.5 * v * (1 + t[i])
        }
        return UnsafePointer(y)
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

/// Element-wise functions the hot loops call, written so that LLVM can inline them.
enum FastMath {
    /// tanh from one exponential: tanh(u) = 1 − 2/(e^{2u} + 1), exact at ±∞ (no NaN from
    /// ∞/∞) and within a few ulps of libm's elsewhere.
    @inline(__always) static func tanh(_ u: Float) -> Float {
        1 - 2 / (Foundation.expf(2 * u) + 1)
    }
}
