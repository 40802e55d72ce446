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
///    rank); a bucket's P's are averaged in **one** call of our ring over their concatenation;
/// 3. P is orthonormalised column by column (Gram–Schmidt, in Double) — the same on every rank,
///    since its input is;
/// 4. Q = Mᵀ·P; a bucket's Q's are averaged in one ring call;
/// 5. the averaged gradient is M̂ = P·Qᵀ = P·Pᵀ·M̄ (the projection of the average gradient onto
///    span P), the residual becomes M − M̂, and Q is kept for the next step.
/// Vectors and small matrices go through the ordinary ring with the configured codec (and
/// `comm.error_feedback`). With r ≥ min(n, m) the projection is the identity and M̂ is the
/// exact average up to rounding. Products use OpenBLAS, but for M̂ (`reconstruct`).
///
/// **Per bucket**, as DDP's hook: each bucket's matrices are one P call and one Q call of the
/// ring, so with `comm.overlap` a bucket is compressed and averaged while backward computes
/// the layers below it. Every matrix lies in one bucket (buckets are whole layers).
///
/// **State.** The Q's are PowerSGD's own state, identical on every rank: the checkpoint stores
/// them once (`stateBytes`), and a run resumed with other PowerSGD settings starts from fresh
/// Q's and says so. The residuals M − M̂ live in the run's `ErrorFeedbackMemory` at the
/// matrices' own offsets, beside the vectors' codec errors. A skipped (non-finite) step
/// poisons the Q's it computed: `discardStep` puts back the Q's of before the step.
///
/// Every rank ends bit-identical: P and Q leave the ring identical everywhere, and M̂ is computed
/// from them alone, by our own loop in a fixed order (`reconstruct`) — not by OpenBLAS, whose
/// kernels, and their order of addition, each host picks by its CPU.
public final class PowerSGD: BucketAverager {
    struct Matrix {
        let name: String
        let offset: Int, rows: Int, columns: Int
        /// min(rank, rows, columns), as DDP clamps it: more columns than that would only
        /// orthonormalise rounding noise into spurious directions.
        let rank: Int
        /// Where this matrix's P and Q lie in the concatenated buffers.
        let p: Int, q: Int
        var size: Int { rows * columns }
    }

    public let settings: PowerSGDSettings
    let matrices: [Matrix]
    /// Per bucket of the plan: its matrices (indices into `matrices`) and the flat ranges the
    /// ordinary ring averages (vectors, small matrices, alignment padding).
    let bucketMatrices: [Range<Int>]
    let bucketRest: [[Range<Int>]]
    let buckets: [Range<Int>]
    public var qCount: Int { q.count }
    /// Every P; every Q (the state), and the Q's of before this step (restored on a skipped step).
    private let p: UnsafeMutableBufferPointer<Float>
    let q: UnsafeMutableBufferPointer<Float>
    private let previousQ: UnsafeMutableBufferPointer<Float>
    /// One matrix's Q transposed, [rank × columns] (scratch of `reconstruct`).
    private let qTransposed: UnsafeMutableBufferPointer<Float>
    /// One bucket's rest values and their error-feedback memory, gathered (scratch).
    private let restValues: UnsafeMutableBufferPointer<Float>, restMemory: UnsafeMutableBufferPointer<Float>
    private let pqRing: RingAllReduce, restRing: RingAllReduce
    /// `comm.error_feedback` for the rest (with a lossy codec).
    private let restErrorFeedback: Bool
    private let seed: UInt64
    /// Bytes sent and codec seconds of the last call.
    public private(set) var lastBytesSent = 0
    public private(set) var lastCodecSeconds = 0.0
    var lastBytesSentIfKnown: Int? { lastBytesSent }

    /// The vectors' codec (the synchronizer reseeds its stochastic rounding per step).
    var restCodec: GradientCodec { restRing.codec }
    var name: String { "PowerSGD rank \(settings.rank) (\(matrices.count) matrices; the rest: ring (\(restRing.codec.name)))" }
    /// Matrices compressed, and values they hold.
    public var matrixCount: Int { matrices.count }
    public var matrixValues: Int { matrices.reduce(0) { $0 + $1.size } }

