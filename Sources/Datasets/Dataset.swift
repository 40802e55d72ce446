// Datasets — what a rank trains on.
//
// Owns: the `Dataset` protocol, the distributed sampler (disjoint shards of a seeded
// permutation), labelled arrays from IDX and .npy files with their normalisation, the
// built-in Fashion-MNIST and the synthetic set. Knows nothing of the config or the trainer:
// `Training` builds datasets from the config.
import FileFormats
import Foundation

/// A labelled dataset that can materialise any sample as floats and its labels as class ids:
/// an image and its class, or a window of tokens (ids as exact Floats) and the next token at
/// each of its positions.
public protocol Dataset: AnyObject {
    var count: Int { get }
    /// Per-sample shape, NCHW without N ([1, 28, 28] for Fashion-MNIST; [T] for token windows).
    var inputShape: [Int] { get }
    /// Classes per label (the vocabulary for tokens).
    var classes: Int { get }
    /// Labels per sample: 1 for a classifier, T for a window of T next tokens.
    var labelsPerSample: Int { get }
    /// Writes samples `indices` into `input` (indices.count × inputSize floats) and `labels`
    /// (indices.count × labelsPerSample).
    func fill(_ indices: ArraySlice<Int>, input: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>)
}

extension Dataset {
    public var inputSize: Int { inputShape.reduce(1, *) }
    public var labelsPerSample: Int { 1 }
}

/// Why a dataset could not be loaded; every message says what to do.
public struct DatasetError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message.shownOnOneLine }
    public var description: String { message }
}
