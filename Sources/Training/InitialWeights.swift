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
public enum InitialWeights {
    struct Mismatch: Error, CustomStringConvertible {
        let lines: [String]
        let path: String
        var description: String {
            ("--init-from \(path): \(lines.count) tensor\(lines.count == 1 ? " does" : "s do") not fit this model (\(lines.count == 1 ? lines[0] : "first: \(lines[0]); each is listed above")); export from the same model.* config, or fix the names and shapes").shownOnOneLine
        }
    }

    /// Copies the file's tensors into `parameters`; returns how many were loaded.
    static func load(_ path: String, into parameters: FlatParameters, tiedHead: Bool) throws -> Int {
        let file: MappedFile
        do { file = try MappedFile(path: path, what: "--init-from") } catch {
            throw FileError("\(error); give a .safetensors file")
        }
        return try withExtendedLifetime(file) { try load(file.bytes, from: path, into: parameters, tiedHead: tiedHead) }
    }

    /// What a file that is not safetensors most likely is, by its first bytes, and how to get
    /// safetensors from it: the formats a PyTorch or NumPy user has at hand. Asked only of a file
    /// safetensors' reader refused (a safetensors header length may begin with the same bytes).
    static func otherFormat(_ bytes: UnsafeRawBufferPointer) -> String? {
        func starts(_ prefix: [UInt8]) -> Bool { bytes.starts(with: prefix) }
        let saveFile = "write one with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
        if starts([0x50, 0x4B, 0x03, 0x04]) { return "is a zip archive (torch.save's .pt, or a NumPy .npz), not safetensors; \(saveFile)" }
        if starts([0x93] + Array("NUMPY".utf8)) { return "is a NumPy .npy array, not safetensors; \(saveFile) (or safetensors.numpy.save_file)" }
        if bytes.count >= 2, bytes[0] == 0x80, (2 ... 5).contains(bytes[1]) { return "is a Python pickle (an old torch.save), not safetensors; \(saveFile)" }
        if starts(Checkpoint.magic) {
            return "is a ringsgd checkpoint; continue its run with train --run-dir DIR --resume, or turn it into weights with ringsgd export --checkpoint FILE --out FILE.safetensors"
        }
        return nil
    }

    /// `load`'s work on the file's bytes (also the fuzzer's entry: any bytes give tensors or a
    /// one-line error). `listing`: each misfit tensor on a line of its own before the error.
    public static func load(_ bytes: [UInt8], from path: String, into parameters: FlatParameters, tiedHead: Bool, listing: Bool = true) throws -> Int {
        try bytes.withUnsafeBytes { try load($0, from: path, into: parameters, tiedHead: tiedHead, listing: listing) }
    }

    static func load(_ bytes: UnsafeRawBufferPointer, from path: String, into parameters: FlatParameters, tiedHead: Bool, listing: Bool = true) throws -> Int {
        let tensors: [NamedTensor]
        do { tensors = try Safetensors.decode(bytes).tensors } catch {
            if let other = otherFormat(bytes) { throw FileError("--init-from \(path) \(other)") }
            throw FileError("--init-from \(path) is not a safetensors file ringsgd reads: \(error); give weights saved by ringsgd export or safetensors.torch.save_file")
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
        let parameterCount = parameters.views.count
        for (index, (view, storage)) in (parameters.views.map({ ($0, parameters.parameters) }) + parameters.bufferViews.map({ ($0, parameters.buffers) })).enumerated() {
            guard let tensor = byName.removeValue(forKey: view.name) else { problems.append("\(view.name) \(view.shape) is missing"); continue }
            guard tensor.shape == view.shape else {
                problems.append("\(view.name) has shape \(tensor.shape), the model \(view.shape)"); continue
            }
            // Integers are counts and masks (a batch norm's num_batches_tracked), never weights.
            if index < parameterCount && tensor.isInteger {
                problems.append("\(view.name) holds integers, but it is a trained parameter (floating point)"); continue
            }
            // A NaN or infinity would make every step non-finite, each skipped, for the whole run.
            if let bad = tensor.values.firstIndex(where: { !$0.isFinite }) {
                problems.append("\(view.name) holds \(tensor.values[bad]) at index \(bad): weights must be finite"); continue
            }
            _ = UnsafeMutableBufferPointer(rebasing: storage[view.range]).update(fromContentsOf: tensor.values)
        }
        if tiedHead, let head = byName.removeValue(forKey: "lm_head.weight"),
           head.values != tensors.first(where: { $0.name == "transformer.wte.weight" })?.values {
            problems.append("lm_head.weight differs from transformer.wte.weight, but this model ties them (model.gpt.tie_embeddings: false unties)")
        }
        for name in byName.keys.sorted() where !name.hasSuffix(".attn.bias") {
            problems.append("\(name) is not a parameter or buffer of this model")
        }
        // A tensor's name is the file's: shown on one line (a newline in it must not break the error).
        problems = problems.map(\.shownOnOneLine)
        guard problems.isEmpty else {
            if listing && problems.count > 1 { for line in problems { FileHandle.standardError.write(Data("--init-from: \(line)\n".utf8)) } }
            throw Mismatch(lines: problems, path: path)
        }
        return parameters.views.count + parameters.bufferViews.count
    }
}