    /// The plan for a model: every view of two or more dimensions is a matrix of shape[0] rows
    /// (a Linear's out × in, a Conv2d's out × in·k·k, an embedding's tokens × width) — by its
    /// shape, not its name, so bias-free projections and embeddings compress too, as DDP's
    /// PowerSGD hook treats every tensor of ≥ 2 dimensions; cut by `plan`'s buckets. Throws
    /// when no matrix is worth compressing.
    public init(views: [ParameterView], plan: BucketPlan, settings: PowerSGDSettings, transport: Transport,
                codec: GradientCodec, errorFeedback: Bool, segmentBytes: Int?, seed: UInt64) throws {
        self.settings = settings
        let rank = settings.rank
        var matrices: [Matrix] = [], p = 0, q = 0, largest = "none"
        for view in views.sorted(by: { $0.offset < $1.offset }) where view.shape.count >= 2 {
            let rows = view.shape[0], columns = view.count / max(rows, 1)
            guard rows > 1 else { continue }
            let rate = Double(rows * columns) / Double((rows + columns) * rank)
            largest = "\(view.name) \(rows)×\(columns): \(String(format: "%.2f", rate))"
            guard columns > 1, rate >= settings.minCompressionRate else { continue }
            let r = min(rank, rows, columns)
            matrices.append(Matrix(name: view.name, offset: view.offset, rows: rows, columns: columns, rank: r, p: p, q: q))
            p += rows * r
            q += columns * r
        }
        guard !matrices.isEmpty else {
            throw SyncSetupError("comm.compressor: powersgd: no weight matrix of this model compresses by comm.powersgd.min_compression_rate \(settings.minCompressionRate) at rank \(rank) (n·m / ((n+m)·r); last: \(largest)); lower the rank or the rate, or use a codec")
        }
        // Each bucket's matrices and rest: buckets are whole layers, so a matrix lies in one.
        var bucketMatrices: [Range<Int>] = [], bucketRest: [[Range<Int>]] = []
        for bucket in plan.buckets {
            let inside = matrices.indices.filter { bucket.contains(matrices[$0].offset) }
            precondition(inside.allSatisfy { matrices[$0].offset + matrices[$0].size <= bucket.upperBound }, "a matrix spans two buckets")
            bucketMatrices.append((inside.first ?? 0) ..< (inside.last.map { $0 + 1 } ?? 0))
            var rest: [Range<Int>] = [], cursor = bucket.lowerBound
            for m in inside.map({ matrices[$0] }) {
                if m.offset > cursor { rest.append(cursor ..< m.offset) }
                cursor = m.offset + m.size
            }
            if cursor < bucket.upperBound { rest.append(cursor ..< bucket.upperBound) }
            bucketRest.append(rest)
        }
        self.matrices = matrices
        self.bucketMatrices = bucketMatrices
        self.bucketRest = bucketRest
        buckets = plan.buckets
        let restScratch = bucketRest.map { $0.reduce(0) { $0 + $1.count } }.max() ?? 0
        self.p = .allocate(capacity: p)
        self.p.initialize(repeating: 0)
        self.q = .allocate(capacity: q)
        previousQ = .allocate(capacity: q)
        qTransposed = .allocate(capacity: matrices.map { $0.columns * $0.rank }.max() ?? 0)
        restValues = .allocate(capacity: restScratch)
        restMemory = .allocate(capacity: restScratch)
        restValues.initialize(repeating: 0)
        restMemory.initialize(repeating: 0)
        pqRing = RingAllReduce(transport: transport, segmentBytes: segmentBytes)
        restRing = RingAllReduce(transport: transport, codec: codec, segmentBytes: segmentBytes)
        restErrorFeedback = errorFeedback && !codec.isIdentity
        self.seed = seed
        restart()
    }

    deinit { [p, q, previousQ, qTransposed, restValues, restMemory].forEach { $0.deallocate() } }

    /// Fresh Q's: uniform in [−1, 1), from the run's seed (the same on every rank).
    func restart() {
        Self.draw(q.baseAddress!, count: q.count, seed: seed, stream: 0x9_05E)
        _ = previousQ.update(fromContentsOf: q)
    }

