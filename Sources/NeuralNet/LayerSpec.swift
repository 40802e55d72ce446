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
    /// `nn.Conv2d` with a square kernel and zero padding; `bias` nil means true (and is how
    /// descriptions written before the field existed read back).
    case conv2d(out: Int, kernel: Int, stride: Int, padding: Int, bias: Bool? = nil)
    /// `nn.MaxPool2d(kernel)`: stride = kernel, floor mode.
    case maxpool2d(kernel: Int)
    case relu
    case flatten
    /// `nn.Dropout(p)`.
    case dropout(p: Double)
    /// `nn.BatchNorm2d` / `nn.BatchNorm1d` over the input's channels (eps, momentum: PyTorch's;
    /// momentum nil is its `momentum=None`, the cumulative average).
    case batchnorm2d(eps: Double, momentum: Double?)
    case batchnorm1d(eps: Double, momentum: Double?)
    /// `nn.AdaptiveAvgPool2d(1)` and flatten: [C, H, W] → [C].
    case globalavgpool2d
    /// A residual block: `layers` plus a shortcut, `identity` or `projection` (1×1 convolution
    /// with the block's stride, no bias, then batch norm).
    case residual(layers: [LayerSpec], shortcut: String)

    /// The names a config may use, in the order the README lists them.
    public static let names = ["linear", "conv2d", "maxpool2d", "relu", "flatten", "dropout", "batchnorm2d", "batchnorm1d",
                               "globalavgpool2d", "residual"]

    /// The largest `out` of a layer, and the largest kernel, stride or padding: far past any
    /// model ringsgd trains, small enough that no size computed from them overflows.
    public static let largestWidth = 1 << 20, largestWindow = 1 << 10

    /// What is out of range in this layer's numbers (a checkpoint's model description is read
    /// from a file; a config's through `LayerListReader`, with the same limits), or nil.
    public var problem: String? {
        func outside(_ value: Int, _ range: ClosedRange<Int>, _ what: String) -> String? {
            range.contains(value) ? nil : "\(name) \(what) must be in \(range.lowerBound)…\(range.upperBound), got \(value)"
        }
        switch self {
        case let .linear(out): return out.flatMap { outside($0, 1 ... Self.largestWidth, "out") }
        case let .conv2d(out, kernel, stride, padding, _):
            return outside(out, 1 ... Self.largestWidth, "out") ?? outside(kernel, 1 ... Self.largestWindow, "kernel")
                ?? outside(stride, 1 ... Self.largestWindow, "stride") ?? outside(padding, 0 ... Self.largestWindow, "padding")
        case let .maxpool2d(kernel): return outside(kernel, 1 ... Self.largestWindow, "kernel")
        case let .dropout(p): return p >= 0 && p < 1 ? nil : "dropout p must be in [0, 1), got \(p)"
        case let .batchnorm1d(eps, momentum), let .batchnorm2d(eps, momentum):
            return eps > 0 && eps.isFinite && (momentum.map { $0 >= 0 && $0 <= 1 } ?? true) ? nil
                : "\(name) needs eps > 0 and momentum in [0, 1] or none, got \(eps) and \(momentum.map { "\($0)" } ?? "none")"
        case let .residual(layers, shortcut):
            guard ["identity", "projection"].contains(shortcut) else { return "residual shortcut must be identity or projection, got \(shortcut)" }
            return layers.isEmpty ? "a residual block needs layers" : layers.lazy.compactMap(\.problem).first
        case .relu, .flatten, .globalavgpool2d: return nil
        }
    }

    /// Whether this layer is or holds a batch norm (a projection shortcut has one).
    public var containsBatchNorm: Bool {
        switch self {
        case .batchnorm1d, .batchnorm2d: return true
        case let .residual(layers, shortcut): return shortcut == "projection" || layers.contains(where: \.containsBatchNorm)
        default: return false
        }
    }

    /// The config's name of this layer ("conv2d").
    public var name: String {
        switch self {
        case .linear: return "linear"
        case .conv2d: return "conv2d"
        case .maxpool2d: return "maxpool2d"
        case .relu: return "relu"
        case .flatten: return "flatten"
        case .dropout: return "dropout"
        case .batchnorm2d: return "batchnorm2d"
        case .batchnorm1d: return "batchnorm1d"
        case .globalavgpool2d: return "globalavgpool2d"
        case .residual: return "residual"
        }
    }

    public var description: String {
        switch self {
        case let .linear(out): return out.map { "linear(out: \($0))" } ?? "linear(out: classes)"
        case let .conv2d(out, kernel, stride, padding, bias):
            return "conv2d(out: \(out), kernel: \(kernel), stride: \(stride), padding: \(padding)\(bias == false ? ", bias: false" : ""))"
        case let .batchnorm2d(eps, momentum): return "batchnorm2d(eps: \(eps), momentum: \(momentum.map { "\($0)" } ?? "none"))"
        case let .batchnorm1d(eps, momentum): return "batchnorm1d(eps: \(eps), momentum: \(momentum.map { "\($0)" } ?? "none"))"
        case .globalavgpool2d: return "globalavgpool2d"
        case let .residual(layers, shortcut): return "residual(layers: [\(layers.map(\.description).joined(separator: ", "))], shortcut: \(shortcut))"
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
        case let .conv2d(out, kernel, stride, padding, bias):
            let (channels, height, width) = try image()
            guard out >= 1, kernel >= 1, stride >= 1, padding >= 0 else {
                throw ShapeError("needs out, kernel, stride ≥ 1 and padding ≥ 0, got out \(out), kernel \(kernel), stride \(stride), padding \(padding)")
            }
            guard kernel <= height + 2 * padding, kernel <= width + 2 * padding else {
                throw ShapeError("kernel \(kernel) is larger than its \(height)×\(width) input (padded by \(padding))")
            }
            return Conv2d(channels, out, kernel: kernel, stride: stride, padding: padding, bias: bias ?? true)
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
        case let .batchnorm2d(eps, momentum):
            let (channels, _, _) = try image()
            return BatchNorm(channels: channels, dimensions: 2, epsilon: Float(eps), momentum: momentum.map(Float.init))
        case let .batchnorm1d(eps, momentum):
            guard input.count == 1 || input.count == 2 else { throw ShapeError("needs a [C] or [C, L] input, got \(input)") }
            return BatchNorm(channels: input[0], dimensions: 1, epsilon: Float(eps), momentum: momentum.map(Float.init))
        case .globalavgpool2d:
            _ = try image()
            return GlobalAvgPool2d()
        case let .residual(specs, shortcut):
            guard !specs.isEmpty else { throw ShapeError("a residual block needs at least one layer") }
            var inner: [Layer] = [], shape = input
            for (index, spec) in specs.enumerated() {
                do {
                    let layer = try spec.make(input: shape, classes: classes, isLast: false, seed: seed &+ UInt64(index + 1) << 20)
                    shape = try layer.outputShape(for: shape)
                    inner.append(layer)
                } catch let error as ShapeError {
                    throw ShapeError("layers[\(index)] (\(spec.name)): \(error.message)")
                }
            }
            switch shortcut {
            case "identity":
                return Residual(layers: inner, shortcut: [])
            case "projection":
                let (channels, height, width) = try image()
                // The block's stride: its convolutions' strides and its pools' kernels multiplied
                // (torchvision's downsample takes the block's stride). A 1×1 convolution of stride
                // s gives ⌊(H − 1)/s⌋ + 1 rows, which must be the block's: otherwise (an odd size
                // pooled, an unpadded convolution) the shortcut would read other positions than
                // the main path, and the two are not summed place by place.
                // At most the input's size: past it the shortcut reads position 0 alone whatever
                // the stride, and a block of several large strides would otherwise ask for a
                // stride² polyphase buffer (terabytes, or an overflow).
                let stride = min(Self.stride(of: specs), max(height, width))
                guard shape.count == 3, (height - 1) / stride + 1 == shape[1], (width - 1) / stride + 1 == shape[2] else {
                    throw ShapeError("a projection shortcut is a 1×1 convolution of the block's stride \(stride), which maps \(input) to [\(shape.first ?? 0), \((height - 1) / stride + 1), \((width - 1) / stride + 1)], not the block's output \(shape); pad the block's convolutions so that only their strides change the size (kernel 3, padding 1)")
                }
                // Its batch norm as the block's own (its last): torchvision's downsample takes the
                // same norm_layer, so a block's eps and momentum hold for its shortcut too.
                let norm = inner.last { $0 is BatchNorm } as? BatchNorm
                return Residual(layers: inner, shortcut: [Conv2d(channels, shape[0], kernel: 1, stride: stride, bias: false),
                                                          BatchNorm(channels: shape[0], dimensions: 2, epsilon: norm?.epsilon ?? 1e-5,
                                                                    momentum: norm.map(\.momentum) ?? 0.1)])
            default:
                throw ShapeError("shortcut must be identity or projection, got '\(shortcut)'")
            }
        }
    }

    /// How many input positions a layer list's output steps over per position: its
    /// convolutions' strides and its pools' kernels multiplied (nested blocks' included).
    /// (Saturating: the sizes it is compared with are far smaller.)
    static func stride(of specs: [LayerSpec]) -> Int {
        specs.reduce(1) { s, spec in
            let step: Int
            switch spec {
            case let .conv2d(_, _, stride, _, _): step = stride
            case let .maxpool2d(kernel): step = kernel
            case let .residual(layers, _): step = stride(of: layers)
            default: step = 1
            }
            let (product, overflow) = s.multipliedReportingOverflow(by: step)
            return overflow ? .max : product
        }
    }
}
