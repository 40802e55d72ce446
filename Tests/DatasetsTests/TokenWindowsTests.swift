import Datasets
import Foundation
import XCTest

/// Token windows: inputs and next-token labels, strides and evenly spread validation windows
/// (the peer's), uint16 token files and their errors, the text corpus's file choice.
final class TokenWindowsTests: XCTestCase {
    func directory() throws -> String {
        let dir = NSTemporaryDirectory() + "ringsgd-tokens-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func write(_ ids: [UInt16], to path: String) {
        var bytes: [UInt8] = []
        for id in ids { bytes += [UInt8(id & 0xFF), UInt8(id >> 8)] }
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    /// Window i starts at i·stride; its labels are its inputs shifted by one.
    func testWindowsAndShiftedLabels() throws {
        let path = try directory() + "/t.bin"
        write((0 ..< 40).map { UInt16($0 * 3) }, to: path)
        let windows = try TokenWindows.tokenFile(path, key: "data.train_tokens", blockSize: 5, vocab: 200, layout: .stride(4))
        XCTAssertEqual(windows.count, (40 - 5 - 1) / 4 + 1)
        XCTAssertEqual(windows.inputShape, [5])
        XCTAssertEqual(windows.labelsPerSample, 5)
        var x = [Float](repeating: 0, count: 10), y = [Int32](repeating: 0, count: 10)
        windows.fill([2, 8], input: &x, labels: &y)
        XCTAssertEqual(x, [24, 27, 30, 33, 36, 96, 99, 102, 105, 108])
        XCTAssertEqual(y, [27, 30, 33, 36, 39, 99, 102, 105, 108, 111])
    }

    /// numpy's arange(0, n − T − 1, max(1, (n − T − 1) // W))[:W], as the peer picks validation windows.
    func testEvenlySpacedWindowsAreThePeers() throws {
        let path = try directory() + "/v.bin"
        for (n, t, w) in [(1000, 16, 64), (100, 16, 64), (18, 16, 8), (17, 16, 4)] {
            write([UInt16](repeating: 1, count: n), to: path)
            let windows = try TokenWindows.tokenFile(path, key: "data.val_tokens", blockSize: t, vocab: 2, layout: .evenlySpaced(w))
            let span = n - t - 1, step = max(1, span / w)
            let expected = Array(stride(from: 0, to: span, by: step).prefix(w))
            XCTAssertEqual((0 ..< windows.count).map(windows.start), expected.isEmpty ? [0] : expected, "n \(n)")
        }
    }

    func testTokenFileErrorsNameTheFile() throws {
        let dir = try directory()
        _ = FileManager.default.createFile(atPath: dir + "/odd.bin", contents: Data([1, 0, 2]))
        write([1, 2, 300, 4, 5, 6], to: dir + "/big.bin")
        write([1, 2, 3], to: dir + "/short.bin")
        let cases = [("odd.bin", "has an odd length (3 bytes)"), ("big.bin", "token 300 at position 2 is outside the vocabulary of 256"),
                     ("short.bin", "holds 3 tokens, fewer than one window of block_size + 1 = 5"), ("none.bin", "cannot open")]
        for (name, expected) in cases {
            XCTAssertThrowsError(try TokenWindows.tokenFile(dir + "/" + name, key: "data.train_tokens", blockSize: 4, vocab: 256, layout: .stride(4))) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(name), "\(error)")
                XCTAssertFalse("\(error)".contains("\n"))
            }
        }
    }

    /// A directory contributes its files sorted by name, without fortune's .dat indexes and its
    /// links to a file of the same directory (.u8, `link`); the held-out part is the tail.
    func testTextCorpusReadsTheTextFilesInOrder() throws {
        let dir = try directory()
        _ = FileManager.default.createFile(atPath: dir + "/b", contents: Data("BBBBBB".utf8))
        _ = FileManager.default.createFile(atPath: dir + "/a", contents: Data("AAAAAA".utf8))
        _ = FileManager.default.createFile(atPath: dir + "/a.dat", contents: Data("index".utf8))
        _ = FileManager.default.createFile(atPath: dir + "/empty", contents: Data())
        try FileManager.default.createSymbolicLink(atPath: dir + "/a.u8", withDestinationPath: dir + "/a")
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/b")
        XCTAssertEqual(String(decoding: try TextCorpus.read([dir]), as: UTF8.self), "AAAAAABBBBBB")
        let split = try TokenWindows.text([dir], blockSize: 2, validationFraction: 0.25, stride: 1, validationWindows: 0)
        XCTAssertEqual(split.train.count, 9 - 2)           // 12 bytes, 9 for training: starts 0…6
        XCTAssertEqual(split.validation.count, 1)          // the last 3 bytes: one window of 3
        // What the windows read: the held-out window is the tail's "BB" → "BB" (a held-out head
        // would read "AA"), and the last training window ends at the cut.
        func window(_ data: TokenWindows, _ i: Int) -> (x: String, y: String) {
            var x = [Float](repeating: 0, count: 2), y = [Int32](repeating: 0, count: 2)
            x.withUnsafeMutableBufferPointer { xs in y.withUnsafeMutableBufferPointer { data.fill([i][...], input: xs.baseAddress!, labels: $0.baseAddress!) } }
            return (String(decoding: x.map { UInt8($0) }, as: UTF8.self), String(decoding: y.map { UInt8($0) }, as: UTF8.self))
        }
        XCTAssertEqual(window(split.validation, 0).x, "BB")
        XCTAssertEqual(window(split.validation, 0).y, "BB")
        XCTAssertEqual(window(split.train, 0).x + window(split.train, 0).y, "AAAA")
        XCTAssertEqual(window(split.train, 5).x + window(split.train, 5).y, "ABBB")
        XCTAssertEqual(window(split.train, 6).y, "BB", "bytes 7 and 8: the training part stops before the held-out tail")
        XCTAssertThrowsError(try TextCorpus.read([dir + "/missing"])) { XCTAssertTrue("\($0)".contains("does not exist")) }
    }

    /// Property: a file the corpus would read twice — the same path listed twice, or a file and
    /// its directory — is refused, naming it (its copies could sit on both sides of the held-out
    /// split); so is a broken link in a listed directory, and a FIFO, at once rather than
    /// waiting for a writer.
    func testTextReachedTwiceBrokenLinksAndFIFOsAreRefused() throws {
        let dir = try directory()
        _ = FileManager.default.createFile(atPath: dir + "/a", contents: Data("AAAA".utf8))
        for paths in [[dir, dir], [dir, dir + "/a"], [dir + "/a", dir + "/a"]] {
            XCTAssertThrowsError(try TextCorpus.read(paths)) {
                XCTAssertTrue("\($0)".contains("reaches") && "\($0)".contains("/a twice") && "\($0)".contains("list each file once"), "\($0)")
            }
        }
        let broken = try directory()
        try FileManager.default.createSymbolicLink(atPath: broken + "/gone", withDestinationPath: broken + "/nowhere")
        XCTAssertThrowsError(try TextCorpus.read([broken])) {
            XCTAssertTrue("\($0)".contains("/gone is a link to something that does not exist"), "\($0)")
        }
        let fifo = dir + "/pipe"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        XCTAssertThrowsError(try TextCorpus.read([fifo])) {
            XCTAssertTrue("\($0)".contains("is not a regular file"), "\($0)")
        }
    }

    /// Only fortune's own files are skipped: a `.dat` with no file of its name beside it is
    /// text, as is a link to a file in another directory (a directory of links reads their
    /// files); hidden files are not text; the split and the files are said.
    func testOnlyFortunesIndexesAndTwinLinksAreSkipped() throws {
        let dir = try directory(), elsewhere = try directory()
        _ = FileManager.default.createFile(atPath: dir + "/notes.dat", contents: Data("NN".utf8))
        _ = FileManager.default.createFile(atPath: dir + "/.swap", contents: Data("SS".utf8))
        _ = FileManager.default.createFile(atPath: elsewhere + "/far", contents: Data("FF".utf8))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: elsewhere + "/far")
        XCTAssertEqual(String(decoding: try TextCorpus.read([dir]), as: UTF8.self), "FFNN")
        // Through a link to the directory: the same files (its own entries are no links).
        try FileManager.default.createSymbolicLink(atPath: elsewhere + "/corpus", withDestinationPath: dir)
        XCTAssertEqual(String(decoding: try TextCorpus.read([elsewhere + "/corpus"]), as: UTF8.self), "FFNN")
        var said: [String] = []
        _ = try TokenWindows.text([dir], blockSize: 1, validationFraction: 0.5, stride: 1, validationWindows: 0, log: { said.append($0) })
        XCTAssertEqual(said, ["data.text: 2 files, 4 bytes: 2 for training, 2 held out (data.val_fraction 0.5)"])
        // Too little on either side says which way data.val_fraction helps.
        XCTAssertThrowsError(try TokenWindows.text([dir], blockSize: 2, validationFraction: 0.75, stride: 1, validationWindows: 0)) {
            XCTAssertTrue("\($0)".contains("the training part of data.text holds 1 tokens") && "\($0)".contains("lower data.val_fraction"), "\($0)")
        }
        XCTAssertThrowsError(try TokenWindows.text([dir], blockSize: 2, validationFraction: 0.25, stride: 1, validationWindows: 0)) {
            XCTAssertTrue("\($0)".contains("held-out part") && "\($0)".contains("raise data.val_fraction"), "\($0)")
        }
    }
}