    /// `count` values uniform in [−1, 1) from (seed, stream): the same on every rank.
    private static func draw(_ values: UnsafeMutablePointer<Float>, count: Int, seed: UInt64, stream: UInt64) {
        var generator = SeededGenerator(seed: seed, stream: stream)
        for i in 0 ..< count { values[i] = Float(Int64(bitPattern: generator.next()) >> 40) * 0x1p-23 }
    }

    /// One bucket: its matrices compressed to rank r and averaged, its rest averaged by the
    /// ring. `memory`'s entries at the matrices' offsets are their residuals (with
    /// `comm.powersgd.error_feedback`), at the rest's offsets the codec's errors.
    func average(bucket b: Int, _ range: Range<Int>, of gradients: UnsafeMutableBufferPointer<Float>,
                 memory: ErrorFeedbackMemory?) throws {
        lastBytesSent = 0
        lastCodecSeconds = 0
        let g = gradients.baseAddress!, ps = p.baseAddress!, qs = q.baseAddress!
        let residual = settings.errorFeedback ? memory?.values.baseAddress : nil
        let mine = bucketMatrices[b]
        if let first = mine.first, let last = mine.last {
            let pRange = matrices[first].p ..< matrices[last].p + matrices[last].rows * matrices[last].rank
            let qRange = matrices[first].q ..< matrices[last].q + matrices[last].columns * matrices[last].rank
            (previousQ.baseAddress! + qRange.lowerBound).update(from: qs + qRange.lowerBound, count: qRange.count)
            // 1–2. M = g + residual; P = M·Q; the bucket's P's averaged in one ring call.
            for m in matrices[mine] {
                let M = g + m.offset
                if let residual { FloatKernels.add(residual + m.offset, into: M, count: m.size) }
                sgemm(transposeA: false, transposeB: false, m: m.rows, n: m.rank, k: m.columns, a: M, lda: m.columns,
                      b: qs + m.q, ldb: m.rank, beta: 0, c: ps + m.p, ldc: m.rank)
            }
            try pqRing.average(UnsafeMutableBufferPointer(rebasing: p[pRange]))
            lastBytesSent += pqRing.lastBytesSent
            // 3–4. Orthonormalise P; Q = Mᵀ·P; the bucket's Q's averaged in one ring call.
            for m in matrices[mine] {
                Self.orthonormalize(ps + m.p, rows: m.rows, columns: m.rank)
                sgemm(transposeA: true, transposeB: false, m: m.columns, n: m.rank, k: m.rows, a: g + m.offset, lda: m.columns,
                      b: ps + m.p, ldb: m.rank, beta: 0, c: qs + m.q, ldc: m.rank)
            }
            try pqRing.average(UnsafeMutableBufferPointer(rebasing: q[qRange]))
            lastBytesSent += pqRing.lastBytesSent
            // 5. residual = M − M̂, gradient = M̂ = P·Qᵀ.
            for m in matrices[mine] {
                let M = g + m.offset
                if let residual { (residual + m.offset).update(from: M, count: m.size) }
                reconstruct(m, p: ps + m.p, q: qs + m.q, into: M)
                if let residual {
                    let r = residual + m.offset
                    for i in 0 ..< m.size { r[i] -= M[i] }
                }
            }
            for k in mine { redrawZeroColumns(k) }
        }
        try averageRest(bucket: b, g, memory: restErrorFeedback ? memory : nil)
    }

