import ArgumentParser
import Foundation
import NeuralNet
import Training

/// `ringsgd generate`: text from a trained GPT, streamed to the terminal token by token. One
/// process, no MPI.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sample text from a trained GPT (model.kind: gpt), streaming tokens as they come.",
        discussion: """
            Examples:
              ringsgd generate --run-dir runs/tiny-gpt --prompt "Q: Why" --tokens 300
              ringsgd generate --run-dir runs/tiny-gpt --temperature 0        (greedy)
            Each token is one incremental step over a key/value cache (--no-cache: one full
            forward pass over the window per token, for comparison). Past block_size the model
            sees the last block_size tokens, as nanoGPT's generate (--full-context slide: a
            full pass per token from there), or the last half of them, re-cached (halve:
            faster, another text). A byte-level model's tokens are written as bytes; other
            vocabularies as token ids.
            """
    )

    @OptionGroup var source: CheckpointChoice

    // `.unconditional`: a prompt may begin with "-" ("-- Mark Twain", the fortunes' signature lines).
    @Option(parsing: .unconditional, help: "Text the model continues: bytes for a byte-level model (default: a newline); otherwise token ids separated by white space (required).")
    var prompt: String?
    // `.unconditional`: a negative value ("--tokens -1") reaches validate() and its message,
    // instead of ArgumentParser reading "-1" as the next option ("Missing value").
    @Option(parsing: .unconditional, help: "Tokens to generate.")
    var tokens: Int = 256
    @Option(parsing: .unconditional, help: "Softmax temperature; 0 takes the most likely token.")
    var temperature: Double = 0.8
    @Option(parsing: .unconditional, help: "Sample among the K most likely tokens only (0: all).")
    var topK: Int = 0
    @Option(parsing: .unconditional, help: "Seed of the sampling (a whole number ≥ 0).")
    var seed: UInt64 = 0
    @Flag(help: "Run a full forward pass per token instead of the key/value cache.")
    var noCache = false
    @Option(help: "Once the context reaches block_size: slide (the last block_size tokens, as nanoGPT) or halve (keep the last half, re-cached).")
    var fullContext: String = GPTDecoder.FullContext.slide.rawValue

    func validate() throws {
        if tokens < 1 { throw ValidationError("--tokens must be ≥ 1, got \(tokens)") }
        if !(temperature >= 0) || !temperature.isFinite { throw ValidationError("--temperature must be a finite number ≥ 0, got \(temperature)") }
        if topK < 0 { throw ValidationError("--top-k must be ≥ 0, got \(topK)") }
        if GPTDecoder.FullContext(rawValue: fullContext) == nil {
            throw ValidationError("--full-context must be one of \(GPTDecoder.FullContext.allCases.map(\.rawValue).joined(separator: ", ")), got '\(fullContext)'")
        }
    }

    /// The prompt's bytes as the command line gave them. Why: Swift decodes arguments as
    /// UTF-8 and replaces invalid bytes with U+FFFD, but a byte-level model is trained on any
    /// bytes (a Latin-1 text, say), so its prompt is read from argv itself; `given` (the
    /// decoded form) when the argument is not found there.
    static func promptBytes(given: String) -> [UInt8] {
        let arguments = (0 ..< Int(CommandLine.argc)).compactMap { i in CommandLine.unsafeArgv[i].map { Array(UnsafeBufferPointer(start: UnsafeRawPointer($0).assumingMemoryBound(to: UInt8.self), count: strlen($0))) } }
        let option = Array("--prompt".utf8), joined = option + [UInt8(ascii: "=")]
        // In order, the value after a bare --prompt skipped (a prompt may itself read
        // "--prompt=…"); the last one given wins, as for the parser. Taken only if it decodes to
        // what the parser got — anything else is not the argument the parser read.
        var found: [UInt8]?, i = 1
        while i < arguments.count {
            if arguments[i] == option, i + 1 < arguments.count {
                found = arguments[i + 1]
                i += 2
                continue
            }
            if arguments[i].starts(with: joined) { found = Array(arguments[i].dropFirst(joined.count)) }
            i += 1
        }
        if let found, String(decoding: found, as: UTF8.self) == given { return found }
        return Array(given.utf8)
    }

    func run() throws {
        BLASThreads.set(1)
        let (found, path) = try source.locate()
        guard let description = found.model, let spec = description.gpt else {
            throw ValidationError("\(path) holds a \(found.model.map { _ in "classifier" } ?? "model without a description"); generate samples from a GPT (model.kind: gpt)")
        }
        let model = try GPT(spec)
        guard model.parameters.count == found.parameters.count else {
            throw ValidationError("\(path) holds \(found.parameters.count) parameters, its GPT description \(model.parameters.count); the checkpoint is damaged")
        }
        _ = model.parameters.parameters.update(fromContentsOf: found.parameters)
        // Trained on text: tokens are bytes (whatever the vocabulary's size); on token files, ids.
        let config: TrainingConfig
        do { config = try TrainingConfig(canonicalText: found.config) } catch {
            throw ValidationError("\(path): the configuration it was trained with does not read back (\(error)), so whether its tokens are bytes is unknown; the checkpoint is damaged or from another version of ringsgd")
        }
        let bytes = config.dataset == "text"
        let promptTokens: [Int]
        if bytes {
            // A byte model reads every byte value; a damaged or hand-made description may not.
            guard spec.vocab >= 256 else {
                throw ValidationError("\(path): the model was trained on text (bytes) but its vocabulary is \(spec.vocab), under 256; the checkpoint is damaged")
            }
            promptTokens = (prompt == nil ? [UInt8(ascii: "\n")] : Self.promptBytes(given: prompt!)).map(Int.init)
        } else {
            guard let prompt else {
                throw ValidationError("this model's tokens are ids, not bytes (trained on \(config.dataset)): give --prompt with token ids below \(spec.vocab), separated by spaces")
            }
            promptTokens = try prompt.split(whereSeparator: \.isWhitespace).map { word in
                guard let id = Int(word), id >= 0, id < spec.vocab else {
                    throw ValidationError("--prompt: '\(word)' is not a token id below \(spec.vocab) (this model's vocabulary is not bytes: give ids separated by spaces)")
                }
                return id
            }
        }
        guard !promptTokens.isEmpty else { throw ValidationError("--prompt is empty; give at least one \(bytes ? "character" : "token id")") }
        FileHandle.standardError.write("generating \(tokens) tokens from \(path) (step \(found.step), \(spec)), \(noCache ? "a full forward pass per token" : "key/value cache")\n".data(using: .utf8)!)

        let rule = GPTDecoder.FullContext(rawValue: fullContext)!
        let decoder = GPTDecoder(model, fullContext: rule)
        var generator = SeededGenerator(seed: seed)
        var context: [Int] = []
        var logits: [Float] = []
        func feed(_ token: Int) throws {
            if noCache {
                context = GPTDecoder.window(context, adding: token, blockSize: spec.blockSize, rule: rule)
                logits = try GPTDecoder.fullForward(model, context: context)
            } else {
                logits = Array(try decoder.append(token))
            }
        }
        let out = FileHandle.standardOutput
        // Sliding, only the prompt's last block_size tokens reach the next token: the rest would
        // each cost a full pass whose logits are dropped.
        for token in rule == .slide ? Array(promptTokens.suffix(spec.blockSize)) : promptTokens { try feed(token) }
        // The prompt first, as it continues it (nanoGPT prints decode(prompt + sample) too).
        if bytes { out.write(Data(promptTokens.map(UInt8.init))) } else { out.write(Data(promptTokens.map { "\($0) " }.joined().utf8)) }
        let start = ContinuousClock.now
        // A byte model with a vocabulary above 256 (text never labels ids 256 and up, but they
        // keep a probability) samples among the 256 bytes only: every token it writes is a byte.
        let sampled = bytes ? min(256, spec.vocab) : spec.vocab
        for index in 0 ..< tokens {
            let next = logits.withUnsafeBufferPointer {
                TokenSampler.sample(UnsafeBufferPointer(rebasing: $0.prefix(sampled)), temperature: temperature, topK: topK, generator: &generator)
            }
            if bytes { out.write(Data([UInt8(next)])) } else { out.write("\(next) ".data(using: .utf8)!) }
            // The last token's logits would go unused: no pass for them (nor in the tokens/s).
            if index < tokens - 1 { try feed(next) }
        }
        out.write("\n".data(using: .utf8)!)
        let seconds = (ContinuousClock.now - start).seconds
        FileHandle.standardError.write(String(format: "%d tokens in %.2f s: %.0f tokens/s (%@)\n", tokens, seconds, Double(tokens) / seconds,
                                              noCache ? "full forward per token" : "key/value cache").data(using: .utf8)!)
    }
}
