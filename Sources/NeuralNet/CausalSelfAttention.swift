/// Causal multi-head self-attention over a sequence of T vectors of width C (GPT-2's, in
/// nanoGPT's form: one fused projection `c_attn` to queries, keys and values, `heads` heads of
/// C/heads, the output projection `c_proj`):
///
///     [q k v] = x·W_attnᵀ + b_attn,   S_h = q_h·k_hᵀ / √d,   P_h = softmax(S_h + causal mask)
///     y_h = dropout(P_h)·v_h,          out = [y_1 … y_H]·W_projᵀ + b_proj
///
/// (Vaswani et al. 2017; Radford et al. 2019). The softmax subtracts each row's maximum over
/// the visible positions j ≤ i, so no exponential overflows, and writes exact zeros above the
/// diagonal. Backward, per head, with P the softmax and dP the gradient at its output:
/// dS = P ⊙ (dP − rowsum(dP ⊙ P)), dq = dS·k/√d, dk = dSᵀ·q/√d, dv = Pᵀ·dy.
///
/// Every product is an OpenBLAS `sgemm` on strided views of the fused buffers (q, k and v of a
/// head are columns of the [T, 3C] projection), so nothing is copied or allocated per step.
/// Per-sample shape [T, C] → [T, C].
public final class CausalSelfAttention: Layer {
    public let features: Int, heads: Int
    public var headSize: Int { features / heads }
    let project: Linear, output: Linear
    /// Dropout on the attention probabilities (`attn_dropout`), reseeded by the model each step.
    let attentionDropout: Dropout
    private var length = 0
    /// Softmax probabilities [batch, heads, T, T] (kept for backward), their gradient, the heads'
    /// concatenated outputs [batch·T, C], and the gradient of the fused projection [batch·T, 3C].
    private let probabilities = ActivationBuffer(), probabilityGrad = ActivationBuffer()
    private let headOutputs = ActivationBuffer(), projectionGrad = ActivationBuffer()

    public init(features: Int, heads: Int, dropout: Float = 0) {
        precondition(heads > 0 && features % heads == 0, "attention width \(features) must be a multiple of its \(heads) heads")
        self.features = features
        self.heads = heads
        project = Linear(features, 3 * features)
        output = Linear(features, features)
        attentionDropout = Dropout(probability: dropout)
    }

    public var summary: String { "CausalSelfAttention(\(features), \(heads) heads)" }
    public var pytorchModule: String { "CausalSelfAttention(\(features), \(heads))" }
    public var parameters: [ParameterSpec] {
        project.parameters.map { ParameterSpec(name: "c_attn.\($0.name)", shape: $0.shape) }
            + output.parameters.map { ParameterSpec(name: "c_proj.\($0.name)", shape: $0.shape) }
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 2, input[1] == features else {
            throw ShapeError("\(summary) takes a sequence [T, \(features)], got shape \(input)")
        }
        length = input[0]
        _ = try project.outputShape(for: [features])
        _ = try output.outputShape(for: [features])
        _ = try attentionDropout.outputShape(for: [heads, length, length])
        return input
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        bindParts([project, output], parameters: parameters, gradients: gradients)
    }

    public func initialize(using generator: inout SeededGenerator) {
        project.initialize(using: &generator)
        output.initialize(using: &generator)
    }

    public func reserve(batch: Int) {
        project.reserve(batch: batch * length)
        output.reserve(batch: batch * length)
        attentionDropout.reserve(batch: batch)
        probabilities.reserve(batch * heads * length * length)
        probabilityGrad.reserve(batch * heads * length * length)
        headOutputs.reserve(batch * length * features)
        projectionGrad.reserve(batch * length * 3 * features)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let t = length, c = features, d = headSize, scale = 1 / Float(d).squareRoot(), top = t / 2, rest = t - top
        let qkv = project.forward(x, batch: batch * t, training: training)
        for b in 0 ..< batch {
            for h in 0 ..< heads {
                let q = qkv + b * t * 3 * c + h * d, k = q + c
                let p = probabilities.pointer + (b * heads + h) * t * t
                // Causal blocks: the first half of the rows sees only the first half of the keys
                // (the upper-right quarter is masked: never computed; the softmax writes its zeros).
                if top > 0 {
                    sgemm(transposeA: false, transposeB: true, m: top, n: top, k: d, alpha: scale,
                          a: q, lda: 3 * c, b: k, ldb: 3 * c, beta: 0, c: p, ldc: t)
                }
                sgemm(transposeA: false, transposeB: true, m: rest, n: t, k: d, alpha: scale,
                      a: q + top * 3 * c, lda: 3 * c, b: k, ldb: 3 * c, beta: 0, c: p + top * t, ldc: t)
                Self.causalSoftmax(p, length: t)
            }
        }
        let kept = attentionDropout.forward(probabilities.pointer, batch: batch, training: training)
        for b in 0 ..< batch {
            for h in 0 ..< heads {
                let v = qkv + b * t * 3 * c + 2 * c + h * d, p = kept + (b * heads + h) * t * t
                let y = headOutputs.pointer + b * t * c + h * d
                if top > 0 {
                    sgemm(transposeA: false, transposeB: false, m: top, n: d, k: top,
                          a: p, lda: t, b: v, ldb: 3 * c, beta: 0, c: y, ldc: c)
                }
                sgemm(transposeA: false, transposeB: false, m: rest, n: d, k: t,
                      a: p + top * t, lda: t, b: v, ldb: 3 * c, beta: 0, c: y + top * c, ldc: c)
            }
        }
        return output.forward(headOutputs.pointer, batch: batch * t, training: training)
    }

