import FileFormats
import Foundation

/// One split's samples and labels as read from files (IDX or `.npy`), checked against each
/// other, before the classes and the normalisation make them an `ArrayDataset`.
public struct LabelledArrays {
    public let samples: ArrayDataset.Samples
    /// Per-sample shape ([1, 28, 28]).
    public let shape: [Int]
    public let labels: [Int64]
    public let sampleFile: String, labelFile: String
    let storage: [AnyObject]

    public var count: Int { labels.count }
    public var valueCount: Int { count * shape.reduce(1, *) }

    /// Unsigned-byte IDX files, gzipped or not.
    public init(idxImages: String, labels labelPath: String, cacheDirectory: String, what: String, remedy: String) throws {
        let images = try IDXFile(path: idxImages, cacheDirectory: cacheDirectory, what: "\(what) images", remedy: remedy)
        let labelFile = try IDXFile(path: labelPath, cacheDirectory: cacheDirectory, what: "\(what) labels", remedy: remedy)
        guard labelFile.dimensions.count == 1 else {
            throw DatasetError("\(labelPath) has dimensions \(labelFile.dimensions); labels must be one number per sample")
        }
        let shape = try ArrayDataset.sampleShape(of: images.dimensions, file: idxImages)
        let bytes = labelFile.bytes
        try self.init(samples: .uint8(images.bytes), shape: shape, count: images.dimensions[0],
                      labels: (0 ..< labelFile.dimensions[0]).map { Int64(bytes[$0]) },
                      sampleFile: idxImages, labelFile: labelPath, storage: [images, labelFile])
    }

    /// NumPy `.npy` files: `<f4` or `|u1` samples, integer labels.
    public init(npyImages: String, labels labelPath: String, what: String) throws {
        let images = try NumpyFile(path: npyImages, what: "\(what)_images")
        let labelFile = try NumpyFile(path: labelPath, what: "\(what)_labels")
        let samples: ArrayDataset.Samples
        switch images.element {
        case .uint8: samples = .uint8(images.data.assumingMemoryBound(to: UInt8.self))
        case .float32: samples = .float32(images.data.assumingMemoryBound(to: Float.self))
        default:
            throw DatasetError("\(npyImages) holds \(images.element.rawValue) samples; ringsgd reads <f4 or |u1 samples: save arr.astype('float32')")
        }
        guard labelFile.element.isInteger, labelFile.shape.count == 1 || (labelFile.shape.count == 2 && labelFile.shape[1] == 1) else {
            throw DatasetError("\(labelPath) holds \(labelFile.element.rawValue) of shape \(labelFile.shape); labels must be integers, one per sample (shape (N,))")
        }
        let shape = try ArrayDataset.sampleShape(of: images.shape, file: npyImages)
        try self.init(samples: samples, shape: shape, count: images.shape[0],
                      labels: (0 ..< labelFile.shape[0]).map { labelFile.integer(at: $0) },
                      sampleFile: npyImages, labelFile: labelPath, storage: [images, labelFile])
    }

    private init(samples: ArrayDataset.Samples, shape: [Int], count: Int, labels: [Int64],
                 sampleFile: String, labelFile: String, storage: [AnyObject]) throws {
        guard labels.count == count else {
            throw DatasetError("\(labelFile) holds \(labels.count) labels for the \(count) samples of \(sampleFile); the two files must match")
        }
        guard count > 0 else { throw DatasetError("\(sampleFile) holds no samples") }
        guard shape.allSatisfy({ $0 > 0 }) else { throw DatasetError("\(sampleFile) has empty samples (shape \(shape))") }
        if let negative = labels.firstIndex(where: { $0 < 0 }) {
            throw DatasetError("\(labelFile): label \(labels[negative]) of sample \(negative) is negative; labels are class indices 0, 1, …")
        }
        if let huge = labels.firstIndex(where: { $0 >= Self.classLimit }) {
            throw DatasetError("\(labelFile): label \(labels[huge]) of sample \(huge) is too large for a class index (ringsgd takes 0 … \(Self.classLimit - 1)); fix the labels")
        }
        self.samples = samples; self.shape = shape; self.labels = labels
        self.sampleFile = sampleFile; self.labelFile = labelFile; self.storage = storage
    }

    /// Classes a dataset may have (`data.classes` too): a class index is an Int32 in training,
    /// and 2²⁰ classes already make a final linear layer of a million outputs per feature.
    /// Why a ceiling: a stray huge label (an uninitialised `np.empty` saved by mistake) would
    /// otherwise size that layer, or trap converting to Int32.
    public static let classLimit: Int64 = 1 << 20

    /// Refuses float32 samples holding a NaN or an infinity, naming the first: one would make
    /// the measured mean NaN, or reach training with `data.mean`/`data.std` given and poison
    /// every step. A pass over every value — the loader runs it where it reads every value
    /// anyway (measuring the normalisation, whose cache then stands for a checked file) or
    /// where no cache can stand for it.
    public func checkFinite() throws {
        guard case let .float32(values) = samples, let bad = Self.firstNonFinite(values, count: valueCount) else { return }
        throw DatasetError("\(sampleFile): value \(values[bad]) of sample \(bad / shape.reduce(1, *)) is not finite; fix or drop the sample (a NaN would poison the normalisation and every step)")
    }

    /// The index of the first NaN or infinity, by its exponent bits (all ones), without a
    /// branch per value: blocks of 1024 are OR-reduced and only a block that has one is searched.
    private static func firstNonFinite(_ values: UnsafePointer<Float>, count: Int) -> Int? {
        let bits = UnsafeRawPointer(values).assumingMemoryBound(to: UInt32.self)
        var start = 0
        while start < count {
            let end = min(start + 1024, count)
            var any: UInt32 = 0
            for i in start ..< end { any |= (bits[i] & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0 }
            if any != 0 { return (start ..< end).first { !values[$0].isFinite } }
            start = end
        }
        return nil
    }

    /// The largest label plus one.
    public var inferredClasses: Int { Int(labels.max() ?? 0) + 1 }

    public func dataset(classes: Int, normalization: Normalization) throws -> ArrayDataset {
        if let bad = labels.firstIndex(where: { $0 >= classes }) {
            throw DatasetError("\(labelFile): label \(labels[bad]) of sample \(bad) is outside 0…\(classes - 1) (\(classes) classes); fix the labels or set data.classes")
        }
        return ArrayDataset(samples: samples, inputShape: shape, labels: labels.map { Int32($0) }, classes: classes,
                            normalization: normalization, storage: storage)
    }
}
