import FileFormats
import Foundation
import NeuralNet

/// `train --init-from FILE.safetensors`: start from given weights (a PyTorch-initialised or
/// pre-trained model, an export of another run) instead of the seeded initialisation.
///
/// Tensors are matched to the model's parameter and buffer views by name and shape; every view must be
/// given and every tensor must be used, except `lm_head.weight` when the head is tied to
/// `transformer.wte.weight` (nanoGPT's state_dict lists it; it must then equal the embedding)
/// and nanoGPT's causal-mask buffers (`….attn.bias`, not parameters).
enum InitialWeights {
    struct Mismatch: Error, CustomStringConvertible {
        let lines: [String]
        let path: String
        var description: String {
            "--init-from \(path): \(lines.count) tensor\(lines.count == 1 ? " does" : "s do") not fit this model (\(lines.count == 1 ? lines[0] : "first: \(lines[0]); each is listed above")); export from the same model.* config, or fix the names and shapes"
        }
    }

    /// Copies the file's tensors into `parameters`; returns how many were loaded.
    static func load(_ path: String, into parameters: FlatParameters, tiedHead: Bool) throws -> Int {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FileError("--init-from \(path): cannot read it (\(FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")); give a .safetensors file")
        }
        let tensors: [NamedTensor]
        do { tensors = try Safetensors.decode(Array(data)).tensors } catch {
            throw FileError("--init-from \(path) is not a safetensors file of F32 tensors: \(error)")
        }
        var byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        // safetensors.torch.save_model keeps one name of tensors that share storage, the first
        // in sorted order: for a tied GPT "lm_head.weight", without "transformer.wte.weight".
        // The head's tensor is then the embedding's.
        if tiedHead, byName["transformer.wte.weight"] == nil, let head = byName.removeValue(forKey: "lm_head.weight") {
            byName["transformer.wte.weight"] = NamedTensor(name: "transformer.wte.weight", shape: head.shape, values: head.values)
        }
        var problems: [String] = []
        // Parameters, then buffers (batch norms' running statistics: an export of a model with
        // batch norms carries them, and they are restored with the weights).
        for (view, storage) in parameters.views.map({ ($0, parameters.parameters) }) + parameters.bufferViews.map({ ($0, parameters.buffers) }) {
            guard let tensor = byName.removeValue(forKey: view.name) else { problems.append("\(view.name) \(view.shape) is missing"); continue }
            guard tensor.shape == view.shape else {
                problems.append("\(view.name) has shape \(tensor.shape), the model \(view.shape)"); continue
            }
            _ = UnsafeMutableBufferPointer(rebasing: storage[view.range]).update(fromContentsOf: tensor.values)
        }
        if tiedHead, let head = byName.removeValue(forKey: "lm_head.weight"),
           head.values != tensors.first(where: { $0.name == "transformer.wte.weight" })?.values {
            problems.append("lm_head.weight differs from transformer.wte.weight, but this model ties them (model.gpt.tie_embeddings: false unties)")
        }
        for name in byName.keys.sorted() where !name.hasSuffix(".attn.bias") {
            problems.append("\(name) is not a parameter of this model")
        }
        guard problems.isEmpty else {
            if problems.count > 1 { for line in problems { FileHandle.standardError.write(Data("--init-from: \(line)\n".utf8)) } }
            throw Mismatch(lines: problems, path: path)
        }
        return parameters.views.count + parameters.bufferViews.count
    }
}
