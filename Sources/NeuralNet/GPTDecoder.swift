import COpenBLAS

/// Token-by-token inference for a `GPT` with a key/value cache: each new token runs one
/// incremental step — its own projections, attention over the keys and values cached for the
/// positions before it, the MLPs — so N tokens within block_size cost N steps of
/// O(layers·C² + layers·t·C), not N full passes over the window (nanoGPT's `generate` re-runs
/// the whole window per token).
///
/// It reads the model's weights in place (views by their nanoGPT names) and allocates its
/// cache and scratch once. Positions are absolute (learned `wpe`), so once the context reaches
/// `block_size` the cache cannot slide: what happens then is `fullContext`'s rule.
public final class GPTDecoder {
    /// What the model sees once the context has reached block_size.
    public enum FullContext: String, CaseIterable, Sendable {
        /// nanoGPT's `generate` (`idx[:, -block_size:]`): always the last block_size tokens.
        /// Every window's positions differ from the last one's, so each token is then one full
        /// forward pass over the window: the cache's speed is gone past block_size.
        case slide
        /// The last half kept and the cache re-filled from it (`contextShift`): about two
        /// incremental steps a token, but the model sees between block_size/2 + 1 and
        /// block_size tokens — not the text nanoGPT would write.
        case halve
    }

    /// The window after `token` joins `context` (at most block_size tokens, which holds the
    /// context before it), under `rule`: what both the cache and a full pass per token condition on.
    public static func window(_ context: [Int], adding token: Int, blockSize: Int, rule: FullContext) -> [Int] {
        guard context.count == blockSize else { return context + [token] }
        switch rule {
        case .slide: return Array(context.dropFirst()) + [token]
        case .halve: return contextShift(context, blockSize: blockSize) + [token]
        }
    }

    public let model: GPT
    public let fullContext: FullContext
    private let spec: GPTSpec
    private struct BlockWeights {
        let ln1w, ln1b, attnW, attnB, projW, projB, ln2w, ln2b, fcW, fcB, fc2W, fc2B: UnsafePointer<Float>
    }
    private let wte, wpe, lnFw, lnFb, head: UnsafePointer<Float>
    private let blocks: [BlockWeights]
    /// keys[l] and values[l]: [block_size, C] each.
    private let keys: [UnsafeMutablePointer<Float>], values: [UnsafeMutablePointer<Float>]
    private let x, normed, qkv, attended, hidden, scores, logitsBuffer: UnsafeMutablePointer<Float>
    /// The tokens the next logits condition on, in order: those whose keys and values are
    /// cached, until a slide past block_size (the window's, from then on: the cache is no longer read).
    public private(set) var context: [Int] = []

