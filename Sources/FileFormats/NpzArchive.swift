import CZlib
import Foundation

/// NumPy's `.npz` (what `numpy.savez` writes): a zip archive, stored without compression,
/// of one `NAME.npy` per tensor, so `numpy.load(path)[NAME]` reads each back.
///
/// The zip records (PKWARE APPNOTE 6.3, sections 4.3.7, 4.3.12, 4.3.16): per entry a local
/// header, then the `.npy` bytes; then one central-directory record per entry and the end
/// record. Sizes stay below 4 GiB (no zip64): a model export far smaller than that.
public enum NpzArchive {
    public static func encode(_ tensors: [NamedTensor]) throws -> [UInt8] {
        var out: [UInt8] = [], directory: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T, into buffer: inout [UInt8]) { withUnsafeBytes(of: v.littleEndian) { buffer += $0 } }
        for tensor in tensors {
            let name = Array((tensor.name + ".npy").utf8)
            let payload = npy(tensor)
            let crc = payload.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
            guard out.count + payload.count < Int(UInt32.max) else {
                throw Safetensors.FormatError(description: "the .npz would exceed 4 GiB; export --format safetensors instead")
            }
            let offset = UInt32(out.count)
            // Version 2.0, no flags, method 0 (stored), time 00:00, date 1980-01-01.
            put(UInt32(0x0403_4B50), into: &out); put(UInt16(20), into: &out); put(UInt16(0), into: &out); put(UInt16(0), into: &out)
            put(UInt16(0), into: &out); put(UInt16(0x21), into: &out); put(crc, into: &out)
            put(UInt32(payload.count), into: &out); put(UInt32(payload.count), into: &out)
            put(UInt16(name.count), into: &out); put(UInt16(0), into: &out)
            out += name
            out += payload
            put(UInt32(0x0201_4B50), into: &directory); put(UInt16(20), into: &directory); put(UInt16(20), into: &directory)
            put(UInt16(0), into: &directory); put(UInt16(0), into: &directory); put(UInt16(0), into: &directory)
            put(UInt16(0x21), into: &directory); put(crc, into: &directory)
            put(UInt32(payload.count), into: &directory); put(UInt32(payload.count), into: &directory)
            put(UInt16(name.count), into: &directory); put(UInt16(0), into: &directory); put(UInt16(0), into: &directory)
            put(UInt16(0), into: &directory); put(UInt16(0), into: &directory); put(UInt32(0), into: &directory)
            put(offset, into: &directory)
            directory += name
        }
        let directoryOffset = UInt32(out.count)
        out += directory
        put(UInt32(0x0605_4B50), into: &out); put(UInt16(0), into: &out); put(UInt16(0), into: &out)
        put(UInt16(tensors.count), into: &out); put(UInt16(tensors.count), into: &out)
        put(UInt32(directory.count), into: &out); put(directoryOffset, into: &out); put(UInt16(0), into: &out)
        return out
    }

    /// One `.npy`: `NumpyFile.header`, then the little-endian Float32 values.
    static func npy(_ tensor: NamedTensor) -> [UInt8] {
        var out = NumpyFile.header(descr: "<f4", shape: tensor.shape)
        tensor.appendLittleEndianBytes(to: &out)
        return out
    }
}
