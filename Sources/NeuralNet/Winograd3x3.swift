/// 3×3, stride 1, padding 1 convolution by Winograd's minimal filtering F(2×2, 3×3)
/// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
///
/// Why: im2col + sgemm spends 9 multiply-adds per output per input channel; F(2×2, 3×3)
/// computes each 2×2 output tile from a 4×4 input tile with 16 instead of 36, so the three
/// products of a training step (forward, weight gradient, input gradient) do 2.25× less
/// arithmetic. The transforms are additions and halvings, so the result differs from the
/// direct sum only by float rounding (tested against im2col to 1e-5).
///
/// With the paper's matrices Bᵀ (4×4), G (4×3) and Aᵀ (2×4), per output channel o, input
/// channel c and tile t:
///
///     U[ξ][o][c] = (G g[o,c] Gᵀ)[ξ]            weights, once per step
///     V[ξ][c][t] = (Bᵀ d[c,t] B)[ξ]            input tiles
///     M[ξ][o][t] = Σ_c U[ξ][o][c] · V[ξ][c][t]   16 GEMMs [O×C]·[C×T]
///     y[o,t]     = Aᵀ M[·][o][t] A + bias
///
/// The backward pass is the adjoint of each linear map:
///
///     dM[ξ][o][t] = (A dy[o,t] Aᵀ)[ξ]
///     dU[ξ][o][c] = Σ_t dM[ξ][o][t] · V[ξ][c][t]   16 GEMMs [O×T]·[T×C]
///     dg[o,c]     = Gᵀ dU[·][o][c] G
///     dV[ξ][c][t] = Σ_o U[ξ][o][c] · dM[ξ][o][t]   16 GEMMs [C×O]·[O×T]
///     dx         += B dV[·][c][t] Bᵀ               scattered back over overlapping tiles
///
/// Images are processed in chunks so that V and M stay near the L2 cache; V is recomputed
/// in the backward pass rather than kept for the whole batch (recomputing in cache is
/// cheaper than streaming it back from DRAM).
///
/// The transforms work on a row of tiles at once, in SIMD lanes of consecutive tiles
/// (`TileLanes`): tile tx reads columns 2tx … 2tx + 3, so with each padded row split into its
/// even and odd columns, the k-th column of tiles tx, tx + 1, … is a contiguous run — E[tx] and
/// O[tx] for k = 0, 1, E[tx + 1] and O[tx + 1] for k = 2, 3 — and so is each of the 16
/// elements of V for those tiles. A row of n tiles is covered by blocks of 8 (or 4) lanes,
/// the last block shifted back to end at n (its overlap recomputes the same values), so there
/// is no scalar tail; a row shorter than the block (7 tiles of a 14×14 image in 8 lanes)
/// spills past its end, into the next row's tiles — which are written after it, in the order
/// the loops go (channel, then image, then row) — or into slack after the last. Each element is computed by the same operations in the same order as
/// tile by tile, so the lane width does not change a bit (`WinogradTests`). Measured with
/// `ringsgd bench compute --config configs/fashion-resnet.yaml --batch 64` (one core, AMD EPYC):
/// the transforms were 40 % of a step tile by tile.
final class Winograd3x3: WinogradConvolution {
    let inChannels: Int, outChannels: Int, height: Int, width: Int
    /// Tiles per image: ⌈H/2⌉ × ⌈W/2⌉.
    let tileRows: Int, tileColumns: Int
    /// Images per chunk.
    let chunk: Int
    /// The widest lanes the transforms use: 8, or 4 or 1 (tests compare the widths).
    let maximumLanes: Int
    var tilesPerImage: Int { tileRows * tileColumns }
    let u: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>
    var scratch: ConvolutionScratch?
    /// Two padded planes of 2·tileRows + 2 rows, each row stored as its even columns E then its
    /// odd columns O (`half` = tileColumns + 1 of each), each plane with its own invariant:
    /// `inputPlane` is the zero-padded input of the forward transform — only its interior is
    /// ever written, so its border stays zero (the convolution's padding) for the layer's
    /// life; `gradientPlane` accumulates the overlapping windows of the input gradient, border
    /// included, and is cleared before each plane. Sharing one buffer for both made a forward
    /// that follows a backward read the last gradient's border values as padding: results
    /// then depended on the previous step, and a resumed run diverged from an uninterrupted one.
    private let inputPlane: UnsafeMutablePointer<Float>, gradientPlane: UnsafeMutablePointer<Float>
    /// One row of tiles' worth of scratch: 16 runs of `runStride` values.
    private let rowScratch: UnsafeMutablePointer<Float>
    /// Floats of slack after every run a block may spill past: V's and M's 16 matrices, the
    /// scratch runs and the planes.
    private var runStride: Int { tileColumns + Self.slack }
    private var half: Int { tileColumns + 1 }
    private var planeRowStride: Int { 2 * half }
    private var planeCount: Int { (2 * tileRows + 2) * planeRowStride }

