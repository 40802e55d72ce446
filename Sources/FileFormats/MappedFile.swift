import Foundation

/// A whole file memory-mapped read-only (MAP_SHARED): every rank on a host that maps the same
/// dataset file shares one copy in the page cache, and nothing is read until it is touched.
public final class MappedFile {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    /// `what` names the file for the user ("data.train_images"). An empty file is refused
    /// unless `allowingEmpty` (then `bytes` is empty: its reader says what emptiness means).
    public init(path: String, what: String, allowingEmpty: Bool = false) throws {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, before the
        // check below could refuse it. (It changes nothing for a regular file or its mapping.)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw FileFormatError("cannot open \(what) \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw FileFormatError("\(what) \(path) is not a regular file")
        }
        let length = Int(info.st_size)
        self.path = path
        guard length > 0 else {
            guard allowingEmpty else { throw FileFormatError("\(what) \(path) is empty") }
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)   // nothing can be mapped
            return
        }
        guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw FileFormatError("cannot map \(what) \(path): \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: map, count: length)
    }

    deinit { if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) } }
}
