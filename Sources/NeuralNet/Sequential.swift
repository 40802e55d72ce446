/// A stack of layers over one `FlatParameters`, with a softmax cross-entropy head.
///
/// Parameter views are named as PyTorch's `nn.Sequential` names them ("0.weight",
/// "0.bias", "3.weight", … — the layer's index in the stack), so a gradient or checkpoint can
/// be compared key by key with PyTorch's.
public final class Sequential: Model {
    public let layers: [Layer]
    /// The first layer with parameters (its input is data: it is never asked for an input
    /// gradient), and the layers whose passes may run a collective — both fixed at build time,
    /// so that backward asks no layer for its parameter list.
    private let firstParameterised: Int?
    private let collectiveLayers: [CollectiveLayer]
    public let inputShape: [Int]
    public let outputShape: [Int]
    /// The values of the largest top-level layer output per sample: a lower bound on what
    /// `reserve` allocates per sample (whatever the fusions leave unwritten, the layer that makes
    /// a tensor of that size writes one), for a size check before it.
    public let largestOutputPerSample: Int
    public let parameters: FlatParameters
    public let loss: SoftmaxCrossEntropy
    public private(set) var reservedBatch = 0
    /// The residual blocks' shared backward gradients (`GradientPool`).
    private let gradientPool = GradientPool()
    private let sharesBuffers: Bool

    public var classes: Int { outputShape.reduce(1, *) }
    public var labelsPerSample: Int { 1 }

    /// `gradientStorage` may provide the flat gradient buffer (see `FlatParameters`).
    /// `fusesPasses`: batch norms and residual blocks apply the ReLU that follows them
    /// (`fuseReLUs`), a block whose main path ends with a batch norm makes its sum in that
    /// batch norm's output pass (`fuseResidualSums`), and a convolution takes over passes of
    /// the batch norms beside it (`fuseConvolutionsWithBatchNorms`): the statistics and the
    /// input gradient of the one after it, the output and the backward sums of the one before
    /// it — the same bits, fewer passes; off only to test that.
    /// `sharesBuffers`: residual blocks pass their backward gradients through three shared
    /// buffers (`GradientPool`), and the convolutions share two scratch matrices
    /// (`ConvolutionScratch`) — the same bits, buffers that stay in cache; off only to test that.
    public init(_ layers: [Layer], inputShape: [Int],
                gradientStorage: GradientStorage? = nil, fusesPasses: Bool = true, sharesBuffers: Bool = true) throws {
        self.layers = layers
        self.sharesBuffers = sharesBuffers
        if fusesPasses { fuseReLUs(layers); fuseResidualSums(layers); fuseConvolutionsWithBatchNorms(layers) }
        self.inputShape = inputShape
        firstParameterised = layers.firstIndex { !$0.parameters.isEmpty }
        collectiveLayers = layers.compactMap { $0 as? CollectiveLayer }
        var shape = inputShape
        var specs: [(name: String, shape: [Int])] = [], bufferSpecs: [(name: String, shape: [Int])] = []
        var outputs = 0
        for (index, layer) in layers.enumerated() {
            shape = try layer.outputShape(for: shape)
            outputs = max(outputs, shape.reduce(1, *))
            specs += layer.parameters.map { ("\(index).\($0.name)", $0.shape) }
            bufferSpecs += layer.buffers.map { ("\(index).\($0.name)", $0.shape) }
        }
        guard shape.count == 1, shape[0] >= 2 else {
            throw ShapeError("the last layer must produce a vector of ≥ 2 class scores, got shape \(shape)")
        }
        outputShape = shape
        largestOutputPerSample = outputs
        parameters = try FlatParameters(views: FlatParameters.layout(specs), bufferViews: FlatParameters.layout(bufferSpecs),
                                        gradientStorage: gradientStorage)
        loss = SoftmaxCrossEntropy(classes: shape[0])
        var next = 0, nextBuffer = 0
        for layer in layers {
            next = parameters.bind(layer, from: next)
            nextBuffer = parameters.bindBuffers(layer, from: nextBuffer)
        }
    }

    /// Draws every parameter from `seed` in layer order: the same seed gives the same model
    /// on every rank and in every run.
    public func initialize(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        for layer in layers { layer.initialize(using: &generator) }
    }

    /// Sets every dropout layer's mask stream for one training step, as a function of
    /// (seed, rank, layer index, step) alone: a resumed run draws the same masks with nothing
    /// checkpointed, ranks draw different ones (their samples differ too), and each layer has
    /// its own stream — layers sharing one would drop the same units in every layer of equal width.
    public func reseedDropout(seed: UInt64, rank: Int, step: Int) {
        for (index, layer) in layers.enumerated() {
            if let dropout = layer as? Dropout { dropout.reseed(seed: seed, rank: rank, stream: UInt64(index), step: step) }
            // A dropout inside a residual block: its own stream, numbered after the block's index.
            guard let block = layer as? Residual else { continue }
            for (k, dropout) in block.dropouts.enumerated() {
                dropout.reseed(seed: seed, rank: rank, stream: UInt64(index) | UInt64(k + 1) << 16, step: step)
            }
        }
    }

