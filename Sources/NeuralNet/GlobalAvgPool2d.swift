/// Global average pooling (`nn.AdaptiveAvgPool2d(1)` then flatten): [C, H, W] → [C], each
/// channel's mean; backward spreads dy/(H·W) over the channel's positions.
public final class GlobalAvgPool2d: Layer {
    private var channels = 0, plane = 0
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()

    public init() {}
    public var summary: String { "GlobalAvgPool2d" }
    /// One module (a nested Sequential), so that the layers after it keep their indices.
    public var pytorchModule: String { "nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())" }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 3 else { throw ShapeError("needs a [C, H, W] image input, got \(input)") }
        channels = input[0]; plane = input[1] * input[2]
        return [channels]
    }

    public func reserve(batch: Int) {
        output.reserve(batch * channels); inputGrad.reserve(batch * channels * plane)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let y = output.pointer, inverse = 1 / Float(plane)
        for row in 0 ..< batch * channels { y[row] = VectorReductions.sum(x + row * plane, plane) * inverse }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        guard needsInputGradient else { return nil }
        let dx = inputGrad.pointer, inverse = 1 / Float(plane)
        for row in 0 ..< batch * channels { (dx + row * plane).update(repeating: dy[row] * inverse, count: plane) }
        return UnsafePointer(dx)
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        (Double(channels * plane), 0, Double(channels * plane))
    }
}
