/// Rectified linear unit, y = max(x, 0); dx = dy where y > 0.
///
/// When the layer before it applies the ReLU itself (`ReLUFusing`: batch norm, a residual
/// block), this layer is `isFused` and passes values and gradients through.
public final class ReLU: Layer {
    private var size = 0
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()
    /// The previous layer applies this ReLU (set by `fuseReLUs`, before `reserve`).
    public internal(set) var isFused = false

    public init() {}
    public var summary: String { "ReLU" }
    public var pytorchModule: String { "nn.ReLU()" }

    public func outputShape(for input: [Int]) throws -> [Int] {
        size = input.reduce(1, *)
        return input
    }

    public func reserve(batch: Int) {
        guard !isFused else { return }
        output.reserve(batch * size)
        inputGrad.reserve(batch * size)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        guard !isFused else { return x }
        let y = output.pointer
        for i in 0 ..< batch * size { y[i] = max(x[i], 0) }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        guard needsInputGradient else { return nil }
        guard !isFused else { return dy }
        let y = output.pointer, dx = inputGrad.pointer
        for i in 0 ..< batch * size { dx[i] = y[i] > 0 ? dy[i] : 0 }
        return UnsafePointer(dx)
    }
}
