import FileFormats
import NeuralNet

/// A seeded synthetic classification task of any input size and class count, for scaling
/// benchmarks that must not depend on a download.
///
/// Class c has a prototype vector μ_c (±a entries from the seed, a = 16/√features, so two
/// prototypes are ≈ 23 apart whatever the width); sample i of class y = hash(i) mod classes
/// is μ_y + 2·noise(i) with noise uniform in [−1, 1) (std 1.15 per feature). Every value is a
/// pure function of (seed, index), so any rank can produce any sample without storing it,
/// and the task is learnable but not trivial. A test split shares the seed (so the prototypes,
/// i.e. the task) and starts at `firstIndex` past the training samples (so its samples are new).
public final class SyntheticDataset: Dataset {
    public let count: Int
    public let inputShape: [Int]
    public let classes: Int
    public let seed: UInt64
    public let firstIndex: Int
    private let prototypes: [Float]

    public init(count: Int, features: Int, classes: Int, seed: UInt64, firstIndex: Int = 0) throws {
        guard count >= 1, features >= 1, classes >= 2 else {
            throw DatasetError("synthetic data needs size ≥ 1, features ≥ 1 and classes ≥ 2 (got \(count), \(features), \(classes))")
        }
        self.count = count
        self.inputShape = [features]
        self.classes = classes
        self.seed = seed
        self.firstIndex = firstIndex
        var generator = SeededGenerator(seed: seed, stream: 0xDA7A)
        let amplitude = 16 / Float(features).squareRoot()
        prototypes = (0 ..< classes * features).map { _ in generator.next() & 1 == 0 ? -amplitude : amplitude }
    }

    public func label(of index: Int) -> Int {
        var g = SeededGenerator(seed: seed ^ UInt64(firstIndex + index), stream: 0x1AB1)
        return Int(g.next() % UInt64(classes))
    }

    public func fill(_ indices: ArraySlice<Int>, input: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        let features = inputShape[0]
        // The prototypes' pointer is used only inside withUnsafeBufferPointer's closure.
        prototypes.withUnsafeBufferPointer { allPrototypes in
            for (row, index) in indices.enumerated() {
                let y = label(of: index)
                labels[row] = Int32(y)
                var g = SeededGenerator(seed: seed ^ UInt64(firstIndex + index), stream: 0x5A4D)
                let prototype = allPrototypes.baseAddress! + y * features
                let destination = input + row * features
                var i = 0
                while i < features {
                    var bits = g.next()
                    // Four 16-bit uniforms per draw keep generation far below the step's cost.
                    for _ in 0 ..< 4 where i < features {
                        let u = Float(bits & 0xFFFF) * (2.0 / 65536) - 1
                        destination[i] = prototype[i] + 2 * u
                        bits >>= 16
                        i += 1
                    }
                }
            }
        }
    }
}
