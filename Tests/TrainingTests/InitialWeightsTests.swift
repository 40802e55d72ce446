import FileFormats
import Foundation
import ModelFiles
import NeuralNet
import Training
import XCTest

/// `train --init-from`: what it loads, and what it refuses with one line that says what the file
/// is and how to get safetensors from it.
final class InitialWeightsTests: XCTestCase {
    /// A convolution, a batch norm (parameters and buffers, an int64 count) and a linear layer.
    private func model() throws -> Sequential {
        let config = try TrainingConfig(yaml: nil, source: "test", overrides: [
            "model.layers=[{conv2d: {out: 2, kernel: 3, padding: 1}}, batchnorm2d, relu, flatten, linear]"])
        let model = try config.modelSpec.build(inputShape: [1, 4, 4], classes: 3)
        model.initialize(seed: 5)
        return model
    }

    /// The model's state_dict as named tensors: each parameter and buffer view, values i·0.25 − 3.
    private func stateDict(of model: Sequential) -> [NamedTensor] {
        var next: Float = -3
        func values(_ count: Int) -> [Float] { (0 ..< count).map { _ in defer { next += 0.25 }; return next } }
        return model.parameters.views.map { NamedTensor(name: $0.name, shape: $0.shape, values: values($0.count)) }
            + model.parameters.bufferViews.map { NamedTensor(name: $0.name, shape: $0.shape, values: $0.name.hasSuffix("num_batches_tracked") ? [7] : values($0.count).map(abs),
                                                             isInteger: $0.name.hasSuffix("num_batches_tracked")) }
    }