    /// M̂ = P·Qᵀ for one matrix: M̂[i][j] = P[i][0]·Q[j][0], then + P[i][k]·Q[j][k] for k = 1 …
    /// rank − 1 in order, each one fused multiply-add — the same operations in the same order
    /// on every host, in 8 lanes or 1 (the rank's few terms a value make it cheap: rows ×
    /// columns × rank multiply-adds).
    private func reconstruct(_ m: Matrix, p: UnsafePointer<Float>, q: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let (rows, columns, rank) = (m.rows, m.columns, m.rank), qt = qTransposed.baseAddress!
        for j in 0 ..< columns {
            for k in 0 ..< rank { qt[k * columns + j] = q[j * rank + k] }
        }
        for i in 0 ..< rows {
            let row = out + i * columns, coefficients = p + i * rank
            var j = 0
            while j + 8 <= columns {
                func lanes(_ at: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(at).loadUnaligned(as: SIMD8<Float>.self) }
                var sum = lanes(qt + j) * coefficients[0]
                for k in 1 ..< rank { sum.addProduct(SIMD8(repeating: coefficients[k]), lanes(qt + k * columns + j)) }
                UnsafeMutableRawPointer(row + j).storeBytes(of: sum, as: SIMD8<Float>.self)
                j += 8
            }
            while j < columns {
                var sum = qt[j] * coefficients[0]
                for k in 1 ..< rank { sum.addProduct(coefficients[k], qt[k * columns + j]) }
                row[j] = sum
                j += 1
            }
        }
    }

    /// A column of Q that came out exactly zero stays zero for good with a warm start: the next
    /// P = M·Q is zero there, so Q = Mᵀ·P is too. A whole Q is zero when the matrix's gradient
    /// was (a zero-initialised layer before its first nonzero gradient, a layer cut off above
    /// it); single columns when P was rank deficient — the gradient's rank below r at one step
    /// (one sample, a rank-one gradient), which `orthonormalize` answers by zeroing the
    /// dependent columns. Either way the matrix would be averaged at a lower rank for the rest
    /// of the run (at r ≥ min(n, m) no longer exactly) while its residual grew. Each zero
    /// column is drawn afresh from a stream of its own (matrix and column): a pure function of
    /// Q, which is the same on every rank and is what a checkpoint keeps, so ranks agree and a
    /// resumed run draws what an uninterrupted one does. Where the gradient stays deficient,
    /// the new column's P is again dependent to rounding and `orthonormalize` zeroes it again
    /// (which needs its Gram–Schmidt in Double, twice: in float32 the rounding of a dependent
    /// column reached 2.6e-5 of its length, past the 1e-5 threshold, and the normalised noise
    /// cost full-rank PowerSGD its exactness, `TrainerTests.testPowerSGD`: 2.4e-3 against 1.5e-4).
    private func redrawZeroColumns(_ index: Int) {
        let m = matrices[index], qs = q.baseAddress! + m.q
        for column in 0 ..< m.rank where (0 ..< m.columns).allSatisfy({ qs[$0 * m.rank + column] == 0 }) {
            var fresh = [Float](repeating: 0, count: m.columns)
            Self.draw(&fresh, count: m.columns, seed: seed, stream: 0x9_05E_0000 &+ UInt64(index) &* 4096 &+ UInt64(column) &+ 1 << 40)
            for row in 0 ..< m.columns { qs[row * m.rank + column] = fresh[row] }
        }
    }

    /// Every bucket of the plan in turn: the whole gradient (`bench allreduce --compressor powersgd`).
    public func average(_ gradients: UnsafeMutableBufferPointer<Float>, memory: ErrorFeedbackMemory?) throws {
        var sent = 0, codec = 0.0
        for (b, range) in buckets.enumerated() {
            try average(bucket: b, range, of: gradients, memory: memory)
            (sent, codec) = (sent + lastBytesSent, codec + lastCodecSeconds)
        }
        (lastBytesSent, lastCodecSeconds) = (sent, codec)
    }

    /// The bucket's rest: gathered (with its error-feedback memory), averaged by the ring with
    /// the configured codec, scattered back.
    private func averageRest(bucket b: Int, _ g: UnsafeMutablePointer<Float>, memory: ErrorFeedbackMemory?) throws {
        let rest = bucketRest[b]
        let total = rest.reduce(0) { $0 + $1.count }
        guard total > 0 else { return }
        let values = UnsafeMutableBufferPointer(rebasing: restValues[0 ..< total])
        let errors = memory.map { _ in UnsafeMutableBufferPointer(rebasing: restMemory[0 ..< total]) }
        var k = 0
        for range in rest {
            (values.baseAddress! + k).update(from: g + range.lowerBound, count: range.count)
            if let errors, let memory { (errors.baseAddress! + k).update(from: memory.values.baseAddress! + range.lowerBound, count: range.count) }
            k += range.count
        }
        try restRing.average(values, residual: errors)
        lastBytesSent += restRing.lastBytesSent
        lastCodecSeconds += restRing.lastCodecSeconds
        k = 0
        for range in rest {
            (g + range.lowerBound).update(from: values.baseAddress! + k, count: range.count)
            if let errors, let memory { (memory.values.baseAddress! + range.lowerBound).update(from: errors.baseAddress! + k, count: range.count) }
            k += range.count
        }
    }

