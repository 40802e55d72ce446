import FileFormats
import Foundation
import XCTest

/// The formats ringsgd writes for other tools, parsed back independently: safetensors by our
/// reader (which checks what the format requires), .npz entry by entry as zip records holding
/// .npy files.
final class FormatTests: XCTestCase {
    /// A safetensors file of this JSON header and these data bytes, as written by hand.
    func file(_ header: String, _ data: [UInt8]) -> [UInt8] {
        let json = Array(header.utf8)
        return withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + data
    }

    /// Property: a file with a hole or a wrong size is refused by the reader: bytes past the
    /// last tensor, a gap between two tensors, two tensors over the same bytes — each named.
    func testSafetensorsReaderRefusesHoles() throws {
        var bytes = try Safetensors.encode([NamedTensor(name: "a", shape: [2], values: [1, 2])], metadata: [:])
        bytes.append(0)
        XCTAssertThrowsError(try Safetensors.decode(bytes))
        let twelve = [UInt8](repeating: 0, count: 12)
        let hole = file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, twelve)
        let overlap = file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, twelve.prefix(8).map { $0 })
        for (what, bytes) in [("a hole", hole), ("an overlap", overlap)] {
            XCTAssertThrowsError(try Safetensors.decode(bytes), what) { error in
                XCTAssertTrue("\(error)".contains("tensor b starts at") && "\(error)".contains("a hole or an overlap"), "\(what): names the tensor: \(error)")
            }
        }
        // The same two tensors back to back are read.
        XCTAssertEqual(try Safetensors.decode(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                                                   twelve.prefix(8).map { $0 })).tensors.map(\.name), ["a", "b"])
    }

    /// Property: the .npy header is numpy.save's own, byte for byte (numpy 2 wrote these: the
    /// 1-D shape's trailing comma, which numpy's reader requires and ours does not, included).
    func testNumpyHeaderIsNumpysOwnBytes() throws {
        let padded = { (dict: String) in Array(dict.utf8) + [UInt8](repeating: 0x20, count: 117 - dict.utf8.count) + [0x0A] }
        let preamble: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, 0x76, 0]
        XCTAssertEqual(NumpyFile.header(descr: "<f4", shape: [3]), preamble + padded("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"))
        XCTAssertEqual(NumpyFile.header(descr: "<f4", shape: [2, 4]), preamble + padded("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }"))
        XCTAssertEqual(NumpyFile.header(descr: "<f4", shape: []), preamble + padded("{'descr': '<f4', 'fortran_order': False, 'shape': (), }"))
    }

    /// PyTorch writes `num_batches_tracked` as a 0-dimensional I64: read as a Float, beside F32
    /// tensors; a dtype neither is refused, as is a shape whose element count overflows.
    func testSafetensorsReaderTakesI64AsFloat() throws {
        let f32 = withUnsafeBytes(of: Float(2.5).bitPattern.littleEndian) { Array($0) }
        let i64 = withUnsafeBytes(of: Int64(1234).littleEndian) { Array($0) }
        let decoded = try Safetensors.decode(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"n":{"dtype":"I64","shape":[],"data_offsets":[4,12]}}"#, f32 + i64))
        XCTAssertEqual(decoded.tensors.map(\.name), ["a", "n"])
        XCTAssertEqual(decoded.tensors.map(\.values), [[2.5], [1234]])
        XCTAssertEqual(decoded.tensors[1].shape, [])
        XCTAssertThrowsError(try Safetensors.decode(file(#"{"a":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#, f32))) { error in
            XCTAssertTrue("\(error)".contains("dtype F8_E4M3"), "names the dtype it does not read: \(error)")
        }
        XCTAssertThrowsError(try Safetensors.decode(file(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#, f32)))
        // Numbers that overflow on the way: a shape whose product is 0 only after two dimensions
        // overflow, an end offset near Int.max (both trapped before).
        XCTAssertThrowsError(try Safetensors.decode(file(#"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776,0],"data_offsets":[0,0]}}"#, [])))
        XCTAssertThrowsError(try Safetensors.decode(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,9223372036854775807]}}"#, f32)))
        // An empty tensor is a tensor.
        XCTAssertEqual(try Safetensors.decode(file(#"{"e":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]}}"#, [])).tensors.map(\.shape), [[3, 0]])
        // Empty tensors sharing their begin with a full one are read whatever order the header's
        // keys come back in (a dictionary's order changes from process to process: many keys, many orders).
        let empties = (0 ..< 12).map { #""e\#($0)":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}"# }.joined(separator: ",")
        for _ in 0 ..< 8 {
            let mixed = try Safetensors.decode(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},\#(empties),"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, f32 + f32))
            XCTAssertEqual(mixed.tensors.count, 14)
        }
    }

    /// Property: half-precision, double and 32-bit integer tensors (Hugging Face ships many
    /// checkpoints in F16 or BF16) are read as the Float each value is: F16 and BF16 exactly,
    /// F64 rounded to nearest (a finite value past float32's range refused, by index), integers
    /// and BOOL as their values.
    func testSafetensorsReaderConvertsOtherDTypesToFloat() throws {
        func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }   // little-endian host
        let half: [Float16] = [1.5, -0.000061035156, 65504]
        let bf16: [UInt16] = [0x3FC0, 0xC2F7, 0x0001]   // 1.5, -123.5, the smallest subnormal
        let double: [Double] = [0.1, -.infinity, 3]
        let int32: [Int32] = [-7, 16_777_216]
        let header = #"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[6,12]},"#
            + #""d":{"dtype":"F64","shape":[3],"data_offsets":[12,36]},"i":{"dtype":"I32","shape":[2],"data_offsets":[36,44]}}"#
        let decoded = try Safetensors.decode(file(header, bytes(half) + bytes(bf16) + bytes(double) + bytes(int32))).tensors
        XCTAssertEqual(decoded.map(\.name), ["h", "b", "d", "i"])
        XCTAssertEqual(decoded[0].values, [1.5, -0x1p-14, 65504])
        XCTAssertEqual(decoded[1].values, [1.5, -123.5, Float(bitPattern: 0x0001_0000)])
        XCTAssertEqual(decoded[2].values, [Float(0.1), -.infinity, 3])
        XCTAssertEqual(decoded[3].values, [-7, 16_777_216])
        XCTAssertEqual(decoded.map(\.isInteger), [false, false, false, true])
        XCTAssertThrowsError(try Safetensors.decode(file(#"{"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#, bytes([1.0, -1e300] as [Double])))) { error in
            XCTAssertTrue("\(error)".contains("tensor d holds -1e+300 at index 1, past float32's range"), "\(error)")
        }
        let small: [UInt8] = [255, 1] + bytes([Int16(-300)]) + bytes([UInt16(65535)]) + bytes([UInt32(4_000_000_000)]) + bytes([UInt64(5)]) + [1, 0]
        let integers = #"{"u8":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"i8":{"dtype":"I8","shape":[1],"data_offsets":[1,2]},"#
            + #""i16":{"dtype":"I16","shape":[1],"data_offsets":[2,4]},"u16":{"dtype":"U16","shape":[1],"data_offsets":[4,6]},"#
            + #""u32":{"dtype":"U32","shape":[1],"data_offsets":[6,10]},"u64":{"dtype":"U64","shape":[1],"data_offsets":[10,18]},"#
            + #""mask":{"dtype":"BOOL","shape":[2],"data_offsets":[18,20]}}"#
        let read = try Safetensors.decode(file(integers, small)).tensors
        XCTAssertEqual(read.map(\.values), [[255], [1], [-300], [65535], [4_000_000_000], [5], [1, 0]])
        XCTAssertTrue(read.allSatisfy(\.isInteger))
    }

    /// Property: the .npz is a stored zip whose entries are NAME.npy files numpy reads: local
    /// headers with matching CRC-32, the central directory and end record pointing at them.
    func testNpzEntriesAreNpyFilesOfEachTensor() throws {
        let tensors = [NamedTensor(name: "0.weight", shape: [4, 1, 3, 3], values: (0 ..< 36).map { Float($0) / 7 }),
                       NamedTensor(name: "0.bias", shape: [4], values: [1, -2, 3.5, 0]),
                       NamedTensor(name: "5.weight", shape: [3, 2], values: [0.25, -0.5, 1e-3, 7, 8, -9])]
        let bytes = try NpzArchive.encode(tensors)
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        let end = bytes.count - 22
        XCTAssertEqual(u32(end), 0x0605_4B50)
        XCTAssertEqual(u16(end + 10), tensors.count)
        var central = u32(end + 16)
        for tensor in tensors {
            XCTAssertEqual(u32(central), 0x0201_4B50)
            let nameLength = u16(central + 28), local = u32(central + 42)
            XCTAssertEqual(String(decoding: bytes[central + 46 ..< central + 46 + nameLength], as: UTF8.self), tensor.name + ".npy")
            XCTAssertEqual(u32(local), 0x0403_4B50)
            let size = u32(local + 18), start = local + 30 + u16(local + 26)
            let payload = Array(bytes[start ..< start + size])
            XCTAssertEqual(UInt32(u32(local + 14)), payload.withUnsafeBufferPointer { crc($0) })
            let parsed = try payload.withUnsafeBytes { try NumpyFile.parseHeader($0, file: tensor.name) }
            XCTAssertEqual(parsed.element, .float32)
            XCTAssertEqual(parsed.shape, tensor.shape)
            XCTAssertEqual(parsed.dataOffset % 64, 0)
            let values = payload[parsed.dataOffset...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(values, tensor.values)
            central += 46 + nameLength
        }
    }

    /// CRC-32 (IEEE), bit by bit: an independent check of the archive's zlib-computed sums.
    private func crc(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0 ..< 8 { c = c & 1 == 1 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
    }

    /// Property: the ZIP64 form (written where a size or offset reaches 4 GiB; here forced for
    /// a small archive) reads back in Python's `zipfile` — what numpy.load uses — with the same
    /// entries and bytes as the plain form, and carries the ZIP64 records.
    func testZip64ArchivesReadBackLikePlainOnes() throws {
        guard let python = ["/usr/bin/python3", "/usr/local/bin/python3"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("python3 is not installed: its zipfile module is the independent reader of this test")
        }
        let tensors = [NamedTensor(name: "0.weight", shape: [3, 2], values: [1, 2, 3, 4, 5, 6]), NamedTensor(name: "0.bias", shape: [3], values: [-1, 0, 0.5])]
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-npz-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func listing(_ bytes: [UInt8], _ name: String) throws -> String {
            let path = directory.appendingPathComponent(name).path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let process = Process(), pipe = Pipe()
            process.executableURL = URL(fileURLWithPath: python)
            process.arguments = ["-c", "import zipfile, sys, hashlib\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n"
                                 + "for i in z.infolist(): print(i.filename, i.file_size, hashlib.sha256(z.read(i)).hexdigest())", path]
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, output)
            return output
        }
        let plain = try NpzArchive.encode(tensors), zip64 = try NpzArchive.encode(tensors, zip64At: 0)
        func contains(_ bytes: [UInt8], signature: UInt32) -> Bool {
            let s = withUnsafeBytes(of: signature.littleEndian) { Array($0) }
            return bytes.indices.dropLast(3).contains { Array(bytes[$0 ..< $0 + 4]) == s }
        }
        XCTAssertTrue(contains(zip64, signature: 0x0606_4B50) && contains(zip64, signature: 0x0706_4B50), "ZIP64 end record and locator")
        XCTAssertFalse(contains(plain, signature: 0x0606_4B50), "the plain form has no ZIP64 record")
        let expected = try listing(plain, "plain.npz")
        XCTAssertEqual(expected.split(separator: "\n").map { $0.split(separator: " ")[0] }, ["0.weight.npy", "0.bias.npy"])
        XCTAssertEqual(try listing(zip64, "zip64.npz"), expected)
    }
}
