/// Flattens [C, H, W] to [C·H·W] per sample. NCHW is already contiguous in that order
/// (PyTorch's `nn.Flatten`), so forward and backward are the identity on the pointer.
public final class Flatten: Layer {
    public init() {}
    public var summary: String { "Flatten" }
    public var pytorchModule: String { "nn.Flatten()" }
    public func outputShape(for input: [Int]) throws -> [Int] { [input.reduce(1, *)] }
    public func reserve(batch: Int) {}
    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> { x }
    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        needsInputGradient ? dy : nil
    }
}
