import ArgumentParser
import Foundation
import ModelFiles
import Training

/// `ringsgd export`: a checkpoint's parameters as safetensors or .npz, named and shaped as the
/// equivalent PyTorch `nn.Sequential`'s `state_dict`. One process, no MPI.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's weights as safetensors (or .npz) for PyTorch, NumPy and other tools.",
        discussion: """
            Examples:
              ringsgd export --run-dir runs/fashion-cnn --out cnn.safetensors
              ringsgd export --run-dir runs/fashion-cnn --out cnn.npz
            The format follows the extension. A safetensors file's __metadata__ holds the PyTorch
            module (ringsgd.pytorch) and the input normalisation.
            """
    )

    @OptionGroup var source: CheckpointChoice

    @Option(help: "safetensors or npz (default: --out's extension; safetensors without --out).")
    var format: String?

    @Option(help: "Output file, .safetensors or .npz (default: RUN-DIR/model.FORMAT).")
    var out: String?

    /// The format: `--format`, else `--out`'s extension; the two must agree.
    var chosenFormat: ModelExport.Format {
        get throws {
            let names = ModelExport.Format.allCases.map(\.rawValue).joined(separator: ", ")
            let given = try format.map { name in
                guard let format = ModelExport.Format(rawValue: name) else { throw ValidationError("--format must be one of \(names), got '\(name)'") }
                return format
            }
            guard let out else { return given ?? .safetensors }
            let ext = (out as NSString).pathExtension
            guard let implied = ModelExport.Format(rawValue: ext.lowercased()) else {
                throw ValidationError("--out \(out): the extension says which format to write; use .safetensors or .npz")
            }
            if let given, given != implied {
                throw ValidationError("--format \(given.rawValue) contradicts --out \(out) (a .\(ext) file); drop --format or change the extension")
            }
            return implied
        }
    }

    func validate() throws {
        _ = try chosenFormat
        if out == nil && source.runDir == nil { throw ValidationError("with --checkpoint, say where to write with --out FILE") }
        if let out {
            try OutputFile.check(out, option: "--out", notReplacingTheRunIn: source.runDir)
        }
    }

    func run() throws {
        let format = try chosenFormat
        let (found, path) = try source.locate()
        let destination = out ?? source.inRunDirectory("model.\(format.rawValue)")!
        let (bytes, tensors) = try ModelExport.encode(found, format: format)
        try ModelExport.write(bytes, to: destination)
        // Parameters and buffers counted from the model's views: the tensors also hold a tied
        // head's copy of the embedding (nanoGPT lists both names), which is no parameter of its own.
        let views = try found.model.map { try $0.build().parameters }
        let parameters = views.map { $0.views.reduce(0) { $0 + $1.count } } ?? tensors.reduce(0) { $0 + $1.values.count }
        let buffers = views.map { $0.bufferViews.reduce(0) { $0 + $1.count } } ?? 0
        print("exported \(tensors.count) tensors (\(parameters) parameters\(buffers > 0 ? ", \(buffers) buffer values" : "")) of step \(found.step) from \(path) to \(destination) (\(bytes.count) bytes)")
        for tensor in tensors { print("  \(tensor.name) \(tensor.shape)") }
        if let model = found.model {
            print("PyTorch module: \(model.pytorch)")
            if let n = model.normalization {
                print(String(format: "inputs: x = (v - %.6g) / %.6g, v a pixel/255 or a stored float, shape [N, %@]", n.mean, n.std,
                             model.inputShape.map(String.init).joined(separator: ", ")))
            }
        }
    }
}
