import FileFormats
import Foundation

/// A language-modelling dataset: one long sequence of token ids, read as windows of
/// `blockSize + 1` tokens — the first `blockSize` are the input, the last `blockSize` (shifted
/// by one) the labels, so every position predicts the next token (nanoGPT's `get_batch`).
///
/// Sample i is the window starting at `starts(i)`: every `stride` tokens for training (stride
/// = blockSize: one epoch reads the text once; stride 1: every position starts a window, as
/// nanoGPT's random offsets), or `windows` starts spread evenly over the sequence for a
/// validation set of fixed size (the peer's: step ⌊(n − T − 1)/windows⌋ from 0). The sampler's
/// seeded permutation of window indices makes the windows disjoint across ranks.
public final class TokenWindows: Dataset {
    /// The ids, as stored: bytes (vocabulary 256) or little-endian uint16 (nanoGPT's and
    /// llm.c's `.bin` token files).
    public enum Tokens {
        case bytes(UnsafePointer<UInt8>)
        case uint16(UnsafeRawPointer)

        @inline(__always) func id(_ i: Int) -> Int {
            switch self {
            case let .bytes(p): return Int(p[i])
            case let .uint16(p): return Int(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        }
    }

    public enum Layout: Equatable {
        /// Windows every `stride` tokens from the first.
        case stride(Int)
        /// `count` windows spread evenly (fewer when the sequence is short).
        case evenlySpaced(Int)
    }

    public let tokens: Tokens
    public let tokenCount: Int
    public let blockSize: Int
    public let classes: Int
    public let count: Int
    private let step: Int
    /// What keeps the tokens' memory alive (an array or a mapped file).
    private let storage: AnyObject

    public var inputShape: [Int] { [blockSize] }
    public var labelsPerSample: Int { blockSize }

    /// `what` names the sequence in errors ("data.val_tokens /data/val.bin").
    /// `remedy` says how to get more tokens (before "or lower model.gpt.block_size").
    public init(tokens: Tokens, count tokenCount: Int, blockSize: Int, vocab: Int, layout: Layout,
                storage: AnyObject, what: String, remedy: String = "give more tokens") throws {
        guard tokenCount >= blockSize + 1 else {
            throw DatasetError("\(what) holds \(tokenCount) tokens, fewer than one window of block_size + 1 = \(blockSize + 1); \(remedy), or lower model.gpt.block_size")
        }
        (self.tokens, self.tokenCount, self.blockSize, self.classes, self.storage) = (tokens, tokenCount, blockSize, vocab, storage)
        let span = tokenCount - blockSize - 1   // the last start is `span`
        switch layout {
        case let .stride(stride):
            step = stride
            count = span / stride + 1
        case let .evenlySpaced(windows):
            step = max(1, span / windows)
            count = max(1, min(windows, (span + step - 1) / step))   // numpy's arange(0, span, step)[:windows]
        }
    }

    /// Where window i starts.
    public func start(_ i: Int) -> Int { i * step }

    public func fill(_ indices: ArraySlice<Int>, input: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        let t = blockSize, tokens = tokens
        for (row, index) in indices.enumerated() {
            let start = start(index), x = input + row * t, y = labels + row * t
            for p in 0 ..< t {
                x[p] = Float(tokens.id(start + p))
                y[p] = Int32(tokens.id(start + p + 1))
            }
        }
    }
}

/// The byte-level corpus of `data.dataset: text`: the bytes of every file given, in order; a
/// directory contributes its files sorted by name (symbolic links followed), skipping hidden
/// files, the `fortune` program's indexes (`X.dat` beside a file `X`) and links to a file of
/// the same directory (its `X.u8` → `X`): so that the `fortunes` package's directory is its
/// text once, as `../shared/peer/torch_ddp.py` reads it — while a `notes.dat` of another
/// directory, with no `notes` beside it, is text like any other file. Subdirectories are not
/// read. A file reached twice (listed twice, or as itself and in its directory) is refused: its
/// two copies could fall on both sides of the held-out split, and the validation loss would
/// then be measured on training text.
public enum TextCorpus {
    /// The files `read` reads, in order.
    public static func files(_ paths: [String]) throws -> [String] {
        let manager = FileManager.default
        var files: [String] = [], seen: [String: String] = [:]
        func add(_ file: String, real: String) throws {
            if let first = seen[real] {
                throw DatasetError("data.text reaches \(real) twice (as \(first) and as \(file)); list each file once — its two copies could fall on both sides of the held-out split")
            }
            seen[real] = file
            files.append(file)
        }
        for path in paths {
            var isDirectory: ObjCBool = false
            guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw DatasetError("data.text: \(path) does not exist; install the fortunes package (launch/setup.sh) or list text files or directories in data.text")
            }
            guard isDirectory.boolValue else { try add(path, real: URL(fileURLWithPath: path).resolvingSymlinksInPath().path); continue }
            let listed: [String]
            do { listed = try manager.contentsOfDirectory(atPath: path) } catch {
                throw DatasetError("data.text: cannot list the directory \(path) (\(error.localizedDescription)); make it readable or remove it from data.text")
            }
            let names = listed.filter { !$0.hasPrefix(".") }.sorted()
            let present = Set(names)
            let directory = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            for name in names {
                let file = (path as NSString).appendingPathComponent(name)
                if name.hasSuffix(".dat") && present.contains(String(name.dropLast(4))) { continue }
                let resolved = URL(fileURLWithPath: file).resolvingSymlinksInPath()
                // fileExists follows links: false for a link to nothing (whose text would be lost
                // without a word).
                var isFolder: ObjCBool = false
                guard manager.fileExists(atPath: file, isDirectory: &isFolder) else {
                    throw DatasetError("data.text: \(file) is a link to something that does not exist; fix or remove the link")
                }
                // The entry itself a link (lstat: a link among the directory's path does not count)
                // to a file of this very directory, which is read anyway.
                let isLink = (try? manager.attributesOfItem(atPath: file))?[.type] as? FileAttributeType == .typeSymbolicLink
                if isLink && resolved.deletingLastPathComponent().path == directory { continue }
                guard !isFolder.boolValue else { continue }
                try add(file, real: resolved.path)
            }
        }
        return files
    }

