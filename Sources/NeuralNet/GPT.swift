/// A GPT-2-style decoder-only transformer (Radford et al. 2019) in nanoGPT's layout and
/// naming, so that its flat buffer's views are the `state_dict` of nanoGPT's `GPT`:
///
///     transformer.wte  Embedding(vocab, C)      transformer.wpe  Embedding(block_size, C)
///     transformer.h.i  TransformerBlock × layers
///     transformer.ln_f LayerNorm(C)             lm_head          Linear(C, vocab, bias=False)
///
/// The input is a sequence of `blockSize` token ids; the labels are the next token at each
/// position; the loss is the mean cross-entropy over every position of every sequence.
///
/// With `tieEmbeddings` the head *is* the token embedding: it is bound to the embedding's
/// parameter and gradient pointers and has no view of its own (`lm_head.weight` appears in
/// exports as a copy of `transformer.wte.weight`, as nanoGPT's `state_dict` lists both). Its
/// backward writes dW first; the embedding's, the last of the step, adds the scatter — so
/// the embedding's unit is reported final only at the very end.
public final class GPT: Model {
    public let spec: GPTSpec
    public let parameters: FlatParameters
    public let loss: SoftmaxCrossEntropy
    let tokens: Embedding, positions: PositionalEmbedding, embeddingDropout: Dropout
    let blocks: [TransformerBlock]
    let finalNorm: LayerNorm
    let head: Linear
    public private(set) var reservedBatch = 0
    /// The units' first view indices: embeddings, each block, ln_f, and (untied) lm_head.
    private let unitFirstViews: [Int]

    public var inputShape: [Int] { [spec.blockSize] }
    public var labelsPerSample: Int { spec.blockSize }
    public var classes: Int { spec.vocab }

    public init(_ spec: GPTSpec, gradientStorage: GradientStorage? = nil) throws {
        if let problem = spec.problem { throw ShapeError(problem) }
        self.spec = spec
        let c = spec.embed, t = spec.blockSize, p = Float(spec.dropout)
        tokens = Embedding(spec.vocab, c)
        positions = PositionalEmbedding(t, c)
        embeddingDropout = Dropout(probability: p)
        blocks = (0 ..< spec.layers).map { _ in TransformerBlock(features: c, heads: spec.heads, dropout: p) }
        finalNorm = LayerNorm(c)
        head = Linear(c, spec.vocab, bias: false)
        _ = try tokens.outputShape(for: [t])
        _ = try positions.outputShape(for: [t, c])
        _ = try embeddingDropout.outputShape(for: [t, c])
        for block in blocks { _ = try block.outputShape(for: [t, c]) }
        _ = try finalNorm.outputShape(for: [c])
        _ = try head.outputShape(for: [c])

        var specs: [(name: String, shape: [Int])] = [], firsts: [Int] = []
        func add(_ prefix: String, _ layer: Layer) { specs += layer.parameters.map { ("\(prefix).\($0.name)", $0.shape) } }
        firsts.append(specs.count)
        add("transformer.wte", tokens)
        add("transformer.wpe", positions)
        for (i, block) in blocks.enumerated() { firsts.append(specs.count); add("transformer.h.\(i)", block) }
        firsts.append(specs.count)
        add("transformer.ln_f", finalNorm)
        if !spec.tieEmbeddings { firsts.append(specs.count); add("lm_head", head) }
        unitFirstViews = firsts
        parameters = try FlatParameters(views: FlatParameters.layout(specs), gradientStorage: gradientStorage)
        loss = SoftmaxCrossEntropy(classes: spec.vocab)

        var next = parameters.bind(tokens, from: 0)
        next = parameters.bind(positions, from: next)
        for block in blocks { next = parameters.bind(block, from: next) }
        next = parameters.bind(finalNorm, from: next)
        if spec.tieEmbeddings {
            let shared = tokens.weightPointers
            head.bind(parameters: [shared.parameters], gradients: [shared.gradients])
            tokens.addsToGradient = true
        } else {
            _ = parameters.bind(head, from: next)
        }
    }

    public var unitExtents: [Range<Int>?] { parameters.extents(firstViews: unitFirstViews) }
    public var unitNames: [String] {
        ["embeddings"] + blocks.indices.map { "h.\($0)" } + ["ln_f"] + (spec.tieEmbeddings ? [] : ["lm_head"])
    }

