import Collectives
import Foundation
import GradientCodecs
import NeuralNet

/// PowerSGD: a rank-r all-reduce of every large gradient matrix (Vogels, Karimireddy & Jaggi,
/// "PowerSGD: Practical Low-Rank Gradient Compression for Distributed Optimization", NeurIPS
/// 2019, Algorithm 1; semantics of PyTorch DDP's `powerSGD_hook`).
///
/// For each weight matrix M (n × m: a Linear weight out × in, a Conv2d weight out × in·k·k)
/// with (n + m)·r small enough — n·m / ((n + m)·r) ≥ `minCompressionRate`, DDP's rule — one
/// step is:
/// 1. M ← gradient + residual (error feedback, on by default as in DDP);
/// 2. P = M·Q with the previous step's Q (warm start; the first Q is seeded, the same on every
///    rank); all P's are averaged in **one** call of our ring over their concatenation;
/// 3. P is orthonormalised column by column (Gram–Schmidt, in Double) — the same on every rank,
///    since its input is;
/// 4. Q = Mᵀ·P; all Q's are averaged in one ring call;
/// 5. the averaged gradient is M̂ = P·Qᵀ = P·Pᵀ·M̄ (the projection of the average gradient onto
///    span P), the residual becomes M − M̂, and Q is kept for the next step.
/// Vectors and small matrices go through the ordinary ring with the configured codec (and its
/// own error feedback). With r ≥ min(n, m) the projection is the identity and M̂ is the exact
/// average up to rounding. Products use OpenBLAS.
///
/// Every rank ends bit-identical: P and Q leave the ring identical everywhere, and M̂ is computed
/// from them alone. The state — Q's and the residuals — lives in one buffer the checkpoint saves.
public final class PowerSGD {
    struct Matrix {
        let offset: Int, rows: Int, columns: Int
        /// min(rank, rows, columns), as DDP clamps it: more columns than that would only
        /// orthonormalise rounding noise into spurious directions.
        let rank: Int
        /// Where this matrix's P and Q lie in the concatenated buffers.
        let p: Int, q: Int
    }

    public let rank: Int
    let matrices: [Matrix]
    /// Flat ranges averaged by the ordinary ring (vectors, small matrices, alignment padding).
    let rest: [Range<Int>]
    public let pCount: Int, qCount: Int, restCount: Int
    private var p: [Float]
    private var restValues: [Float]
    private let pqRing: RingAllReduce, restRing: RingAllReduce
    /// Bytes sent and codec seconds of the last step.
    public private(set) var lastBytesSent = 0
    public private(set) var lastCodecSeconds = 0.0

    /// The vectors' codec (the trainer reseeds its stochastic rounding per step).
    var restCodec: GradientCodec { restRing.codec }

    /// Floats of state beyond the gradient-sized residual: every Q, then the rest's EF memory.
    public var stateCount: Int { qCount + restCount }
    /// Matrices compressed, and values they hold.
    public var matrixCount: Int { matrices.count }
    public var matrixValues: Int { matrices.reduce(0) { $0 + $1.rows * $1.columns } }

    /// The plan for a model: its parameter views (weights named "i.weight", with "i.bias"
    /// giving the number of rows). Throws when no matrix is worth compressing.
    public init(views: [ParameterView], count: Int, rank: Int, minCompressionRate: Double, transport: Transport,
         codec: GradientCodec, segmentBytes: Int?) throws {
        self.rank = rank
        let bias = Dictionary(views.filter { $0.name.hasSuffix(".bias") }.map { ($0.name.dropLast(5), $0.count) }, uniquingKeysWith: { a, _ in a })
        var matrices: [Matrix] = [], p = 0, q = 0, largest = "none"
        for view in views where view.name.hasSuffix(".weight") {
            guard let rows = bias[view.name.dropLast(7)], rows > 1, view.count % rows == 0 else { continue }
            let columns = view.count / rows
            let rate = Double(rows * columns) / Double((rows + columns) * rank)
            largest = "\(view.name) \(rows)×\(columns): \(String(format: "%.2f", rate))"
            guard columns > 1, rate >= minCompressionRate else { continue }
            let r = min(rank, rows, columns)
            matrices.append(Matrix(offset: view.offset, rows: rows, columns: columns, rank: r, p: p, q: q))
            p += rows * r
            q += columns * r
        }
        guard !matrices.isEmpty else {
            throw ConfigError("comm.compressor: powersgd: no weight matrix of this model compresses by comm.powersgd.min_compression_rate \(minCompressionRate) at rank \(rank) (n·m / ((n+m)·r); last: \(largest)); lower the rank or the rate, or use a codec")
        }
        var rest: [Range<Int>] = [], cursor = 0
        for m in matrices {
            if m.offset > cursor { rest.append(cursor ..< m.offset) }
            cursor = m.offset + m.rows * m.columns
        }
        if cursor < count { rest.append(cursor ..< count) }
        self.matrices = matrices
        self.rest = rest
        (pCount, qCount) = (p, q)
        restCount = rest.reduce(0) { $0 + $1.count }
        self.p = [Float](repeating: 0, count: p)
        restValues = [Float](repeating: 0, count: restCount)
        pqRing = RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        restRing = RingAllReduce(transport: transport, codec: codec, segmentBytes: segmentBytes)
    }

