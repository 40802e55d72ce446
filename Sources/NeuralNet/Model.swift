/// What a trainer needs of a model, whatever its architecture: the flat buffers, a training
/// step's gradient reported unit by unit as backward finishes them, and evaluation.
///
/// A *unit* is a run of the flat buffer whose gradients become final together — a layer of a
/// `Sequential`, a block of a `GPT`. Units tile the buffer in its order; backward reports
/// them as it finishes them (the last unit first), which is all that gradient bucketing needs
/// (`BucketPlan`). A unit is final when the model says so, not when some layer's backward has
/// run: a GPT's token embedding, shared with its output head, is final only after the
/// embedding's own backward, the last of the step.
///
/// Samples are `inputShape` Floats in and `labelsPerSample` labels out (1 for a classifier;
/// one per position for a language model, whose every position predicts the next token);
/// the logits are `labelsPerSample` rows of `classes` per sample.
public protocol Model: AnyObject {
    var parameters: FlatParameters { get }
    var inputShape: [Int] { get }
    var labelsPerSample: Int { get }
    var classes: Int { get }
    var loss: SoftmaxCrossEntropy { get }
    /// Each unit's extent in the flat buffer (nil: no parameters), in buffer order.
    var unitExtents: [Range<Int>?] { get }
    /// A short name per unit, for the timeline ("3 Linear(512→256)", "h.2").
    var unitNames: [String] { get }
    /// Draws every parameter from `seed`: the same seed gives the same model everywhere.
    func initialize(seed: UInt64)
    /// Sets every dropout's mask stream for one step from (seed, rank, step) alone.
    func reseedDropout(seed: UInt64, rank: Int, step: Int)
    /// Allocates activations for batches up to `batch` samples; the hot path never allocates.
    func reserve(batch: Int)
    /// The largest batch reserved so far.
    var reservedBatch: Int { get }
    /// Logits for `batch` samples.
    func forward(_ input: UnsafeBufferPointer<Float>, batch: Int, training: Bool) throws -> UnsafePointer<Float>
    /// One local step's gradient: forward, mean loss over every label, backward, written into
    /// `parameters.gradients`. `unitDone(i, loss)` is called as soon as unit i is final.
    func computeGradients(input: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>, batch: Int,
                          forwardDone: (() -> Void)?,
                          unitDone: ((Int, SoftmaxCrossEntropy.Result) -> Void)?) throws -> SoftmaxCrossEntropy.Result
    /// Floating-point operations of one training step per sample.
    var trainingFlopsPerSample: Double { get }
    /// The same model as PyTorch code, whose `state_dict` keys are this model's view names.
    var pytorchModule: String { get }
    var summary: String { get }
}

extension Model {
    public var inputSize: Int { inputShape.reduce(1, *) }

    public func computeGradients(input: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>, batch: Int) throws -> SoftmaxCrossEntropy.Result {
        try computeGradients(input: input, labels: labels, batch: batch, forwardDone: nil, unitDone: nil)
    }

    /// Mean loss over every label and the labels predicted right, without gradients (dropout off).
    public func evaluate(input: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>,
                         batch: Int) throws -> SoftmaxCrossEntropy.Result {
        let logits = try forward(input, batch: batch, training: false)
        return try loss.evaluate(logits: logits, labels: labels.baseAddress!, batch: batch * labelsPerSample, gradient: false)
    }

    /// Checks a batch's sizes before any layer reads it.
    func checkBatch(input: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>?, batch: Int) throws {
        guard batch >= 1, input.count == batch * inputSize else {
            throw ShapeError("model input has \(input.count) values; expected batch \(batch) × \(inputShape) = \(batch * inputSize)")
        }
        if let labels, labels.count != batch * labelsPerSample {
            throw ShapeError("got \(labels.count) labels for a batch of \(batch) × \(labelsPerSample)")
        }
    }
}

extension FlatParameters {
    /// Views for `specs` laid out one after another, each starting on a 16-float (64-byte)
    /// boundary so that vector loops start on a cache line.
    static func layout(_ specs: [(name: String, shape: [Int])]) -> [ParameterView] {
        var views: [ParameterView] = [], offset = 0
        for spec in specs {
            views.append(ParameterView(name: spec.name, offset: offset, shape: spec.shape))
            offset += (views.last!.count + 15) & ~15
        }
        return views
    }

    /// Binds `layer` to its views `views[first ..< first + layer.parameters.count]`; returns the next index.
    func bind(_ layer: Layer, from first: Int) -> Int {
        let n = layer.parameters.count
        let mine = views[first ..< first + n]
        layer.bind(parameters: mine.map { parameters.baseAddress! + $0.offset },
                   gradients: mine.map { gradients.baseAddress! + $0.offset })
        return first + n
    }

    /// Binds `layer` to its buffer views from index `first`; returns the next index.
    func bindBuffers(_ layer: Layer, from first: Int) -> Int {
        let n = layer.buffers.count
        guard n > 0 else { return first }
        layer.bind(buffers: bufferViews[first ..< first + n].map { buffers.baseAddress! + $0.offset })
        return first + n
    }

    /// Unit extents from the index of each unit's first view (nil: none): from its first view
    /// to the next unit's first (alignment padding included), the last to the end.
    func extents(firstViews: [Int?]) -> [Range<Int>?] {
        var extents: [Range<Int>?] = Array(repeating: nil, count: firstViews.count)
        var end = count
        for i in firstViews.indices.reversed() {
            guard let first = firstViews[i] else { continue }
            extents[i] = views[first].offset ..< end
            end = views[first].offset
        }
        return extents
    }
}
