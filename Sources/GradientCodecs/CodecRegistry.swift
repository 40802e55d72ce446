/// The codec names users write in configs and on the command line, and how to build each.
///
/// Grammar: `BASE[+zstd[:LEVEL]]` or `zstd[:LEVEL]` (zstd on fp32), where BASE is
/// `none` (fp32), `fp16`, `bf16`, `int8[:BLOCK]`, `int8sr[:BLOCK]` (stochastic rounding) or
/// `sign[:BLOCK]`; BLOCK defaults to 256 values (sign's to 1024) and LEVEL to 1: on a real gradient, level 3 saved 2 % more
/// bytes than level 1 at half the encode speed (fp16+zstd 0.402 vs 0.409 of fp32 at 0.46 vs
/// 1.04 GB/s). An unknown name is an error listing these.
public enum CodecRegistry {
    public static let validNames = "none, fp16, bf16, int8[:BLOCK], int8sr[:BLOCK], sign[:BLOCK], each optionally +zstd[:LEVEL], or zstd[:LEVEL]"

    /// A codec name that does not parse; says which part is wrong and what is allowed.
    public struct UnknownCodec: Error, CustomStringConvertible {
        public let name: String
        /// What is wrong with it (nil: the base name itself is unknown).
        public let problem: String?
        public init(name: String, problem: String? = nil) { self.name = name; self.problem = problem }
        public var description: String {
            if let problem { return "codec '\(name)': \(problem)" }
            return "unknown codec '\(name)'; valid codecs: \(CodecRegistry.validNames)"
        }
    }

    /// Block sizes int8 accepts: one scale per block, so the block fits the scale's header.
    public static let int8BlockSizes = 1 ... 1 << 20
    /// zstd's compression levels.
    public static let zstdLevels = 1 ... 22

    /// Builds a fresh codec instance (each ring owns its own: codecs carry scratch state).
    public static func make(_ name: String) throws -> GradientCodec {
        let parts = name.lowercased().split(separator: "+", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 1 || parts.count == 2 else {
            throw UnknownCodec(name: name, problem: "at most one '+' (BASE+zstd[:LEVEL]); valid codecs: \(validNames)")
        }
        if parts.count == 1, parts[0].hasPrefix("zstd") { return ZstdStage(inner: FP32Codec(), level: try zstdLevel(parts[0], in: name)) }
        let base = try makeBase(parts[0], fullName: name)
        guard parts.count == 2 else { return base }
        guard parts[1].hasPrefix("zstd") else {
            throw UnknownCodec(name: name, problem: "only zstd[:LEVEL] may follow '+', got '\(parts[1])'")
        }
        return ZstdStage(inner: base, level: try zstdLevel(parts[1], in: name))
    }

    /// `zstd` or `zstd:LEVEL`.
    private static func zstdLevel(_ spec: String, in name: String) throws -> Int {
        let pieces = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard pieces[0] == "zstd" else { throw UnknownCodec(name: name) }
        guard pieces.count > 1 else { return 1 }
        guard pieces.count == 2, let level = Int(pieces[1]), zstdLevels.contains(level) else {
            throw UnknownCodec(name: name, problem: "zstd level must be an integer in \(zstdLevels.lowerBound)…\(zstdLevels.upperBound), got '\(pieces.dropFirst().joined(separator: ":"))'")
        }
        return level
    }

    private static func makeBase(_ spec: String, fullName: String) throws -> GradientCodec {
        let pieces = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let base = pieces[0], parameter = pieces.dropFirst().joined(separator: ":")
        switch base {
        case "none", "fp32", "fp16", "bf16":
            guard pieces.count == 1 else {
                throw UnknownCodec(name: fullName, problem: "\(base) takes no parameter, got ':\(parameter)'")
            }
            switch base {
            case "fp16": return FP16Codec()
            case "bf16": return BF16Codec()
            default: return FP32Codec()
            }
        case "int8", "int8sr":
            var block = 256
            if pieces.count > 1 {
                guard pieces.count == 2, let b = Int(parameter), int8BlockSizes.contains(b) else {
                    throw UnknownCodec(name: fullName, problem: "\(base) block size must be an integer in \(int8BlockSizes.lowerBound)…\(int8BlockSizes.upperBound), got '\(parameter)'")
                }
                block = b
            }
            return Int8BlockCodec(blockSize: block, stochasticRounding: base == "int8sr")
        case "sign":
            var block = 1024
            if pieces.count > 1 {
                guard pieces.count == 2, let b = Int(parameter), int8BlockSizes.contains(b) else {
                    throw UnknownCodec(name: fullName, problem: "sign block size must be an integer in \(int8BlockSizes.lowerBound)…\(int8BlockSizes.upperBound), got '\(parameter)'")
                }
                block = b
            }
            return SignCodec(blockSize: block)
        default: throw UnknownCodec(name: fullName)
        }
    }
}
