/// A lookup table of `count` vectors of `features` values (PyTorch `nn.Embedding`): the
/// input is a sequence of ids — token ids travel through the model's Float input exactly,
/// as every integer below 2²⁴ is a Float — and the output the rows they pick, [T, features].
///
/// Backward scatters: dW[id] += dy for every position holding id. It writes the gradient
/// (zeros, then scatters) unless `addsToGradient`: a language-model head tied to this table
/// (`Linear` bound to the same pointers) has written its part of dW already, and the
/// embedding's backward — the last of the model's — completes it.
public final class Embedding: Layer {
    public let count: Int
    public let features: Int
    /// Set when another layer shares this weight and writes its gradient first.
    public var addsToGradient = false
    private var positions = 0
    private var weight: UnsafeMutablePointer<Float>!, weightGrad: UnsafeMutablePointer<Float>!
    private let output = ActivationBuffer()
    private var input: UnsafePointer<Float>?

    public init(_ count: Int, _ features: Int) {
        precondition(count > 0 && features > 0, "Embedding needs positive sizes, got \(count)×\(features)")
        self.count = count
        self.features = features
    }

    public var summary: String { "Embedding(\(count)×\(features))" }
    public var pytorchModule: String { "nn.Embedding(\(count), \(features))" }
    public var parameters: [ParameterSpec] { [ParameterSpec(name: "weight", shape: [count, features])] }

    /// The weight's storage (a tied head binds to it).
    public var weightPointers: (parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) { (weight, weightGrad) }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 1 else { throw ShapeError("\(summary) takes a sequence of ids [T], got shape \(input)") }
        positions = input[0]
        return [positions, features]
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGrad = gradients[0]
    }

    /// PyTorch's `nn.Embedding` default: N(0, 1).
    public func initialize(using generator: inout SeededGenerator) {
        for i in 0 ..< count * features { weight[i] = generator.normal() }
    }

    public func reserve(batch: Int) { output.reserve(batch * positions * features) }

    public func forward(_ ids: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        input = ids
        let y = output.pointer, n = features
        for p in 0 ..< batch * positions {
            let id = Int(ids[p])
            precondition(id >= 0 && id < count, "token id \(id) is outside the embedding's 0..<\(count)")
            (y + p * n).update(from: weight + id * n, count: n)
        }
        return UnsafePointer(y)
    }

    /// The input is data: there is never an input gradient.
    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        let ids = input!, n = features
        if !addsToGradient { weightGrad.update(repeating: 0, count: count * n) }
        for p in 0 ..< batch * positions {
            let row = weightGrad + Int(ids[p]) * n, d = dy + p * n
            for i in 0 ..< n { row[i] += d[i] }
        }
        return nil
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        (0, Double(positions * features), 0)
    }
}

/// Learned absolute positions (GPT-2's `wpe`): adds row t of a [positions, features] table to
/// position t of every sequence of up to `positions` vectors. dW[t] = Σ over the batch of
/// dy[·, t]; the input gradient is dy itself.
public final class PositionalEmbedding: Layer {
    public let positions: Int
    public let features: Int
    private var length = 0
    private var weight: UnsafeMutablePointer<Float>!, weightGrad: UnsafeMutablePointer<Float>!
    private let output = ActivationBuffer()

    public init(_ positions: Int, _ features: Int) {
        precondition(positions > 0 && features > 0, "PositionalEmbedding needs positive sizes, got \(positions)×\(features)")
        self.positions = positions
        self.features = features
    }

    public var summary: String { "PositionalEmbedding(\(positions)×\(features))" }
    public var pytorchModule: String { "nn.Embedding(\(positions), \(features))" }
    public var parameters: [ParameterSpec] { [ParameterSpec(name: "weight", shape: [positions, features])] }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 2, input[1] == features, input[0] <= positions else {
            throw ShapeError("\(summary) takes [T ≤ \(positions), \(features)], got shape \(input)")
        }
        length = input[0]
        return input
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGrad = gradients[0]
    }

    /// PyTorch's `nn.Embedding` default: N(0, 1).
    public func initialize(using generator: inout SeededGenerator) {
        for i in 0 ..< positions * features { weight[i] = generator.normal() }
    }

    public func reserve(batch: Int) { output.reserve(batch * length * features) }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let y = output.pointer, span = length * features
        for b in 0 ..< batch {
            for i in 0 ..< span { y[b * span + i] = x[b * span + i] + weight[i] }
        }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        let span = length * features
        weightGrad.update(repeating: 0, count: positions * features)
        for b in 0 ..< batch {
            for i in 0 ..< span { weightGrad[i] += dy[b * span + i] }
        }
        return needsInputGradient ? dy : nil
    }
}
