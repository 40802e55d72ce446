import CZlib
import Foundation

/// An IDX file (LeCun's MNIST format, also KMNIST's, EMNIST's and Fashion-MNIST's), gzipped
/// or not, memory-mapped read-only. A gzipped file is decompressed once into a cache file
/// (named by the source's `FileSystem.fingerprint`) and the cache is mapped.
///
/// Format: magic = 0x00 0x00 type ndim (type 0x08 = unsigned byte), then ndim big-endian
/// UInt32 dimensions, then the data. Everything is validated when the file is opened — magic,
/// type, dimensions against the file size — never halfway through training.
public final class IDXFile {
    public let dimensions: [Int]
    /// The file mapped: the source itself, or the decompressed cache of a gzipped one.
    public let path: String
    private let file: MappedFile
    private let headerLength: Int

    /// The UInt8 payload after the header.
    public var bytes: UnsafePointer<UInt8> {
        file.bytes.baseAddress!.advanced(by: headerLength).assumingMemoryBound(to: UInt8.self)
    }
    public var elementCount: Int { dimensions.reduce(1, *) }

    /// Opens `source` (gzip-compressed or plain: told apart by the gzip magic, not the name),
    /// decompressing a gzipped one into `cacheDirectory` first if no valid cache exists.
    /// `what` names the file in errors ("data.train_images"); `remedy` says what to do about a
    /// malformed one.
    public init(path source: String, cacheDirectory: String, what: String = "IDX file",
                remedy: String = "reinstall dataset-fashion-mnist") throws {
        guard FileManager.default.fileExists(atPath: source) else {
            throw FileFormatError("missing \(what) \(source): \(remedy)")
        }
        // Mapped first (which refuses a FIFO or a device without waiting on it): its first two
        // bytes say whether it is gzipped, and a plain file is then the file itself.
        let original = try MappedFile(path: source, what: what)
        if original.bytes.starts(with: [0x1F, 0x8B]) {
            do { try FileSystem.makeDirectory(cacheDirectory, what: "dataset cache") } catch {
                // The failing path may be a parent (HOME unwritable): name the cache's own too.
                throw FileError("\(error) (making the dataset cache \(cacheDirectory) for the decompressed \(what)); set data.cache_dir, or XDG_CACHE_HOME, to a writable directory")
            }
            let name = (source as NSString).lastPathComponent.replacingOccurrences(of: ".gz", with: "")
            path = (cacheDirectory as NSString).appendingPathComponent("\(name).\(FileSystem.fingerprint(of: source))")
            if !FileManager.default.fileExists(atPath: path) {
                try Self.decompress(source, to: path, remedy: remedy)
            }
            file = try MappedFile(path: path, what: what)
        } else {
            path = source
            file = original
        }
        (dimensions, headerLength) = try Self.parseHeader(file.bytes, file: source, remedy: remedy)
    }

    /// Reads and checks an unsigned-byte IDX header (magic 00 00 08 D, then D big-endian
    /// dimensions) against the file's length. Every malformed header is an error naming the
    /// file — including dimensions whose product overflows (a crafted header once trapped here).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, file: String,
                                   remedy: String = "reinstall dataset-fashion-mnist") throws -> (dimensions: [Int], headerLength: Int) {
        let length = bytes.count
        guard length >= 4 else { throw FileFormatError("\(file) is truncated: \(length) bytes, an IDX header needs at least 4") }
        guard bytes[0] == 0, bytes[1] == 0, bytes[2] == 0x08, bytes[3] >= 1, bytes[3] <= 4 else {
            let magic = String(format: "%02x%02x%02x%02x", bytes[0], bytes[1], bytes[2], bytes[3])
            let why = bytes[0] == 0 && bytes[1] == 0 && bytes[2] != 0x08
                ? "element type 0x\(String(format: "%02x", bytes[2])); ringsgd reads unsigned-byte (0x08) IDX files — convert it to .npy (data.dataset: npy)"
                : "bad magic \(magic); expected 000008 then 1–4 dimensions"
            throw FileFormatError("\(file) is not an unsigned-byte IDX file (\(why))")
        }
        let ndim = Int(bytes[3])
        let headerLength = 4 + 4 * ndim
        guard length >= headerLength else {
            throw FileFormatError("\(file) is truncated: the header needs \(headerLength) bytes, the file has \(length)")
        }
        let dimensions = (0 ..< ndim).map { i in (0 ..< 4).reduce(0) { $0 << 8 | Int(bytes[4 + 4 * i + $1]) } }
        var expected = headerLength
        var product = 1
        for d in dimensions {
            let (next, overflow) = product.multipliedReportingOverflow(by: d)
            guard !overflow, next <= length else {
                throw FileFormatError("\(file) is truncated or corrupt: dimensions \(dimensions) describe more bytes than the file's \(length); \(remedy)")
            }
            product = next
        }
        expected += product
        guard length == expected else {
            throw FileFormatError("\(file) is truncated or corrupt: dimensions \(dimensions) need \(expected) bytes, it has \(length); \(remedy)")
        }
        return (dimensions, headerLength)
    }

    /// gunzip with zlib into a temporary file, then rename: a reader never sees half a cache.
    private static func decompress(_ gzPath: String, to path: String, remedy: String) throws {
        guard let gz = gzopen(gzPath, "rb") else { throw FileFormatError("cannot open \(gzPath) with zlib") }
        defer { gzclose(gz) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        try FileSystem.replaceAtomically(path, what: "the dataset cache", hint: "free space there or set data.cache_dir") { out in
            while true {
                let n = buffer.withUnsafeMutableBytes { gzread(gz, $0.baseAddress, UInt32($0.count)) }
                if n < 0 { throw FileFormatError("\(gzPath) is corrupt (zlib could not decompress it); \(remedy)") }
                if n == 0 {
                    // The end of the data, or of a stream cut short (a partial download): zlib
                    // says which only here (Z_BUF_ERROR), and no cache may be made of the latter.
                    var code: Int32 = 0
                    _ = gzerror(gz, &code)
                    guard code == Z_OK || code == Z_STREAM_END else {
                        throw FileFormatError("\(gzPath) is truncated (its gzip stream ends early); \(remedy)")
                    }
                    break
                }
                // A short write (a full disk) must fail here: a truncated cache renamed into
                // place would later be blamed on the dataset.
                try buffer.withUnsafeBytes {
                    try FileSystem.writeAll(UnsafeRawBufferPointer(rebasing: $0[0 ..< Int(n)]), to: out, path: path, what: "the dataset cache")
                }
            }
        }
    }
}
