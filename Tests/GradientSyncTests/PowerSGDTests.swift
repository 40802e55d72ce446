import Collectives
import Foundation
import GradientCodecs
import GradientSync
import InProcessTransport
import NeuralNet
import XCTest

/// PowerSGD against an independent reference computed here in Double: the same Algorithm 1
/// (Vogels et al. 2019) written as plain loops over [[Double]] matrices.
final class PowerSGDTests: XCTestCase {
    /// Three layers: a 6 × 5 weight and its 6 biases, a 4 × 13 weight and its 4 biases, and a
    /// layer of 5 values and no matrix. Buckets (backward order): the third layer alone (no
    /// matrix), then the first two together (two matrices in one P and one Q call). 13 columns:
    /// M̂'s rows are made 8 at a time, then one by one (`PowerSGD.reconstruct`), both checked.
    static let views = [ParameterView(name: "0.weight", offset: 0, shape: [6, 5]), ParameterView(name: "0.bias", offset: 30, shape: [6]),
                        ParameterView(name: "1.weight", offset: 36, shape: [4, 13]), ParameterView(name: "1.bias", offset: 88, shape: [4]),
                        ParameterView(name: "2.bias", offset: 92, shape: [5])]
    static let count = 97
    static let plan = BucketPlan(extents: [0 ..< 36, 36 ..< 92, 92 ..< 97], bucketBytes: 1000, firstBucketBytes: 4)
    static let matrices = [(offset: 0, rows: 6, columns: 5), (offset: 36, rows: 4, columns: 13)]

    /// Rank r's gradient for step s: distinct, deterministic, of full rank.
    static func gradient(rank: Int, step: Int) -> [Float] {
        (0 ..< count).map { i in Float(sin(Double(i * 7 + rank * 13 + step * 29) * 0.37) + 0.1 * Double(rank - step)) }
    }

    typealias Matrix = [[Double]]
    static func matrix(_ g: [Float], _ m: (offset: Int, rows: Int, columns: Int)) -> Matrix {
        (0 ..< m.rows).map { i in (0 ..< m.columns).map { j in Double(g[m.offset + i * m.columns + j]) } }
    }
    static func product(_ a: Matrix, _ b: Matrix) -> Matrix {
        a.map { row in (0 ..< b[0].count).map { j in zip(row, b.map { $0[j] }).reduce(0) { $0 + $1.0 * $1.1 } } }
    }
    static func transpose(_ a: Matrix) -> Matrix { (0 ..< a[0].count).map { j in a.map { $0[j] } } }
    static func mean(_ ms: [Matrix]) -> Matrix {
        ms[0].indices.map { i in ms[0][i].indices.map { j in ms.map { $0[i][j] }.reduce(0, +) / Double(ms.count) } }
    }
    /// Classical Gram–Schmidt on the columns (exact arithmetic agrees with the modified form).
    static func orthonormalized(_ p: Matrix) -> Matrix {
        var columns = transpose(p)
        for c in columns.indices {
            for k in 0 ..< c {
                let dot = zip(columns[c], columns[k]).reduce(0) { $0 + $1.0 * $1.1 }
                columns[c] = zip(columns[c], columns[k]).map { $0 - dot * $1 }
            }
            let norm = columns[c].reduce(0) { $0 + $1 * $1 }.squareRoot()
            columns[c] = columns[c].map { $0 / norm }
        }
        return transpose(columns)
    }

    /// Property: two steps of rank-2 (and rank-1) PowerSGD with error feedback over 2 and 3 ranks give, on
    /// every rank and to float rounding, the reference's M̂ = P̂·Q̄ᵀ for each matrix (P̂ the
    /// orthonormalised mean of Mᵣ·Q, Q̄ the mean of Mᵣᵀ·P̂, Q warm-started from the previous
    /// step), the exact mean for the biases, and the residual Mᵣ − M̂ — and the result is not
    /// the plain average (rank 2 < 4 compresses).
    func testTwoStepsMatchADoublePrecisionReference() throws {
        XCTAssertEqual(Self.plan.buckets, [92 ..< 97, 0 ..< 92])
        for ranks in [2, 3] { try checkAgainstReference(ranks: ranks, r: 2) }
        try checkAgainstReference(ranks: 2, r: 1)
    }

