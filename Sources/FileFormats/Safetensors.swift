import Foundation

/// A named Float32 tensor, C order, as exported.
public struct NamedTensor: Equatable {
    public let name: String
    public let shape: [Int]
    public let values: [Float]
    /// A count kept as Float in the flat buffers (a batch norm's `num_batches_tracked`) and
    /// written as the int64 PyTorch keeps it: I64 in safetensors, `<i8` in .npy.
    public let isInteger: Bool

    public init(name: String, shape: [Int], values: [Float], isInteger: Bool = false) {
        precondition(shape.reduce(1, *) == values.count, "tensor \(name): shape \(shape) for \(values.count) values")
        self.name = name
        self.shape = shape
        self.values = values
        self.isInteger = isInteger
    }

    /// Bytes per value in a file: 8 for an integer tensor, 4 for Float32.
    var elementBytes: Int { isInteger ? 8 : 4 }

    /// The values as little-endian Float32 (or, for an integer tensor, Int64) bytes, appended
    /// to `out` (a bulk copy of floats on a little-endian host). An integer tensor whose value
    /// is no int64 (NaN, infinite, fractional, past 2⁶³: a corrupt buffer) is refused, not trapped on.
    func appendLittleEndianBytes(to out: inout [UInt8]) throws {
        if isInteger {
            for v in values {
                guard let n = Int64(exactly: v) else {
                    throw FileFormatError("tensor \(name) is an integer count, but holds \(v); the checkpoint's buffer is corrupt, export an earlier one")
                }
                withUnsafeBytes(of: n.littleEndian) { out += $0 }
            }
            return
        }
        #if _endian(little)
        values.withUnsafeBytes { out += $0 }
        #else
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 } }
        #endif
    }
}

/// The safetensors format (Hugging Face, https://huggingface.co/docs/safetensors), written
/// and read by us: it is small and documented, and loading it executes no code (unlike a
/// pickled `torch.save`).
///
///     8 bytes      N, the header's length (UInt64 little-endian)
///     N bytes      a JSON object: for each tensor {"dtype": "F32" (or "I64"), "shape": […],
///                  "data_offsets": [begin, end]} (offsets into the data, end exclusive), and
///                  "__metadata__": a string → string map; padded with spaces to 8 bytes
///     the rest     the tensors' bytes, little-endian, one after another with no gap
public enum Safetensors {
    /// The element types `decode` reads, each converted to Float: F32 as it is; F16 and BF16
    /// exactly (a half-precision checkpoint, as Hugging Face ships many); F64 rounded to
    /// nearest (a value past Float's range is refused); integers and BOOL (counts such as
    /// `num_batches_tracked`, masks) as their value, exact below 2²⁴.
    enum ElementType: String, CaseIterable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
        case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"

        var width: Int {
            switch self {
            case .u8, .i8, .bool: 1
            case .f16, .bf16, .i16, .u16: 2
            case .f32, .i32, .u32: 4
            case .f64, .i64, .u64: 8
            }
        }

        var isInteger: Bool { ![.f32, .f16, .bf16, .f64].contains(self) }

