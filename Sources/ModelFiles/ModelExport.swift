import FileFormats
import Foundation
import NeuralNet

/// A model's flat parameters as named tensors for other tools: PyTorch's `state_dict` names and
/// shapes ("0.weight" [32, 1, 3, 3], …), the alignment padding of the flat buffer left out.
public enum ModelExport {
    public enum Format: String, CaseIterable {
        case safetensors, npz
    }

    /// Parameters that do not fit their model description.
    public struct Mismatch: Error, CustomStringConvertible {
        public let description: String
    }

    /// `buffers`: the model's non-trained state (batch norms' running statistics), exported
    /// under PyTorch's buffer names so that `load_state_dict` restores `model.eval()`'s behaviour.
    public static func tensors(of parameters: [Float], buffers: [Float] = [], model description: ModelDescription) throws -> [NamedTensor] {
        let model = try description.build()
        guard model.parameters.count == parameters.count else {
            throw Mismatch(description: "holds \(parameters.count) parameters, its model description \(model.parameters.count)")
        }
        guard model.parameters.buffers.count == buffers.count else {
            throw Mismatch(description: "holds \(buffers.count) buffer values, its model description \(model.parameters.buffers.count)")
        }
        var tensors = model.parameters.views.map { view in
            NamedTensor(name: view.name, shape: view.shape, values: Array(parameters[view.range]))
        }
        // PyTorch keeps `num_batches_tracked` as int64: exported as one, so a loader that
        // checks dtypes (or `load_state_dict(assign=True)`) gets PyTorch's own type.
        tensors += model.parameters.bufferViews.map { view in
            NamedTensor(name: view.name, shape: view.shape, values: Array(buffers[view.range]),
                        isInteger: view.name.hasSuffix("num_batches_tracked"))
        }
        // A tied head is the token embedding: nanoGPT's state_dict lists it under both names,
        // so `load_state_dict` (strict) finds both; the file holds a copy (safetensors has no aliases).
        if let gpt = description.gpt, gpt.tieEmbeddings, let wte = tensors.first(where: { $0.name == "transformer.wte.weight" }) {
            tensors.append(NamedTensor(name: "lm_head.weight", shape: wte.shape, values: wte.values))
        }
        return tensors
    }

    /// The file's bytes. safetensors carries metadata: the PyTorch module, the layer list, input
    /// shape, classes, normalisation (all strings, as the format requires), and `extra` (the
    /// step and config hash of the checkpoint).
    public static func encode(_ parameters: [Float], buffers: [Float] = [], model description: ModelDescription, format: Format,
                              extra: [String: String] = [:]) throws -> (bytes: [UInt8], tensors: [NamedTensor]) {
        let tensors = try tensors(of: parameters, buffers: buffers, model: description)
        switch format {
        case .npz:
            return (try NpzArchive.encode(tensors), tensors)
        case .safetensors:
            func json<T: Encodable>(_ value: T) -> String { String(decoding: (try? JSONEncoder.sorted.encode(value)) ?? Data(), as: UTF8.self) }
            var metadata = ["format": "pt", "ringsgd.pytorch": description.pytorch, "ringsgd.layers": json(description.layers),
                            "ringsgd.input_shape": json(description.inputShape), "ringsgd.classes": "\(description.classes)"]
            if let n = description.normalization {
                metadata["ringsgd.normalization"] = json(n)
            }
            if let gpt = description.gpt {
                metadata["ringsgd.gpt"] = json(gpt)
                metadata["ringsgd.pytorch_source"] = GPTModuleSource.python
            } else if description.pytorch.contains("Residual(") {
                metadata["ringsgd.pytorch_source"] = GPTModuleSource.residual
            }
            metadata.merge(extra) { _, new in new }
            return (try Safetensors.encode(tensors, metadata: metadata), tensors)
        }
    }

    /// Writes the export (or, `what`, another result) atomically: a reader never sees half a file.
    public static func write(_ bytes: [UInt8], to path: String, what: String = "export") throws {
        try FileSystem.writeAtomically(bytes, to: path, what: what)
    }
}
