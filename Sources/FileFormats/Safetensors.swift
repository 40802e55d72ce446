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
    /// to `out` (a bulk copy of floats on a little-endian host).
    func appendLittleEndianBytes(to out: inout [UInt8]) {
        if isInteger {
            for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { out += $0 } }
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
    public static func encode(_ tensors: [NamedTensor], metadata: [String: String]) -> [UInt8] {
        func quoted(_ s: String) -> String {
            String(decoding: try! JSONEncoder().encode(s), as: UTF8.self)
        }
        var entries: [String] = []
        if !metadata.isEmpty {
            entries.append("\"__metadata__\":{" + metadata.keys.sorted().map { "\(quoted($0)):\(quoted(metadata[$0]!))" }.joined(separator: ",") + "}")
        }
        var offset = 0
        for tensor in tensors {
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
        for tensor in tensors { tensor.appendLittleEndianBytes(to: &out) }
        return out
    }

    public struct FormatError: Error, CustomStringConvertible {
        public let description: String
        /// One line whatever the file's tensor names hold.
        init(description: String) { self.description = description.shownOnOneLine }
    }

    private static func info(_ value: Any) -> [String: Any]? { value as? [String: Any] }

    /// Reads a file of F32 (and I64, as Float) tensors back, checking what the format requires: a header inside
    /// the file, known fields, offsets that tile the data exactly.
    public static func decode(_ bytes: [UInt8]) throws -> (tensors: [NamedTensor], metadata: [String: String]) {
        guard bytes.count >= 8 else { throw FormatError(description: "shorter than the 8-byte header length") }
        let length = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard length <= UInt64(bytes.count - 8) else { throw FormatError(description: "header length \(length) overruns the file") }
        let dataStart = 8 + Int(length)
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes[8 ..< dataStart])) as? [String: Any] else {
            throw FormatError(description: "the header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var found: [(begin: Int, end: Int, tensor: NamedTensor)] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let map = value as? [String: String] else { throw FormatError(description: "__metadata__ is not a string map") }
                metadata = map
                continue
            }
            // F32 tensors, and I64 ones read as Float (PyTorch's `num_batches_tracked` is int64).
            let dtype = info(value)?["dtype"] as? String
            let width = dtype == "F32" ? 4 : dtype == "I64" ? 8 : 0
            // Every product and sum checked: a header's numbers are the file's, not ours
            // (`[2⁴⁰, 2⁴⁰, 0]` has zero elements, but its first two dimensions overflow).
            let shape = info(value)?["shape"] as? [Int]
            let elements = shape.flatMap { shape in
                shape.allSatisfy({ $0 >= 0 }) ? shape.reduce(Optional(1)) { total, n in
                    total.flatMap { t in let (p, overflow) = t.multipliedReportingOverflow(by: n); return overflow ? nil : p }
                } : nil
            }
            guard let info = value as? [String: Any], width > 0, let shape, let elements,
                  let offsets = info["data_offsets"] as? [Int], offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= bytes.count - dataStart,
                  elements <= (offsets[1] - offsets[0]) / width, offsets[1] - offsets[0] == width * elements else {
                throw FormatError(description: "tensor \(name): not an F32 or I64 tensor whose shape fits its data_offsets")
            }
            let values = (0 ..< elements).map { i in
                bytes.withUnsafeBytes { raw -> Float in
                    let at = dataStart + offsets[0] + width * i
                    return width == 4 ? Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
                                      : Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self)))
                }
            }
            found.append((offsets[0], offsets[1], NamedTensor(name: name, shape: shape, values: values, isInteger: width == 8)))
        }
        found.sort { $0.begin < $1.begin }
        var expected = 0
        for (begin, end, tensor) in found {
            guard begin == expected else { throw FormatError(description: "tensor \(tensor.name) starts at \(begin), expected \(expected): a hole or an overlap") }
            expected = end
        }
        guard dataStart + expected == bytes.count else { throw FormatError(description: "\(bytes.count - dataStart - expected) bytes after the last tensor") }
        return (found.map(\.tensor), metadata)
    }
}