    public static func read(_ paths: [String]) throws -> [UInt8] {
        try read(files: try files(paths), given: paths)
    }

    /// The bytes of `files` (listed by `files(paths)`), in order.
    static func read(files: [String], given paths: [String]) throws -> [UInt8] {
        var bytes: [UInt8] = []
        for file in files {
            // Mapped, so that a FIFO or a device is refused at once (reading one waited for a
            // writer, or read without end) and errno is the failed call's own; empty: no text.
            do {
                let mapped = try MappedFile(path: file, what: "data.text file", allowingEmpty: true)
                withExtendedLifetime(mapped) { bytes += mapped.bytes }
            } catch {
                throw DatasetError("data.text: \(error); remove it from data.text")
            }
        }
        guard !bytes.isEmpty else {
            throw DatasetError("data.text (\(paths.joined(separator: ", "))) holds no text; list text files or directories that are not empty")
        }
        return bytes
    }
}

/// The text's bytes, owned (the storage a `TokenWindows` keeps alive).
final class ByteStorage {
    let bytes: UnsafeMutableBufferPointer<UInt8>
    init(_ array: [UInt8]) {
        bytes = .allocate(capacity: max(1, array.count))
        _ = bytes.initialize(from: array)
    }
    deinit { bytes.deallocate() }
}

extension TokenWindows {
    /// `data.dataset: text`: the corpus's bytes; the last `validationFraction` of them held out
    /// (the split at ⌊n·(1 − fraction)⌋, as the peer's `int(len · 0.9)`). Training windows every
    /// `stride` bytes, validation windows every `blockSize` bytes or `validationWindows` spread.
    /// `log` hears what was read: the files, the bytes and the split.
    public static func text(_ paths: [String], blockSize: Int, validationFraction: Double, stride: Int,
                            validationWindows: Int, log: (String) -> Void = { _ in }) throws -> (train: TokenWindows, validation: TokenWindows) {
        let files = try TextCorpus.files(paths)
        let bytes = try TextCorpus.read(files: files, given: paths)
        let cut = Int(Double(bytes.count) * (1 - validationFraction))
        log("data.text: \(files.count) file\(files.count == 1 ? "" : "s"), \(bytes.count) bytes: \(cut) for training, \(bytes.count - cut) held out (data.val_fraction \(validationFraction))")
        let train = ByteStorage(Array(bytes[..<cut])), held = ByteStorage(Array(bytes[cut...]))
        return (try TokenWindows(tokens: .bytes(train.bytes.baseAddress!), count: cut, blockSize: blockSize, vocab: 256,
                                 layout: .stride(stride), storage: train, what: "the training part of data.text",
                                 remedy: "give more text or lower data.val_fraction"),
                try TokenWindows(tokens: .bytes(held.bytes.baseAddress!), count: bytes.count - cut, blockSize: blockSize, vocab: 256,
                                 layout: validationWindows > 0 ? .evenlySpaced(validationWindows) : .stride(blockSize),
                                 storage: held, what: "the held-out part of data.text (data.val_fraction)",
                                 remedy: "give more text or raise data.val_fraction"))
    }

    /// `data.dataset: tokens`: a flat file of little-endian uint16 ids (nanoGPT's `train.bin`,
    /// llm.c's token shards without their header), memory-mapped; every id is checked < `vocab`.
    public static func tokenFile(_ path: String, key: String, blockSize: Int, vocab: Int, layout: Layout) throws -> TokenWindows {
        let file: MappedFile
        do { file = try MappedFile(path: path, what: key) } catch let error as FileFormatError {
            throw DatasetError("\(error.description); check \(key)")
        }
        let n = try checkTokens(file.bytes, vocab: vocab, what: "\(key) \(path)")
        return try TokenWindows(tokens: .uint16(file.bytes.baseAddress!), count: n, blockSize: blockSize, vocab: vocab, layout: layout,
                                storage: file, what: "\(key) \(path)")
    }

    /// The number of uint16 ids in `bytes`, each checked < `vocab`; `what` names the file.
    public static func checkTokens(_ bytes: UnsafeRawBufferPointer, vocab: Int, what: String) throws -> Int {
        guard bytes.count % 2 == 0 else {
            throw DatasetError("\(what) has an odd length (\(bytes.count) bytes): it is not a file of uint16 token ids")
        }
        let n = bytes.count / 2
        for i in 0 ..< n {
            let id = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            guard id < vocab else {
                throw DatasetError("\(what): token \(id) at position \(i) is outside the vocabulary of \(vocab) (model.gpt.vocab); raise model.gpt.vocab or check the file")
            }
        }
        return n
    }
}
