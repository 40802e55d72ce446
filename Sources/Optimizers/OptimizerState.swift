/// The byte format of an optimizer's state: what a checkpoint stores.
///
///     magic "RSGDOPT1" (8 bytes) | kind (UTF-8, 16 bytes, zero-padded) | stepCount (Int64 LE)
///     | bufferCount (Int64) | for each buffer: count (Int64) + count × Float32 LE
///
/// Floats are stored bit-exactly, so a reloaded optimizer continues bit-identically.
struct OptimizerState {
    static let magic = Array("RSGDOPT1".utf8)

    static func encode(kind: String, stepCount: Int, buffers: [UnsafeMutableBufferPointer<Float>]) -> [UInt8] {
        var out = magic
        var kindBytes = Array(kind.utf8.prefix(16))
        kindBytes += [UInt8](repeating: 0, count: 16 - kindBytes.count)
        out += kindBytes
        append(Int64(stepCount), to: &out)
        append(Int64(buffers.count), to: &out)
        for buffer in buffers {
            append(Int64(buffer.count), to: &out)
            out += UnsafeRawBufferPointer(buffer)
        }
        return out
    }

    /// Restores into existing buffers (same count each); returns the step count.
    static func decode(_ bytes: [UInt8], kind: String, into buffers: [UnsafeMutableBufferPointer<Float>]) throws -> Int {
        func fail(_ why: String) -> HyperparameterError { HyperparameterError("\(kind) optimizer state: \(why)") }
        guard bytes.count >= 40, Array(bytes[0 ..< 8]) == magic else { throw fail("bad magic or truncated header") }
        let storedKind = String(decoding: bytes[8 ..< 24].prefix { $0 != 0 }, as: UTF8.self)
        guard storedKind == kind else { throw fail("state was saved by optimizer '\(storedKind)'") }
        var offset = 24
        func int() throws -> Int {
            guard offset + 8 <= bytes.count else { throw fail("truncated") }
            let v = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int64.self) }
            offset += 8
            return Int(v)
        }
        let steps = try int()
        let count = try int()
        guard count == buffers.count else { throw fail("has \(count) buffers, expected \(buffers.count)") }
        for buffer in buffers {
            let n = try int()
            guard n == buffer.count else { throw fail("buffer of \(n) values, expected \(buffer.count)") }
            guard offset + 4 * n <= bytes.count else { throw fail("truncated") }
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset ..< offset + 4 * n]))
            }
            offset += 4 * n
        }
        guard offset == bytes.count else { throw fail("\(bytes.count - offset) trailing bytes") }
        return steps
    }

    private static func append(_ v: Int64, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out += $0 }
    }
}

/// A zero-initialised Float buffer owned by an optimizer.
func allocateState(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
    let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
    buffer.initialize(repeating: 0)
    return buffer
}
