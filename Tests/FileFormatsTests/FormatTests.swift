import FileFormats
import XCTest

/// The formats ringsgd writes for other tools, parsed back independently: safetensors by our
/// reader (which checks what the format requires), .npz entry by entry as zip records holding
/// .npy files.
final class FormatTests: XCTestCase {
    /// Property: a file with a hole or a wrong size is refused by the reader.
    func testSafetensorsReaderRefusesHoles() throws {
        var bytes = Safetensors.encode([NamedTensor(name: "a", shape: [2], values: [1, 2])], metadata: [:])
        bytes.append(0)
        XCTAssertThrowsError(try Safetensors.decode(bytes))
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
}
