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

    /// The model, freshly built (parameters zero).
    public func build() throws -> Model {
        if let gpt { return try GPT(gpt) }
        return try ModelSpec.layers(layers).build(inputShape: inputShape, classes: classes)
    }

    enum CodingKeys: String, CodingKey {
        case inputShape = "input_shape", classes, layers, gpt, normalization, pytorch
    }
}