    init(inChannels: Int, outChannels: Int, height: Int, width: Int, maximumLanes: Int = 8) {
        precondition([1, 4, 8].contains(maximumLanes), "Winograd3x3: lanes are 1, 4 or 8")
        (self.inChannels, self.outChannels, self.height, self.width) = (inChannels, outChannels, height, width)
        self.maximumLanes = maximumLanes
        (tileRows, tileColumns) = ((height + 1) / 2, (width + 1) / 2)
        let tiles = tileRows * tileColumns
        chunk = Self.imagesPerChunk(inChannels: inChannels, outChannels: outChannels, tilesPerImage: tiles)
        (u, du) = Self.allocateWeightMatrices(inChannels: inChannels, outChannels: outChannels)
        inputPlane = zeroedFloats((2 * tileRows + 2) * 2 * (tileColumns + 1) + Self.slack)
        gradientPlane = zeroedFloats((2 * tileRows + 2) * 2 * (tileColumns + 1) + Self.slack)
        rowScratch = zeroedFloats(16 * (tileColumns + Self.slack))
    }

    deinit {
        for p in [u, du, inputPlane, gradientPlane, rowScratch] { UnsafeMutableRawPointer(p).deallocate() }
    }

    /// Matrices of U, V and M: one per element of a transformed tile.
    static let products = 16
    /// Rows of 2–4 F(2×2) tiles are 3–8 pixels wide: none of the networks here has them.
    static let pairsRows = false

    /// The first tile of each block of `L.count` lanes over a row of tiles (`TileLanes.forEachBlock`).
    @inline(__always)
    private func forEachBlock<L: TileLanes>(_: L.Type, _ body: (Int) -> Void) {
        L.forEachBlock(over: tileColumns, body)
    }

    // MARK: Forward

    /// U = G g Gᵀ for every (o, c), with G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
    func transformWeights(_ weight: UnsafePointer<Float>) {
        let pairs = outChannels * inChannels
        for pair in 0 ..< pairs {
            let g = weight + pair * 9
            // Row i of (G g)ᵀ·Gᵀ is G applied to row i of G g.
            func store(_ i: Int, _ a: Float, _ b: Float, _ c: Float) {
                let out = u + 4 * i * pairs + pair
                out[0] = a
                out[pairs] = 0.5 * (a + b + c)
                out[2 * pairs] = 0.5 * (a - b + c)
                out[3 * pairs] = c
            }
            store(0, g[0], g[1], g[2])
            store(1, 0.5 * (g[0] + g[3] + g[6]), 0.5 * (g[1] + g[4] + g[7]), 0.5 * (g[2] + g[5] + g[8]))
            store(2, 0.5 * (g[0] - g[3] + g[6]), 0.5 * (g[1] - g[4] + g[7]), 0.5 * (g[2] - g[5] + g[8]))
            store(3, g[6], g[7], g[8])
        }
    }

    /// Copies one image plane into `inputPlane`'s interior, split into even and odd padded
    /// columns: input column w is padded column w + 1.
    @inline(__always)
    private func fillInputPlane(from source: UnsafePointer<Float>) {
        let h2 = half
        for h in 0 ..< height {
            let row = source + h * width, e = inputPlane + (h + 1) * planeRowStride, o = e + h2
            // Padded column 2j + 1 (odd) is input column 2j; padded column 2j (even) is input column 2j − 1.
            EvenOdd.split(row, count: width, even: o, odd: e + 1)
        }
    }

