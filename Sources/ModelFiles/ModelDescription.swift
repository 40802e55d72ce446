import Foundation
import Datasets
import NeuralNet

/// What a checkpoint's flat parameters are the parameters of: the layer list (every size
/// resolved) or the GPT's shape, the per-sample input shape, the class count and the data's
/// normalisation. With
/// it a checkpoint stands alone — `ringsgd export` rebuilds the model, names and shapes its
/// tensors and tells the user how to feed it, without the dataset at hand.
public struct ModelDescription: Codable, Equatable {
    public var inputShape: [Int]
    public var classes: Int
    public var layers: [LayerSpec]
    /// A GPT's shape (then `layers` is empty); absent for layer-list models.
    public var gpt: GPTSpec?
    /// x = (v − mean) / std, v a UInt8 pixel scaled to [0, 1] or a Float32 as stored; nil for
    /// synthetic data (generated as the model sees it).
    public var normalization: Normalization?
    /// The same model in PyTorch (`nn.Sequential(…)`).
    public var pytorch: String

    public init(model: Model, layers: [LayerSpec], normalization: Normalization?) {
        inputShape = model.inputShape
        gpt = (model as? GPT)?.spec
        classes = model.classes
        // The last linear's size is the class count: written out, the list needs no data.
        self.layers = layers.map { if case .linear(nil) = $0 { return .linear(out: model.classes) } else { return $0 } }
        self.normalization = normalization
        pytorch = model.pytorchModule
    }

    /// Values a sample and classes a model may have, as `ModelSpec.layers` and the label
    /// readers enforce them.
    public static let largestSample = 1 << 31, mostClasses = 1 << 20

    /// What is out of range (a description is read from a checkpoint, which may be damaged
    /// or crafted: its checksum is no secret), or nil. Sizes within these limits build or fail
    /// with a `ShapeError`, never a trap.
    public var problem: String? {
        // The limits training itself enforces (`ModelSpec.layers`: 2³¹ values a sample; labels
        // and data.classes: 2²⁰ classes), so every checkpoint a run writes reads back.
        let values = inputShape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        guard (1 ... 4).contains(inputShape.count), inputShape.allSatisfy({ $0 >= 1 }), values <= Self.largestSample else {
            return "its input shape \(inputShape) is not 1–4 sizes ≥ 1 of at most 2³¹ values"
        }
        if let gpt { return gpt.problem ?? (classes == gpt.vocab ? nil : "its class count \(classes) is not its GPT's vocabulary \(gpt.vocab)") }
        guard (2 ... Self.mostClasses).contains(classes) else { return "its class count \(classes) is not in 2…\(Self.mostClasses)" }
        if layers.isEmpty { return "it lists no layers" }
        return layers.lazy.compactMap(\.problem).first
    }

    /// The model, freshly built (parameters zero).
    public func build() throws -> Model {
        if let gpt { return try GPT(gpt) }
        return try ModelSpec.layers(layers).build(inputShape: inputShape, classes: classes)
    }

    enum CodingKeys: String, CodingKey {
        case inputShape = "input_shape", classes, layers, gpt, normalization, pytorch
    }
}
