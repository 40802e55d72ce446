/// The codec names users write in configs and on the command line, and how to build each.
///
/// Grammar: `BASE[+zstd[:LEVEL]]` or `zstd[:LEVEL]` (zstd on fp32), where BASE is
/// `none` (fp32), `fp16`, `bf16`, `int8[:BLOCK]` or `int8sr[:BLOCK]` (stochastic rounding);
/// BLOCK defaults to 256 values and LEVEL to 1: on a real gradient, level 3 saved 2 % more
/// bytes than level 1 at half the encode speed (fp16+zstd 0.402 vs 0.409 of fp32 at 0.46 vs
/// 1.04 GB/s). An unknown name is an error listing these.
public enum CodecRegistry {
    public static let validNames = "none, fp16, bf16, int8[:BLOCK], int8sr[:BLOCK], each optionally +zstd[:LEVEL], or zstd[:LEVEL]"

    public struct UnknownCodec: Error, CustomStringConvertible {
        public let name: String
        public var description: String { "unknown codec '\(name)'; valid codecs: \(CodecRegistry.validNames)" }
    }

    /// Builds a fresh codec instance (each ring owns its own: codecs carry scratch state).
    public static func make(_ name: String) throws -> GradientCodec {
        let parts = name.lowercased().split(separator: "+", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 1 || parts.count == 2 else { throw UnknownCodec(name: name) }
        func zstdLevel(_ spec: String) throws -> Int? {
            let pieces = spec.split(separator: ":", omittingEmptySubsequences: false)
            guard pieces[0] == "zstd", pieces.count <= 2 else { return nil }
            guard pieces.count == 2 else { return 1 }
            guard let level = Int(pieces[1]), (1 ... 22).contains(level) else { throw UnknownCodec(name: name) }
            return level
        }
        if parts.count == 1, let level = try zstdLevel(parts[0]) { return ZstdStage(inner: FP32Codec(), level: level) }
        let base = try makeBase(parts[0], fullName: name)
        guard parts.count == 2 else { return base }
        guard let level = try zstdLevel(parts[1]) else { throw UnknownCodec(name: name) }
        return ZstdStage(inner: base, level: level)
    }

    private static func makeBase(_ spec: String, fullName: String) throws -> GradientCodec {
        let pieces = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        switch pieces[0] {
        case "none", "fp32" where pieces.count == 1: return FP32Codec()
        case "fp16" where pieces.count == 1: return FP16Codec()
        case "bf16" where pieces.count == 1: return BF16Codec()
        case "int8", "int8sr":
            var block = 256
            if pieces.count == 2 {
                guard let b = Int(pieces[1]), b >= 1, b <= 1 << 20 else { throw UnknownCodec(name: fullName) }
                block = b
            } else if pieces.count > 2 { throw UnknownCodec(name: fullName) }
            return Int8BlockCodec(blockSize: block, stochasticRounding: pieces[0] == "int8sr")
        default: throw UnknownCodec(name: fullName)
        }
    }
}
