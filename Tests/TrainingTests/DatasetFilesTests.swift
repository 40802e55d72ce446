import Datasets
import FileFormats
import Foundation
import Training
import XCTest

/// `.npy` fixtures: the header numpy.save writes (format 1.0), then the given bytes.
enum NpyFixture {
    static func bytes(descr: String, shape: [Int], data: [UInt8], fortran: Bool = false) -> [UInt8] {
        NumpyFile.header(descr: descr, shape: shape, fortranOrder: fortran) + data
    }

    static func write(_ bytes: [UInt8], _ path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func floats(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
    static func int64s(_ values: [Int64]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
}

/// IDX (gzipped or not) and NumPy datasets: what they read, the normalisation they compute,
/// and one line naming the file for every malformed one.
final class DatasetFilesTests: XCTestCase {
    private func directory() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ringsgd-data-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    private func config(_ dir: String, dataset: String, extra: [String] = []) throws -> TrainingConfig {
        let ext = dataset == "idx" ? "idx" : "npy"
        return try TrainingConfig(yaml: nil, source: "test", overrides: [
            "data.dataset=\(dataset)", "data.cache_dir=\(dir)/cache",
            "data.train_images=\(dir)/train-x.\(ext)", "data.train_labels=\(dir)/train-y.\(ext)",
            "data.test_images=\(dir)/test-x.\(ext)", "data.test_labels=\(dir)/test-y.\(ext)"] + extra)
    }

    /// Four 2×3 images with values 0…23 and labels 0, 1, 2, 1, as IDX and as .npy (u1 and f4).
    private func writeFixtures(_ dir: String) throws {
        let pixels = (0 ..< 24).map { UInt8($0 * 10) }, labels: [UInt8] = [0, 1, 2, 1]
        func idx(_ dims: [Int], _ data: [UInt8]) -> [UInt8] {
            [0, 0, 8, UInt8(dims.count)] + dims.flatMap { d in (0 ..< 4).map { UInt8(truncatingIfNeeded: d >> (8 * (3 - $0))) } } + data
        }
        for split in ["train", "test"] {
            try NpyFixture.write(idx([4, 2, 3], pixels), "\(dir)/\(split)-x.idx")
            try NpyFixture.write(idx([4], labels), "\(dir)/\(split)-y.idx")
            try NpyFixture.write(NpyFixture.bytes(descr: "|u1", shape: [4, 2, 3], data: pixels), "\(dir)/\(split)-x.npy")
            try NpyFixture.write(NpyFixture.bytes(descr: "<i8", shape: [4], data: NpyFixture.int64s(labels.map(Int64.init))), "\(dir)/\(split)-y.npy")
        }
    }

    private func batch(_ dataset: Dataset) -> (x: [Float], y: [Int32]) {
        var x = [Float](repeating: 0, count: dataset.count * dataset.inputSize), y = [Int32](repeating: 0, count: dataset.count)
        x.withUnsafeMutableBufferPointer { xs in y.withUnsafeMutableBufferPointer { dataset.fill(Array(0 ..< dataset.count)[...], input: xs.baseAddress!, labels: $0.baseAddress!) } }
        return (x, y)
    }

    /// Property: the same arrays as IDX and as .npy give the same samples, shape, classes
    /// (largest label + 1) and normalisation — mean 0 and std 1 after it.
    func testIDXAndNumpyCopiesAreTheSameDataset() throws {
        let dir = directory()
        try writeFixtures(dir)
        let idx = try config(dir, dataset: "idx").loadDatasets(), npy = try config(dir, dataset: "npy").loadDatasets()
        XCTAssertEqual(idx.train.inputShape, [1, 2, 3])
        XCTAssertEqual(idx.train.classes, 3)
        XCTAssertEqual(npy.train.classes, 3)
        let a = batch(idx.train), b = batch(npy.train)
        XCTAssertEqual(a.x, b.x)
        XCTAssertEqual(a.y, [0, 1, 2, 1])
        XCTAssertEqual(a.y, b.y)
        let mean = a.x.reduce(0, +) / Float(a.x.count)
        let variance = a.x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(a.x.count)
        XCTAssertEqual(mean, 0, accuracy: 1e-5)
        XCTAssertEqual(variance, 1, accuracy: 1e-4)
        // Cached per training file: a second load reads the stored numbers and adds none.
        func cached() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: dir + "/cache").filter { $0.hasPrefix("normalization-") }
        }
        XCTAssertEqual(try cached().count, 2)
        XCTAssertEqual(batch(try config(dir, dataset: "idx").loadDatasets().train).x, a.x)
        XCTAssertEqual(try cached().count, 2)
        // ... and uses them: numbers written into the caches come back in the samples.
        for name in try cached() {
            try Data(#"{"mean": 0.5, "std": 2}"#.utf8).write(to: URL(fileURLWithPath: dir + "/cache/" + name))
        }
        let renormalised = batch(try config(dir, dataset: "idx").loadDatasets().train).x
        for (i, x) in renormalised.enumerated() { XCTAssertEqual(x, (Float(i * 10) / 255 - 0.5) / 2, accuracy: 1e-6) }
    }

    /// `path` gzipped in place (`path.gz`, no name or time in its header), as datasets ship.
    func gzip(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-n", "-f", path]
        try gzip.run(); gzip.waitUntilExit()
        XCTAssertEqual(gzip.terminationStatus, 0, "gzip \(path)", file: file, line: line)
    }

    /// Property: a gzipped IDX file's decompressed cache belongs to that file alone — another
    /// file of the same name, size and whole-second mtime in another directory (a `cp -p`
    /// copy of different data) gets its own, not the first one's.
    func testGzippedCopiesWithTheSameNameSizeAndSecondGetTheirOwnCaches() throws {
        let dir = directory(), cache = dir + "/cache"
        var decoded: [[UInt8]] = [], sizes: [Int] = []
        let contents: [(String, [UInt8])] = [("a", [1, 2, 3, 4, 5, 6, 7, 8]), ("b", [8, 7, 6, 5, 4, 3, 2, 1])]
        for (folder, pixels) in contents {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(folder)", withIntermediateDirectories: true)
            let path = "\(dir)/\(folder)/train-images-idx3-ubyte"
            try NpyFixture.write([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2] + pixels, path)
            try gzip(path)
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_700_000_000)], ofItemAtPath: path + ".gz")
            sizes.append(try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: path + ".gz")[.size] as? Int))
            let file = try IDXFile(path: path + ".gz", cacheDirectory: cache)
            decoded.append(Array(UnsafeBufferPointer(start: file.bytes, count: file.elementCount)))
        }
        XCTAssertEqual(sizes[0], sizes[1], "the two gzipped files are the same size, as the property needs")
        XCTAssertEqual(decoded, contents.map(\.1))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache).filter { !$0.hasPrefix(".") }.count, 2)
    }

    /// Property: a gzipped IDX file cut short (a partial download) is refused as truncated, and
    /// leaves no decompressed cache behind — not even one its header would pass: here the cut
    /// falls in the gzip trailer alone, every data byte is there, and only zlib can tell.
    func testATruncatedGzipIsRefusedAndLeavesNoCache() throws {
        let dir = directory(), cache = dir + "/cache", path = dir + "/train-images-idx3-ubyte"
        try NpyFixture.write([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2] + (1 ... 8).map(UInt8.init), path)
        try gzip(path)
        let whole = try Data(contentsOf: URL(fileURLWithPath: path + ".gz"))
        for cut in [4, whole.count / 2] {   // the CRC and length trailer's half, then half the stream
            let short = dir + "/cut-\(cut)-train-images-idx3-ubyte.gz"
            try whole.dropLast(cut).write(to: URL(fileURLWithPath: short))
            XCTAssertThrowsError(try IDXFile(path: short, cacheDirectory: cache)) { error in
                XCTAssertTrue("\(error)".contains("is truncated") || "\(error)".contains("is corrupt"), "\(error)")
            }
        }
        let cached = ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).filter { !$0.hasPrefix(".") }
        XCTAssertEqual(cached, [], "no cache of a truncated file, and no temporary file left")
    }

    /// Property: given data.mean/std replace the computed ones; data.classes widens the model.
    func testConfiguredNormalisationAndClasses() throws {
        let dir = directory()
        try writeFixtures(dir)
        let data = try config(dir, dataset: "npy", extra: ["data.mean=0.5", "data.std=0.25", "data.classes=5"]).loadDatasets()
        XCTAssertEqual(data.train.classes, 5)
        XCTAssertEqual(batch(data.train).x[1], (10 / 255 - 0.5) / 0.25, accuracy: 1e-5)
    }

    /// Property: float32 samples are normalised as stored (no /255).
    func testFloatSamples() throws {
        let dir = directory()
        try writeFixtures(dir)
        let values: [Float] = (0 ..< 8).map { Float($0) }
        try NpyFixture.write(NpyFixture.bytes(descr: "<f4", shape: [4, 2], data: NpyFixture.floats(values)), "\(dir)/train-x.npy")
        try NpyFixture.write(NpyFixture.bytes(descr: "<f4", shape: [4, 2], data: NpyFixture.floats(values)), "\(dir)/test-x.npy")
        let data = try config(dir, dataset: "npy", extra: ["data.mean=1", "data.std=2"]).loadDatasets()
        XCTAssertEqual(data.train.inputShape, [2])
        XCTAssertEqual(batch(data.train).x, values.map { ($0 - 1) / 2 })
    }

    /// Property: every malformed file is one line naming the file and what is wrong.
    func testMalformedFilesAreOneLineErrorsNamingTheFile() throws {
        let dir = directory()
        let labels = NpyFixture.int64s([0, 1, 2, 1])
        let cases: [(String, [UInt8], String)] = [
            ("train-x.npy", Array("not numpy".utf8), "is not a NumPy .npy file"),
            ("train-x.npy", NpyFixture.bytes(descr: ">f4", shape: [4, 2], data: [UInt8](repeating: 0, count: 32)), "big-endian"),
            ("train-x.npy", NpyFixture.bytes(descr: "<f8", shape: [4, 2], data: [UInt8](repeating: 0, count: 64)), "dtype '<f8'"),
            ("train-x.npy", NpyFixture.bytes(descr: "|u1", shape: [4, 2], data: [UInt8](repeating: 0, count: 8), fortran: true), "Fortran order"),
            ("train-x.npy", NpyFixture.bytes(descr: "|u1", shape: [4, 2, 3], data: [UInt8](repeating: 0, count: 20)), "needs 24 data bytes, it has 20"),
            ("train-x.npy", NpyFixture.bytes(descr: "|u1", shape: [99999999999, 99999999999], data: []), "describes more bytes"),
            ("train-x.npy", NpyFixture.bytes(descr: "|u1", shape: [24], data: [UInt8](repeating: 0, count: 24)), "samples must be [N, D]"),
            ("train-x.npy", NpyFixture.bytes(descr: "<i4", shape: [4, 2], data: [UInt8](repeating: 0, count: 32)), "<f4 or |u1 samples"),
            ("train-y.npy", NpyFixture.bytes(descr: "<f4", shape: [4], data: [UInt8](repeating: 0, count: 16)), "labels must be integers"),
            ("train-y.npy", NpyFixture.bytes(descr: "<i8", shape: [3], data: Array(labels[0 ..< 24])), "holds 3 labels for the 4 samples"),
            ("train-y.npy", NpyFixture.bytes(descr: "<i8", shape: [4], data: NpyFixture.int64s([0, -1, 2, 1])), "is negative"),
            // A stray huge label trapped (Int32 conversion, or Int64.max + 1) or sized a giant layer.
            ("train-y.npy", NpyFixture.bytes(descr: "<i8", shape: [4], data: NpyFixture.int64s([0, 1, 2_147_483_648, 1])), "label 2147483648 of sample 2 is too large"),
            ("train-y.npy", NpyFixture.bytes(descr: "<i8", shape: [4], data: NpyFixture.int64s([0, 1, .max, 1])), "is too large for a class index"),
            ("train-y.npy", NpyFixture.bytes(descr: "<u8", shape: [4], data: NpyFixture.int64s([0, 1, -2, 1])), "is too large for a class index"),
            // One NaN made the mean NaN and the error "every value is nan"; given mean and std, it reached training.
            ("train-x.npy", NpyFixture.bytes(descr: "<f4", shape: [4, 2, 3], data: NpyFixture.floats((0 ..< 24).map { $0 == 13 ? .nan : Float($0) })),
             "value nan of sample 2 is not finite"),
            ("test-x.npy", NpyFixture.bytes(descr: "<f4", shape: [4, 2, 3], data: NpyFixture.floats((0 ..< 24).map { $0 == 19 ? .infinity : Float($0) })),
             "value inf of sample 3 is not finite"),
        ]
        for (file, bytes, expected) in cases {
            try writeFixtures(dir)
            try NpyFixture.write(bytes, "\(dir)/\(file)")
            XCTAssertThrowsError(try config(dir, dataset: "npy").loadDatasets(), expected) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(expected) && message.contains("\(dir)/\(file)") && !message.contains("\n"),
                              "\(message)\nexpected '\(expected)' naming \(file)")
            }
        }
        try writeFixtures(dir)
        try NpyFixture.write([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0], "\(dir)/train-x.idx")
        XCTAssertThrowsError(try config(dir, dataset: "idx").loadDatasets()) { error in
            XCTAssertTrue("\(error)".contains("\(dir)/train-x.idx is not an unsigned-byte IDX file (element type 0x0d"), "\(error)")
        }
        try writeFixtures(dir)
        try NpyFixture.write(NpyFixture.bytes(descr: "|u1", shape: [4, 3, 2], data: [UInt8](repeating: 0, count: 24)), "\(dir)/test-x.npy")
        XCTAssertThrowsError(try config(dir, dataset: "npy").loadDatasets()) { error in
            XCTAssertTrue("\(error)".contains("have shape [1, 3, 2], the training samples"), "\(error)")
        }
        try writeFixtures(dir)
        try NpyFixture.write(NpyFixture.bytes(descr: "<i8", shape: [4], data: NpyFixture.int64s([0, 1, 7, 1])), "\(dir)/test-y.npy")
        XCTAssertThrowsError(try config(dir, dataset: "npy", extra: ["data.classes=3"]).loadDatasets()) { error in
            XCTAssertTrue("\(error)".contains("label 7 of sample 2 is outside 0…2 (3 classes)"), "\(error)")
        }
    }

    /// Property: the data keys are checked together at parse time, naming the key.
    func testDataKeysAreValidatedWhenTheConfigIsRead() {
        let cases: [([String], String)] = [
            (["data.dataset=npy", "data.train_images=a"], "data.dataset: npy needs data.train_images, data.train_labels, data.test_images, data.test_labels (.npy files); data.train_labels is missing"),
            (["data.train_images=a.npy"], "data.train_images is read only with data.dataset: idx or npy"),
            (["data.mean=0.5"], "data.mean and data.std go together"),
            (["data.std=0"], "data.std must be > 0.0"),
            (["data.classes=1"], "data.classes must be ≥ 2"),
        ]
        for (overrides, expected) in cases {
            XCTAssertThrowsError(try TrainingConfig(yaml: nil, source: "test", overrides: overrides)) { error in
                XCTAssertTrue("\(error)".hasPrefix(expected), "\(error)\nexpected: \(expected)")
            }
        }
    }
}
