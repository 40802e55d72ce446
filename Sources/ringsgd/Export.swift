import ArgumentParser
import Foundation
import ModelFiles
import Training

/// `ringsgd export`: a checkpoint's parameters as safetensors or .npz, named and shaped as the
/// equivalent PyTorch `nn.Sequential`'s `state_dict`. One process, no MPI.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's weights as safetensors (or .npz) for PyTorch, NumPy and other tools.",
        discussion: "Example:\n  ringsgd export --run-dir runs/fashion-cnn --out cnn.safetensors\nThe file's __metadata__ holds the PyTorch module (ringsgd.pytorch) and the input normalisation."
    )

    @OptionGroup var source: CheckpointChoice

    @Option(help: "safetensors or npz.")
    var format: String = "safetensors"

    @Option(help: "Output file (default: RUN-DIR/model.FORMAT).")
    var out: String?

    func validate() throws {
        if ModelExport.Format(rawValue: format) == nil {
            throw ValidationError("--format must be one of \(ModelExport.Format.allCases.map(\.rawValue).joined(separator: ", ")), got '\(format)'")
        }
        if out == nil && source.runDir == nil { throw ValidationError("with --checkpoint, say where to write with --out FILE") }
    }

    func run() throws {
        let format = ModelExport.Format(rawValue: format)!
        let (found, path) = try source.locate()
        let destination = out ?? source.inRunDirectory("model.\(format.rawValue)")!
        let (bytes, tensors) = try ModelExport.encode(found, format: format)
        try ModelExport.write(bytes, to: destination)
        let parameters = tensors.reduce(0) { $0 + $1.values.count }
        print("exported \(tensors.count) tensors (\(parameters) parameters) of step \(found.step) from \(path) to \(destination) (\(bytes.count) bytes)")
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
