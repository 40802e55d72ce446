import Datasets
import Foundation
import NeuralNet

/// The language-model side of a config: `data.dataset: text | tokens` and their keys, which
/// go with `model.kind: gpt` and with nothing else.
extension TrainingConfig {
    static let textKeys = ["data.text", "data.val_fraction"]
    static let tokenKeys = ["data.train_tokens", "data.val_tokens"]
    static let windowKeys = ["data.val_windows", "data.stride"]

    /// `testOnly`: an evaluation, which needs only the validation tokens.
    mutating func readTokenData(_ r: inout ConfigReader, testOnly: Bool) throws {
        let isText = dataset == "text", isTokens = dataset == "tokens"
        if (isText || isTokens) != (modelKind == "gpt") {
            throw ConfigError(modelKind == "gpt"
                ? "model.kind: gpt trains on token windows; set data.dataset: text (files read as bytes) or tokens (uint16 token files), not \(dataset)"
                : "data.dataset: \(dataset) is a language-modelling dataset; it needs model.kind: gpt (model.kind is \(modelKind))")
        }
        let present = Set(r.values.keys)
        let given = { (keys: [String]) in keys.first(where: present.contains) }
        if !isText, let stray = given(Self.textKeys) { throw ConfigError("\(stray) is read only with data.dataset: text (data.dataset is \(dataset))") }
        if !isTokens, let stray = given(Self.tokenKeys) { throw ConfigError("\(stray) is read only with data.dataset: tokens (data.dataset is \(dataset))") }
        if isText || isTokens, let stray = given(["data.mean", "data.std", "data.dir", "data.cache_dir"]) {
            throw ConfigError("\(stray) does not apply to data.dataset: \(dataset) (token ids are not normalised, and nothing is cached); remove it")
        }
        if !isText && !isTokens, let stray = given(Self.windowKeys) {
            throw ConfigError("\(stray) is read only with data.dataset: text or tokens (data.dataset is \(dataset))")
        }
        textPaths = try r.strings("data.text", default: textPaths)
        validationFraction = try r.double("data.val_fraction", default: validationFraction, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true)
        validationWindows = try r.int("data.val_windows", default: validationWindows, min: 0)
        windowStride = try r.int("data.stride", default: windowStride, min: 0)
        trainTokens = try r.string("data.train_tokens", default: trainTokens)
        validationTokens = try r.string("data.val_tokens", default: validationTokens)
        if isTokens, let missing = Self.tokenKeys.dropFirst(testOnly ? 1 : 0).first(where: { !r.has($0) }) {
            throw ConfigError("data.dataset: tokens needs data.train_tokens and data.val_tokens (flat little-endian uint16 token files, as nanoGPT's prepare.py writes them); \(missing) is missing")
        }
        if isText, let gpt, gpt.vocab < 256 {
            throw ConfigError("data.dataset: text reads bytes (ids 0…255); model.gpt.vocab must be ≥ 256, got \(gpt.vocab)")
        }
    }

    /// How validation windows are laid out: `data.val_windows` spread evenly, else every block.
    var validationLayout: TokenWindows.Layout {
        validationWindows > 0 ? .evenlySpaced(validationWindows) : .stride((gpt ?? GPTSpec()).blockSize)
    }

    /// The validation windows alone (an evaluation: for `tokens` the training file is neither
    /// needed nor read; `text` splits one corpus, so it is read whole).
    func loadTokenValidation() throws -> Dataset {
        guard dataset == "tokens" else { return try loadTokenWindows().test }
        let gpt = self.gpt ?? GPTSpec()
        return try TokenWindows.tokenFile(validationTokens, key: "data.val_tokens", blockSize: gpt.blockSize, vocab: gpt.vocab,
                                          layout: validationLayout)
    }

