import CZlib
import Foundation

/// An IDX file (LeCun's MNIST format), gzip-compressed as Debian's `dataset-fashion-mnist`
/// ships it, decompressed once into a cache file and memory-mapped read-only.
///
/// Format: magic = 0x00 0x00 type ndim (type 0x08 = unsigned byte), then ndim big-endian
/// UInt32 dimensions, then the data. Everything is validated when the file is opened — magic,
/// type, dimensions against the file size — never halfway through training. Mapping the
/// cache (MAP_SHARED, read-only) lets every rank on a host share one copy in the page cache.
public final class IDXFile {
    public let dimensions: [Int]
    public let path: String
    private let mapping: UnsafeMutableRawPointer
    private let mappingLength: Int
    private let headerLength: Int

    /// The UInt8 payload after the header.
    public var bytes: UnsafePointer<UInt8> {
        UnsafePointer(mapping.advanced(by: headerLength).assumingMemoryBound(to: UInt8.self))
    }
    public var elementCount: Int { dimensions.reduce(1, *) }

    /// Opens `gzPath`, decompressing it into `cacheDirectory` first if no valid cache exists.
    public init(gzPath: String, cacheDirectory: String) throws {
        guard FileManager.default.fileExists(atPath: gzPath) else {
            throw DatasetError("missing \(gzPath): install Debian's dataset-fashion-mnist (launch/setup.sh does) or set data.dir to the folder holding the IDX .gz files")
        }
        try FileSystem.makeDirectory(cacheDirectory, what: "dataset cache (data.cache_dir)")
        let attributes = try FileManager.default.attributesOfItem(atPath: gzPath)
        let stamp = "\((attributes[.size] as? Int) ?? 0)-\(Int(((attributes[.modificationDate] as? Date) ?? Date.distantPast).timeIntervalSince1970))"
        let name = (gzPath as NSString).lastPathComponent.replacingOccurrences(of: ".gz", with: "")
        path = (cacheDirectory as NSString).appendingPathComponent("\(name).\(stamp)")
        if !FileManager.default.fileExists(atPath: path) {
            try Self.decompress(gzPath, to: path)
        }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DatasetError("cannot open cache \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        let length = Int(info.st_size)
        guard length >= 4, let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw DatasetError("\(gzPath) is truncated or unreadable (\(length) bytes decompressed); reinstall dataset-fashion-mnist")
        }
        mapping = map
        mappingLength = length
        do {
            (dimensions, headerLength) = try Self.parseHeader(UnsafeRawBufferPointer(start: map, count: length), file: gzPath)
        } catch {
            munmap(map, length)
            throw error
        }
    }

    /// Reads and checks an unsigned-byte IDX header (magic 00 00 08 D, then D big-endian
    /// dimensions) against the file's length. Every malformed header is an error naming the
    /// file — including dimensions whose product overflows (a crafted header once trapped here).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, file: String) throws -> (dimensions: [Int], headerLength: Int) {
        let length = bytes.count
        guard length >= 4 else { throw DatasetError("\(file) is truncated: \(length) bytes, an IDX header needs at least 4") }
        guard bytes[0] == 0, bytes[1] == 0, bytes[2] == 0x08, bytes[3] >= 1, bytes[3] <= 4 else {
            let magic = String(format: "%02x%02x%02x%02x", bytes[0], bytes[1], bytes[2], bytes[3])
            throw DatasetError("\(file) is not an unsigned-byte IDX file (bad magic \(magic); expected 000008 then 1–4 dimensions)")
        }
        let ndim = Int(bytes[3])
        let headerLength = 4 + 4 * ndim
        guard length >= headerLength else {
            throw DatasetError("\(file) is truncated: the header needs \(headerLength) bytes, the file has \(length)")
        }
        let dimensions = (0 ..< ndim).map { i in (0 ..< 4).reduce(0) { $0 << 8 | Int(bytes[4 + 4 * i + $1]) } }
        var expected = headerLength
        var product = 1
        for d in dimensions {
            let (next, overflow) = product.multipliedReportingOverflow(by: d)
            guard !overflow, next <= length else {
                throw DatasetError("\(file) is truncated or corrupt: dimensions \(dimensions) describe more bytes than the file's \(length); reinstall dataset-fashion-mnist")
            }
            product = next
        }
        expected += product
        guard length == expected else {
            throw DatasetError("\(file) is truncated or corrupt: dimensions \(dimensions) need \(expected) bytes, it has \(length); reinstall dataset-fashion-mnist")
        }
        return (dimensions, headerLength)
    }

    deinit { munmap(mapping, mappingLength) }

    /// gunzip with zlib into a temporary file, then rename: a reader never sees half a cache.
    private static func decompress(_ gzPath: String, to path: String) throws {
        guard let gz = gzopen(gzPath, "rb") else { throw DatasetError("cannot open \(gzPath) with zlib") }
        defer { gzclose(gz) }
        let temporary = path + ".tmp.\(getpid())"
        let hint = "free space there or set data.cache_dir"
        let out = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard out >= 0 else { throw FileError.posix("write the dataset cache", temporary, hint: hint) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        do {
            while true {
                let n = buffer.withUnsafeMutableBytes { gzread(gz, $0.baseAddress, UInt32($0.count)) }
                if n < 0 { throw DatasetError("\(gzPath) is corrupt (zlib could not decompress it); reinstall dataset-fashion-mnist") }
                if n == 0 { break }
                // A short write (a full disk) must fail here: a truncated cache renamed into
                // place would later be blamed on the dataset package.
                try buffer.withUnsafeBytes {
                    try FileSystem.writeAll(UnsafeRawBufferPointer(rebasing: $0[0 ..< Int(n)]), to: out, path: temporary,
                                            what: "the dataset cache")
                }
            }
            guard fsync(out) == 0 else { throw FileError.posix("write the dataset cache", temporary, hint: hint) }
        } catch {
            close(out); unlink(temporary)
            throw error
        }
        close(out)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw FileError.posix("move the dataset cache into place at", path, hint: hint, errno: code)
        }
    }
}
