/// A model as a config describes it.
///
/// - `mlp(hidden:)`: Flatten → [Linear → ReLU]* → Linear, default hidden 512, 256 (784-512-256-10).
/// - `cnn`: Conv(1→32, 3×3, pad 1)-ReLU-MaxPool2 → Conv(32→64, 3×3, pad 1)-ReLU-MaxPool2 →
///   Flatten → Linear(3136→128)-ReLU → Linear(128→10), the peer's exact function (built with
///   each ReLU after its pool, which computes the same thing on fewer values).
/// - `linear`: one Linear(inputs → classes): multinomial logistic regression, as wide as
///   the input, for communication-bound benchmarks (100,000 inputs × 100 classes = 10 M).
public enum ModelSpec: Equatable, CustomStringConvertible {
    case mlp(hidden: [Int], dropout: Float)
    case cnn
    case linear

    public static let defaultMLPHidden = [512, 256]

    public var description: String {
        switch self {
        case let .mlp(hidden, dropout): return "mlp(hidden: \(hidden)\(dropout > 0 ? ", dropout: \(dropout)" : ""))"
        case .cnn: return "cnn"
        case .linear: return "linear"
        }
    }

    /// Builds the model for inputs of `inputShape` ([C, H, W]) and `classes` outputs.
    public func build(inputShape: [Int], classes: Int, seed: UInt64 = 0,
                      gradientStorage: GradientStorage? = nil) throws -> Sequential {
        let features = inputShape.reduce(1, *)
        var layers: [Layer] = []
        switch self {
        case let .mlp(hidden, dropout):
            layers.append(Flatten())
            var width = features
            for (i, h) in hidden.enumerated() {
                layers += [Linear(width, h), ReLU()]
                if dropout > 0 { layers.append(Dropout(probability: dropout, seed: seed &+ UInt64(i))) }
                width = h
            }
            layers.append(Linear(width, classes))
        case .cnn:
            guard inputShape.count == 3, inputShape[1] % 4 == 0, inputShape[2] % 4 == 0 else {
                throw ShapeError("cnn needs [C, H, W] input with H and W divisible by 4, got \(inputShape)")
            }
            let flat = 64 * (inputShape[1] / 4) * (inputShape[2] / 4)
            // Pool before ReLU: max commutes with the monotone ReLU, so ReLU(MaxPool(x)) is
            // the peer's MaxPool(ReLU(x)) exactly — same values, same gradients (a window with
            // no positive value gives 0 and routes no gradient either way) — with the ReLU on
            // 4× fewer values. Parameter names ("0.weight", "3.weight", …) are unchanged.
            layers = [Conv2d(inputShape[0], 32, kernel: 3, padding: 1), MaxPool2d(2), ReLU(),
                      Conv2d(32, 64, kernel: 3, padding: 1), MaxPool2d(2), ReLU(),
                      Flatten(), Linear(flat, 128), ReLU(), Linear(128, classes)]
        case .linear:
            layers = [Flatten(), Linear(features, classes)]
        }
        return try Sequential(layers, inputShape: inputShape, gradientStorage: gradientStorage)
    }
}