    /// nanoGPT's initialisation: every matrix N(0, 0.02), the residual output projections
    /// (`c_proj.weight`) N(0, 0.02/√(2·layers)) so that the residual stream's variance does
    /// not grow with depth (GPT-2 paper, §2.3), biases 0, layer norms γ = 1, β = 0. Drawn view
    /// by view in state_dict order.
    public func initialize(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let residualStd = Float(0.02 / (2 * Double(spec.layers)).squareRoot())
        for view in parameters.views {
            let values = parameters.parameters(of: view)
            if view.shape.count >= 2 {
                let std: Float = view.name.hasSuffix("c_proj.weight") ? residualStd : 0.02
                for i in values.indices { values[i] = std * generator.normal() }
            } else if view.name.hasSuffix(".bias") {
                values.update(repeating: 0)
            } else {
                values.update(repeating: 1)   // layer-norm weights
            }
        }
    }

    /// Every dropout in forward order (built once: reseeding allocates nothing).
    private lazy var dropouts: [Dropout] = [embeddingDropout] + blocks.flatMap(\.dropouts)

    /// Each dropout's mask stream as a function of (seed, rank, dropout index, step) alone.
    public func reseedDropout(seed: UInt64, rank: Int, step: Int) {
        guard spec.dropout > 0 else { return }
        for (index, dropout) in dropouts.enumerated() { dropout.reseed(seed: seed, rank: rank, stream: UInt64(index), step: step) }
    }

    public func reserve(batch: Int) {
        guard batch > reservedBatch else { return }
        let rows = batch * spec.blockSize
        for layer in [tokens, positions, embeddingDropout] as [Layer] { layer.reserve(batch: batch) }
        for block in blocks { block.reserve(batch: batch) }
        finalNorm.reserve(batch: rows)
        head.reserve(batch: rows)
        loss.reserve(rows: rows)
        reservedBatch = batch
    }

    public func forward(_ input: UnsafeBufferPointer<Float>, batch: Int, training: Bool) throws -> UnsafePointer<Float> {
        try checkBatch(input: input, labels: nil, batch: batch)
        reserve(batch: batch)
        let rows = batch * spec.blockSize
        var x = tokens.forward(input.baseAddress!, batch: batch, training: training)
        x = positions.forward(x, batch: batch, training: training)
        x = embeddingDropout.forward(x, batch: batch, training: training)
        for block in blocks { x = block.forward(x, batch: batch, training: training) }
        x = finalNorm.forward(x, batch: rows, training: training)
        return head.forward(x, batch: rows, training: training)
    }

    public func computeGradients(input: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>, batch: Int,
                                 forwardDone: (() -> Void)?,
                                 unitDone: ((Int, SoftmaxCrossEntropy.Result) -> Void)?) throws -> SoftmaxCrossEntropy.Result {
        try checkBatch(input: input, labels: labels, batch: batch)
        let rows = batch * spec.blockSize
        let logits = try forward(input, batch: batch, training: true)
        let result = try loss.evaluate(logits: logits, labels: labels.baseAddress!, batch: rows, gradient: true)
        forwardDone?()
        var unit = unitFirstViews.count - 1
        var g = head.backward(loss.lastGradient, batch: rows, needsInputGradient: true)!
        if !spec.tieEmbeddings { unitDone?(unit, result); unit -= 1 }
        g = finalNorm.backward(g, batch: rows, needsInputGradient: true)!
        unitDone?(unit, result); unit -= 1
        for block in blocks.reversed() {
            g = block.backward(g, batch: batch, needsInputGradient: true)!
            unitDone?(unit, result); unit -= 1
        }
        g = embeddingDropout.backward(g, batch: batch, needsInputGradient: true)!
        g = positions.backward(g, batch: batch, needsInputGradient: true)!
        _ = tokens.backward(g, batch: batch, needsInputGradient: false)
        unitDone?(unit, result)
        return result
    }

    public var trainingFlopsPerSample: Double {
        let t = Double(spec.blockSize)
        var total = 0.0
        for block in blocks { let f = block.flopsPerSample; total += f.forward + f.weightGradient + f.inputGradient }
        for layer in [finalNorm, head] as [Layer] { let f = layer.flopsPerSample; total += t * (f.forward + f.weightGradient + f.inputGradient) }
        return total
    }

    public var pytorchModule: String {
        "GPT(vocab=\(spec.vocab), block_size=\(spec.blockSize), layers=\(spec.layers), heads=\(spec.heads), embed=\(spec.embed), dropout=\(spec.dropout), tie_embeddings=\(spec.tieEmbeddings ? "True" : "False"))"
    }

    public var summary: String { "\(spec) (\(parameters.count) parameters)" }
}