        /// `count` values from `raw` (little-endian, any alignment) as Float.
        func floats(_ raw: UnsafeRawBufferPointer, count: Int) -> [Float] {
            func load<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> T { T(littleEndian: raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
            return [Float](unsafeUninitializedCapacity: count) { out, initialized in
                switch self {
                case .f32: for i in 0 ..< count { out[i] = Float(bitPattern: load(UInt32.self, i)) }
                case .f16: for i in 0 ..< count { out[i] = Float(Float16(bitPattern: load(UInt16.self, i))) }
                case .bf16: for i in 0 ..< count { out[i] = Float(bitPattern: UInt32(load(UInt16.self, i)) << 16) }
                case .f64: for i in 0 ..< count { out[i] = Float(Double(bitPattern: load(UInt64.self, i))) }
                case .i64: for i in 0 ..< count { out[i] = Float(load(Int64.self, i)) }
                case .i32: for i in 0 ..< count { out[i] = Float(load(Int32.self, i)) }
                case .i16: for i in 0 ..< count { out[i] = Float(load(Int16.self, i)) }
                case .i8: for i in 0 ..< count { out[i] = Float(load(Int8.self, i)) }
                case .u64: for i in 0 ..< count { out[i] = Float(load(UInt64.self, i)) }
                case .u32: for i in 0 ..< count { out[i] = Float(load(UInt32.self, i)) }
                case .u16: for i in 0 ..< count { out[i] = Float(load(UInt16.self, i)) }
                case .u8, .bool: for i in 0 ..< count { out[i] = Float(load(UInt8.self, i)) }
                }
                initialized = count
            }
        }
    }

    /// The largest header read: Hugging Face's own limit (100 MB), past which a "length" is
    /// more likely another format's first bytes than a header.
    public static let maximumHeaderBytes: UInt64 = 100_000_000

    /// The file's bytes. Integer (8-byte) tensors come first, so that every tensor starts at a
    /// multiple of its own width from the 8-byte-aligned data start — as Hugging Face's writer
    /// orders them, so that a reader may map a tensor in place.
    public static func encode(_ tensors: [NamedTensor], metadata: [String: String]) throws -> [UInt8] {
        func quoted(_ s: String) -> String {
            String(decoding: try! JSONEncoder().encode(s), as: UTF8.self)
        }
        let ordered = tensors.filter(\.isInteger) + tensors.filter { !$0.isInteger }
        var entries: [String] = []
        if !metadata.isEmpty {
            entries.append("\"__metadata__\":{" + metadata.keys.sorted().map { "\(quoted($0)):\(quoted(metadata[$0]!))" }.joined(separator: ",") + "}")
        }
        var offset = 0
        for tensor in ordered {
            let end = offset + tensor.values.count * tensor.elementBytes
            entries.append("\(quoted(tensor.name)):{\"dtype\":\"\(tensor.isInteger ? "I64" : "F32")\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }   // the data then starts 8-byte aligned
        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out += $0 }
        out += header
        for tensor in ordered { try tensor.appendLittleEndianBytes(to: &out) }
        return out
    }

    public struct FormatError: Error, CustomStringConvertible {
        public let description: String
        /// One line whatever the file's tensor names hold.
        init(description: String) { self.description = description.shownOnOneLine }
    }

    private static func info(_ value: Any) -> [String: Any]? { value as? [String: Any] }

    /// Reads a file's tensors back as Float (`ElementType` says which element types and how),
    /// checking what the format requires: a header inside the file, known fields, offsets that
    /// tile the data exactly. A tensor read from an integer type comes back `isInteger`.
    public static func decode(_ bytes: [UInt8]) throws -> (tensors: [NamedTensor], metadata: [String: String]) {
        try bytes.withUnsafeBytes { try decode($0) }
    }

    /// `decode` of bytes in place (a mapped file: no copy of the whole file first).
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> (tensors: [NamedTensor], metadata: [String: String]) {
        guard bytes.count >= 8 else { throw FormatError(description: "shorter than the 8-byte header length") }
        let length = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard length <= UInt64(bytes.count - 8) else { throw FormatError(description: "header length \(length) overruns the file") }
        guard length <= maximumHeaderBytes else { throw FormatError(description: "header length \(length) is past the format's limit of \(maximumHeaderBytes) bytes") }
        let dataStart = 8 + Int(length)
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes[8 ..< dataStart])) as? [String: Any] else {
            throw FormatError(description: "the header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var found: [(begin: Int, end: Int, tensor: NamedTensor)] = []
        // In name order: the first problem named is the same whatever order the object's keys come in.
        for name in object.keys.sorted() {
            let value = object[name]!
            if name == "__metadata__" {
                guard let map = value as? [String: String] else { throw FormatError(description: "__metadata__ is not a string map") }
                metadata = map
                continue
            }
            let dtypeName = info(value)?["dtype"] as? String
            if let dtypeName, ElementType(rawValue: dtypeName) == nil {
                let known = ElementType.allCases.map(\.rawValue).joined(separator: ", ")
                throw FormatError(description: "tensor \(name) has dtype \(dtypeName), which ringsgd does not read (\(known)); save it as float32 (tensor.float())")
            }
            let type = dtypeName.flatMap(ElementType.init(rawValue:))
            // Every product and sum checked: a header's numbers are the file's, not ours
            // (`[2⁴⁰, 2⁴⁰, 0]` has zero elements, but its first two dimensions overflow).
            let shape = info(value)?["shape"] as? [Int]
            let elements = shape.flatMap { shape in
                shape.allSatisfy({ $0 >= 0 }) ? shape.reduce(Optional(1)) { total, n in
                    total.flatMap { t in let (p, overflow) = t.multipliedReportingOverflow(by: n); return overflow ? nil : p }
                } : nil
            }
            guard let info = value as? [String: Any], let type, let shape, let elements,
                  let offsets = info["data_offsets"] as? [Int], offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= bytes.count - dataStart,
                  elements <= (offsets[1] - offsets[0]) / type.width, offsets[1] - offsets[0] == type.width * elements else {
                throw FormatError(description: "tensor \(name): not a tensor of a known dtype whose shape fits its data_offsets")
            }
            let values = type.floats(UnsafeRawBufferPointer(rebasing: bytes[(dataStart + offsets[0]) ..< (dataStart + offsets[1])]), count: elements)
            if type == .f64 {
                for at in values.indices where values[at].isInfinite {
                    let value = Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: dataStart + offsets[0] + 8 * at, as: UInt64.self)))
                    guard !value.isFinite else {
                        throw FormatError(description: "tensor \(name) holds \(value) at index \(at), past float32's range; scale it, or convert it to float32 yourself")
                    }
                }
            }
            found.append((offsets[0], offsets[1], NamedTensor(name: name, shape: shape, values: values, isInteger: type.isInteger)))
        }
        // By begin, then end: an empty tensor may share its begin with the next one, and must
        // come first whatever order the JSON object's keys came in.
        found.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var expected = 0
        for (begin, end, tensor) in found {
            guard begin == expected else { throw FormatError(description: "tensor \(tensor.name) starts at \(begin), expected \(expected): a hole or an overlap") }
            expected = end
        }
        guard dataStart + expected == bytes.count else { throw FormatError(description: "\(bytes.count - dataStart - expected) bytes after the last tensor") }
        return (found.map(\.tensor), metadata)
    }
}