    public init(_ model: GPT, fullContext: FullContext = .slide) {
        self.model = model
        self.fullContext = fullContext
        spec = model.spec
        let p = model.parameters
        func view(_ name: String) -> UnsafePointer<Float> {
            guard let v = p.views.first(where: { $0.name == name }) else { preconditionFailure("GPT without \(name)") }
            return UnsafePointer(p.parameters.baseAddress! + v.offset)
        }
        wte = view("transformer.wte.weight"); wpe = view("transformer.wpe.weight")
        lnFw = view("transformer.ln_f.weight"); lnFb = view("transformer.ln_f.bias")
        head = spec.tieEmbeddings ? wte : view("lm_head.weight")
        blocks = (0 ..< spec.layers).map { i in
            let b = "transformer.h.\(i)."
            return BlockWeights(ln1w: view(b + "ln_1.weight"), ln1b: view(b + "ln_1.bias"),
                                attnW: view(b + "attn.c_attn.weight"), attnB: view(b + "attn.c_attn.bias"),
                                projW: view(b + "attn.c_proj.weight"), projB: view(b + "attn.c_proj.bias"),
                                ln2w: view(b + "ln_2.weight"), ln2b: view(b + "ln_2.bias"),
                                fcW: view(b + "mlp.c_fc.weight"), fcB: view(b + "mlp.c_fc.bias"),
                                fc2W: view(b + "mlp.c_proj.weight"), fc2B: view(b + "mlp.c_proj.bias"))
        }
        let c = spec.embed, t = spec.blockSize
        keys = (0 ..< spec.layers).map { _ in .allocate(capacity: t * c) }
        values = (0 ..< spec.layers).map { _ in .allocate(capacity: t * c) }
        x = .allocate(capacity: c); normed = .allocate(capacity: c); qkv = .allocate(capacity: 3 * c)
        attended = .allocate(capacity: c); hidden = .allocate(capacity: 4 * c); scores = .allocate(capacity: t)
        logitsBuffer = .allocate(capacity: spec.vocab)
        // Zeroed once: the projections write with β = 0, which a BLAS may still read (0·NaN is NaN).
        for (buffer, count) in zip(keys + values, repeatElement(t * c, count: 2 * spec.layers)) { buffer.initialize(repeating: 0, count: count) }
        for (buffer, count) in [(x, c), (normed, c), (qkv, 3 * c), (attended, c), (hidden, 4 * c), (scores, t), (logitsBuffer, spec.vocab)] {
            buffer.initialize(repeating: 0, count: count)
        }
    }

    deinit {
        for buffer in keys + values { buffer.deallocate() }
        for buffer in [x, normed, qkv, attended, hidden, scores, logitsBuffer] { buffer.deallocate() }
    }

    /// The tokens kept when the context is full: its last half (at least one, fewer than
    /// block_size, which is ≥ 2: there is room for the next).
    public static func contextShift(_ context: [Int], blockSize: Int) -> [Int] { Array(context.suffix(blockSize / 2)) }

    /// Appends `token` to the context and returns the logits for the next token (valid until
    /// the next call). When the context is full, `fullContext` says what it becomes.
    @discardableResult
    public func append(_ token: Int) throws -> UnsafeBufferPointer<Float> {
        precondition(token >= 0 && token < spec.vocab, "token \(token) is outside the vocabulary of \(spec.vocab)")
        if context.count == spec.blockSize {
            switch fullContext {
            case .slide:
                // A window at new positions: one full pass (the cache is not read again, as
                // the context stays full from now on).
                context = Self.window(context, adding: token, blockSize: spec.blockSize, rule: .slide)
                let logits = try Self.fullForward(model, context: context)
                logitsBuffer.update(from: logits, count: spec.vocab)
                return UnsafeBufferPointer(start: logitsBuffer, count: spec.vocab)
            case .halve:
                let kept = Self.contextShift(context, blockSize: spec.blockSize)
                context = []
                for previous in kept { step(previous) }
            }
        }
        step(token)
        return UnsafeBufferPointer(start: logitsBuffer, count: spec.vocab)
    }