    /// Property: every tensor lands in its view — parameters and buffers — and a half-precision
    /// file (as Hugging Face ships many) loads the values it holds.
    func testParametersAndBuffersLoadFromF32AndF16Files() throws {
        let target = try model(), tensors = stateDict(of: target)
        let loaded = try InitialWeights.load(try Safetensors.encode(tensors, metadata: [:]), from: "x.safetensors", into: target.parameters, tiedHead: false)
        XCTAssertEqual(loaded, tensors.count)
        for tensor in tensors {
            if let view = target.parameters.views.first(where: { $0.name == tensor.name }) {
                XCTAssertEqual(Array(target.parameters.parameters(of: view)), tensor.values, tensor.name)
            } else {
                let view = try XCTUnwrap(target.parameters.bufferViews.first { $0.name == tensor.name })
                XCTAssertEqual(Array(target.parameters.buffer(of: view)), tensor.values, tensor.name)
            }
        }
        // The same values (all of them exact in half precision) as F16, the count as I64: a file written by hand.
        var header: [String] = [], data: [UInt8] = []
        for tensor in tensors {
            let bytes = tensor.isInteger ? tensor.values.map { Int64($0) }.withUnsafeBytes { Array($0) } : tensor.values.map { Float16($0) }.withUnsafeBytes { Array($0) }
            header.append(#""\#(tensor.name)":{"dtype":"\#(tensor.isInteger ? "I64" : "F16")","shape":\#(tensor.shape),"data_offsets":[\#(data.count),\#(data.count + bytes.count)]}"#)
            data += bytes
        }
        let json = Array(("{" + header.joined(separator: ",") + "}").utf8)
        let half = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + data
        let fromHalf = try model()
        _ = try InitialWeights.load(half, from: "half.safetensors", into: fromHalf.parameters, tiedHead: false)
        XCTAssertEqual(Array(fromHalf.parameters.parameters), Array(target.parameters.parameters))
        XCTAssertEqual(Array(fromHalf.parameters.buffers), Array(target.parameters.buffers))
    }

    /// Property: a file of another format is named for what it is, with how to write safetensors
    /// — a zip (`torch.save`'s .pt, a .npz), a .npy, a pickle, a ringsgd checkpoint — instead of
    /// a header length that overruns.
    func testOtherFormatsAreNamed() throws {
        let target = try model(), tensors = stateDict(of: target)
        let npz = try NpzArchive.encode(tensors)
        let npy = NumpyFile.header(descr: "<f4", shape: [2]) + [0, 0, 128, 63, 0, 0, 0, 64]
        let pickle: [UInt8] = [0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E]
        let checkpoint = Checkpoint(worldSize: 1, step: 3, skippedSteps: 0, config: "", parameters: [1, 2], optimizerState: [], residualSum: nil).encoded()
        for (bytes, expected) in [(npz, "is a zip archive (torch.save's .pt, or a NumPy .npz)"), (npy, "is a NumPy .npy array"),
                                  (pickle, "is a Python pickle"), (checkpoint, "is a ringsgd checkpoint; continue its run with train --run-dir DIR --resume")] {
            XCTAssertThrowsError(try InitialWeights.load(bytes, from: "f", into: target.parameters, tiedHead: false)) { error in
                XCTAssertTrue("\(error)".hasPrefix("--init-from f \(expected)"), "\(error)")
            }
        }
    }

    /// Property: a safetensors file whose header length begins with another format's magic
    /// bytes (640 = 0x280: "\x80\x02", a pickle's) is read as the safetensors file it is.
    func testAHeaderLengthThatLooksLikeAnotherFormatLoads() throws {
        let target = try model(), tensors = stateDict(of: target)
        var pad = ""
        var bytes = try Safetensors.encode(tensors, metadata: ["pad": pad])
        func headerLength() -> Int { bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) } }
        while headerLength() < 640 {
            pad += "x"
            bytes = try Safetensors.encode(tensors, metadata: ["pad": pad])
        }
        XCTAssertEqual(headerLength(), 640)
        XCTAssertEqual(Array(bytes[0 ..< 2]), [0x80, 0x02])
        XCTAssertEqual(try InitialWeights.load(bytes, from: "f", into: target.parameters, tiedHead: false), tensors.count)
    }

    /// Property: a tensor that does not fit is named on one line, a newline in its name
    /// escaped; a dtype ringsgd does not read is named.
    func testMismatchesAreOneLineNamingTheTensor() throws {
        let target = try model()
        var tensors = stateDict(of: target)
        tensors.append(NamedTensor(name: "extra\nname", shape: [1], values: [1]))
        XCTAssertThrowsError(try InitialWeights.load(try Safetensors.encode(tensors, metadata: [:]), from: "f", into: target.parameters, tiedHead: false)) { error in
            XCTAssertEqual("\(error)", #"--init-from f: 1 tensor does not fit this model (extra\nname is not a parameter or buffer of this model); export from the same model.* config, or fix the names and shapes"#)
        }
        let json = Array(#"{"0.weight":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[0,1]}}"#.utf8)
        let u8 = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + [1]
        XCTAssertThrowsError(try InitialWeights.load(u8, from: "f", into: target.parameters, tiedHead: false)) { error in
            XCTAssertTrue("\(error)".contains("tensor 0.weight has dtype F8_E5M2, which ringsgd does not read"), "\(error)")
        }
    }

    /// Property: weights that would make every step non-finite (a NaN or an infinity) and a
    /// trained parameter stored as integers are refused by name — and, with the index, where
    /// — instead of a run whose every step is skipped; an integer buffer (the count) still loads.
    func testNonFiniteWeightsAndIntegerParametersAreRefusedByName() throws {
        let target = try model()
        for (replace, expected) in [(NamedTensor(name: "0.weight", shape: [2, 1, 3, 3], values: (0 ..< 18).map { $0 == 4 ? .nan : 0.5 }),
                                     "0.weight holds nan at index 4: weights must be finite"),
                                    (NamedTensor(name: "4.bias", shape: [3], values: [1, -.infinity, 0]), "4.bias holds -inf at index 1: weights must be finite"),
                                    (NamedTensor(name: "0.bias", shape: [2], values: [1, 2], isInteger: true),
                                     "0.bias holds integers, but it is a trained parameter")] {
            let tensors = stateDict(of: target).map { $0.name == replace.name ? replace : $0 }
            XCTAssertThrowsError(try InitialWeights.load(try Safetensors.encode(tensors, metadata: [:]), from: "f", into: target.parameters, tiedHead: false)) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
                XCTAssertTrue("\(error)".contains("1 tensor does not fit"), "only the bad tensor, the integer count among the rest loading: \(error)")
                XCTAssertFalse("\(error)".contains("\n"), "\(error)")
            }
        }
    }
}
