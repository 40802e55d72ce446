import CZlib
import Foundation

/// NumPy's `.npz` (what `numpy.savez` writes): a zip archive, stored without compression,
/// of one `NAME.npy` per tensor, so `numpy.load(path)[NAME]` reads each back.
///
/// The zip records (PKWARE APPNOTE 6.3.x, sections 4.3.7, 4.3.12, 4.3.16): per entry a local
/// header, then the `.npy` bytes; then one central-directory record per entry and the end
/// record. **ZIP64** (4.3.14, 4.3.15, 4.5.3) where a size or offset reaches 4 GiB − 1 or the
/// entries exceed 65 534 — a model of more than a billion parameters: the 32-bit fields hold
/// 0xFFFFFFFF and an extra field (id 0x0001) holds the 64-bit values; the end record is
/// preceded by the ZIP64 end record and its locator. Python's `zipfile` (and so numpy) reads
/// both forms.
public enum NpzArchive {
    /// `zip64At`: sizes and offsets from which ZIP64 records are written (the format's limit;
    /// tests lower it to write ZIP64 for small archives).
    public static func encode(_ tensors: [NamedTensor], zip64At limit: UInt64 = 0xFFFF_FFFF) throws -> [UInt8] {
        var out: [UInt8] = [], directory: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T, into buffer: inout [UInt8]) { withUnsafeBytes(of: v.littleEndian) { buffer += $0 } }
        for tensor in tensors {
            let name = Array((tensor.name + ".npy").utf8)
            let payload = try npy(tensor)
            let crc = payload.withUnsafeBufferPointer { UInt32(crc32_z(0, $0.baseAddress, $0.count)) }
            let size = UInt64(payload.count), offset = UInt64(out.count)
            let zip64 = size >= limit || offset >= limit
            let version = UInt16(zip64 ? 45 : 20)
            // Local header: no flags, method 0 (stored), time 00:00, date 1980-01-01.
            put(UInt32(0x0403_4B50), into: &out); put(version, into: &out); put(UInt16(0), into: &out); put(UInt16(0), into: &out)
            put(UInt16(0), into: &out); put(UInt16(0x21), into: &out); put(crc, into: &out)
            put(zip64 ? UInt32.max : UInt32(size), into: &out); put(zip64 ? UInt32.max : UInt32(size), into: &out)
            put(UInt16(name.count), into: &out); put(UInt16(zip64 ? 20 : 0), into: &out)
            out += name
            if zip64 { put(UInt16(1), into: &out); put(UInt16(16), into: &out); put(size, into: &out); put(size, into: &out) }
            out += payload
            // Central record: with ZIP64, sizes and offset all in the extra field.
            put(UInt32(0x0201_4B50), into: &directory); put(version, into: &directory); put(version, into: &directory)
            put(UInt16(0), into: &directory); put(UInt16(0), into: &directory); put(UInt16(0), into: &directory)
            put(UInt16(0x21), into: &directory); put(crc, into: &directory)
            put(zip64 ? UInt32.max : UInt32(size), into: &directory); put(zip64 ? UInt32.max : UInt32(size), into: &directory)
            put(UInt16(name.count), into: &directory); put(UInt16(zip64 ? 28 : 0), into: &directory); put(UInt16(0), into: &directory)
            put(UInt16(0), into: &directory); put(UInt16(0), into: &directory); put(UInt32(0), into: &directory)
            put(zip64 ? UInt32.max : UInt32(offset), into: &directory)
            directory += name
            if zip64 {
                put(UInt16(1), into: &directory); put(UInt16(24), into: &directory)
                put(size, into: &directory); put(size, into: &directory); put(offset, into: &directory)
            }
        }
        let directoryOffset = UInt64(out.count), directorySize = UInt64(directory.count), count = UInt64(tensors.count)
        out += directory
        let zip64End = directoryOffset >= limit || directorySize >= limit || count >= 0xFFFF
        if zip64End {
            let recordOffset = UInt64(out.count)
            // ZIP64 end of central directory record (size counted after its first 12 bytes).
            put(UInt32(0x0606_4B50), into: &out); put(UInt64(44), into: &out); put(UInt16(45), into: &out); put(UInt16(45), into: &out)
            put(UInt32(0), into: &out); put(UInt32(0), into: &out); put(count, into: &out); put(count, into: &out)
            put(directorySize, into: &out); put(directoryOffset, into: &out)
            // Its locator: disk 0, where the record lies, one disk.
            put(UInt32(0x0706_4B50), into: &out); put(UInt32(0), into: &out); put(recordOffset, into: &out); put(UInt32(1), into: &out)
        }
        put(UInt32(0x0605_4B50), into: &out); put(UInt16(0), into: &out); put(UInt16(0), into: &out)
        put(zip64End ? UInt16.max : UInt16(count), into: &out); put(zip64End ? UInt16.max : UInt16(count), into: &out)
        put(zip64End ? UInt32.max : UInt32(directorySize), into: &out); put(zip64End ? UInt32.max : UInt32(directoryOffset), into: &out)
        put(UInt16(0), into: &out)
        return out
    }

    /// One `.npy`: `NumpyFile.header`, then the little-endian Float32 (or Int64) values.
    static func npy(_ tensor: NamedTensor) throws -> [UInt8] {
        var out = NumpyFile.header(descr: tensor.isInteger ? "<i8" : "<f4", shape: tensor.shape)
        try tensor.appendLittleEndianBytes(to: &out)
        return out
    }
}
