import Foundation

/// `train --target METRIC=VALUE`: stop when an evaluation reaches a quality, and record how
/// long training took to get there — the measure that compares methods which trade steps for
/// bytes (every-step averaging against DiLoCo) where step time alone cannot.
public struct TrainingTarget: Equatable, CustomStringConvertible {
    public enum Metric: String, CaseIterable {
        case testAccuracy = "test_accuracy", testLoss = "test_loss", valLoss = "val_loss", perplexity

        /// Accuracy is reached from below, losses and perplexity from above.
        var higherIsBetter: Bool { self == .testAccuracy }
    }
    public let metric: Metric
    public let value: Double

    /// Parses "test_accuracy=0.91"; the error is one line naming what to write.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        let names = Metric.allCases.map(\.rawValue).joined(separator: ", ")
        guard parts.count == 2, let metric = Metric(rawValue: parts[0]) else {
            throw ConfigError("--target expects METRIC=VALUE with METRIC one of \(names), got '\(text)'")
        }
        guard let value = Double(parts[1]), value.isFinite else {
            throw ConfigError("--target \(metric.rawValue): '\(parts[1])' is not a number")
        }
        if metric == .testAccuracy && !(value > 0 && value <= 1) {
            throw ConfigError("--target test_accuracy must be in (0, 1], got \(value)")
        }
        if metric != .testAccuracy && !(value > 0) { throw ConfigError("--target \(metric.rawValue) must be > 0, got \(value)") }
        // exp(loss) ≥ 1: a perplexity below 1 is never reached, and the run would train to its end.
        if metric == .perplexity && value < 1 {
            throw ConfigError("--target perplexity must be ≥ 1 (it is exp(val_loss)), got \(value); for a loss below \(value) give val_loss=\(log(value))")
        }
        (self.metric, self.value) = (metric, value)
    }

    public var description: String { "\(metric.rawValue)=\(value)" }

    /// The metric must be one the model's evaluation reports: a classifier's test accuracy
    /// and loss, a language model's validation loss and perplexity.
    public func check(languageModel: Bool) throws {
        switch (metric, languageModel) {
        case (.valLoss, false), (.perplexity, false):
            throw ConfigError("--target \(metric.rawValue): this model is a classifier, evaluated by test_accuracy and test_loss; choose one of those")
        case (.testAccuracy, true), (.testLoss, true):
            throw ConfigError("--target \(metric.rawValue): this model is a language model, evaluated by val_loss and perplexity; choose one of those")
        default: return
        }
    }

    /// Whether an evaluation's figures reach the target.
    func isReached(accuracy: Double, loss: Double?, perplexity: Double?) -> Bool {
        switch metric {
        case .testAccuracy: return accuracy >= value
        case .testLoss, .valLoss: return loss.map { $0 <= value } ?? false
        case .perplexity: return perplexity.map { $0 <= value } ?? false
        }
    }
}

/// When the run reached its `--target` (summary.json).
struct TargetReached {
    var step: Int, trainSeconds: Double, bytesSent: Double?
}