    /// Property: a step whose matrices' gradients are exactly zero (a zero-initialised layer
    /// before its first nonzero gradient) leaves PowerSGD able to compress the next step: at
    /// full rank (r ≥ min(n, m)) that step's M̂ is the exact average up to rounding, on every
    /// rank alike. (A Q left zero by the zero step would make every later M̂ zero.)
    func testAZeroGradientStepLeavesTheNextStepsAverageExact() throws {
        try assertTheStepAfterIsExact { _, _ in 0 }
    }

    /// Property: a step whose matrix gradients are rank one (a single sample's, say) zeroes all
    /// but one column of P — and so of Q — yet the next, full-rank step is again the exact
    /// average at r ≥ min(n, m), on every rank alike: the zeroed columns are drawn afresh.
    /// (Left zero, they kept every later M̂ at rank one: off by the whole rest of the gradient.)
    func testARankDeficientStepLeavesTheNextStepsAverageExact() throws {
        try assertTheStepAfterIsExact { row, column in Float(row + 1) * Float(column + 1) * 0.01 }
    }

    /// Two steps at full rank on two ranks, the first with every matrix value (row, column) from
    /// `first`: the second step's matrices must be the exact average (to 1e-4), the same bits
    /// on both ranks.
    private func assertTheStepAfterIsExact(first: @escaping @Sendable (_ row: Int, _ column: Int) -> Float,
                                           file: StaticString = #filePath, line: UInt = #line) throws {
        let results = try InProcessCluster.run(size: 2) { transport -> [Float] in
            let powerSGD = try PowerSGD(views: Self.views, plan: Self.plan,
                                        settings: PowerSGDSettings(rank: 6, minCompressionRate: 0), transport: transport,
                                        codec: try CodecRegistry.make("none"), errorFeedback: false, segmentBytes: nil, seed: 3)
            let memory = ErrorFeedbackMemory(count: Self.count, sharers: 2)
            var before = Self.gradient(rank: transport.rank, step: 0)
            for m in Self.matrices {
                for row in 0 ..< m.rows { for column in 0 ..< m.columns { before[m.offset + row * m.columns + column] = first(row, column) } }
            }
            try before.withUnsafeMutableBufferPointer { try powerSGD.average($0, memory: memory) }
            var g = Self.gradient(rank: transport.rank, step: 1)
            try g.withUnsafeMutableBufferPointer { try powerSGD.average($0, memory: memory) }
            return g
        }
        XCTAssertEqual(results[0], results[1], "every rank ends bit-identical", file: file, line: line)
        let exact = (0 ..< Self.count).map { i in (Self.gradient(rank: 0, step: 1)[i] + Self.gradient(rank: 1, step: 1)[i]) / 2 }
        for m in Self.matrices {
            let worst = (m.offset ..< m.offset + m.rows * m.columns).map { abs(results[0][$0] - exact[$0]) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-4, "matrix at \(m.offset) (\(m.rows)×\(m.columns))", file: file, line: line)
        }
    }

