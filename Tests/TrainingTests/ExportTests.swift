import Datasets
import FileFormats
import Foundation
import ModelFiles
import NeuralNet
import Training
import XCTest

/// `ringsgd export`'s formats, parsed back: safetensors by our reader (which checks what the
/// format requires), .npz entry by entry as zip records holding .npy files.
final class ExportTests: XCTestCase {
    private func trainedCheckpoint() throws -> Checkpoint {
        let config = try TrainingConfig(yaml: nil, source: "test", overrides: [
            "model.layers=[{conv2d: {out: 4, kernel: 3, padding: 1}}, relu, {maxpool2d: {kernel: 2}}, flatten, {dropout: {p: 0.1}}, linear]"])
        let model = try config.modelSpec.build(inputShape: [1, 6, 6], classes: 3)
        model.initialize(seed: 5)
        return Checkpoint(worldSize: 1, step: 7, skippedSteps: 0, config: config.canonicalText, parameters: Array(model.parameters.parameters),
                          optimizerState: [], residualSum: nil,
                          model: ModelDescription(model: model, layers: config.modelSpec.expanded, normalization: Normalization(mean: 0.25, std: 0.5)))
    }

    /// Property: every tensor reads back with its PyTorch name, shape and exact values (the
    /// flat buffer's alignment padding left out), and the metadata tells how to rebuild and feed
    /// the model.
    func testSafetensorsRoundTrip() throws {
        let checkpoint = try trainedCheckpoint()
        let (bytes, tensors) = try ModelExport.encode(checkpoint, format: .safetensors)
        let headerLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        XCTAssertEqual(headerLength % 8, 0, "the data starts 8-byte aligned")
        let (decoded, metadata) = try Safetensors.decode(bytes)
        XCTAssertEqual(decoded, tensors)
        XCTAssertEqual(tensors.map(\.name), ["0.weight", "0.bias", "5.weight", "5.bias"])
        XCTAssertEqual(tensors.map(\.shape), [[4, 1, 3, 3], [4], [3, 36], [3]])
        let model = try checkpoint.model!.build()
        for (tensor, view) in zip(tensors, model.parameters.views) {
            XCTAssertEqual(tensor.values, Array(checkpoint.parameters[view.range]))
        }
        XCTAssertEqual(metadata["ringsgd.pytorch"], "nn.Sequential(nn.Conv2d(1, 4, kernel_size=3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(p=0.1), nn.Linear(36, 3))")
        XCTAssertEqual(metadata["ringsgd.input_shape"], "[1,6,6]")
        XCTAssertEqual(metadata["ringsgd.normalization"], "{\"mean\":0.25,\"std\":0.5}")
        XCTAssertEqual(metadata["ringsgd.step"], "7")
    }

    /// Property: a batch norm's buffers are exported under PyTorch's names with their values,
    /// `num_batches_tracked` as the int64 PyTorch keeps (I64 in safetensors, `<i8` in .npz), the
    /// running statistics as F32; each reads back as written.
    func testBatchNormBuffersAreExportedWithPyTorchsTypes() throws {
        let config = try TrainingConfig(yaml: nil, source: "test", overrides: [
            "model.layers=[{conv2d: {out: 2, kernel: 3, padding: 1}}, batchnorm2d, relu, flatten, linear]"])
        let model = try config.modelSpec.build(inputShape: [1, 4, 4], classes: 3)
        model.initialize(seed: 5)
        // running_mean, running_var, num_batches_tracked, at their views (the flat buffer aligns each).
        var buffers = [Float](repeating: 0, count: model.parameters.buffers.count)
        for (view, values) in zip(model.parameters.bufferViews, [[0.5, -0.25], [1.5, 2.0], [123_456]] as [[Float]]) {
            buffers.replaceSubrange(view.range, with: values)
        }
        let checkpoint = Checkpoint(worldSize: 1, step: 7, skippedSteps: 0, config: config.canonicalText, parameters: Array(model.parameters.parameters),
                                    optimizerState: [], residualSum: nil,
                                    model: ModelDescription(model: model, layers: config.modelSpec.expanded, normalization: nil), buffers: buffers)
        let (bytes, tensors) = try ModelExport.encode(checkpoint, format: .safetensors)
        let header = String(decoding: bytes[8 ..< 8 + bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }], as: UTF8.self)
        // The 8-byte integer first, so that it lies 8-byte aligned in the file (as Hugging Face's writer orders them).
        XCTAssertTrue(header.contains(#""1.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]}"#), header)
        XCTAssertTrue(header.contains(#""1.running_var":{"dtype":"F32","shape":[2]"#), header)
        let decoded = try Safetensors.decode(bytes).tensors
        XCTAssertEqual(decoded.sorted { $0.name < $1.name }, tensors.sorted { $0.name < $1.name })
        XCTAssertEqual(decoded.first { $0.name == "1.num_batches_tracked" }?.values, [123_456])
        XCTAssertEqual(decoded.first { $0.name == "1.running_mean" }?.values, [0.5, -0.25])
        XCTAssertEqual(decoded.first { $0.name == "1.running_var" }?.values, [1.5, 2.0])
        let npz = try ModelExport.encode(checkpoint, format: .npz).bytes
        XCTAssertNotNil(String(decoding: npz, as: UTF8.self).range(of: "{'descr': '<i8', 'fortran_order': False, 'shape': (), }"), "num_batches_tracked.npy is int64")
        // The .npz stores its arrays uncompressed: each buffer's values lie in it as written.
        func littleEndian(_ values: [Float]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
        XCTAssertNotNil(npz.firstRange(of: littleEndian([0.5, -0.25])), "running_mean's values in the .npz")
        XCTAssertNotNil(npz.firstRange(of: littleEndian([1.5, 2.0])), "running_var's values in the .npz")
        XCTAssertNotNil(npz.firstRange(of: withUnsafeBytes(of: Int64(123_456).littleEndian, Array.init)), "num_batches_tracked's value in the .npz")

        // A count that is no int64 (a corrupt buffer) is refused with the tensor's name, not trapped on.
        for bad: Float in [.nan, .infinity, 0.5, 1e19] {
            var corrupt = buffers
            corrupt[model.parameters.bufferViews[2].range.lowerBound] = bad
            let checkpoint = Checkpoint(worldSize: 1, step: 7, skippedSteps: 0, config: config.canonicalText, parameters: Array(model.parameters.parameters),
                                        optimizerState: [], residualSum: nil,
                                        model: ModelDescription(model: model, layers: config.modelSpec.expanded, normalization: nil), buffers: corrupt)
            for format in ModelExport.Format.allCases {
                XCTAssertThrowsError(try ModelExport.encode(checkpoint, format: format), "\(bad) \(format)") { error in
                    XCTAssertTrue("\(error)".contains("1.num_batches_tracked"), "\(error)")
                }
            }
        }
    }

    /// Property: a checkpoint's config text reads back as the same config.
    func testCheckpointConfigReadsBack() throws {
        let checkpoint = try trainedCheckpoint()
        let config = try TrainingConfig(canonicalText: checkpoint.config)
        XCTAssertEqual(config.canonicalText, checkpoint.config)
        XCTAssertEqual(config.modelSpec.expanded, try TrainingConfig(yaml: nil, source: "test", overrides: [
            "model.layers=[{conv2d: {out: 4, kernel: 3, padding: 1}}, relu, {maxpool2d: {kernel: 2}}, flatten, {dropout: {p: 0.1}}, linear]"]).modelSpec.expanded)
    }
}