    /// A skipped step: the Q's it computed from a non-finite gradient are put back.
    func discardStep() { _ = q.update(fromContentsOf: previousQ) }

    // MARK: - Checkpointed state

    /// What the Q's are the Q's of: rank and every compressed matrix (a resume compares it).
    var layout: String {
        "powersgd rank \(settings.rank): " + matrices.map { "\($0.name) \($0.rows)×\($0.columns)" }.joined(separator: ", ")
    }

    /// The state for the checkpoint: the layout line, a newline, every Q (Float32).
    public func stateBytes() -> [UInt8] {
        Array(layout.utf8) + [10] + Array(UnsafeRawBufferPointer(q))
    }

    /// Restores the Q's from `bytes` (a checkpoint's), or — when there are none, or they were
    /// written with other settings — restarts them and says so.
    public func restore(stateBytes bytes: [UInt8]?) -> String? {
        guard let bytes, let newline = bytes.firstIndex(of: 10) else {
            restart()
            return "the checkpoint holds no PowerSGD state; PowerSGD restarts from fresh Q's (\(layout))"
        }
        let written = String(decoding: bytes[..<newline], as: UTF8.self)
        guard written == layout, bytes.count - newline - 1 == qCount * 4 else {
            restart()
            return "the checkpoint's PowerSGD state is for \(written), this run's for \(layout): PowerSGD restarts from fresh Q's"
        }
        _ = bytes[(newline + 1)...].withUnsafeBytes { memcpy(q.baseAddress!, $0.baseAddress!, $0.count) }
        // A checkpoint written before zero columns were drawn afresh may hold some.
        for index in matrices.indices { redrawZeroColumns(index) }
        _ = previousQ.update(fromContentsOf: q)
        return nil
    }

    /// Gram–Schmidt on the columns of a row-major rows × columns matrix, in Double throughout
    /// and with every column projected twice ("twice is enough": Giraud, Langou and Rozložník
    /// 2005), so that what is left of a dependent column is the rounding of P itself (about
    /// 1e-6 of its length for a float32 M·Q), not that plus the rounding of each float32
    /// projection (measured up to 2.6e-5, past the threshold below). A column that lies (to
    /// 1e-5 of its length) in the span of the earlier ones — P is rank deficient when the
    /// gradient's rank is below r, e.g. a layer's gradient over a small batch — is set to zero:
    /// normalising what is left would turn rounding noise into a spurious direction, and P·Pᵀ
    /// would no longer be a projection.
    static func orthonormalize(_ a: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        var u = [Double](repeating: 0, count: rows * columns)   // column-major: column c at c·rows
        u.withUnsafeMutableBufferPointer { u in
            for c in 0 ..< columns {
                let v = u.baseAddress! + c * rows
                for i in 0 ..< rows { v[i] = Double(a[i * columns + c]) }
                var original = 0.0
                for i in 0 ..< rows { original += v[i] * v[i] }
                for _ in 0 ..< 2 {
                    for j in 0 ..< c {
                        let w = u.baseAddress! + j * rows
                        var dot = 0.0
                        for i in 0 ..< rows { dot += v[i] * w[i] }
                        for i in 0 ..< rows { v[i] -= dot * w[i] }
                    }
                }
                var norm = 0.0
                for i in 0 ..< rows { norm += v[i] * v[i] }
                let inverse = norm > 1e-10 * original && norm > 0 ? 1 / norm.squareRoot() : 0
                for i in 0 ..< rows { v[i] *= inverse; a[i * columns + c] = Float(v[i]) }
            }
        }
    }
}
