/// Why a model cannot run on what it was given.
public struct ShapeError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A parameter a layer declares: its name suffix and shape (PyTorch's: a Linear weight is
/// [out, in], a Conv2d weight [out, in, k, k], a bias [out]), so that exports carry shapes.
public struct ParameterSpec {
    public let name: String
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }
    public init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }
}

/// One layer: forward and backward on a batch, in place in buffers it owns — or, inside a
/// model, in buffers the model shares out to its convolutions and residual blocks
/// (`ConvolutionScratch`, `GradientPool`).
///
/// Life cycle: the model asks `outputShape(for:)` once (shapes are per sample, NCHW without
/// N), lays out `parameters` in the flat buffer and calls `bind`, then `reserve(batch:)`
/// allocates every activation and scratch buffer for the largest batch. After that
/// `forward`/`backward` allocate nothing.
///
/// `backward` writes (not adds) this layer's parameter gradients, and returns the gradient
/// with respect to its input only when asked (the first layer is never asked: its input is
/// data, and skipping that product saves a full GEMM).
public protocol Layer: AnyObject {
    /// A short description, e.g. "Linear(784→512)".
    var summary: String { get }
    /// The equivalent PyTorch module, e.g. "nn.Linear(784, 512)": exports carry it so that a
    /// user can rebuild the model whose `state_dict` the exported tensors are.
    var pytorchModule: String { get }
    /// Parameters this layer owns, in state_dict order (weight, then bias).
    var parameters: [ParameterSpec] { get }
    /// Per-sample output shape for a per-sample input shape; throws on a mismatch.
    func outputShape(for input: [Int]) throws -> [Int]
    /// Receives pointers to its parameters and gradients (in `parameters` order).
    func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>])
    /// State this layer keeps that is not trained by gradients — a batch norm's running mean and
    /// variance, PyTorch's *buffers* — in state_dict order; it lives in the model's flat buffer
    /// of buffers, so checkpoints, the replica hash and exports carry it.
    var buffers: [ParameterSpec] { get }
    /// Receives pointers to its buffers (in `buffers` order).
    func bind(buffers: [UnsafeMutablePointer<Float>])
    /// PyTorch's default initialisation, drawn from `generator`.
    func initialize(using generator: inout SeededGenerator)
    /// Allocates buffers for batches of up to `batch` samples.
    func reserve(batch: Int)
    /// Computes the output for `batch` samples; returns a pointer to the layer's output buffer.
    func forward(_ input: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float>
    /// Given dLoss/dOutput, writes parameter gradients and returns dLoss/dInput if asked.
    func backward(_ gradOutput: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>?
    /// Floating-point operations per sample: forward, and the backward's parameter and input parts.
    var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) { get }
}

extension Layer {
    public var parameters: [ParameterSpec] { [] }
    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {}
    public var buffers: [ParameterSpec] { [] }
    public func bind(buffers: [UnsafeMutablePointer<Float>]) {}
    public func initialize(using generator: inout SeededGenerator) {}
    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) { (0, 0, 0) }
}

/// Binds a composite layer's parts in order: each takes as many of `parameters` and
/// `gradients` as it declares (a block's sub-layers, in state_dict order).
func bindParts(_ parts: [Layer], parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
    var next = 0
    for part in parts {
        let n = part.parameters.count
        part.bind(parameters: Array(parameters[next ..< next + n]), gradients: Array(gradients[next ..< next + n]))
        next += n
    }
}

/// A growable, 64-byte aligned Float buffer owned by a layer; grows in `reserve`, never in
/// the hot path.
final class ActivationBuffer {
    private(set) var pointer: UnsafeMutablePointer<Float>
    private(set) var capacity: Int

    init() {
        capacity = 0
        pointer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64).bindMemory(to: Float.self, capacity: 16)
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }

    func reserve(_ count: Int) {
        guard count > capacity else { return }
        UnsafeMutableRawPointer(pointer).deallocate()
        pointer = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
            .initializeMemory(as: Float.self, repeating: 0, count: count)
        capacity = count
    }
}
