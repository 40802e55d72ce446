/// One pre-norm transformer block (GPT-2's, nanoGPT's `Block`):
///
///     h   = x + dropout(attn(ln_1(x)))
///     out = h + dropout(mlp(ln_2(h))),    mlp = c_proj(GELU(c_fc(·))), C → 4C → C
///
/// The residual additions are the block's own: backward adds the gradient that flows around
/// each branch to the one that flows through it (dh = dout + ln_2ᵀ(…), dx = dh + ln_1ᵀ(…)).
/// Parameter names are nanoGPT's: `ln_1.weight`, `attn.c_attn.weight`, …, `mlp.c_proj.bias`.
/// Per-sample shape [T, C] → [T, C]; the per-token layers run on batch·T rows.
public final class TransformerBlock: Layer {
    public let features: Int
    let norm1: LayerNorm, attention: CausalSelfAttention, dropout1: Dropout
    let norm2: LayerNorm, expand: Linear, activation: GELU, contract: Linear, dropout2: Dropout
    private var length = 0
    private let hidden = ActivationBuffer(), output = ActivationBuffer()
    private let hiddenGrad = ActivationBuffer(), inputGrad = ActivationBuffer()

    public init(features: Int, heads: Int, dropout: Float = 0) {
        self.features = features
        norm1 = LayerNorm(features)
        attention = CausalSelfAttention(features: features, heads: heads, dropout: dropout)
        dropout1 = Dropout(probability: dropout)
        norm2 = LayerNorm(features)
        expand = Linear(features, 4 * features)
        activation = GELU()
        contract = Linear(4 * features, features)
        dropout2 = Dropout(probability: dropout)
    }

    /// The parts in state_dict order, with their name prefixes.
    private var named: [(prefix: String, layer: Layer)] {
        [("ln_1", norm1), ("attn", attention), ("ln_2", norm2), ("mlp.c_fc", expand), ("mlp.c_proj", contract)]
    }

    /// Every dropout of the block (residual and attention), for per-step reseeding.
    var dropouts: [Dropout] { [attention.attentionDropout, dropout1, dropout2] }

    public var summary: String { "Block(\(features), \(attention.heads) heads)" }
    public var pytorchModule: String { "Block(\(features), \(attention.heads))" }
    public var parameters: [ParameterSpec] {
        named.flatMap { part in part.layer.parameters.map { ParameterSpec(name: "\(part.prefix).\($0.name)", shape: $0.shape) } }
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 2, input[1] == features else {
            throw ShapeError("\(summary) takes a sequence [T, \(features)], got shape \(input)")
        }
        length = input[0]
        for layer in [norm1, norm2, expand] as [Layer] { _ = try layer.outputShape(for: [features]) }
        _ = try activation.outputShape(for: [4 * features])
        _ = try contract.outputShape(for: [4 * features])
        _ = try attention.outputShape(for: input)
        for dropout in [dropout1, dropout2] { _ = try dropout.outputShape(for: input) }
        return input
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        bindParts(named.map(\.layer), parameters: parameters, gradients: gradients)
    }

    public func initialize(using generator: inout SeededGenerator) {
        for part in named { part.layer.initialize(using: &generator) }
    }

    public func reserve(batch: Int) {
        let rows = batch * length
        for layer in [norm1, norm2, expand, activation, contract] as [Layer] { layer.reserve(batch: rows) }
        for layer in [attention, dropout1, dropout2] as [Layer] { layer.reserve(batch: batch) }
        for buffer in [hidden, output, hiddenGrad, inputGrad] { buffer.reserve(rows * features) }
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let rows = batch * length, count = rows * features
        var a = norm1.forward(x, batch: rows, training: training)
        a = attention.forward(a, batch: batch, training: training)
        a = dropout1.forward(a, batch: batch, training: training)
        let h = hidden.pointer
        for i in 0 ..< count { h[i] = x[i] + a[i] }
        var m = norm2.forward(h, batch: rows, training: training)
        m = expand.forward(m, batch: rows, training: training)
        m = activation.forward(m, batch: rows, training: training)
        m = contract.forward(m, batch: rows, training: training)
        m = dropout2.forward(m, batch: batch, training: training)
        let y = output.pointer
        for i in 0 ..< count { y[i] = h[i] + m[i] }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        let rows = batch * length, count = rows * features
        var g = dropout2.backward(dy, batch: batch, needsInputGradient: true)!
        g = contract.backward(g, batch: rows, needsInputGradient: true)!
        g = activation.backward(g, batch: rows, needsInputGradient: true)!
        g = expand.backward(g, batch: rows, needsInputGradient: true)!
        g = norm2.backward(g, batch: rows, needsInputGradient: true)!
        let dh = hiddenGrad.pointer
        for i in 0 ..< count { dh[i] = dy[i] + g[i] }
        g = dropout1.backward(dh, batch: batch, needsInputGradient: true)!
        g = attention.backward(g, batch: batch, needsInputGradient: true)!
        guard let through = norm1.backward(g, batch: rows, needsInputGradient: needsInputGradient) else { return nil }
        let dx = inputGrad.pointer
        for i in 0 ..< count { dx[i] = dh[i] + through[i] }
        return UnsafePointer(dx)
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        let t = Double(length)
        var total = attention.flopsPerSample
        for layer in [norm1, norm2, expand, activation, contract] as [Layer] {
            let f = layer.flopsPerSample
            total = (total.forward + t * f.forward, total.weightGradient + t * f.weightGradient, total.inputGradient + t * f.inputGradient)
        }
        return total
    }
}