    /// Allocates activations and scratch for batches up to `batch`; the hot path never allocates.
    public func reserve(batch: Int) {
        guard batch > reservedBatch else { return }
        let blocks = layers.compactMap { $0 as? Residual }
        let sharing = sharesBuffers ? blocks.filter(\.canShareGradients) : []
        let pool = sharing.isEmpty ? nil : gradientPool.reserve(sharing.map { $0.gradientSize(batch: batch) }.max()!)
        for block in blocks { block.placeGradients(in: pool, batch: batch) }
        // The scratch's size does not depend on the batch: shared once.
        if sharesBuffers && reservedBatch == 0 { shareConvolutionScratch() }
        for layer in layers { layer.reserve(batch: batch) }
        reservedBatch = batch
    }

    /// Gives every convolution (in residual blocks too) the same two scratch matrices, sized
    /// for the largest (`ConvolutionScratch`).
    private func shareConvolutionScratch() {
        var all: [Conv2d] = []
        forEachLayerList(layers) { all += $0.compactMap { $0 as? Conv2d } }
        guard let input = all.map({ $0.scratchFloats.input }).max(), let output = all.map({ $0.scratchFloats.output }).max() else { return }
        let shared = ConvolutionScratch(input: input, output: output)
        for conv in all { conv.shareScratch(shared) }
    }

    /// Logits for `batch` samples of `input` (batch × inputSize values, NCHW).
    public func forward(_ input: UnsafeBufferPointer<Float>, batch: Int, training: Bool) throws -> UnsafePointer<Float> {
        try checkBatch(input: input, labels: nil, batch: batch)
        reserve(batch: batch)
        var x = UnsafePointer(input.baseAddress!)
        for layer in layers { x = layer.forward(x, batch: batch, training: training) }
        try raiseCollectiveFailure()
        return x
    }

    /// One local training step's gradient: forward, loss, backward. Writes the mean-loss
    /// gradient of every parameter into `parameters.gradients`.
    ///
    /// `forwardDone` is called once the loss is known; `unitDone(i, loss)` is called as soon as layer i's parameter gradients are final —
    /// backward runs from the last layer to the first, so in decreasing i — with the batch's
    /// loss: what a data-parallel trainer needs to start averaging a bucket of gradients while
    /// backward goes on (PyTorch DDP's autograd hooks).
    public func computeGradients(input: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>, batch: Int,
                                 forwardDone: (() -> Void)?,
                                 unitDone: ((Int, SoftmaxCrossEntropy.Result) -> Void)?) throws -> SoftmaxCrossEntropy.Result {
        try checkBatch(input: input, labels: labels, batch: batch)
        let logits = try forward(input, batch: batch, training: true)
        let result = try loss.evaluate(logits: logits, labels: labels.baseAddress!, batch: batch, gradient: true)
        forwardDone?()
        var gradient = loss.lastGradient
        for (index, layer) in layers.enumerated().reversed() {
            // The first layer with parameters needs no input gradient (its input is data).
            let needsInput = firstParameterised.map { $0 < index } ?? false
            let next = layer.backward(gradient, batch: batch, needsInputGradient: needsInput)
            unitDone?(index, result)
            guard let next else { break }
            gradient = next
        }
        try raiseCollectiveFailure()
        return result
    }

    /// Each layer's extent in the flat buffers: from its first parameter to the next
    /// parameterised layer's first (alignment padding included), the last layer's to the end;
    /// nil for a layer without parameters. The extents tile `0 ..< parameters.count`.
    public var unitExtents: [Range<Int>?] {
        var firsts: [Int?] = [], viewIndex = 0
        for layer in layers {
            let n = layer.parameters.count
            firsts.append(n == 0 ? nil : viewIndex)
            viewIndex += n
        }
        return parameters.extents(firstViews: firsts)
    }

    /// A synchronised batch norm's reduction that failed during the pass (a rank died): raised
    /// here, once the pass is over, since layers do not throw.
    private func raiseCollectiveFailure() throws {
        let failures = collectiveLayers.compactMap { $0.takeFailure() }
        if let first = failures.first { throw first }
    }

    public var unitNames: [String] { layers.enumerated().map { "\($0.offset) \($0.element.summary)" } }

    /// Floating-point operations of one training step per sample (forward, weight gradients,
    /// and input gradients for every layer but the first one with parameters).
    public var trainingFlopsPerSample: Double {
        var total = 0.0, seenParameters = false
        for layer in layers {
            let f = layer.flopsPerSample
            total += f.forward + f.weightGradient + (seenParameters ? f.inputGradient : 0)
            if !layer.parameters.isEmpty { seenParameters = true }
        }
        return total
    }

    /// The same model as PyTorch code: `nn.Sequential(nn.Flatten(), nn.Linear(784, 512), …)`,
    /// whose `state_dict` keys are this model's parameter names.
    public var pytorchModule: String {
        "nn.Sequential(" + layers.map(\.pytorchModule).joined(separator: ", ") + ")"
    }

    public var summary: String {
        layers.map(\.summary).joined(separator: " → ") + " (\(parameters.count) parameters)"
    }
}