    /// The token windows of `data.dataset: text` or `tokens` (training, validation).
    func loadTokenWindows(log: (String) -> Void = { _ in }) throws -> (train: Dataset, test: Dataset) {
        let gpt = self.gpt ?? GPTSpec()
        let stride = windowStride > 0 ? windowStride : gpt.blockSize
        if dataset == "text" {
            let split = try TokenWindows.text(textPaths, blockSize: gpt.blockSize, validationFraction: validationFraction,
                                              stride: stride, validationWindows: validationWindows, log: log)
            return (split.train, split.validation)
        }
        return (try TokenWindows.tokenFile(trainTokens, key: "data.train_tokens", blockSize: gpt.blockSize, vocab: gpt.vocab, layout: .stride(stride)),
                try loadTokenValidation())
    }

    /// The model checked against the data, before any buffer exists (every rank checks; the
    /// allocation that follows is collective when the gradients live in shared memory).
    public func checkedModel(for data: Dataset) throws -> CheckedModel {
        if let gpt {
            guard data.inputShape == [gpt.blockSize], data.labelsPerSample == gpt.blockSize, data.classes <= gpt.vocab else {
                throw ShapeError("model.gpt (block_size \(gpt.blockSize), vocab \(gpt.vocab)) does not fit the data (windows \(data.inputShape), \(data.classes) token ids)")
            }
            return .gpt(gpt)
        }
        guard data.labelsPerSample == 1 else {
            throw ShapeError("data.dataset: \(dataset) gives a label per position; it needs model.kind: gpt")
        }
        return .layers(try modelSpec.layers(inputShape: data.inputShape, classes: data.classes, seed: seed), inputShape: data.inputShape)
    }

    /// Values the optimizer keeps per parameter (momentum, Adam's two moments, …), as each
    /// optimizer's `allocateState` calls allocate them (LARS keeps its buffer at momentum 0 too).
    var optimizerValuesPerParameter: Int {
        let momentum = schedulesMomentum || self.momentum > 0
        switch optimizer {
        case "sgd": return momentum ? 1 : 0
        case "lars": return 1
        case "adam", "adamw": return amsgrad ? 3 : 2
        case "rmsprop": return 1 + (momentum ? 1 : 0) + (centered ? 1 : 0)
        default: return 2
        }
    }

    /// Refuses a model whose parameters, gradients and optimizer state alone exceed this
    /// machine's memory — every rank checks, in agreement, before the (collective) allocation:
    /// one line naming the sizes, not a failed allocation or an MPI_Abort.
    public func checkFitsInMemory(parameters count: Int) throws {
        let values = 2 + optimizerValuesPerParameter, bytes = Double(count) * Double(values) * 4
        guard let exceeded = MachineMemory.exceeded(by: bytes) else { return }
        throw ShapeError("the model has \(count) parameters: \(MachineMemory.gigabytes(bytes)) with their gradients and \(optimizer)'s state (\(values) values a parameter), \(exceeded); make it smaller")
    }

    /// The model for `data`, with fresh (zero) parameters.
    public func makeModel(for data: Dataset, gradientStorage: GradientStorage? = nil) throws -> Model {
        try checkedModel(for: data).build(gradientStorage: gradientStorage)
    }
}

/// A model whose shape has been checked against the data: the layers of a classifier (built
/// once, the very ones checked) or a GPT's spec.
public enum CheckedModel {
    case layers([Layer], inputShape: [Int])
    case gpt(GPTSpec)

    /// Its parameter count (a GPT's by nanoGPT's layout: per block two layer norms, c_attn,
    /// c_proj and the MLP's two linear layers, 12C² + 13C), before any buffer exists.
    public var parameterCount: Int {
        switch self {
        case let .layers(layers, _): return layers.reduce(0) { $0 + $1.parameters.reduce(0) { $0 + $1.count } }
        case let .gpt(spec):
            let c = spec.embed
            return (spec.vocab + spec.blockSize) * c + spec.layers * (12 * c * c + 13 * c) + 2 * c + (spec.tieEmbeddings ? 0 : spec.vocab * c)
        }
    }

    public func build(gradientStorage: GradientStorage?) throws -> Model {
        switch self {
        case let .layers(layers, inputShape): return try Sequential(layers, inputShape: inputShape, gradientStorage: gradientStorage)
        case let .gpt(spec): return try GPT(spec, gradientStorage: gradientStorage)
        }
    }
}
