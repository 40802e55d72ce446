import GradientCodecs
import XCTest

/// The sign codec's vectorised packing and unpacking against the scalar definition.
final class SignPackingTests: XCTestCase {
    /// Property: for every block size (aligned to 8 values or not) and length (with and without a
    /// partial last byte), the payload's sign bits are bit 31 of each value, 8 to a byte, and
    /// decode / decode-accumulate give ±(the block's scale) by that bit — exactly what the scalar
    /// loops gave (negative zero included: its sign bit is set).
    func testPackedSignsAndTheirDecodingFollowTheScalarDefinition() throws {
        var state: UInt64 = 0x5151
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state) >> 40) * 0x1p-20
        }
        for blockSize in [1, 3, 7, 8, 16, 1024] {
            for count in [1, 7, 8, 9, 100, 1031, 4100] {
                let codec = SignCodec(blockSize: blockSize)
                var x = (0 ..< count).map { _ in next() }
                x[count / 2] = -0.0
                var payload = [UInt8](repeating: 0, count: codec.maxEncodedBytes(count: count))
                let written = try x.withUnsafeMutableBufferPointer { source in
                    try payload.withUnsafeMutableBytes { try codec.encode(source, into: $0) }
                }
                XCTAssertEqual(written, payload.count)
                let blocks = (count + blockSize - 1) / blockSize
                let scales = payload.withUnsafeBytes { Array($0.bindMemory(to: Float.self).prefix(blocks)) }
                let bits = Array(payload[(blocks * 4)...])
                for i in 0 ..< count {
                    XCTAssertEqual(UInt32(bits[i / 8] >> UInt8(i % 8)) & 1, x[i].bitPattern >> 31, "block \(blockSize), count \(count), value \(i)")
                }
                for i in count ..< bits.count * 8 { XCTAssertEqual((bits[i / 8] >> UInt8(i % 8)) & 1, 0, "padding bit \(i) is clear") }
                let expected = (0 ..< count).map { i in Float(bitPattern: scales[i / blockSize].bitPattern | (x[i].bitPattern & 0x8000_0000)) }
                var decoded = [Float](repeating: 7, count: count), accumulated = (0 ..< count).map { _ in next() }
                let base = accumulated
                try payload.withUnsafeBytes { p in
                    try decoded.withUnsafeMutableBufferPointer { try codec.decode(p, into: $0) }
                    try accumulated.withUnsafeMutableBufferPointer { try codec.decodeAccumulate(p, into: $0) }
                }
                XCTAssertEqual(decoded.map(\.bitPattern), expected.map(\.bitPattern), "decode, block \(blockSize), count \(count)")
                XCTAssertEqual(accumulated.map(\.bitPattern), zip(base, expected).map { ($0 + $1).bitPattern }, "decode-accumulate, block \(blockSize), count \(count)")
            }
        }
    }
}
