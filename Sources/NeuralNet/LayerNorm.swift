/// Layer normalisation over the last dimension (PyTorch `nn.LayerNorm(features)`, eps 1e-5):
/// y = (x − μ)·rstd·γ + β with μ and σ² the mean and biased variance of one row of
/// `features` values and rstd = 1/√(σ² + eps) (Ba, Kiros & Hinton 2016).
///
/// Any per-sample shape whose last dimension is `features` is a stack of rows; each is
/// normalised alone. Backward (with n̂ = (x − μ)·rstd and d = dy·γ):
/// dx = rstd·(d − mean(d) − n̂·mean(d·n̂)), dγ = Σ dy·n̂, dβ = Σ dy over rows.
public final class LayerNorm: Layer {
    public let features: Int
    public let epsilon: Float
    private var size = 0
    private var weight: UnsafeMutablePointer<Float>!, bias: UnsafeMutablePointer<Float>!
    private var weightGrad: UnsafeMutablePointer<Float>!, biasGrad: UnsafeMutablePointer<Float>!
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()
    /// Per row: the mean and 1/√(σ² + eps) of the last forward, for backward; a row's n̂ and
    /// dy·γ (backward's scratch).
    private let means = ActivationBuffer(), rstds = ActivationBuffer()
    private let normalizedRow = ActivationBuffer(), scaledRow = ActivationBuffer()
    private var input: UnsafePointer<Float>?

    public init(_ features: Int, epsilon: Float = 1e-5) {
        precondition(features > 0, "LayerNorm needs a positive size, got \(features)")
        self.features = features
        self.epsilon = epsilon
    }

    public var summary: String { "LayerNorm(\(features))" }
    public var pytorchModule: String { "nn.LayerNorm(\(features)\(epsilon == 1e-5 ? "" : ", eps=\(epsilon)"))" }
    public var parameters: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [features]), ParameterSpec(name: "bias", shape: [features])]
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.last == features else {
            throw ShapeError("\(summary) normalises a last dimension of \(features), got shape \(input)")
        }
        size = input.reduce(1, *)
        return input
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; bias = parameters[1]
        weightGrad = gradients[0]; biasGrad = gradients[1]
    }

    /// PyTorch's: γ = 1, β = 0.
    public func initialize(using generator: inout SeededGenerator) {
        weight.update(repeating: 1, count: features)
        bias.update(repeating: 0, count: features)
    }

    public func reserve(batch: Int) {
        output.reserve(batch * size); inputGrad.reserve(batch * size)
        means.reserve(batch * size / features); rstds.reserve(batch * size / features)
        normalizedRow.reserve(features); scaledRow.reserve(features)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        input = x
        let n = features, y = output.pointer
        for row in 0 ..< batch * size / n {
            (means.pointer[row], rstds.pointer[row]) = Self.normalize(x + row * n, weight: weight, bias: bias, into: y + row * n,
                                                                     count: n, epsilon: epsilon)
        }
        return UnsafePointer(y)
    }

    /// One row: y = (x − μ)·rstd·γ + β; returns (μ, rstd). The GPT decoder's incremental step
    /// normalises with this too, so it computes what the batch forward does.
    @inline(__always)
    static func normalize(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                          into y: UnsafeMutablePointer<Float>, count n: Int, epsilon: Float) -> (mean: Float, rstd: Float) {
        let inverse = 1 / Float(n)
        let mean = VectorReductions.sum(x, n) * inverse
        let rstd = 1 / (VectorReductions.squaredDeviations(x, n, from: mean) * inverse + epsilon).squareRoot()
        for i in 0 ..< n { y[i] = (x[i] - mean) * rstd * weight[i] + bias[i] }
        return (mean, rstd)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        let n = features, x = input!, dx = inputGrad.pointer, inverse = 1 / Float(n)
        weightGrad.update(repeating: 0, count: n)
        biasGrad.update(repeating: 0, count: n)
        let normalized = normalizedRow.pointer, scaled = scaledRow.pointer
        for row in 0 ..< batch * size / n {
            let xr = x + row * n, dyr = dy + row * n, dxr = dx + row * n
            let mean = means.pointer[row], rstd = rstds.pointer[row]
            for i in 0 ..< n {
                normalized[i] = (xr[i] - mean) * rstd
                scaled[i] = dyr[i] * weight[i]
                weightGrad[i] += dyr[i] * normalized[i]
                biasGrad[i] += dyr[i]
            }
            guard needsInputGradient else { continue }
            let meanD = VectorReductions.sum(scaled, n) * inverse, meanDN = VectorReductions.dot(scaled, normalized, n) * inverse
            for i in 0 ..< n { dxr[i] = rstd * (scaled[i] - meanD - normalized[i] * meanDN) }
        }
        return needsInputGradient ? UnsafePointer(dx) : nil
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        (Double(8 * size), Double(4 * size), Double(6 * size))
    }
}
