import FileFormats
import Foundation
import ModelFiles
import NeuralNet
import Training
import XCTest

/// A checkpoint is read from disk, and its checksum (FastHash, unkeyed) is no secret: a
/// crafted or damaged file with a valid checksum must still be refused with one line, never a
/// trap while decoding it or while building the model it describes.
final class CheckpointDecodingTests: XCTestCase {
    private func checkpoint(model: ModelDescription? = nil) -> Checkpoint {
        Checkpoint(worldSize: 1, step: 1, skippedSteps: 0, config: "seed: 0", parameters: [1, 2, 3],
                   optimizerState: [], residualSum: nil, model: model)
    }

    /// The encoded bytes with `patch` applied and the checksum recomputed.
    private func forged(_ bytes: [UInt8], _ patch: (inout [UInt8]) -> Void) -> [UInt8] {
        var body = Array(bytes.dropLast(8))
        patch(&body)
        withUnsafeBytes(of: FastHash.hash(body).littleEndian) { body += $0 }
        return body
    }

    private func refusal(_ bytes: [UInt8]) -> String {
        do { _ = try Checkpoint(decoding: bytes); return "decoded" } catch { return "\(error)" }
    }

    /// Property: counts of 2⁶³ and more, a section length that would overflow the offset, and
    /// a section tag of control bytes are one-line refusals (they trapped, or broke the line).
    func testForgedCountsAndLengthsAreRefused() throws {
        let bytes = checkpoint().encoded()
        XCTAssertEqual(refusal(forged(bytes) { _ in }), "decoded", "the forging itself keeps a valid checkpoint valid")
        // Magic 8, version 4, world size 4, then the step (8) and the skipped steps (8).
        XCTAssertEqual(refusal(forged(bytes) { $0.replaceSubrange(16 ..< 24, with: [UInt8](repeating: 0xFF, count: 8)) }), "its step is out of range")
        XCTAssertEqual(refusal(forged(bytes) { $0.replaceSubrange(24 ..< 32, with: [UInt8](repeating: 0xFF, count: 8)) }), "its skipped-step count is out of range")
        // The section count (4), then the first section's tag (4) and length (8).
        let huge = withUnsafeBytes(of: UInt64(0x7FFF_FFFF_FFFF_FFF0).littleEndian) { Array($0) }
        XCTAssertEqual(refusal(forged(bytes) { $0.replaceSubrange(40 ..< 48, with: huge) }), "section CONF overruns the file")
        // A tag of control bytes is shown in hex, on one line (it needs a message that quotes it).
        let newline = refusal(forged(bytes) { $0.replaceSubrange(36 ..< 40, with: [0x0A, 0x0A, 0x0A, 0x0A]); $0.replaceSubrange(40 ..< 48, with: huge) })
        XCTAssertEqual(newline, "section 0x0a0a0a0a overruns the file")
    }

    /// Property: a model description out of range — an empty input, one class, a padding
    /// past any kernel, a GPT whose class count is not its vocabulary — is refused when the
    /// checkpoint is read, naming MODL (`ringsgd export`, `evaluate` and `generate` trapped
    /// building such a model).
    func testAModelDescriptionOutOfRangeIsRefused() throws {
        let cases: [(String, String)] = [
            (#"{"input_shape":[0],"classes":10,"layers":[{"linear":{"out":10}}],"pytorch":""}"#, "its input shape [0]"),
            (#"{"input_shape":[4],"classes":1,"layers":[{"linear":{"out":1}}],"pytorch":""}"#, "its class count 1"),
            (#"{"input_shape":[1,8,8],"classes":10,"layers":[{"conv2d":{"out":4,"kernel":3,"stride":1,"padding":4611686018427387904}},{"flatten":{}},{"linear":{"out":10}}],"pytorch":""}"#,
             "conv2d padding must be in 0…1024"),
            // A negative block size overflowed heads × T² before it was refused (a trap).
            (#"{"input_shape":[8],"classes":256,"layers":[],"gpt":{"layers":1,"heads":1,"embed":8,"block_size":-4294967296,"vocab":256,"dropout":0,"tie_embeddings":true},"pytorch":""}"#,
             "model.gpt.block_size must be ≥ 2"),
            (#"{"input_shape":[8],"classes":256,"layers":[],"gpt":{"layers":1,"heads":-4294967296,"embed":8,"block_size":1048576,"vocab":256,"dropout":0,"tie_embeddings":true},"pytorch":""}"#,
             "must be a positive multiple of model.gpt.heads"),
            (#"{"input_shape":[8],"classes":10,"layers":[],"gpt":{"layers":1,"heads":1,"embed":8,"block_size":8,"vocab":256,"dropout":0,"tie_embeddings":true},"pytorch":""}"#,
             "its class count 10 is not its GPT's vocabulary 256"),
        ]
        for (json, expected) in cases {
            let description = try JSONDecoder.ringsgd.decode(ModelDescription.self, from: Data(json.utf8))
            let message = refusal(checkpoint(model: description).encoded())
            XCTAssertTrue(message.contains("model description (MODL) is out of range") && message.contains(expected), message)
        }
    }
}
