/// Deterministic test and benchmark data that looks like a gradient, not like noise.
///
/// Real gradients are heavy-tailed, vary in scale by orders of magnitude between layers,
/// and are zero in places (dead ReLUs). Uniform noise or constants flatter lossy codecs and
/// lossless compressors alike, so benchmarks use this: per 4096-value "layer" a log-uniform
/// scale in [1e-5, 1e-1], Laplace-distributed values, and 10 % exact zeros. Values depend
/// on (seed, index) only, and `rank` shifts the seed so ranks hold distinct data.
public enum GradientLikeData {
    public static func fill(_ buffer: UnsafeMutableBufferPointer<Float>, seed: UInt64, rank: Int) {
        var generator = SeededGenerator(seed: seed, stream: UInt64(rank))
        func uniform() -> Double { Double(generator.next() >> 11) * 0x1p-53 }
        var scale = 1e-3
        for i in 0 ..< buffer.count {
            if i % 4096 == 0 { scale = pow(10, -5 + 4 * uniform()) }
            let u = uniform()
            if u < 0.1 { buffer[i] = 0; continue }
            let v = uniform() - 0.5
            let laplace = -scale * (v < 0 ? -1 : 1) * log(1 - 2 * abs(v) + 1e-300)
            buffer[i] = Float(laplace)
        }
    }
}

import Foundation
import NeuralNet
