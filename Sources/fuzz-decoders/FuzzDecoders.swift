// fuzz-decoders — coverage-guided fuzzing of everything ringsgd decodes from outside:
// codec payloads (every codec, alone and under zstd), checkpoints, IDX and .npy headers, YAML
// configs (model.layers included) and `--set` overrides.
//
// Built normally it replays inputs (files or directories of files) through the same entry
// point — how the test suite keeps the corpus and every crash found as regressions:
//     .build/release/fuzz-decoders Tests/FuzzCorpus
// Built for libFuzzer (launch/fuzz.sh does this) it is the fuzz target:
//     swift build -c release --sanitize=fuzzer --product fuzz-decoders -Xswiftc -DFUZZING --scratch-path .build-fuzz
//     .build-fuzz/release/fuzz-decoders -max_total_time=60 Tests/FuzzCorpus
// The property: any input is either decoded or rejected with a thrown error — never a crash,
// a trap, an out-of-bounds access or a hang.
import FileFormats
import Foundation
import GradientCodecs
import Training

enum FuzzDecoders {
    static let codecs = ["fp16", "bf16", "int8", "int8:16", "int8sr:8", "sign", "sign:16", "zstd", "fp16+zstd", "int8+zstd", "sign+zstd"]

    /// The first byte picks what decodes the rest.
    static func run(_ data: UnsafeRawBufferPointer) {
        guard let selector = data.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: data.dropFirst())
        switch Int(selector) % 5 {
        case 0:
            // A codec payload for `count` values: bytes 1–2 give the count (≤ 65535).
            guard rest.count >= 3 else { return }
            let codec = try! CodecRegistry.make(codecs[Int(rest[0]) % codecs.count])
            let count = Int(rest[1]) << 8 | Int(rest[2])
            let payload = UnsafeRawBufferPointer(rebasing: rest.dropFirst(3))
            var out = [Float](repeating: 1, count: count)
            out.withUnsafeMutableBufferPointer { destination in
                _ = try? codec.decode(payload, into: destination)
                _ = try? codec.decodeAccumulate(payload, into: destination)
            }
        case 1:
            _ = try? Checkpoint(decoding: Array(rest))
        case 2:
            // Dataset headers: a .npy when it starts with its magic byte, else IDX.
            if rest.first == 0x93 {
                _ = try? NumpyFile.parseHeader(rest, file: "fuzz")
            } else {
                _ = try? IDXFile.parseHeader(rest, file: "fuzz")
            }
        case 3:
            _ = try? TrainingConfig(yaml: String(decoding: rest, as: UTF8.self), source: "fuzz")
        default:
            // `--set KEY=VALUE` overrides, one per line, over the defaults.
            let overrides = String(decoding: rest, as: UTF8.self).split(separator: "\n").map(String.init)
            _ = try? TrainingConfig(yaml: nil, source: "fuzz", overrides: overrides)
        }
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