    public func backward(_ dOut: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        let t = length, c = features, d = headSize, scale = 1 / Float(d).squareRoot(), top = t / 2, rest = t - top
        let dy = output.backward(dOut, batch: batch * t, needsInputGradient: true)!
        let qkv = project.lastOutput, dqkv = projectionGrad.pointer
        let kept = attentionDropout.lastOutput(input: probabilities.pointer)
        // The same causal blocks as forward: products that would only meet the masked quarter
        // (zeros of P and dS, or entries the softmax's backward never reads) are not computed.
        for b in 0 ..< batch {
            for h in 0 ..< heads {
                let v = qkv + b * t * 3 * c + 2 * c + h * d, dyh = dy + b * t * c + h * d
                let pair = (b * heads + h) * t * t, dp = probabilityGrad.pointer + pair, p = kept + pair
                let dv = dqkv + b * t * 3 * c + 2 * c + h * d
                // dP = dy·vᵀ.
                if top > 0 {
                    sgemm(transposeA: false, transposeB: true, m: top, n: top, k: d,
                          a: dyh, lda: c, b: v, ldb: 3 * c, beta: 0, c: dp, ldc: t)
                }
                sgemm(transposeA: false, transposeB: true, m: rest, n: t, k: d,
                      a: dyh + top * c, lda: c, b: v, ldb: 3 * c, beta: 0, c: dp + top * t, ldc: t)
                // dv = dropout(P)ᵀ·dy: the first keys are seen by every row, the last only by the last half.
                if top > 0 {
                    sgemm(transposeA: true, transposeB: false, m: top, n: d, k: t,
                          a: p, lda: t, b: dyh, ldb: c, beta: 0, c: dv, ldc: 3 * c)
                }
                sgemm(transposeA: true, transposeB: false, m: rest, n: d, k: rest,
                      a: p + top * t + top, lda: t, b: dyh + top * c, ldb: c, beta: 0, c: dv + top * 3 * c, ldc: 3 * c)
            }
        }
        let dp = attentionDropout.backward(probabilityGrad.pointer, batch: batch, needsInputGradient: true)!
        for b in 0 ..< batch {
            for h in 0 ..< heads {
                let pair = (b * heads + h) * t * t
                let ds = probabilityGrad.pointer + pair
                Self.softmaxBackward(probabilities: probabilities.pointer + pair, gradient: dp + pair, into: ds, length: t)
                let q = qkv + b * t * 3 * c + h * d, k = q + c
                let dq = dqkv + b * t * 3 * c + h * d, dk = dq + c
                // dq = dS·k/√d.
                if top > 0 {
                    sgemm(transposeA: false, transposeB: false, m: top, n: d, k: top, alpha: scale,
                          a: ds, lda: t, b: k, ldb: 3 * c, beta: 0, c: dq, ldc: 3 * c)
                }
                sgemm(transposeA: false, transposeB: false, m: rest, n: d, k: t, alpha: scale,
                      a: ds + top * t, lda: t, b: k, ldb: 3 * c, beta: 0, c: dq + top * 3 * c, ldc: 3 * c)
                // dk = dSᵀ·q/√d.
                if top > 0 {
                    sgemm(transposeA: true, transposeB: false, m: top, n: d, k: t, alpha: scale,
                          a: ds, lda: t, b: q, ldb: 3 * c, beta: 0, c: dk, ldc: 3 * c)
                }
                sgemm(transposeA: true, transposeB: false, m: rest, n: d, k: rest, alpha: scale,
                      a: ds + top * t + top, lda: t, b: q + top * 3 * c, ldb: 3 * c, beta: 0, c: dk + top * 3 * c, ldc: 3 * c)
            }
        }
        return project.backward(dqkv, batch: batch * t, needsInputGradient: needsInputGradient)
    }

    /// Row i of the t×t scores in place: softmax over j ≤ i, zeros for j > i.
    static func causalSoftmax(_ p: UnsafeMutablePointer<Float>, length t: Int) {
        for i in 0 ..< t {
            let row = p + i * t
            let maximum = VectorReductions.maximum(row, i + 1)
            for j in 0 ... i { row[j] = FastMath.exp(row[j] - maximum) }
            let inverse = 1 / VectorReductions.sum(row, i + 1)
            for j in 0 ... i { row[j] *= inverse }
            for j in i + 1 ..< t { row[j] = 0 }
        }
    }

    /// dS = P ⊙ (dP − rowsum(dP ⊙ P)) for one head (`gradient` and `into` may be the same buffer).
    static func softmaxBackward(probabilities p: UnsafePointer<Float>, gradient dp: UnsafePointer<Float>,
                                into ds: UnsafeMutablePointer<Float>, length t: Int) {
        for i in 0 ..< t {
            let pr = p + i * t, dpr = dp + i * t, dsr = ds + i * t
            let dot = VectorReductions.dot(pr, dpr, i + 1)
            for j in 0 ... i { dsr[j] = pr[j] * (dpr[j] - dot) }
            for j in i + 1 ..< t { dsr[j] = 0 }
        }
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        let t = Double(length), c = Double(features)
        let projections = 2 * t * (3 * c * c + c * c)
        let scores = 2 * 2 * t * t * c * 0.75   // q·kᵀ and P·v over all heads, three causal quarters
        return (projections + scores, projections, projections + 2 * scores)
    }
}
