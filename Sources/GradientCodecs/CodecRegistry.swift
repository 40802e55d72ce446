/// The codec names users write in configs and on the command line, and how to build each.
///
/// Grammar: `BASE` or `BASE+zstd[:LEVEL]` or `zstd[:LEVEL]`, where BASE is one of
/// `none`, `fp16`, `bf16`, `int8`. An unknown name is an error that lists the valid ones.
public enum CodecRegistry {
    /// The lossy (or identity) bases.
    public static let baseNames = ["none"]

    /// Every name accepted, for help texts and error messages.
    public static var validNames: String { baseNames.joined(separator: ", ") }

    public struct UnknownCodec: Error, CustomStringConvertible {
        public let name: String
        public var description: String {
            "unknown codec '\(name)'; valid codecs: \(CodecRegistry.validNames)"
        }
    }

    /// Builds a fresh codec instance (each ring owns its own: codecs carry scratch state).
    public static func make(_ name: String) throws -> GradientCodec {
        switch name.lowercased() {
        case "none", "fp32": return FP32Codec()
        default: throw UnknownCodec(name: name)
        }
    }
}
