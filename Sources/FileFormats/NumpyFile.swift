import Foundation

/// A NumPy `.npy` array (format versions 1–3, as `numpy.save` writes it), memory-mapped
/// read-only like the IDX cache.
///
/// Format (numpy.lib.format, "NEP 1"): magic "\x93NUMPY", major and minor version bytes, the
/// header's length (UInt16 little-endian in version 1, UInt32 in 2 and 3), then the header:
/// a Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (60000, 28, 28), }`
/// padded with spaces and ended by a newline, then the data in C order. ringsgd reads the
/// element types a dataset needs — `<f4` and `|u1` samples, any little-endian integer labels —
/// and rejects everything else with a line naming the file and the `astype` that fixes it.
public final class NumpyFile {
    public enum Element: String, CaseIterable {
        case float32 = "<f4", uint8 = "|u1", int8 = "|i1"
        case uint16 = "<u2", int16 = "<i2", uint32 = "<u4", int32 = "<i4", uint64 = "<u8", int64 = "<i8"

        public var size: Int {
            switch self {
            case .uint8, .int8: return 1
            case .uint16, .int16: return 2
            case .float32, .uint32, .int32: return 4
            case .uint64, .int64: return 8
            }
        }
        public var isInteger: Bool { self != .float32 }
    }

    public let path: String
    public let element: Element
    public let shape: [Int]
    private let file: MappedFile
    private let dataOffset: Int

    /// The first element (C order).
    public var data: UnsafeRawPointer { file.bytes.baseAddress!.advanced(by: dataOffset) }
    public var elementCount: Int { shape.reduce(1, *) }

