/// A model as a config describes it: a list of layers, or a shorthand that expands to one.
///
/// - `layers`: any stack of `LayerSpec`s (`model.layers` in YAML).
/// - `mlp(hidden:)`: flatten → [linear → relu (→ dropout)]* → linear, default hidden 512, 256
///   (784-512-256-10).
/// - `cnn`: conv(32, 3×3, pad 1)-maxpool 2-relu → conv(64, 3×3, pad 1)-maxpool 2-relu →
///   flatten → linear(128)-relu → linear(classes), the peer's exact function (written with
///   each ReLU after its pool, which computes the same thing on fewer values).
/// - `linear`: flatten → one linear(classes): multinomial logistic regression, as wide as the
///   input, for communication-bound benchmarks (100,000 inputs × 100 classes = 10 M).
///
/// A shorthand is nothing but its expansion (`layers`): both build through one path, so a
/// config that writes the expansion out trains the very same model.
public enum ModelSpec: Equatable, CustomStringConvertible {
    case mlp(hidden: [Int], dropout: Float)
    case cnn
    case linear
    case layers([LayerSpec])

    public static let defaultMLPHidden = [512, 256]

    public var description: String {
        switch self {
        case let .mlp(hidden, dropout): return "mlp(hidden: \(hidden)\(dropout > 0 ? ", dropout: \(dropout)" : ""))"
        case .cnn: return "cnn"
        case .linear: return "linear"
        case let .layers(list): return "layers(\(list.map(\.description).joined(separator: ", ")))"
        }
    }

    /// The layer list this model is.
    public var expanded: [LayerSpec] {
        switch self {
        case let .mlp(hidden, dropout):
            var list: [LayerSpec] = [.flatten]
            for h in hidden {
                list += [.linear(out: h), .relu]
                if dropout > 0 { list.append(.dropout(p: Double(dropout))) }
            }
            return list + [.linear(out: nil)]
        case .cnn:
            // Pool before ReLU: max commutes with the monotone ReLU, so ReLU(MaxPool(x)) is
            // the peer's MaxPool(ReLU(x)) exactly — same values, same gradients (a window with
            // no positive value gives 0 and routes no gradient either way) — with the ReLU on
            // 4× fewer values. Parameter names ("0.weight", "3.weight", …) are unchanged.
            return [.conv2d(out: 32, kernel: 3, stride: 1, padding: 1), .maxpool2d(kernel: 2), .relu,
                    .conv2d(out: 64, kernel: 3, stride: 1, padding: 1), .maxpool2d(kernel: 2), .relu,
                    .flatten, .linear(out: 128), .relu, .linear(out: nil)]
        case .linear:
            return [.flatten, .linear(out: nil)]
        case let .layers(list):
            return list
        }
    }

    /// Builds the model for inputs of `inputShape` ([C, H, W] or [features]) and `classes`
    /// outputs, inferring each layer's input size from the one before. A layer that cannot take
    /// its input is a `ShapeError` naming it: "model.layers[3] (conv2d): …".
    public func build(inputShape: [Int], classes: Int, seed: UInt64 = 0,
                      gradientStorage: GradientStorage? = nil) throws -> Sequential {
        try Sequential(layers(inputShape: inputShape, classes: classes, seed: seed), inputShape: inputShape, gradientStorage: gradientStorage)
    }

    /// The layers for this input and class count, sizes inferred, without parameters yet: how a
    /// trainer checks that the model fits the data before any buffer (or shared window) exists.
    public func layers(inputShape: [Int], classes: Int, seed: UInt64 = 0) throws -> [Layer] {
        let specs = expanded
        guard !specs.isEmpty else { throw ShapeError("model.layers is empty; list at least one linear layer") }
        var layers: [Layer] = []
        var shape = inputShape
        for (index, spec) in specs.enumerated() {
            do {
                let layer = try spec.make(input: shape, classes: classes, isLast: index == specs.count - 1, seed: seed &+ UInt64(index))
                shape = try layer.outputShape(for: shape)
                // Activations are reserved per sample times the batch: past 2³¹ values one
                // sample would need 8 GB a layer, and the sizes after it could overflow.
                let values = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
                guard values <= 1 << 31 else { throw ShapeError("its output \(shape) holds \(values == Int.max ? "too many" : "\(values)") values a sample, more than ringsgd reserves (2³¹); make the model smaller") }
                layers.append(layer)
            } catch let error as ShapeError {
                throw ShapeError("model.layers[\(index)] (\(spec.name)): \(error.message)")
            }
        }
        guard shape == [classes] else {
            throw ShapeError("model.layers[\(specs.count - 1)] (\(specs[specs.count - 1].name)): the model ends with shape \(shape), but the data has \(classes) classes; end with a linear layer whose out is \(classes) (or omit its out)")
        }
        return layers
    }
}