    func checkAgainstReference(ranks: Int, r: Int) throws {
        let results = try InProcessCluster.run(size: ranks) { transport -> ([[Float]], [UInt8]) in
            let powerSGD = try PowerSGD(views: Self.views, plan: Self.plan,
                                        settings: PowerSGDSettings(rank: r, minCompressionRate: 0), transport: transport,
                                        codec: try CodecRegistry.make("none"), errorFeedback: false, segmentBytes: nil, seed: 3)
            let initialQ = powerSGD.stateBytes()
            let memory = ErrorFeedbackMemory(count: Self.count, sharers: ranks)
            var outputs: [[Float]] = []
            for step in 0 ..< 2 {
                var g = Self.gradient(rank: transport.rank, step: step)
                try g.withUnsafeMutableBufferPointer { try powerSGD.average($0, memory: memory) }
                outputs.append(g)
                outputs.append(Array(memory.values))
            }
            return (outputs, initialQ)
        }
        for rank in 1 ..< ranks {
            XCTAssertEqual(results[0].0[0], results[rank].0[0], "every rank ends bit-identical (np \(ranks))")
            XCTAssertEqual(results[0].0[2], results[rank].0[2], "every rank ends bit-identical (step 2, np \(ranks))")
        }
        // The reference: Q from the state's bytes (the layout line, then Float32 Q's in matrix order).
        let state = results[0].1
        let floats = state[(state.firstIndex(of: 10)! + 1)...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        var q: [Matrix] = [], cursor = 0
        for m in Self.matrices {
            q.append((0 ..< m.columns).map { i in (0 ..< r).map { j in Double(floats[cursor + i * r + j]) } })
            cursor += m.columns * r
        }
        var residuals = (0 ..< ranks).map { _ in [Double](repeating: 0, count: Self.count) }
        for step in 0 ..< 2 {
            let g = (0 ..< ranks).map { Self.gradient(rank: $0, step: step) }
            var expected = [Double](repeating: 0, count: Self.count)
            for (k, m) in Self.matrices.enumerated() {
                let M = (0 ..< ranks).map { rank in Self.matrix(g[rank], m).enumerated().map { i, row in
                    row.enumerated().map { j, v in v + residuals[rank][m.offset + i * m.columns + j] } } }
                let P = Self.orthonormalized(Self.mean(M.map { Self.product($0, q[k]) }))
                q[k] = Self.mean(M.map { Self.product(Self.transpose($0), P) })
                let approximation = Self.product(P, Self.transpose(q[k]))
                for i in 0 ..< m.rows { for j in 0 ..< m.columns {
                    expected[m.offset + i * m.columns + j] = approximation[i][j]
                    for rank in 0 ..< ranks { residuals[rank][m.offset + i * m.columns + j] = M[rank][i][j] - approximation[i][j] }
                } }
            }
            for i in [30 ..< 36, 88 ..< 97].joined() { expected[i] = g.map { Double($0[i]) }.reduce(0, +) / Double(ranks) }
            let got = results[0].0[2 * step], scale = expected.map(abs).max()!
            for i in 0 ..< Self.count {
                XCTAssertEqual(Double(got[i]), expected[i], accuracy: 2e-5 * scale, "np \(ranks), step \(step), value \(i)")
            }
            for rank in 0 ..< ranks {
                let memory = results[rank].0[2 * step + 1]
                for i in 0 ..< Self.count { XCTAssertEqual(Double(memory[i]), residuals[rank][i], accuracy: 2e-5 * scale, "residual, rank \(rank) step \(step) value \(i)") }
            }
            let plain = (0 ..< Self.count).map { i in g.map { Double($0[i]) }.reduce(0, +) / Double(ranks) }
            XCTAssertGreaterThan(zip(plain, expected).map { abs($0 - $1) }.max()!, 1e-3 * scale, "rank \(r) is a real compression")
        }
    }
}

/// The error-feedback memory's checkpoint section.
final class ErrorFeedbackMemoryTests: XCTestCase {
    /// Property: a memory re-sharded from a checkpoint's sum S whose writer's entries were
    /// shared by d ranks (n for the flat ring, h hosts for the hierarchical all-reduce) holds
    /// S / d in exactly the entries its all-reduce uses — for the hierarchical all-reduce the
    /// chunk each bucket's reduce-scatter gives the rank — and zero elsewhere. The next average
    /// receives it whole: the flat ring sums n′ copies and divides by n′; the cross-host ring
    /// sums the h′ owners' copies and divides by h′. That is S / d, what the interrupted run owed.
    func testReshardingFillsOnlyTheEntriesTheAllReduceUses() throws {
        let buckets = [40 ..< 100, 0 ..< 40], count = 100, hosts = 2
        let sum = (0 ..< count).map { Float($0 % 7) - 3 }
        // Two hosts of two ranks: a rank's owned chunks depend on its local rank only, so the two
        // ranks of one host stand for the world (the other host's pair holds the same memories).
        let plan = BucketPlan(extents: [0 ..< 40, 40 ..< 100], bucketBytes: 4)
        XCTAssertEqual(plan.buckets, buckets)
        let restored = try InProcessCluster.run(size: 2) { local -> [Float] in
            let hierarchical = HierarchicalAllReduce(world: local, split: HostSplit(local: local, cross: local, hosts: hosts))
            let memory = ErrorFeedbackMemory(count: count, plan: plan, hierarchical: hierarchical)
            XCTAssertNil(memory.restore(own: nil, sum: sum, writtenBy: 3, writerSharers: 3, worldSize: 4, rank: local.rank, step: 8))
            // A rank's own file of the same layout (values in its live entries only) is loaded.
            var own = [Float](repeating: 0, count: count)
            for range in memory.live { for i in range { own[i] = Float(i % 5) + 1 } }
            let reloaded = ErrorFeedbackMemory(count: count, plan: plan, hierarchical: hierarchical)
            XCTAssertNil(reloaded.restore(own: own, sum: sum, writtenBy: 4, writerSharers: hosts, worldSize: 4, rank: local.rank, step: 8))
            XCTAssertEqual(Array(reloaded.values), own, "its own file, as written")
            // The same world and hosts, but the ranks placed otherwise on their hosts: the file was
            // written by the rank in the other local place, whose live entries are this one's dead
            // ones. It is not read (its values would land where nothing uses them, and this
            // rank's entries would get 0); the sum's share is, with a warning.
            var swapped = [Float](repeating: 0, count: count)
            var start = 0
            for range in memory.live + [count ..< count] {
                for i in start ..< range.lowerBound { swapped[i] = 7 }
                start = range.upperBound
            }
            let moved = ErrorFeedbackMemory(count: count, plan: plan, hierarchical: hierarchical)
            let warning = moved.restore(own: swapped, sum: sum, writtenBy: 4, writerSharers: hosts, worldSize: 4, rank: local.rank, step: 8)
            XCTAssertTrue(warning?.contains("written under another layout of the hierarchical all-reduce") ?? false, "\(warning ?? "no warning")")
            for range in memory.live { for i in range { XCTAssertEqual(moved.values[i], sum[i] / Float(hosts), "value \(i)") } }
            XCTAssertEqual(moved.values.reduce(0) { $0 + abs($1) }, memory.live.reduce(0) { total, range in
                total + range.reduce(0) { $0 + abs(sum[$1] / Float(hosts)) } }, accuracy: 1e-4, "nothing outside the live entries")
            return Array(memory.values)
        }
        // Each entry is live on one local rank per host; the cross-host ring averages the h
        // owners' copies: the next average receives that rank's value, S / 3 from a flat 3-rank writer.
        for i in 0 ..< count {
            XCTAssertEqual(restored[0][i] + restored[1][i], sum[i] / 3, accuracy: 1e-6, "value \(i)")
        }
        // The flat ring, 4 ranks before, 2 now: each rank's share is S/4, so the next average,
        // (S/4 + S/4) / 2, receives S/4 as the 4-rank run would have.
        let flat = ErrorFeedbackMemory(count: count, sharers: 2)
        XCTAssertNil(flat.restore(own: nil, sum: sum, writtenBy: 4, worldSize: 2, rank: 0, step: 8))
        XCTAssertEqual(Array(flat.values), sum.map { $0 / 4 }, "the flat ring: every entry takes an equal share of what is owed")
        let grown = ErrorFeedbackMemory(count: count, sharers: 4)
        XCTAssertNil(grown.restore(own: nil, sum: sum, writtenBy: 2, worldSize: 4, rank: 0, step: 8))
        XCTAssertEqual(Array(grown.values), sum.map { $0 / 2 }, "from 2 ranks to 4: (4 · S/2) / 4 = S/2")
        // A hierarchical writer (4 ranks on 2 hosts: each entry shared by 2) owed S / 2; on the
        // flat ring of the same 4 ranks every entry takes S / 2 — and its own file, of the other
        // layout's space, is not read.
        let fromHosts = ErrorFeedbackMemory(count: count, sharers: 4)
        XCTAssertNil(fromHosts.restore(own: [Float](repeating: 9, count: count), sum: sum, writtenBy: 4, writerSharers: 2, worldSize: 4, rank: 0, step: 8))
        XCTAssertEqual(Array(fromHosts.values), sum.map { $0 / 2 }, "a hierarchical writer's S owes S / hosts")
        // A checkpoint without the writer's sharers (written before they were kept) keeps the
        // rule of its time: S · (n′/n) / sharers, and its own file on the same world.
        let unknown = ErrorFeedbackMemory(count: count, sharers: 2)
        XCTAssertNil(unknown.restore(own: nil, sum: sum, writtenBy: 4, writerSharers: nil, worldSize: 2, rank: 0, step: 8))
        XCTAssertEqual(Array(unknown.values), sum.map { $0 / 4 })
        let sameWorld = ErrorFeedbackMemory(count: count, sharers: 2)
        XCTAssertNil(sameWorld.restore(own: [Float](repeating: 9, count: count), sum: sum, writtenBy: 4, writerSharers: nil, worldSize: 4, rank: 0, step: 8))
        XCTAssertEqual(Array(sameWorld.values), [Float](repeating: 9, count: count))
    }
}