    /// `what` names the file in errors ("data.train_images").
    public init(path: String, what: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw FileFormatError("missing \(what) \(path): write it with numpy.save, or fix the path")
        }
        file = try MappedFile(path: path, what: what)
        self.path = path
        (element, shape, dataOffset) = try Self.parseHeader(file.bytes, file: "\(what) \(path)")
    }

    /// A format-1.0 preamble and header, as `numpy.save` writes them: magic, version, length,
    /// then the dict padded with spaces and a newline so that the data starts 64-byte aligned.
    public static func header(descr: String, shape: [Int], fortranOrder: Bool = false) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dictionary = Array("{'descr': '\(descr)', 'fortran_order': \(fortranOrder ? "True" : "False"), 'shape': \(shapeText), }".utf8)
        while (10 + dictionary.count + 1) % 64 != 0 { dictionary.append(0x20) }
        dictionary.append(0x0A)
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        withUnsafeBytes(of: UInt16(dictionary.count).littleEndian) { out += $0 }
        return out + dictionary
    }

    /// Reads and checks a `.npy` header against the file's length; every malformed header is
    /// one error naming `file` (also the fuzz target's entry point).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, file: String) throws -> (element: Element, shape: [Int], dataOffset: Int) {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]   // "\x93NUMPY"
        guard bytes.count >= 10, Array(bytes[0 ..< 6]) == magic else {
            throw FileFormatError("\(file) is not a NumPy .npy file (no \\x93NUMPY magic); write it with numpy.save")
        }
        let major = bytes[6]
        guard (1 ... 3).contains(major) else { throw FileFormatError("\(file): .npy format version \(major) is not one ringsgd reads (1–3)") }
        let lengthBytes = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lengthBytes else { throw FileFormatError("\(file) is truncated inside its .npy header") }
        let headerLength = (0 ..< lengthBytes).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        let start = 8 + lengthBytes, dataOffset = start + headerLength
        guard dataOffset <= bytes.count else {
            throw FileFormatError("\(file) is truncated: its .npy header claims \(headerLength) bytes, the file has \(bytes.count - start) after the preamble")
        }
        let header = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start ..< dataOffset]), as: UTF8.self)
        let dictionary = try HeaderDictionary(header, file: file)

        let descr = try dictionary.string("descr")
        guard let element = Element(rawValue: descr == "<u1" ? "|u1" : descr == "<i1" ? "|i1" : descr) else {
            let hint = descr.hasPrefix(">") ? "it is big-endian; save arr.astype(arr.dtype.newbyteorder('<'))" : "save arr.astype('float32') for samples or arr.astype('int64') for labels"
            throw FileFormatError("\(file) holds dtype '\(descr)', which ringsgd does not read (<f4, |u1 or little-endian integers); \(hint)")
        }
        guard try dictionary.bool("fortran_order") == false else {
            throw FileFormatError("\(file) is stored in Fortran order; save numpy.ascontiguousarray(arr) instead")
        }
        let shape = try dictionary.shape("shape")
        var product = element.size
        for d in shape {
            let (next, overflow) = product.multipliedReportingOverflow(by: d)
            guard !overflow, next <= bytes.count else {
                throw FileFormatError("\(file) is truncated or corrupt: shape \(shape) of \(descr) describes more bytes than the file's \(bytes.count)")
            }
            product = next
        }
        guard bytes.count - dataOffset == product else {
            throw FileFormatError("\(file) is truncated or corrupt: shape \(shape) of \(descr) needs \(product) data bytes, it has \(bytes.count - dataOffset)")
        }
        guard dataOffset % element.size == 0 else {
            throw FileFormatError("\(file): its data starts at byte \(dataOffset), not aligned to its \(element.size)-byte elements; re-save it with numpy.save")
        }
        return (element, shape, dataOffset)
    }

    /// The header's Python dict literal, read for exactly what `numpy.save` writes: string
    /// keys in quotes, and values that are a quoted string, True/False, or a tuple of integers.
    private struct HeaderDictionary {
        var values: [String: String] = [:]
        let file: String

        init(_ text: String, file: String) throws {
            self.file = file
            var body = Substring(text.trimmingCharacters(in: .whitespacesAndNewlines))
            guard body.hasPrefix("{"), body.hasSuffix("}") else { throw FileFormatError("\(file): the .npy header is not a dict literal") }
            body = body.dropFirst().dropLast()
            while let keyStart = body.firstIndex(where: { $0 == "'" || $0 == "\"" }) {
                let quote = body[keyStart]
                let afterQuote = body.index(after: keyStart)
                guard let keyEnd = body[afterQuote...].firstIndex(of: quote),
                      let colon = body[keyEnd...].firstIndex(of: ":") else { throw FileFormatError("\(file): malformed .npy header \(text.debugDescription)") }
                let key = String(body[afterQuote ..< keyEnd])
                var rest = body[body.index(after: colon)...].drop { $0 == " " }
                let value: Substring
                if rest.first == "(" {
                    guard let close = rest.firstIndex(of: ")") else { throw FileFormatError("\(file): malformed shape in the .npy header") }
                    value = rest[...close]
                    rest = rest[rest.index(after: close)...]
                } else if let q = rest.first, q == "'" || q == "\"" {
                    guard let close = rest.dropFirst().firstIndex(of: q) else { throw FileFormatError("\(file): malformed string in the .npy header") }
                    value = rest[...close]
                    rest = rest[rest.index(after: close)...]
                } else {
                    let end = rest.firstIndex(of: ",") ?? rest.endIndex
                    value = rest[..<end]
                    rest = rest[end...]
                }
                values[key] = value.trimmingCharacters(in: .whitespaces)
                body = rest.drop { $0 == "," || $0 == " " }
            }
        }

        func raw(_ key: String) throws -> String {
            guard let value = values[key] else { throw FileFormatError("\(file): the .npy header has no '\(key)'") }
            return value
        }

        func string(_ key: String) throws -> String {
            let value = try raw(key)
            guard value.count >= 2, let q = value.first, q == "'" || q == "\"", value.last == q else {
                throw FileFormatError("\(file): '\(key)' in the .npy header is not a string (\(value))")
            }
            return String(value.dropFirst().dropLast())
        }

        func bool(_ key: String) throws -> Bool {
            switch try raw(key) {
            case "True": return true
            case "False": return false
            case let other: throw FileFormatError("\(file): '\(key)' in the .npy header is not True or False (\(other))")
            }
        }

        func shape(_ key: String) throws -> [Int] {
            let value = try raw(key)
            guard value.hasPrefix("("), value.hasSuffix(")") else { throw FileFormatError("\(file): '\(key)' in the .npy header is not a tuple (\(value))") }
            let items = value.dropFirst().dropLast().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            return try items.map { item in
                guard let d = Int(item), d >= 0 else { throw FileFormatError("\(file): shape \(value) in the .npy header holds '\(item)', not a size") }
                return d
            }
        }
    }

    /// The integer at `index` of an integer array (labels), widened to Int64.
    public func integer(at index: Int) -> Int64 {
        let p = data.advanced(by: index * element.size)
        switch element {
        case .uint8: return Int64(p.load(as: UInt8.self))
        case .int8: return Int64(p.load(as: Int8.self))
        case .uint16: return Int64(UInt16(littleEndian: p.load(as: UInt16.self)))
        case .int16: return Int64(Int16(littleEndian: p.load(as: Int16.self)))
        case .uint32: return Int64(UInt32(littleEndian: p.load(as: UInt32.self)))
        case .int32: return Int64(Int32(littleEndian: p.load(as: Int32.self)))
        case .uint64: return Int64(clamping: UInt64(littleEndian: p.load(as: UInt64.self)))   // 2⁶³ and above: too large, not negative
        case .int64: return Int64(littleEndian: p.load(as: Int64.self))
        case .float32: return 0
        }
    }
}
