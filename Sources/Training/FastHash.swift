/// A fast 64-bit hash of bytes (four independent multiply-rotate lanes over 8-byte words, a
/// wyhash/xxHash-style mix): several GB/s, so hashing every parameter and optimizer buffer
/// for the replica check costs little. Equal hashes on two ranks ⇔, with overwhelming
/// probability, bit-identical buffers.
public enum FastHash {
    static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87, prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F

    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var lanes: (UInt64, UInt64, UInt64, UInt64) = (seed &+ prime1, seed &+ prime2, seed, seed &- prime1)
        let words = bytes.count / 8
        var i = 0
        @inline(__always) func round(_ acc: UInt64, _ word: UInt64) -> UInt64 {
            let x = acc &+ word &* prime2
            return (x << 31 | x >> 33) &* prime1
        }
        while i + 4 <= words {
            lanes.0 = round(lanes.0, bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
            lanes.1 = round(lanes.1, bytes.loadUnaligned(fromByteOffset: 8 * i + 8, as: UInt64.self))
            lanes.2 = round(lanes.2, bytes.loadUnaligned(fromByteOffset: 8 * i + 16, as: UInt64.self))
            lanes.3 = round(lanes.3, bytes.loadUnaligned(fromByteOffset: 8 * i + 24, as: UInt64.self))
            i += 4
        }
        var h = (lanes.0 << 1 | lanes.0 >> 63) &+ (lanes.1 << 7 | lanes.1 >> 57)
            &+ (lanes.2 << 12 | lanes.2 >> 52) &+ (lanes.3 << 18 | lanes.3 >> 46)
        while i < words { h = round(h, bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)); i += 1 }
        for j in (8 * words) ..< bytes.count { h = round(h, UInt64(bytes[j])) }
        h ^= UInt64(bytes.count)
        h = (h ^ (h >> 33)) &* prime2
        h = (h ^ (h >> 29)) &* prime1
        return h ^ (h >> 32)
    }

    public static func hash(_ bytes: [UInt8]) -> UInt64 { bytes.withUnsafeBytes { hash($0) } }

    /// Hash of several Float buffers in order (parameters, then each optimizer buffer).
    public static func hash(_ buffers: [UnsafeMutableBufferPointer<Float>]) -> UInt64 {
        var h: UInt64 = 0
        for b in buffers { h = hash(UnsafeRawBufferPointer(b), seed: h) }
        return h
    }
}
