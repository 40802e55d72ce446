/// Softmax cross-entropy over a batch of logits, mean over the batch (PyTorch
/// `F.cross_entropy`, reduction "mean").
///
/// Stable form: log softmax(z)_c = z_c − m − log Σ_j exp(z_j − m) with m = max_j z_j, so no
/// exp overflows. The gradient with respect to the logits is (softmax(z) − onehot(y)) / N.
public final class SoftmaxCrossEntropy {
    public let classes: Int
    private let gradient = ActivationBuffer()

    public init(classes: Int) {
        precondition(classes >= 2, "cross-entropy needs at least 2 classes, got \(classes)")
        self.classes = classes
    }

    /// Allocates the gradient for up to `rows` rows (outside the hot path).
    public func reserve(rows: Int) { gradient.reserve(rows * classes) }

    public struct Result {
        /// Mean loss over the batch.
        public let loss: Double
        /// Samples whose arg-max logit equals the label.
        public let correct: Int
    }

    /// Computes loss and accuracy; with `gradient: true` also dLoss/dlogits (see `lastGradient`).
    public func evaluate(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int,
                         gradient wantGradient: Bool) throws -> Result {
        gradient.reserve(batch * classes)
        let g = gradient.pointer, invBatch = 1 / Float(batch)
        var total = 0.0, correct = 0
        for b in 0 ..< batch {
            let z = logits + b * classes
            let label = Int(labels[b])
            guard label >= 0 && label < classes else {
                throw ShapeError("label \(label) of sample \(b) is outside 0..<\(classes)")
            }
            var maxValue = z[0], argmax = 0
            for c in 1 ..< classes where z[c] > maxValue { maxValue = z[c]; argmax = c }
            var sum: Float = 0
            for c in 0 ..< classes { sum += (z[c] - maxValue).exponential }
            // In shifted terms, as PyTorch's log_softmax: (z − max) − log Σ. Adding max back
            // first (max + log Σ) rounds to the spacing of the largest logit — at 1e5 the loss
            // of two equal logits came out 0.6953, not ln 2, and a gradient row stopped summing to 0.
            let logSum = sum.logarithm
            total += Double(logSum - (z[label] - maxValue))
            if argmax == label { correct += 1 }
            if wantGradient {
                let row = g + b * classes
                for c in 0 ..< classes { row[c] = ((z[c] - maxValue) - logSum).exponential * invBatch }
                row[label] -= invBatch
            }
        }
        return Result(loss: total / Double(batch), correct: correct)
    }

    /// dLoss/dlogits from the last `evaluate(..., gradient: true)`.
    public var lastGradient: UnsafePointer<Float> { UnsafePointer(gradient.pointer) }
}

import Foundation
extension Float {
    @inline(__always) var exponential: Float { Foundation.expf(self) }
    @inline(__always) var logarithm: Float { Foundation.logf(self) }
}