    /// V = Bᵀ d B for every 4×4 input tile d of the chunk's images, with
    /// Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]. Tile (ty, tx) reads
    /// input rows 2ty − 1 … 2ty + 2 and columns 2tx − 1 … 2tx + 2, zero outside the image.
    func transformInput<L: TileLanes>(_ lanes: L.Type, _ x: UnsafePointer<Float>, images: Range<Int>, planes: PlaneMaker?) {
        let C = inChannels, T = images.count * tilesPerImage, CT = vStride(T), h2 = half, stride = planeRowStride
        // Channel, then image: a spilling block writes only into tiles written after it.
        for c in 0 ..< C {
            for (g, image) in images.enumerated() {
                fillInputPlane(from: planes?(image, c) ?? x + (image * C + c) * height * width)
                for ty in 0 ..< tileRows {
                    let p0 = UnsafePointer(inputPlane + 2 * ty * stride), p1 = p0 + stride, p2 = p1 + stride, p3 = p2 + stride
                    let out = v + c * T + g * tilesPerImage + ty * tileColumns
                    forEachBlock(lanes) { tx in
                        // Column k of the block's tiles: E[tx], O[tx], E[tx + 1], O[tx + 1].
                        @inline(__always) func column(_ p: UnsafePointer<Float>, _ k: Int) -> L {
                            L(loading: p + (k & 1) * h2 + tx + (k >> 1))
                        }
                        // Bᵀ d: four rows of four.
                        let a0 = column(p0, 0) - column(p2, 0), a1 = column(p0, 1) - column(p2, 1)
                        let a2 = column(p0, 2) - column(p2, 2), a3 = column(p0, 3) - column(p2, 3)
                        let b0 = column(p1, 0) + column(p2, 0), b1 = column(p1, 1) + column(p2, 1)
                        let b2 = column(p1, 2) + column(p2, 2), b3 = column(p1, 3) + column(p2, 3)
                        let c0 = column(p2, 0) - column(p1, 0), c1 = column(p2, 1) - column(p1, 1)
                        let c2 = column(p2, 2) - column(p1, 2), c3 = column(p2, 3) - column(p1, 3)
                        let d0 = column(p1, 0) - column(p3, 0), d1 = column(p1, 1) - column(p3, 1)
                        let d2 = column(p1, 2) - column(p3, 2), d3 = column(p1, 3) - column(p3, 3)
                        // (Bᵀ d) B, element ξ = 4·row + column at out[ξ·C·T].
                        let o = out + tx
                        (a0 - a2).store(o); (a1 + a2).store(o + CT); (a2 - a1).store(o + 2 * CT); (a1 - a3).store(o + 3 * CT)
                        (b0 - b2).store(o + 4 * CT); (b1 + b2).store(o + 5 * CT); (b2 - b1).store(o + 6 * CT); (b1 - b3).store(o + 7 * CT)
                        (c0 - c2).store(o + 8 * CT); (c1 + c2).store(o + 9 * CT); (c2 - c1).store(o + 10 * CT); (c1 - c3).store(o + 11 * CT)
                        (d0 - d2).store(o + 12 * CT); (d1 + d2).store(o + 13 * CT); (d2 - d1).store(o + 14 * CT); (d1 - d3).store(o + 15 * CT)
                    }
                }
            }
        }
    }

    /// One output plane: y = Aᵀ M A + bias per tile, Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
    /// `from` points at M[0][o][first tile of the image]; element ξ is `stride` further each.
    /// A row of tiles gives two output rows, each as its even and odd columns in `rowScratch`,
    /// then interleaved into y.
    func transformOutput<L: TileLanes>(_: L.Type, from mt: UnsafePointer<Float>, stride s: Int, bias: Float,
                                               into y: UnsafeMutablePointer<Float>) {
        let n = tileColumns, r = runStride, even0 = rowScratch, odd0 = even0 + r, even1 = odd0 + r, odd1 = even1 + r
        let beta = L(repeating: bias)
        for ty in 0 ..< tileRows {
            let row = mt + ty * n
            forEachBlock(L.self) { tx in
                let q = row + tx
                @inline(__always) func at(_ xi: Int) -> L { L(loading: q + xi * s) }
                // Aᵀ M: two rows of four.
                let e0 = at(0) + at(4) + at(8), f0 = at(4) - at(8) - at(12)
                let e1 = at(1) + at(5) + at(9), f1 = at(5) - at(9) - at(13)
                let e2 = at(2) + at(6) + at(10), f2 = at(6) - at(10) - at(14)
                let e3 = at(3) + at(7) + at(11), f3 = at(7) - at(11) - at(15)
                (e0 + e1 + e2 + beta).store(even0 + tx)
                (e1 - e2 - e3 + beta).store(odd0 + tx)
                (f0 + f1 + f2 + beta).store(even1 + tx)
                (f1 - f2 - f3 + beta).store(odd1 + tx)
            }
            interleave(even0, odd0, into: y + 2 * ty * width)
            if 2 * ty + 1 < height { interleave(even1, odd1, into: y + (2 * ty + 1) * width) }
        }
    }

    /// row[2j] = even[j], row[2j + 1] = odd[j], for the row's `width` columns.
    @inline(__always)
    private func interleave(_ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, into row: UnsafeMutablePointer<Float>) {
        EvenOdd.merge(even: even, odd: odd, count: width, into: row)
    }

