import Collectives
import Datasets
import FileFormats
import Foundation
import NeuralNet

/// A model's test-set performance: loss, accuracy, and per class, accuracy and the
/// confusion matrix — what `ringsgd evaluate` prints and writes to `evaluation.json`.
public struct EvaluationResult: Codable {
    public struct PerClass: Codable {
        public let `class`: Int
        public let samples: Int
        public let accuracy: Double
    }

    public let samples: Int
    /// Mean loss per label (per token for a language model).
    public let loss: Double
    /// Labels predicted right (the next token's arg-max, for a language model).
    public let accuracy: Double
    /// A language model's: tokens predicted and e^loss; absent for a classifier.
    public let tokens: Int?
    public let perplexity: Double?
    /// Per class and the confusion matrix (confusion[true][predicted] = samples); empty for a
    /// language model, whose every token is a "class".
    public let per_class: [PerClass]
    public let confusion: [[Int]]

    /// The JSON of `evaluation.json` (sorted keys).
    public func encoded() throws -> [UInt8] { Array(try JSONEncoder.sorted.encode(self)) }

    /// The report: totals, then a per-class table with each class's most frequent mistake,
    /// then the confusion matrix when it fits a terminal (≤ 20 classes).
    public var report: String {
        if let tokens, let perplexity {
            return String(format: "validation loss %.4f  perplexity %.2f  next-token accuracy %.4f  (%d windows, %d tokens)",
                          loss, perplexity, accuracy, samples, tokens)
        }
        var lines = [String(format: "test loss %.4f  accuracy %.4f  (%d samples)", loss, accuracy, samples), "",
                     "class  samples  accuracy  most often mistaken for"]
        for row in per_class {
            let mistakes = confusion[row.class].enumerated().filter { $0.offset != row.class && $0.element > 0 }
            let worst = mistakes.max { $0.element < $1.element }
            lines.append(String(format: "%5d  %7d  %8.4f  %@", row.class, row.samples, row.accuracy,
                                worst.map { "\($0.offset) (\($0.element))" } ?? "-"))
        }
        if confusion.count <= 20 {
            let width = max(5, String(confusion.flatMap { $0 }.max() ?? 0).count + 1)
            func cell(_ s: String) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
            lines += ["", "confusion matrix (rows: true class, columns: predicted)",
                      cell("") + confusion.indices.map { cell("\($0)") }.joined()]
            for (c, row) in confusion.enumerated() { lines.append(cell("\(c)") + row.map { cell("\($0)") }.joined()) }
        }
        return lines.joined(separator: "\n")
    }
}

public enum Evaluation {
    /// Evaluates `model` on `test`, each rank a contiguous shard of it (dropout off), and sums
    /// the shards' counts on every rank: every rank returns the same result. `batch` samples
    /// at a time.
    public static func run(_ model: Model, on test: Dataset, over transport: Transport, batch requested: Int) throws -> EvaluationResult {
        let n = transport.size, rank = transport.rank, classes = test.classes, perSample = test.labelsPerSample
        let range = (rank * test.count / n) ..< ((rank + 1) * test.count / n)
        // Never more than this rank's shard: a larger batch would only reserve memory no sample fills.
        let batch = max(1, min(requested, range.count))
        let x = UnsafeMutableBufferPointer<Float>.allocate(capacity: batch * test.inputSize)
        let y = UnsafeMutableBufferPointer<Int32>.allocate(capacity: batch * perSample)
        defer { x.deallocate(); y.deallocate() }
        let indices = Array(range)
        // A classifier's confusion matrix; a language model's vocabulary is too large for one.
        let classifier = perSample == 1
        var lossSum = 0.0, correct = 0
        var confusion = [Int](repeating: 0, count: classifier ? classes * classes : 0)
        var start = 0
        while start < indices.count {
            let count = min(batch, indices.count - start)
            test.fill(indices[start ..< start + count], input: x.baseAddress!, labels: y.baseAddress!)
            let logits = try model.forward(UnsafeBufferPointer(rebasing: x[0 ..< count * test.inputSize]), batch: count, training: false)
            let r = try model.loss.evaluate(logits: logits, labels: y.baseAddress!, batch: count * perSample, gradient: false)
            lossSum += r.loss * Double(count * perSample)
            correct += r.correct
            for row in 0 ..< (classifier ? count : 0) {
                // The first maximum, as the loss picks its prediction.
                let z = logits + row * classes
                var best = 0
                for c in 1 ..< classes where z[c] > z[best] { best = c }
                confusion[Int(y[row]) * classes + best] += 1
            }
            start += count
        }
        let sums = try RingAllGather.sum([lossSum, Double(indices.count), Double(correct)] + confusion.map(Double.init), over: transport)
        let samples = Int(sums[1]), labels = samples * perSample
        let loss = labels > 0 ? sums[0] / Double(labels) : 0, accuracy = labels > 0 ? sums[2] / Double(labels) : 0
        guard classifier else {
            return EvaluationResult(samples: samples, loss: loss, accuracy: accuracy, tokens: labels, perplexity: Foundation.exp(loss),
                                    per_class: [], confusion: [])
        }
        let matrix = (0 ..< classes).map { c in (0 ..< classes).map { Int(sums[3 + c * classes + $0]) } }
        let perClass = matrix.enumerated().map { c, row in
            let total = row.reduce(0, +)
            return EvaluationResult.PerClass(class: c, samples: total, accuracy: total > 0 ? Double(row[c]) / Double(total) : 0)
        }
        return EvaluationResult(samples: samples, loss: loss, accuracy: accuracy, tokens: nil, perplexity: nil,
                                per_class: perClass, confusion: matrix)
    }
}
