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

    /// Property: a checkpoint's config text reads back as the same config.
    func testCheckpointConfigReadsBack() throws {
        let checkpoint = try trainedCheckpoint()
        let config = try TrainingConfig(canonicalText: checkpoint.config)
        XCTAssertEqual(config.canonicalText, checkpoint.config)
        XCTAssertEqual(config.modelSpec.expanded, try TrainingConfig(yaml: nil, source: "test", overrides: [
            "model.layers=[{conv2d: {out: 4, kernel: 3, padding: 1}}, relu, {maxpool2d: {kernel: 2}}, flatten, {dropout: {p: 0.1}}, linear]"]).modelSpec.expanded)
    }
}
