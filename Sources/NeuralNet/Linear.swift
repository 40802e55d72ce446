/// Fully connected layer, y = x·Wᵀ + b, with W stored [out, in] as PyTorch's `nn.Linear`.
///
/// Forward is one `sgemm` over the batch; backward is dW = dYᵀ·X and dX = dY·W (two more),
/// and db the column sums of dY. `bias: false` is `nn.Linear(…, bias=False)` (a GPT's
/// language-model head): the layer then declares its weight only.
///
/// A layer whose weight is another layer's (a language-model head tied to the token
/// embedding) is bound to that layer's parameter and gradient pointers; its backward writes
/// dW first and the owner adds to it (see `Embedding.addsToGradient`).
public final class Linear: Layer {
    public let inputs: Int
    public let outputs: Int
    public let hasBias: Bool
    private var weight: UnsafeMutablePointer<Float>!, bias: UnsafeMutablePointer<Float>!
    private var weightGrad: UnsafeMutablePointer<Float>!, biasGrad: UnsafeMutablePointer<Float>!
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()
    private var input: UnsafePointer<Float>?

    public init(_ inputs: Int, _ outputs: Int, bias: Bool = true) {
        precondition(inputs > 0 && outputs > 0, "Linear needs positive sizes, got \(inputs)→\(outputs)")
        self.inputs = inputs
        self.outputs = outputs
        self.hasBias = bias
    }

    public var summary: String { "Linear(\(inputs)→\(outputs)\(hasBias ? "" : ", no bias"))" }
    public var pytorchModule: String { "nn.Linear(\(inputs), \(outputs)\(hasBias ? "" : ", bias=False"))" }
    public var parameters: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [outputs, inputs])] + (hasBias ? [ParameterSpec(name: "bias", shape: [outputs])] : [])
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        let size = input.reduce(1, *)
        guard size == inputs else {
            throw ShapeError("\(summary) expects \(inputs) input features per sample, got shape \(input) (\(size))")
        }
        return [outputs]
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGrad = gradients[0]
        if hasBias { bias = parameters[1]; biasGrad = gradients[1] }
    }

    /// PyTorch `nn.Linear.reset_parameters`, with fan_in = inputs.
    public func initialize(using generator: inout SeededGenerator) {
        generator.initializePyTorchDefault(weight: weight, weightCount: outputs * inputs,
                                           bias: hasBias ? bias : weight, biasCount: hasBias ? outputs : 0, fanIn: inputs)
    }

    /// The output of the last forward (valid until the next).
    var lastOutput: UnsafePointer<Float> { UnsafePointer(output.pointer) }

    public func reserve(batch: Int) {
        output.reserve(batch * outputs)
        inputGrad.reserve(batch * inputs)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        input = x
        let y = output.pointer
        if hasBias { for b in 0 ..< batch { (y + b * outputs).update(from: bias, count: outputs) } }
        sgemm(transposeA: false, transposeB: true, m: batch, n: outputs, k: inputs,
              a: x, lda: inputs, b: weight, ldb: inputs, beta: hasBias ? 1 : 0, c: y, ldc: outputs)
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        sgemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: batch,
              a: dy, lda: outputs, b: input!, ldb: inputs, beta: 0, c: weightGrad, ldc: inputs)
        if hasBias {
            biasGrad.update(repeating: 0, count: outputs)
            for b in 0 ..< batch {
                let row = dy + b * outputs
                for o in 0 ..< outputs { biasGrad[o] += row[o] }
            }
        }
        guard needsInputGradient else { return nil }
        sgemm(transposeA: false, transposeB: false, m: batch, n: inputs, k: outputs,
              a: dy, lda: outputs, b: weight, ldb: inputs, beta: 0, c: inputGrad.pointer, ldc: inputs)
        return UnsafePointer(inputGrad.pointer)
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        let macs = Double(inputs * outputs)
        return (2 * macs, 2 * macs, 2 * macs)
    }
}