    /// One incremental step at position `context.count`.
    private func step(_ token: Int) {
        let c = spec.embed, position = context.count, d = c / spec.heads
        let scale = 1 / Float(d).squareRoot()
        for i in 0 ..< c { x[i] = wte[token * c + i] + wpe[position * c + i] }
        for (l, w) in blocks.enumerated() {
            Self.layerNorm(x, w.ln1w, w.ln1b, into: normed, count: c)
            Self.matrixVector(w.attnW, w.attnB, normed, into: qkv, rows: 3 * c, columns: c)
            (keys[l] + position * c).update(from: qkv + c, count: c)
            (values[l] + position * c).update(from: qkv + 2 * c, count: c)
            for h in 0 ..< spec.heads {
                let q = qkv + h * d
                var maximum = -Float.infinity
                for j in 0 ... position {
                    let k = keys[l] + j * c + h * d
                    var dot: Float = 0
                    for i in 0 ..< d { dot += q[i] * k[i] }
                    scores[j] = dot * scale
                    maximum = max(maximum, scores[j])
                }
                var sum: Float = 0
                for j in 0 ... position { scores[j] = FastMath.exp(scores[j] - maximum); sum += scores[j] }
                let out = attended + h * d
                out.update(repeating: 0, count: d)
                for j in 0 ... position {
                    let v = values[l] + j * c + h * d, weight = scores[j] / sum
                    for i in 0 ..< d { out[i] += weight * v[i] }
                }
            }
            Self.matrixVector(w.projW, w.projB, attended, into: normed, rows: c, columns: c)
            for i in 0 ..< c { x[i] += normed[i] }
            Self.layerNorm(x, w.ln2w, w.ln2b, into: normed, count: c)
            Self.matrixVector(w.fcW, w.fcB, normed, into: hidden, rows: 4 * c, columns: c)
            for i in 0 ..< 4 * c { hidden[i] = GELU.value(hidden[i]).y }
            Self.matrixVector(w.fc2W, w.fc2B, hidden, into: normed, rows: c, columns: 4 * c)
            for i in 0 ..< c { x[i] += normed[i] }
        }
        Self.layerNorm(x, lnFw, lnFb, into: normed, count: c)
        Self.matrixVector(head, nil, normed, into: logitsBuffer, rows: spec.vocab, columns: c)
        context.append(token)
    }

    /// y = W·v + b for W [rows, columns] (PyTorch's Linear layout), on OpenBLAS's sgemv.
    private static func matrixVector(_ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>?, _ v: UnsafePointer<Float>,
                                     into y: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        if let b { y.update(from: b, count: rows) }
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(columns), 1, w, Int32(columns), v, 1, b == nil ? 0 : 1, y, 1)
    }

    /// LayerNorm of one vector, as `LayerNorm.forward` computes it (eps 1e-5, as the model's).
    private static func layerNorm(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                  into y: UnsafeMutablePointer<Float>, count n: Int) {
        _ = LayerNorm.normalize(x, weight: w, bias: b, into: y, count: n, epsilon: 1e-5)
    }

    /// The logits for the next token after `context` (≤ block_size tokens) by one full forward
    /// pass over the window, the way a model without a cache generates: the window is padded
    /// to block_size (causal attention: later positions do not change earlier ones).
    public static func fullForward(_ model: GPT, context: [Int]) throws -> [Float] {
        let t = model.spec.blockSize, v = model.spec.vocab
        precondition(!context.isEmpty && context.count <= t)
        var window = context.map(Float.init)
        window += Array(repeating: 0, count: t - context.count)
        let logits = try window.withUnsafeBufferPointer { try model.forward($0, batch: 1, training: false) }
        return Array(UnsafeBufferPointer(start: logits + (context.count - 1) * v, count: v))
    }
}

/// Draws the next token from logits: temperature (0: the arg-max), then the `topK` largest
/// (0: all), then a softmax sample from `generator` — nanoGPT's `generate`.
public enum TokenSampler {
    public static func sample(_ logits: UnsafeBufferPointer<Float>, temperature: Double, topK: Int,
                              generator: inout SeededGenerator) -> Int {
        var best = 0
        for i in 1 ..< logits.count where logits[i] > logits[best] { best = i }
        guard temperature > 0 else { return best }
        var scaled = logits.map { Double($0) / temperature }
        if topK > 0 && topK < scaled.count {
            let threshold = scaled.sorted(by: >)[topK - 1]
            for i in scaled.indices where scaled[i] < threshold { scaled[i] = -.infinity }
        }
        let maximum = scaled.max()!
        let weights = scaled.map { ($0 - maximum).isFinite ? Double(FastMath.exp(Float($0 - maximum))) : 0 }
        let total = weights.reduce(0, +)
        var u = Double(generator.next() >> 11) * 0x1p-53 * total, last = best
        for i in weights.indices where weights[i] > 0 {
            u -= weights[i]
            if u < 0 { return i }
            last = i
        }
        return last   // rounding left u ≥ 0: the last token with any weight
    }
}
