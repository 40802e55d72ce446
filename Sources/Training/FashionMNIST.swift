import Foundation

/// Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the IDX files of Debian's
/// `dataset-fashion-mnist`: 60,000 training and 10,000 test 28×28 grey images, 10 classes.
///
/// Pixels stay UInt8 in the shared memory map; a batch is normalised as it is gathered,
/// x = (p/255 − 0.2860) / 0.3530 (the training set's mean and std, as the peer uses).
public final class FashionMNIST: Dataset {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let mean: Float = 0.2860, std: Float = 0.3530

    public let images: IDXFile, labelFile: IDXFile
    public let count: Int
    public var inputShape: [Int] { [1, 28, 28] }
    public var classes: Int { 10 }

    /// `split` is "train" or "t10k".
    public init(directory: String, split: String, cacheDirectory: String) throws {
        let base = (directory as NSString).appendingPathComponent(split)
        images = try IDXFile(gzPath: base + "-images-idx3-ubyte.gz", cacheDirectory: cacheDirectory)
        labelFile = try IDXFile(gzPath: base + "-labels-idx1-ubyte.gz", cacheDirectory: cacheDirectory)
        guard images.dimensions.count == 3, images.dimensions[1] == 28, images.dimensions[2] == 28 else {
            throw DatasetError("\(images.path): expected N×28×28 images, found dimensions \(images.dimensions)")
        }
        guard labelFile.dimensions.count == 1, labelFile.dimensions[0] == images.dimensions[0] else {
            throw DatasetError("\(split): \(labelFile.dimensions.first ?? 0) labels for \(images.dimensions[0]) images; the label and image files must match")
        }
        count = images.dimensions[0]
        for i in 0 ..< count where labelFile.bytes[i] > 9 {
            throw DatasetError("\(split): label \(labelFile.bytes[i]) of sample \(i) is outside 0…9")
        }
    }

    public func fill(_ indices: ArraySlice<Int>, input: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        let scale = 1 / (255 * Self.std), shift = Self.mean / Self.std
        for (row, index) in indices.enumerated() {
            let source = images.bytes + index * 784, destination = input + row * 784
            for i in 0 ..< 784 { destination[i] = Float(source[i]) * scale - shift }
            labels[row] = Int32(labelFile.bytes[index])
        }
    }
}
