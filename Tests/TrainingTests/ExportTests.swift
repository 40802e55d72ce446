import Foundation
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

    /// Property: a file with a hole or a wrong size is refused by the reader.
    func testSafetensorsReaderRefusesHoles() throws {
        var bytes = Safetensors.encode([NamedTensor(name: "a", shape: [2], values: [1, 2])], metadata: [:])
        bytes.append(0)
        XCTAssertThrowsError(try Safetensors.decode(bytes))
    }

    /// Property: the .npz is a stored zip whose entries are NAME.npy files numpy reads: local
    /// headers with matching CRC-32, the central directory and end record pointing at them.
    func testNpzEntriesAreNpyFilesOfEachTensor() throws {
        let (bytes, tensors) = try ModelExport.encode(try trainedCheckpoint(), format: .npz)
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        let end = bytes.count - 22
        XCTAssertEqual(u32(end), 0x0605_4B50)
        XCTAssertEqual(u16(end + 10), tensors.count)
        var central = u32(end + 16)
        for tensor in tensors {
            XCTAssertEqual(u32(central), 0x0201_4B50)
            let nameLength = u16(central + 28), local = u32(central + 42)
            XCTAssertEqual(String(decoding: bytes[central + 46 ..< central + 46 + nameLength], as: UTF8.self), tensor.name + ".npy")
            XCTAssertEqual(u32(local), 0x0403_4B50)
            let size = u32(local + 18), start = local + 30 + u16(local + 26)
            let payload = Array(bytes[start ..< start + size])
            XCTAssertEqual(UInt32(u32(local + 14)), payload.withUnsafeBufferPointer { crc($0) })
            let parsed = try payload.withUnsafeBytes { try NumpyFile.parseHeader($0, file: tensor.name) }
            XCTAssertEqual(parsed.element, .float32)
            XCTAssertEqual(parsed.shape, tensor.shape)
            XCTAssertEqual(parsed.dataOffset % 64, 0)
            let values = payload[parsed.dataOffset...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(values, tensor.values)
            central += 46 + nameLength
        }
    }

    /// CRC-32 (IEEE), bit by bit: an independent check of the archive's zlib-computed sums.
    private func crc(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0 ..< 8 { c = c & 1 == 1 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
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