    /// Seeds every Q (the same on every rank): uniform in [−1, 1).
    public static func initialize(_ q: UnsafeMutableBufferPointer<Float>, seed: UInt64) {
        var generator = SeededGenerator(seed: seed, stream: 0x9_05E)
        for i in q.indices { q[i] = Float(Int64(bitPattern: generator.next()) >> 40) * 0x1p-23 }
    }

    /// One step: `gradients` in, their PowerSGD average out. `residual` (gradient-sized) is the
    /// matrices' EF memory, or nil without error feedback; `state` is Q's then the rest's EF.
    public func average(_ gradients: UnsafeMutableBufferPointer<Float>, residual: UnsafeMutableBufferPointer<Float>?,
                 state: UnsafeMutableBufferPointer<Float>, restErrorFeedback: Bool) throws {
        lastBytesSent = 0
        lastCodecSeconds = 0
        let g = gradients.baseAddress!, qs = state.baseAddress!
        // 1–2. M = g + residual; P = M·Q.
        try p.withUnsafeMutableBufferPointer { pBuffer in
            let ps = pBuffer.baseAddress!
            for m in matrices {
                let M = g + m.offset
                if let residual { FloatKernels.add(residual.baseAddress! + m.offset, into: M, count: m.rows * m.columns) }
                sgemm(transposeA: false, transposeB: false, m: m.rows, n: m.rank, k: m.columns, a: M, lda: m.columns,
                      b: qs + m.q, ldb: m.rank, beta: 0, c: ps + m.p, ldc: m.rank)
            }
            try pqRing.average(pBuffer)
            lastBytesSent += pqRing.lastBytesSent
            // 3–4. Orthonormalise P; Q = Mᵀ·P.
            for m in matrices {
                Self.orthonormalize(ps + m.p, rows: m.rows, columns: m.rank)
                sgemm(transposeA: true, transposeB: false, m: m.columns, n: m.rank, k: m.rows, a: g + m.offset, lda: m.columns,
                      b: ps + m.p, ldb: m.rank, beta: 0, c: qs + m.q, ldc: m.rank)
            }
            try pqRing.average(UnsafeMutableBufferPointer(start: qs, count: qCount))
            lastBytesSent += pqRing.lastBytesSent
            // 5. residual = M − M̂, gradient = M̂ = P·Qᵀ.
            for m in matrices {
                let M = g + m.offset, size = m.rows * m.columns
                if let residual { (residual.baseAddress! + m.offset).update(from: M, count: size) }
                sgemm(transposeA: false, transposeB: true, m: m.rows, n: m.columns, k: m.rank, a: ps + m.p, lda: m.rank,
                      b: qs + m.q, ldb: m.rank, beta: 0, c: M, ldc: m.columns)
                if let residual {
                    let r = residual.baseAddress! + m.offset
                    for i in 0 ..< size { r[i] -= M[i] }
                }
            }
        }
        // The rest: gathered, averaged by the ring with the configured codec, scattered back.
        guard restCount > 0 else { return }
        try restValues.withUnsafeMutableBufferPointer { values in
            var k = 0
            for range in rest { (values.baseAddress! + k).update(from: g + range.lowerBound, count: range.count); k += range.count }
            let memory = restErrorFeedback && !restRing.codec.isIdentity ? UnsafeMutableBufferPointer(start: qs + qCount, count: restCount) : nil
            try restRing.average(values, residual: memory)
            lastBytesSent += restRing.lastBytesSent
            lastCodecSeconds += restRing.lastCodecSeconds
            k = 0
            for range in rest { (g + range.lowerBound).update(from: values.baseAddress! + k, count: range.count); k += range.count }
        }
    }

    /// Modified Gram–Schmidt on the columns of a row-major rows × columns matrix, in Double.
    /// A column that lies (to 1e-5 of its length) in the span of the earlier ones — P is rank
    /// deficient when the gradient's rank is below r, e.g. a layer's gradient over a small batch
    /// — is set to zero: normalising what is left would turn rounding noise into a spurious
    /// direction, and P·Pᵀ would no longer be a projection.
    static func orthonormalize(_ a: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        for c in 0 ..< columns {
            var original = 0.0
            for i in 0 ..< rows { original += Double(a[i * columns + c]) * Double(a[i * columns + c]) }
            for j in 0 ..< c {
                var dot = 0.0
                for i in 0 ..< rows { dot += Double(a[i * columns + c]) * Double(a[i * columns + j]) }
                for i in 0 ..< rows { a[i * columns + c] = Float(Double(a[i * columns + c]) - dot * Double(a[i * columns + j])) }
            }
            var norm = 0.0
            for i in 0 ..< rows { norm += Double(a[i * columns + c]) * Double(a[i * columns + c]) }
            let inverse = norm > 1e-10 * original && norm > 0 ? 1 / norm.squareRoot() : 0
            for i in 0 ..< rows { a[i * columns + c] = Float(Double(a[i * columns + c]) * inverse) }
        }
    }
}
