/// One layer of a model as a config describes it, before its input shape is known.
///
/// The YAML form is the case name with its fields (`conv2d: {out: 32, kernel: 3, padding: 1}`,
/// `relu`); input sizes are never written, they are inferred from the data's shape layer by
/// layer (`ModelSpec.build`), as PyTorch's lazy modules do. The synthesised `Codable` form is
/// the same shape as the YAML (`{"conv2d": {"out": 32, …}}`), so a checkpoint or an export can
/// carry the description and it reads back.
public enum LayerSpec: Equatable, Codable, CustomStringConvertible {
    /// `nn.Linear`; `out` nil only on the last layer, where it is the data's class count.
    case linear(out: Int?)
    /// `nn.Conv2d` with a square kernel and zero padding.
    case conv2d(out: Int, kernel: Int, stride: Int, padding: Int)
    /// `nn.MaxPool2d(kernel)`: stride = kernel, floor mode.
    case maxpool2d(kernel: Int)
    case relu
    case flatten
    /// `nn.Dropout(p)`.
    case dropout(p: Double)

    /// The names a config may use, in the order the README lists them.
    public static let names = ["linear", "conv2d", "maxpool2d", "relu", "flatten", "dropout"]

    /// The config's name of this layer ("conv2d").
    public var name: String {
        switch self {
        case .linear: return "linear"
        case .conv2d: return "conv2d"
        case .maxpool2d: return "maxpool2d"
        case .relu: return "relu"
        case .flatten: return "flatten"
        case .dropout: return "dropout"
        }
    }

    public var description: String {
        switch self {
        case let .linear(out): return out.map { "linear(out: \($0))" } ?? "linear(out: classes)"
        case let .conv2d(out, kernel, stride, padding): return "conv2d(out: \(out), kernel: \(kernel), stride: \(stride), padding: \(padding))"
        case let .maxpool2d(kernel): return "maxpool2d(kernel: \(kernel))"
        case .relu: return "relu"
        case .flatten: return "flatten"
        case let .dropout(p): return "dropout(p: \(p))"
        }
    }

    /// The layer for a per-sample `input` shape, or a `ShapeError` saying why it cannot take
    /// that shape (checked here, before a layer's own preconditions could trap).
    /// `classes` fills a last `linear` without `out`; `seed` seeds a dropout's first mask.
    func make(input: [Int], classes: Int, isLast: Bool, seed: UInt64) throws -> Layer {
        func image() throws -> (channels: Int, height: Int, width: Int) {
            guard input.count == 3 else {
                throw ShapeError("needs a [C, H, W] image input, got \(input)\(input.count == 1 ? " (a flat vector: put it before flatten)" : "")")
            }
            return (input[0], input[1], input[2])
        }
        switch self {
        case let .linear(out):
            guard input.count == 1 else {
                throw ShapeError("needs a flat input, got \(input); add flatten before it")
            }
            guard let width = out ?? (isLast ? classes : nil) else {
                throw ShapeError("needs out (only the last layer may omit it: it is then the class count, \(classes))")
            }
            guard width >= 1 else { throw ShapeError("out must be ≥ 1, got \(width)") }
            return Linear(input[0], width)
        case let .conv2d(out, kernel, stride, padding):
            let (channels, height, width) = try image()
            guard out >= 1, kernel >= 1, stride >= 1, padding >= 0 else {
                throw ShapeError("needs out, kernel, stride ≥ 1 and padding ≥ 0, got out \(out), kernel \(kernel), stride \(stride), padding \(padding)")
            }
            guard kernel <= height + 2 * padding, kernel <= width + 2 * padding else {
                throw ShapeError("kernel \(kernel) is larger than its \(height)×\(width) input (padded by \(padding))")
            }
            return Conv2d(channels, out, kernel: kernel, stride: stride, padding: padding)
        case let .maxpool2d(kernel):
            let (_, height, width) = try image()
            guard kernel >= 1 else { throw ShapeError("kernel must be ≥ 1, got \(kernel)") }
            guard kernel <= height, kernel <= width else {
                throw ShapeError("kernel \(kernel) is larger than its \(height)×\(width) input")
            }
            return MaxPool2d(kernel)
        case .relu:
            return ReLU()
        case .flatten:
            return Flatten()
        case let .dropout(p):
            guard p >= 0, p < 1 else { throw ShapeError("p must be in [0, 1), got \(p)") }
            return Dropout(probability: Float(p), seed: seed)
        }
    }
}