    // MARK: Backward

    /// dM = A dy Aᵀ for each 2×2 tile of one gradient plane (zero beyond the image); returns
    /// the plane's sum (its share of the bias gradient) when `sums`, added tile by tile in the
    /// tiles' order, else 0.
    func transformGradient<L: TileLanes>(_: L.Type, _ dy: UnsafePointer<Float>, into mt: UnsafeMutablePointer<Float>,
                                                 stride s: Int, sums: Bool) -> Float {
        let n = tileColumns, r = runStride, g00 = rowScratch, g01 = g00 + r, g10 = g01 + r, g11 = g10 + r
        var sum: Float = 0
        for ty in 0 ..< tileRows {
            // The tile row's two gradient rows as even and odd columns, zero beyond the image.
            deinterleave(dy + 2 * ty * width, into: g00, g01)
            if 2 * ty + 1 < height { deinterleave(dy + (2 * ty + 1) * width, into: g10, g11) }
            else { g10.update(repeating: 0, count: n); g11.update(repeating: 0, count: n) }
            if sums { for t in 0 ..< n { sum += (g00[t] + g01[t]) + (g10[t] + g11[t]) } }
            let out = mt + ty * n
            forEachBlock(L.self) { tx in
                let a = L(loading: g00 + tx), b = L(loading: g01 + tx), c = L(loading: g10 + tx), d = L(loading: g11 + tx)
                // A g: rows (g0), (g0 + g1), (g0 − g1), (−g1); then each row (p, q) · Aᵀ = (p, p + q, p − q, −q).
                let o = out + tx
                @inline(__always) func row(_ i: Int, _ p: L, _ q: L) {
                    p.store(o + 4 * i * s); (p + q).store(o + (4 * i + 1) * s); (p - q).store(o + (4 * i + 2) * s)
                    (-q).store(o + (4 * i + 3) * s)
                }
                row(0, a, b)
                row(1, a + c, b + d)
                row(2, a - c, b - d)
                row(3, -c, -d)
            }
        }
        return sum
    }

    /// even[j] = row[2j], odd[j] = row[2j + 1] for the `tileColumns` tiles, 0 beyond the row.
    @inline(__always)
    private func deinterleave(_ row: UnsafePointer<Float>, into even: UnsafeMutablePointer<Float>, _ odd: UnsafeMutablePointer<Float>) {
        EvenOdd.split(row, count: width, even: even, odd: odd)
        if width & 1 == 1 { odd[width / 2] = 0 }
    }

    /// dx = Σ over tiles of B dV Bᵀ placed at the tile's 4×4 input window, for one plane; the
    /// windows overlap, so they are summed in `gradientPlane` — each row of tiles' four window
    /// rows computed in lanes into `rowScratch`, then added tile by tile in order (tile tx − 1's
    /// columns 2, 3 before tile tx's 0, 1, as tile-by-tile accumulation adds them) — and its
    /// interior copied out.
    func inverseTransformInput<L: TileLanes>(_: L.Type, from vt: UnsafePointer<Float>, stride s: Int,
                                                     into dx: UnsafeMutablePointer<Float>) {
        let n = tileColumns, r = runStride, h2 = half, plane = gradientPlane
        plane.update(repeating: 0, count: planeCount)
        for ty in 0 ..< tileRows {
            let row = vt + ty * n
            forEachBlock(L.self) { tx in
                let q = row + tx
                @inline(__always) func at(_ xi: Int) -> L { L(loading: q + xi * s) }
                // B dV: rows f0 = e0, f1 = e1 − e2 + e3, f2 = −e0 + e1 + e2, f3 = −e3 (e_i = row i of dV),
                // column by column.
                for k in 0 ..< 4 {
                    let e0 = at(k), e1 = at(4 + k), e2 = at(8 + k), e3 = at(12 + k)
                    (e0).store(rowScratch + (0 * 4 + k) * r + tx)
                    (e1 - e2 + e3).store(rowScratch + (1 * 4 + k) * r + tx)
                    (e1 + e2 - e0).store(rowScratch + (2 * 4 + k) * r + tx)
                    (-e3).store(rowScratch + (3 * 4 + k) * r + tx)
                }
            }
            // Zeros after the row's n tiles in every run (a spilling block, or another transform, left
            // values there): the additions below go in blocks of 8, and adding +0 changes no plane
            // value (a sum that starts at +0 is never −0).
            if n % Self.additionBlock(n) != 0 { for run in 0 ..< 16 { SIMD8<Float>().store(rowScratch + run * r + n) } }
            // Each window row r · Bᵀ = (r0, r1 − r2 + r3, −r0 + r1 + r2, −r3), added into the plane.
            for i in 0 ..< 4 {
                let r0 = rowScratch + (i * 4) * r, r1 = r0 + r, r2 = r1 + r, r3 = r2 + r
                let e = plane + (2 * ty + i) * planeRowStride, o = e + h2
                // Padded column 2t + k is E[t + k/2] (k even) or O[t + k/2] (k odd): tile t − 1's
                // columns 2 and 3 go in first, then tile t's columns 0 and 1.
                Self.addWindowColumns(r0, r1, r2, r3, count: n, even: e, odd: o)
            }
        }
        for h in 0 ..< height {
            let target = dx + h * width, e = UnsafePointer(plane + (h + 1) * planeRowStride), o = e + h2
            EvenOdd.merge(even: o, odd: e + 1, count: width, into: target)
        }
    }

