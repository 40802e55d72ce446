// FileFormats — the bytes ringsgd reads and writes on disk.
//
// Owns: the file formats (IDX, NumPy .npy and .npz, safetensors), memory-mapped reading, and
// the few POSIX file operations every writer shares (atomic replace, append-only logs, the
// fingerprint that names caches). Knows nothing of datasets, models or training.
import Foundation

/// A file whose contents are not what its format says (or that cannot be read as one): the
/// file, what is wrong and what to do, in one line.
public struct FileFormatError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message.shownOnOneLine }
    public var description: String { message }
}

/// A file-system failure, in one line: what could not be done, where, and the OS's reason.
public struct FileError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message.shownOnOneLine }
    public var description: String { message }

    /// "cannot WHAT PATH: strerror(errno)[; HINT]". A full disk or quota says what to do.
    public static func posix(_ what: String, _ path: String, hint: String? = nil, errno code: Int32 = errno) -> FileError {
        let hint = hint ?? ([ENOSPC, EDQUOT].contains(code) ? "free space on that file system first" : nil)
        return FileError("cannot \(what) \(path): \(String(cString: strerror(code)))" + (hint.map { "; \($0)" } ?? ""))
    }
}

/// The few file operations the trainer needs, on POSIX calls so that every failure carries
/// errno's reason in one line (Foundation's errors print as multi-line NSError dumps, and
/// `FileHandle.write` traps on a full disk instead of throwing).
public enum FileSystem {
    /// Removes `directory` if it holds nothing but empty files or empty directories named in
    /// `allowing` (what a run that failed at its start leaves); anything else keeps it whole.
    public static func removeIfEmpty(_ directory: String, allowing names: Set<String>) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in entries {
            let path = (directory as NSString).appendingPathComponent(name)
            guard names.contains(name), let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return }
            let isDirectory = attributes[.type] as? FileAttributeType == .typeDirectory
            if isDirectory ? ((try? FileManager.default.contentsOfDirectory(atPath: path))?.isEmpty != true)
                           : ((attributes[.size] as? NSNumber)?.intValue ?? 1) != 0 { return }
        }
        for name in entries {
            let path = (directory as NSString).appendingPathComponent(name)
            _ = rmdir(path) == 0 || unlink(path) == 0
        }
        rmdir(directory)
    }

    /// `mkdir -p`: creates `path` and its missing parents; `what` names it in errors
    /// ("run directory", "dataset cache").
    public static func makeDirectory(_ path: String, what: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw FileError("cannot create \(what) \(path): a file of that name exists") }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectory(parent, what: what) }
        if mkdir(path, 0o755) != 0 {
            guard errno == EEXIST else { throw FileError.posix("create \(what)", path) }
            return
        }
        // The new entry made durable in its parent, as `replaceAtomically` makes a file's: else
        // a power loss may take the directory — and the first checkpoint renamed into it — away.
        let directory = open(parent.isEmpty ? "." : parent, O_RDONLY)
        if directory >= 0 { fsync(directory); close(directory) }
    }

    /// Sixteen hex digits that name a cache derived from a file: its absolute path, device,
    /// inode, size and modification time to the nanosecond, hashed (FNV-1a, 64 bits). A changed
    /// source — or a different file of the same name, size and whole-second mtime elsewhere (a
    /// copy made with `cp -p`, `rsync -t` or `tar`) — gets a cache of its own instead of
    /// another's. A file that cannot be stat'ed is named by its path alone.
    public static func fingerprint(of path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var info = stat()
        let identity = stat(path, &info) == 0
            ? "\(info.st_dev) \(info.st_ino) \(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)" : "unreadable"
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(absolute)|\(identity)".utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return String(format: "%016llx", hash)
    }

    /// Writes all of `bytes` to `fd`, or throws naming `path` (a full disk is ENOSPC here).
    public static func writeAll(_ bytes: UnsafeRawBufferPointer, to fd: Int32, path: String, what: String) throws {
        var written = 0
        while written < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw FileError.posix("write \(what)", path, errno: n < 0 ? errno : ENOSPC) }
            written += n
        }
    }

    /// Replaces `path` with `bytes` atomically (`replaceAtomically`).
    public static func writeAtomically(_ bytes: [UInt8], to path: String, what: String) throws {
        try replaceAtomically(path, what: what) { fd in
            try bytes.withUnsafeBytes { try writeAll($0, to: fd, path: path, what: what) }
        }
    }

    /// Removes from `directory` the temporary files `replaceAtomically` left on this host for a
    /// writer that no longer exists (killed mid-write: a supervisor's stop, a lost rank) —
    /// each as large as what it was writing, so a long run of relaunches would fill the disk.
    /// Another host's, or a live process's, are left alone (a writer on a shared file system).
    /// Returns how many were removed.
    /// A writer is gone when its pid is, on this host — and, for ranks in containers that share
    /// a host name but not a pid space, when its file is not locked: a writer holds an exclusive
    /// `flock` on its temporary file until it is renamed. A file changed in the last minute is
    /// left alone too: between its writer's `open` and `flock` it is unlocked, and a writer in
    /// another pid space looks gone.
    @discardableResult
    public static func removeStaleTemporaries(in directory: String) -> Int {
        var removed = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            // NAME.tmp.HOST.PID.HEX, the host name as it is (it may hold dots): the last two fields.
            let fields = name.split(separator: ".", omittingEmptySubsequences: false)
            guard fields.count >= 4, let pid = Int32(fields[fields.count - 2]), pid > 0, pid != getpid(),
                  UInt32(fields[fields.count - 1], radix: 16) != nil,
                  name.dropLast(fields[fields.count - 1].count + fields[fields.count - 2].count + 2).hasSuffix(".tmp.\(hostName)"),
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            let path = (directory as NSString).appendingPathComponent(name)
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { continue }
            var info = stat()
            guard fstat(fd, &info) == 0, time(nil) - info.st_mtim.tv_sec >= 60 else { close(fd); continue }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 && unlink(path) == 0 { removed += 1 }
            close(fd)
        }
        return removed
    }

    /// This host's name (`gethostname`: no name service asked).
    public static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        return gethostname(&buffer, buffer.count - 1) == 0 ? String(cString: buffer) : "host"
    }()

    /// Replaces `path` with what `write` writes to a file descriptor, atomically: a temporary
    /// file beside it, fsync, rename, fsync of the directory. A crash or a full disk leaves the
    /// old file (or none), never a partial one under the real name; the temporary file is
    /// removed on failure. Errors name `path`, the file asked for, not the temporary one.
    public static func replaceAtomically(_ path: String, what: String, hint: String? = nil, write: (Int32) throws -> Void) throws {
        // Unique across hosts, not only processes: ranks on several hosts may write the same
        // file of a shared directory at once (the dataset cache in an NFS home), and process
        // ids repeat between hosts. O_EXCL: a name taken after all is an error, never two writers.
        let temporary = path + ".tmp.\(hostName).\(getpid()).\(String(UInt32.random(in: .min ... .max), radix: 16))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw FileError.posix("write \(what)", path, hint: hint) }
        _ = flock(fd, LOCK_EX)   // held until close: "alive" to `removeStaleTemporaries`, whatever its pid space
        do {
            try write(fd)
            guard fsync(fd) == 0 else { throw FileError.posix("write \(what)", path, hint: hint) }
        } catch {
            close(fd); unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw FileError.posix("move \(what) into place at", path, hint: hint, errno: code)
        }
        // Its result is not checked: some file systems refuse fsync on a directory (EINVAL)
        // while their renames are durable anyway; the file itself was fsynced above.
        let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY)
        if directory >= 0 { fsync(directory); close(directory) }
    }
}

/// A line-oriented file opened once for appending (`metrics.jsonl`); every write is checked.
public final class AppendOnlyFile {
    let path: String
    private let fd: Int32

    /// `truncate`: start empty (a fresh run) rather than continue (a resumed one).
    public init(path: String, truncate: Bool) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0), 0o644)
        guard fd >= 0 else { throw FileError.posix("open", path) }
    }

    deinit { close(fd) }

    public func appendLine(_ data: Data) throws {
        try (data + Data("\n".utf8)).withUnsafeBytes { try FileSystem.writeAll($0, to: fd, path: path, what: "metrics to") }
    }
}

extension JSONEncoder {
    /// Keys in order: the files ringsgd writes are stable byte for byte. A diverged run's
    /// figures (a NaN loss) are written as the strings "NaN", "Infinity", "-Infinity" — JSON
    /// has no such numbers, and a run must not fail over writing down that it diverged
    /// (`JSONDecoder.ringsgd` reads them back; Python's `float("NaN")` does too).
    public static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }
}

extension JSONDecoder {
    /// Reads what `JSONEncoder.sorted` writes, non-finite figures included.
    public static var ringsgd: JSONDecoder {
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return d
    }
}
