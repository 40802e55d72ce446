import FileFormats
import Foundation

/// The one in-memory-mapped classification dataset: samples of one shape stored row after row
/// as UInt8 or Float32 (an IDX file, a `.npy` file), integer labels, and a normalisation.
/// Fashion-MNIST, any IDX dataset and NumPy arrays are all this class; only how the arrays are
/// found differs (`DatasetSource`).
///
/// A sample is normalised as it is gathered into a batch: x = (v − mean) / std, where v is a
/// UInt8 pixel scaled to [0, 1] (p/255, as torchvision's ToTensor) or a Float32 as stored.
public final class ArrayDataset: Dataset {
    public enum Samples {
        case uint8(UnsafePointer<UInt8>)
        case float32(UnsafePointer<Float>)
    }

    public let count: Int
    public let inputShape: [Int]
    public let classes: Int
    public let samples: Samples
    public let labels: [Int32]
    public let normalization: Normalization
    /// x = v·scale − shift with the UInt8's 1/255 folded in (Fashion-MNIST's formula, kept
    /// bit for bit: scale = 1/(255·std), shift = mean/std).
    private let scale: Float, shift: Float
    /// What keeps the mapped memory alive.
    private let storage: [AnyObject]

    /// `labels` are already checked to lie in 0 ..< classes.
    public init(samples: Samples, inputShape: [Int], labels: [Int32], classes: Int,
                normalization: Normalization, storage: [AnyObject]) {
        self.samples = samples
        self.inputShape = inputShape
        self.labels = labels
        self.count = labels.count
        self.classes = classes
        self.normalization = normalization
        self.storage = storage
        let std = Float(normalization.std), mean = Float(normalization.mean)
        switch samples {
        case .uint8: scale = 1 / (255 * std)
        case .float32: scale = 1 / std
        }
        shift = mean / std
    }

    public func fill(_ indices: ArraySlice<Int>, input: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        let size = inputSize, scale = scale, shift = shift
        for (row, index) in indices.enumerated() {
            let destination = input + row * size
            switch samples {
            case let .uint8(pixels):
                let source = pixels + index * size
                for i in 0 ..< size { destination[i] = Float(source[i]) * scale - shift }
            case let .float32(values):
                let source = values + index * size
                for i in 0 ..< size { destination[i] = source[i] * scale - shift }
            }
            labels[row] = self.labels[index]
        }
    }

    /// The per-sample shape of an array whose first dimension counts samples: [N, H, W] is a
    /// one-channel image [1, H, W], [N, C, H, W] an image [C, H, W], [N, D] a vector [D].
    static func sampleShape(of dimensions: [Int], file: String) throws -> [Int] {
        switch dimensions.count {
        case 2: return [dimensions[1]]
        case 3: return [1, dimensions[1], dimensions[2]]
        case 4: return Array(dimensions[1...])
        default:
            throw DatasetError("\(file) has shape \(dimensions); samples must be [N, D], [N, H, W] or [N, C, H, W]")
        }
    }
}

/// A dataset's normalisation, x = (v − mean) / std over every value of its training samples.
public struct Normalization: Codable, Equatable {
    public var mean: Double
    public var std: Double

    public init(mean: Double, std: Double) {
        self.mean = mean
        self.std = std
    }

    /// Mean and (population) standard deviation of every sample value, in the units
    /// `ArrayDataset` normalises (UInt8 as p/255). UInt8 goes through a 256-bin histogram: exact
    /// and independent of summation order, so every rank computes the same bits.
    public static func measure(_ samples: ArrayDataset.Samples, count: Int) -> Normalization {
        var sum = 0.0, squares = 0.0
        switch samples {
        case let .uint8(pixels):
            var histogram = [Int](repeating: 0, count: 256)
            for i in 0 ..< count { histogram[Int(pixels[i])] += 1 }
            for (value, n) in histogram.enumerated() {
                let v = Double(value) / 255
                sum += Double(n) * v
                squares += Double(n) * v * v
            }
        case let .float32(values):
            for i in 0 ..< count {
                let v = Double(values[i])
                sum += v
                squares += v * v
            }
        }
        let mean = sum / Double(max(count, 1))
        let variance = max(0, squares / Double(max(count, 1)) - mean * mean)
        return Normalization(mean: mean, std: variance.squareRoot())
    }
}