    /// Adds one window row's four columns per tile into a plane row's even and odd halves:
    /// E[t + 1] += r1 + r2 − r0 and O[t + 1] −= r3 (tile t's columns 2, 3), then E[t] += r0 and
    /// O[t] += r1 − r2 + r3 (columns 0, 1) — for each element, the order tile-by-tile
    /// accumulation adds in. In blocks of 8 (or 4) tiles, the last one running past the row's
    /// `n` tiles, where the runs hold zeros: its +0 lands on the row's own odd half, the next
    /// plane row or the plane's slack.
    @inline(__always)
    private static func addWindowColumns(_ r0: UnsafePointer<Float>, _ r1: UnsafePointer<Float>, _ r2: UnsafePointer<Float>,
                                         _ r3: UnsafePointer<Float>, count n: Int,
                                         even e: UnsafeMutablePointer<Float>, odd o: UnsafeMutablePointer<Float>) {
        if additionBlock(n) == 8 {
            addWindowColumns(SIMD8<Float>.self, r0, r1, r2, r3, count: n, even: e, odd: o)
        } else {
            addWindowColumns(SIMD4<Float>.self, r0, r1, r2, r3, count: n, even: e, odd: o)
        }
    }

    /// The block of `addWindowColumns` for rows of n tiles: 4 up to 4 tiles, else 8.
    @inline(__always)
    private static func additionBlock(_ n: Int) -> Int { n <= 4 ? 4 : 8 }

    @inline(__always)
    private static func addWindowColumns<V: TileLanes>(_: V.Type, _ r0: UnsafePointer<Float>, _ r1: UnsafePointer<Float>,
                                                       _ r2: UnsafePointer<Float>, _ r3: UnsafePointer<Float>, count n: Int,
                                                       even e: UnsafeMutablePointer<Float>, odd o: UnsafeMutablePointer<Float>) {
        var t = 0
        while t < n {
            (V(loading: e + t + 1) + (V(loading: r1 + t) + V(loading: r2 + t) - V(loading: r0 + t))).store(e + t + 1)
            (V(loading: o + t + 1) - V(loading: r3 + t)).store(o + t + 1)
            t += V.count
        }
        t = 0
        while t < n {
            (V(loading: e + t) + V(loading: r0 + t)).store(e + t)
            (V(loading: o + t) + (V(loading: r1 + t) - V(loading: r2 + t) + V(loading: r3 + t))).store(o + t)
            t += V.count
        }
    }

    /// dg = Gᵀ dU G for every (o, c), into the [out, in, 3, 3] weight gradient.
    func inverseTransformWeightGradient(into weightGrad: UnsafeMutablePointer<Float>) {
        let pairs = outChannels * inChannels
        for pair in 0 ..< pairs {
            let d = du + pair
            func row(_ i: Int) -> SIMD4<Float> { SIMD4(d[4 * i * pairs], d[(4 * i + 1) * pairs], d[(4 * i + 2) * pairs], d[(4 * i + 3) * pairs]) }
            let r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3)
            // Gᵀ dU: rows q0 = r0 + ½(r1 + r2), q1 = ½(r1 − r2), q2 = ½(r1 + r2) + r3.
            let half: Float = 0.5
            let out = weightGrad + pair * 9
            func store(_ i: Int, _ r: SIMD4<Float>) {
                out[3 * i] = r[0] + half * (r[1] + r[2])
                out[3 * i + 1] = half * (r[1] - r[2])
                out[3 * i + 2] = half * (r[1] + r[2]) + r[3]
            }
            store(0, r0 + half * (r1 + r2))
            store(1, half * (r1 - r2))
            store(2, half * (r1 + r2) + r3)
        }
    }
}
