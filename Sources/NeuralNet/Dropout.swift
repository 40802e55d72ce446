/// Inverted dropout (PyTorch `nn.Dropout`): in training each value is zeroed with
/// probability p and the survivors scaled by 1/(1−p), so evaluation is the identity.
///
/// The mask comes from `generator`, which the trainer reseeds every step through
/// `Sequential.reseedDropout` (a function of seed, rank, layer and step), so a run and its
/// resumption draw the same masks.
public final class Dropout: Layer {
    public let probability: Float
    public var generator: SeededGenerator
    private var size = 0
    /// Whether the last forward drew a mask (training with p > 0); backward follows it.
    private var applied = false
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer(), mask = ActivationBuffer()

    public init(probability: Float, seed: UInt64 = 0) {
        precondition(probability >= 0 && probability < 1, "dropout probability must be in [0, 1), got \(probability)")
        self.probability = probability
        self.generator = SeededGenerator(seed: seed)
    }

    public var summary: String { "Dropout(p=\(probability))" }
    public var pytorchModule: String { "nn.Dropout(p=\(probability))" }

    public func outputShape(for input: [Int]) throws -> [Int] {
        size = input.reduce(1, *)
        return input
    }

    /// Nothing to hold at p = 0 (a GPT has a dropout at every residual branch, off by default).
    public func reserve(batch: Int) {
        guard probability > 0 else { return }
        output.reserve(batch * size); inputGrad.reserve(batch * size); mask.reserve(batch * size)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        applied = training && probability > 0
        guard applied else { return x }
        let keep = 1 - probability, scale = 1 / keep
        let y = output.pointer, m = mask.pointer
        for i in 0 ..< batch * size {
            m[i] = generator.nextUnitFloat() < keep ? scale : 0
            y[i] = x[i] * m[i]
        }
        return UnsafePointer(y)
    }

    /// Sets the mask stream for one training step as a function of (seed, rank, stream, step)
    /// alone — `stream` numbers this dropout within its model — so a resumed run draws the same
    /// masks with nothing checkpointed and ranks and layers draw different ones.
    public func reseed(seed: UInt64, rank: Int, stream: UInt64, step: Int) {
        var root = SeededGenerator(seed: seed, stream: UInt64(rank) << 32 | stream)
        generator = SeededGenerator(seed: root.next(), stream: UInt64(step))
    }

    /// What the last forward returned for `input`: the masked copy, or `input` itself.
    func lastOutput(input: UnsafePointer<Float>) -> UnsafePointer<Float> { applied ? UnsafePointer(output.pointer) : input }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        guard needsInputGradient else { return nil }
        guard applied else { return dy }
        let dx = inputGrad.pointer, m = mask.pointer
        for i in 0 ..< batch * size { dx[i] = dy[i] * m[i] }
        return UnsafePointer(dx)
    }
}
