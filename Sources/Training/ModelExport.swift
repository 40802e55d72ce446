import Foundation
import NeuralNet

/// A checkpoint's parameters as named tensors for other tools: PyTorch's `state_dict` names
/// and shapes ("0.weight" [32, 1, 3, 3], …), the alignment padding of the flat buffer left out.
public enum ModelExport {
    public enum Format: String, CaseIterable {
        case safetensors, npz
    }

    public static func tensors(of checkpoint: Checkpoint, model description: ModelDescription) throws -> [NamedTensor] {
        let model = try description.build()
        guard model.parameters.count == checkpoint.parameters.count else {
            throw Checkpoint.Corrupt(reason: "holds \(checkpoint.parameters.count) parameters, its model description \(model.parameters.count)")
        }
        return model.parameters.views.map { view in
            NamedTensor(name: view.name, shape: view.shape, values: Array(checkpoint.parameters[view.range]))
        }
    }

    /// The file's bytes. safetensors carries metadata: the PyTorch module, the layer list, input
    /// shape, classes, normalisation, step and config hash (all strings, as the format requires).
    public static func encode(_ checkpoint: Checkpoint, format: Format) throws -> (bytes: [UInt8], tensors: [NamedTensor]) {
        guard let description = checkpoint.model else {
            throw Checkpoint.Corrupt(reason: "has no model description (written before ringsgd could export); resume the run once to write a new checkpoint")
        }
        let tensors = try tensors(of: checkpoint, model: description)
        switch format {
        case .npz:
            return (try NpzArchive.encode(tensors), tensors)
        case .safetensors:
            func json<T: Encodable>(_ value: T) -> String { String(decoding: (try? JSONEncoder.sorted.encode(value)) ?? Data(), as: UTF8.self) }
            var metadata = ["format": "pt", "ringsgd.pytorch": description.pytorch, "ringsgd.layers": json(description.layers),
                            "ringsgd.input_shape": json(description.inputShape), "ringsgd.classes": "\(description.classes)",
                            "ringsgd.step": "\(checkpoint.step)",
                            "ringsgd.config_hash": String(format: "%016llx", FastHash.hash(Array(checkpoint.config.utf8)))]
            if let n = description.normalization {
                metadata["ringsgd.normalization"] = json(n)
            }
            return (Safetensors.encode(tensors, metadata: metadata), tensors)
        }
    }

    /// Writes the export atomically (a reader never sees half a file).
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try FileSystem.writeAtomically(bytes, to: path, what: "export")
    }
}
