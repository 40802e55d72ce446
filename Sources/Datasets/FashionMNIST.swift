import FileFormats
import Foundation

/// Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the IDX files of Debian's
/// `dataset-fashion-mnist`: 60,000 training and 10,000 test 28×28 grey images, 10 classes —
/// the default dataset, an `ArrayDataset` over two IDX files per split.
///
/// Normalised with the training set's mean and std rounded as the peer uses them,
/// x = (p/255 − 0.2860) / 0.3530 (`data.mean`/`data.std` override them).
public enum FashionMNIST {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let normalization = Normalization(mean: Double(Float(0.2860)), std: Double(Float(0.3530)))
    static let remedy = "install Debian's dataset-fashion-mnist (launch/setup.sh does) or set data.dir to the folder holding the IDX .gz files"

    /// `split` is "train" or "t10k".
    public static func load(directory: String, split: String, cacheDirectory: String,
                            normalization: Normalization = normalization) throws -> ArrayDataset {
        let base = (directory as NSString).appendingPathComponent(split)
        let arrays = try LabelledArrays(idxImages: base + "-images-idx3-ubyte.gz", labels: base + "-labels-idx1-ubyte.gz",
                                        cacheDirectory: cacheDirectory, what: "Fashion-MNIST \(split)", remedy: remedy)
        guard arrays.shape == [1, 28, 28] else {
            throw DatasetError("\(arrays.sampleFile): expected N×28×28 images, found samples of shape \(arrays.shape); \(remedy)")
        }
        return try arrays.dataset(classes: 10, normalization: normalization)
    }
}
