// fuzz-decoders — coverage-guided fuzzing of everything ringsgd decodes from outside:
// codec payloads (every codec, alone and under zstd), checkpoints, IDX and .npy headers, YAML
// configs (model.layers and model.gpt included) and `--set` overrides, safetensors files
// (read, then matched to a small model with a batch norm as `train --init-from` does) and uint16 token files read as windows (`data.dataset: tokens`).
//
// Built normally it replays inputs (files or directories of files) through the same entry
// point — how the test suite keeps the corpus and every crash found as regressions:
//     .build/release/fuzz-decoders Tests/FuzzCorpus
// Built for libFuzzer (launch/fuzz.sh does this) it is the fuzz target:
//     swift build -c release --sanitize=fuzzer --product fuzz-decoders -Xswiftc -DFUZZING --scratch-path .build-fuzz
//     .build-fuzz/release/fuzz-decoders -max_total_time=60 Tests/FuzzCorpus
// The property: any input is either decoded or rejected with a thrown error of one line —
// never a crash, a trap, an out-of-bounds access, a hang, or a message a newline in the input
// breaks (the harness traps on one, so the fuzzer finds them as it finds crashes).
import Datasets
import FileFormats
import Foundation
import GradientCodecs
import NeuralNet
import Training

enum FuzzDecoders {
    static let codecs = ["fp16", "bf16", "int8", "int8:16", "int8sr:8", "sign", "sign:16", "zstd", "fp16+zstd", "int8+zstd", "sign+zstd"]

    /// Runs a decoder; an error it throws must be one line.
    static func decodes<T>(_ body: () throws -> T) {
        do { _ = try body() } catch {
            let message = "\(error)"
            if message.contains("\n") || message.contains("\r") {
                fatalError("fuzz-decoders: an error message of more than one line: \(message.debugDescription)")
            }
        }
    }

    /// The first byte picks what decodes the rest (0xE8 and above: the decoders added after the
    /// corpus's first seeds, so that their selectors keep meaning what they meant).
    static func run(_ data: UnsafeRawBufferPointer) {
        guard let selector = data.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: data.dropFirst())
        switch selector {
        case 0xE8 ... 0xEF:
            // A checkpoint body, its checksum appended here: a mutated file's checksum never
            // matches, so without this the fuzzer never got past it to the sections. (The
            // checksum is no secret: a crafted file carries a valid one.)
            var body = Array(rest)
            let hash = FastHash.hash(body).littleEndian
            withUnsafeBytes(of: hash) { body += $0 }
            decodes { try Checkpoint(decoding: body) }
            return
        case 0xF0 ... 0xF7:
            decodes { try Safetensors.decode(Array(rest)) }
            decodes { try InitialWeights.load(Array(rest), from: "fuzz", into: initFromModel.parameters, tiedHead: false, listing: false) }
            return
        case 0xF8 ... 0xFF:
            tokenWindows(rest)
            return
        default: break
        }
        switch Int(selector) % 5 {
        case 0:
            // A codec payload for `count` values: bytes 1–2 give the count (≤ 65535).
            guard rest.count >= 3 else { return }
            let codec = try! CodecRegistry.make(codecs[Int(rest[0]) % codecs.count])
            let count = Int(rest[1]) << 8 | Int(rest[2])
            let payload = UnsafeRawBufferPointer(rebasing: rest.dropFirst(3))
            var out = [Float](repeating: 1, count: count)
            out.withUnsafeMutableBufferPointer { destination in
                decodes { try codec.decode(payload, into: destination) }
                decodes { try codec.decodeAccumulate(payload, into: destination) }
            }
        case 1:
            decodes { try Checkpoint(decoding: Array(rest)) }
        case 2:
            // Dataset headers: a .npy when it starts with its magic byte, else IDX.
            if rest.first == 0x93 {
                decodes { try NumpyFile.parseHeader(rest, file: "fuzz") }
            } else {
                decodes { try IDXFile.parseHeader(rest, file: "fuzz") }
            }
        case 3:
            decodes { try TrainingConfig(yaml: String(decoding: rest, as: UTF8.self), source: "fuzz") }
        default:
            // `--set KEY=VALUE` overrides, one per line, over the defaults.
            let overrides = String(decoding: rest, as: UTF8.self).split(separator: "\n").map(String.init)
            decodes { try TrainingConfig(yaml: nil, source: "fuzz", overrides: overrides) }
        }
    }
}

extension FuzzDecoders {
    /// What safetensors inputs are loaded into: a convolution, a batch norm (its buffers, an
    /// I64 count among them) and a linear layer — `Tests/FuzzCorpus/safetensors-init-from-batchnorm-model` holds its tensors.
    nonisolated(unsafe) static let initFromModel: Sequential = {
        let config = try! TrainingConfig(yaml: nil, source: "fuzz", overrides: [
            "model.layers=[{conv2d: {out: 2, kernel: 3, padding: 1}}, batchnorm2d, relu, flatten, linear]"])
        return try! config.modelSpec.build(inputShape: [1, 4, 4], classes: 3)
    }()

    /// A token file: byte 0 the vocabulary (as 2^(b % 17) ids, 1 … 65536), byte 1 the block
    /// size, byte 2 the layout (even: a stride, odd: evenly spaced windows), then the ids; every
    /// window the layout names is read.
    static func tokenWindows(_ rest: UnsafeRawBufferPointer) {
        guard rest.count >= 3 else { return }
        let vocab = 1 << (Int(rest[0]) % 17), block = max(1, Int(rest[1]) % 64), mode = Int(rest[2])
        let bytes = UnsafeRawBufferPointer(rebasing: rest.dropFirst(3))
        guard let n = try? TokenWindows.checkTokens(bytes, vocab: max(2, vocab), what: "fuzz"), let base = bytes.baseAddress else { return }
        let layout: TokenWindows.Layout = mode % 2 == 0 ? .stride(1 + mode / 2) : .evenlySpaced(1 + mode / 2)
        guard let windows = try? TokenWindows(tokens: .uint16(base), count: n, blockSize: block, vocab: max(2, vocab), layout: layout,
                                              storage: NSNull(), what: "fuzz") else { return }
        var input = [Float](repeating: 0, count: block), labels = [Int32](repeating: 0, count: block)
        for i in 0 ..< windows.count { windows.fill([i], input: &input, labels: &labels) }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzDecoders.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#else
@main
struct ReplayCorpus {
    static func main() {
        var files: [String] = []
        for argument in CommandLine.arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("fuzz-decoders: error: \(argument) does not exist; pass corpus files or directories\n".utf8))
                exit(2)
            }
            if isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []
                files += names.sorted().map { (argument as NSString).appendingPathComponent($0) }
            } else {
                files.append(argument)
            }
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            data.withUnsafeBytes { FuzzDecoders.run($0) }
        }
        print("fuzz-decoders: replayed \(files.count) inputs without a crash")
    }
}
#endif
