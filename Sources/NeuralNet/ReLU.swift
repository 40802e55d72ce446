/// Rectified linear unit, y = max(x, 0); dx = dy where y > 0.
public final class ReLU: Layer {
    private var size = 0
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()

    public init() {}
    public var summary: String { "ReLU" }
    public var pytorchModule: String { "nn.ReLU()" }

    public func outputShape(for input: [Int]) throws -> [Int] {
        size = input.reduce(1, *)
        return input
    }

    public func reserve(batch: Int) {
        output.reserve(batch * size)
        inputGrad.reserve(batch * size)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let y = output.pointer
        for i in 0 ..< batch * size { y[i] = max(x[i], 0) }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        guard needsInputGradient else { return nil }
        let y = output.pointer, dx = inputGrad.pointer
        for i in 0 ..< batch * size { dx[i] = y[i] > 0 ? dy[i] : 0 }
        return UnsafePointer(dx)
    }
}
