/// 3×3, stride 1, padding 1 convolution by Winograd's F(4×4, 3×3) (Lavin & Gray, "Fast
/// Algorithms for Convolutional Neural Networks", CVPR 2016, the 6×6-tile matrices of §4.2).
///
/// Why: F(2×2, 3×3) (`Winograd3x3`) spends 16 products on 4 outputs; F(4×4, 3×3) spends 36 on
/// 16 — 4× fewer than the direct sum and 1.78× fewer than F(2×2) — and its V and M hold 2.25
/// values per output instead of 4, so the transforms write and read less too. The price is
/// rounding: the matrices' entries reach 5 and 1/24, so results differ from the direct sum by
/// about 10× F(2×2)'s error (tested against im2col to 1e-4 of the values' scale).
///
/// Per output channel o, input channel c and tile t (6×6 input window, 4×4 outputs):
///
///     U[ξ][o][c] = (G g[o,c] Gᵀ)[ξ]        V[ξ][c][t] = (Bᵀ d[c,t] B)[ξ]
///     M[ξ][o][t] = Σ_c U[ξ][o][c] · V[ξ][c][t]   (36 GEMMs)     y[o,t] = Aᵀ M[·][o][t] A + bias
///
/// and backward the adjoints, as `Winograd3x3` explains: dM = A dy Aᵀ, dU = Σ_t dM·V,
/// dg = Gᵀ dU G, dV = Σ_o U·dM, dx += B dV Bᵀ over overlapping 6×6 windows.
///
/// The transforms work on a row of tiles in SIMD lanes (`TileLanes`): tile tx reads padded
/// columns 4tx … 4tx + 5, so with each padded row split into its four column phases
/// (column 4j + k is phase k's j-th value), column c of tiles tx, tx + 1, … is a contiguous run
/// of phase c mod 4 from j = tx + c/4. Blocks overlap at a row's end or spill past a short row
/// into tiles written later, as in `Winograd3x3`. Rows of 4 or 2 tiles (14×14, 7×7) go two
/// rows of tiles to a block (`PairedQuads`, `PairedPairs`): the second row's values are one
/// row of tiles further in the plane and in `runs`, which then hold two rows of tiles. Each
/// value is computed by the same operations at every lane width (`WinogradTests`).
final class Winograd4x4: WinogradConvolution {
    let inChannels: Int, outChannels: Int, height: Int, width: Int
    /// Tiles per image: ⌈H/4⌉ × ⌈W/4⌉.
    let tileRows: Int, tileColumns: Int
    /// Images per chunk.
    let chunk: Int
    /// The widest lanes the transforms use: 8, or 4 or 1 (tests compare the widths).
    let maximumLanes: Int
    var tilesPerImage: Int { tileRows * tileColumns }
    let u: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>
    var scratch: ConvolutionScratch?
    /// Padded planes of 4·tileRows + 2 rows, each row as its four column phases of `phase`
    /// values (tileColumns + 1, rounded up to a multiple of 8): `inputPlane` (outside the interior only zeros are
    /// ever written, by `ColumnPhases.split` for rows of 4 to 15 values, so its border stays the convolution's zero padding) and `gradientPlane` (each value written first, then added to:
    /// `inverseTransformInput`).
    private let inputPlane: UnsafeMutablePointer<Float>, gradientPlane: UnsafeMutablePointer<Float>
    /// 36 runs of `runStride` values for each of two rows of tiles, and 36 lane vectors of a
    /// block's intermediate rows.
    private let runs: UnsafeMutablePointer<Float>, block: UnsafeMutablePointer<Float>
    private var runStride: Int { tileColumns + Self.slack }
    /// Values per column phase of a padded row: tileColumns + 1, rounded up to whole blocks of 8
    /// so that a block never reaches into the next phase.
    private var phase: Int { (tileColumns + 1 + 7) / 8 * 8 }
    private var planeRowStride: Int { 4 * phase }

    init(inChannels: Int, outChannels: Int, height: Int, width: Int, maximumLanes: Int = 8) {
        precondition([1, 4, 8].contains(maximumLanes), "Winograd4x4: lanes are 1, 4 or 8")
        (self.inChannels, self.outChannels, self.height, self.width) = (inChannels, outChannels, height, width)
        self.maximumLanes = maximumLanes
        (tileRows, tileColumns) = ((height + 3) / 4, (width + 3) / 4)
        let tiles = tileRows * tileColumns
        chunk = Self.imagesPerChunk(inChannels: inChannels, outChannels: outChannels, tilesPerImage: tiles)
        (u, du) = Self.allocateWeightMatrices(inChannels: inChannels, outChannels: outChannels)
        let planeFloats = (4 * tileRows + 2) * 4 * ((tileColumns + 1 + 7) / 8 * 8) + Self.slack
        inputPlane = zeroedFloats(planeFloats)
        gradientPlane = zeroedFloats(planeFloats)
        runs = zeroedFloats(2 * 36 * (tileColumns + Self.slack))
        block = zeroedFloats(36 * 8)
    }

    deinit {
        for p in [u, du, inputPlane, gradientPlane, runs, block] { UnsafeMutableRawPointer(p).deallocate() }
    }

    /// Matrices of U, V and M: one per element of a transformed tile.
    static let products = 36
    /// 14×14 and 7×7 planes have rows of 4 and 2 tiles: two rows of tiles fill the lanes.
    static let pairsRows = true

    /// The first tile of each block of `L.count` lanes over a row of tiles (`TileLanes.forEachBlock`).
    @inline(__always)
    private func forEachBlock<L: TileLanes>(_: L.Type, _ body: (Int) -> Void) {
        L.forEachBlock(over: tileColumns, body)
    }

    // MARK: The one-dimensional transforms (Lavin & Gray's matrices), on lane vectors

    /// Bᵀ d for d of 6: rows [4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0],
    /// [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1].
    @inline(__always)
    private static func bt<L: TileLanes>(_ d: (L, L, L, L, L, L)) -> (L, L, L, L, L, L) {
        let four = L(repeating: 4), five = L(repeating: 5), two = L(repeating: 2)
        let p = d.4 - four * d.2, q = d.3 - four * d.1
        let r = d.4 - d.2, s = two * (d.3 - d.1)
        return (four * d.0 - five * d.2 + d.4, p + q, p - q, r + s, r - s, four * d.1 - five * d.3 + d.5)
    }

    /// B w for w of 6, Bᵀ's adjoint: (4w₀, −4(w₁ − w₂) − 2(w₃ − w₄) + 4w₅, −5w₀ − 4(w₁ + w₂) − (w₃ + w₄),
    /// (w₁ − w₂) + 2(w₃ − w₄) − 5w₅, w₀ + (w₁ + w₂) + (w₃ + w₄), w₅).
    @inline(__always)
    private static func b<L: TileLanes>(_ w: (L, L, L, L, L, L)) -> (L, L, L, L, L, L) {
        let four = L(repeating: 4), five = L(repeating: 5), two = L(repeating: 2)
        let d12 = w.1 - w.2, s12 = w.1 + w.2, d34 = w.3 - w.4, s34 = w.3 + w.4
        return (four * w.0, four * w.5 - four * d12 - two * d34, -(five * w.0) - four * s12 - s34,
                d12 + two * d34 - five * w.5, w.0 + s12 + s34, w.5)
    }

    /// Aᵀ m for m of 6: (m₀ + (m₁ + m₂) + (m₃ + m₄), (m₁ − m₂) + 2(m₃ − m₄), (m₁ + m₂) + 4(m₃ + m₄),
    /// (m₁ − m₂) + 8(m₃ − m₄) + m₅).
    @inline(__always)
    private static func at<L: TileLanes>(_ m: (L, L, L, L, L, L)) -> (L, L, L, L) {
        let s12 = m.1 + m.2, d12 = m.1 - m.2, s34 = m.3 + m.4, d34 = m.3 - m.4
        return (m.0 + s12 + s34, d12 + L(repeating: 2) * d34, s12 + L(repeating: 4) * s34, d12 + L(repeating: 8) * d34 + m.5)
    }

    /// A g for g of 4, Aᵀ's adjoint: (g₀, (g₀ + g₂) + (g₁ + g₃), (g₀ + g₂) − (g₁ + g₃),
    /// (g₀ + 4g₂) + (2g₁ + 8g₃), (g₀ + 4g₂) − (2g₁ + 8g₃), g₃).
    @inline(__always)
    private static func a<L: TileLanes>(_ g: (L, L, L, L)) -> (L, L, L, L, L, L) {
        let e = g.0 + g.2, f = g.1 + g.3
        let e4 = g.0 + L(repeating: 4) * g.2, f4 = L(repeating: 2) * g.1 + L(repeating: 8) * g.3
        return (g.0, e + f, e - f, e4 + f4, e4 - f4, g.3)
    }

    // MARK: Forward

    /// U = G g Gᵀ for every (o, c), G's rows [¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙],
    /// [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1]: eight pairs at a time in SIMD lanes (their
    /// U values are consecutive in each of the 36 matrices), the rest one by one.
    func transformWeights(_ weight: UnsafePointer<Float>) {
        let pairs = outChannels * inChannels
        var pair = 0
        while pair + 8 <= pairs {
            let w = weight + pair * 9
            @inline(__always) func at(_ j: Int) -> SIMD8<Float> {
                SIMD8(w[j], w[9 + j], w[18 + j], w[27 + j], w[36 + j], w[45 + j], w[54 + j], w[63 + j])
            }
            transformWeights((at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7), at(8)), into: u + pair, pairs: pairs)
            pair += 8
        }
        while pair < pairs {
            let w = weight + pair * 9
            transformWeights((w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]), into: u + pair, pairs: pairs)
            pair += 1
        }
    }

    /// U for the pairs whose 3×3 kernels are `g` (row-major, a pair per lane), into `out`, `out +
    /// pairs`, … (element ξ of U at ξ·pairs).
    @inline(__always)
    private func transformWeights<L: TileLanes>(_ g: (L, L, L, L, L, L, L, L, L), into out: UnsafeMutablePointer<Float>, pairs: Int) {
        let quarter = L(repeating: 0.25), sixth = L(repeating: 1.0 / 6), twelfth = L(repeating: 1.0 / 12)
        let twentyFourth = L(repeating: 1.0 / 24)
        @inline(__always) func gMul(_ a: L, _ b: L, _ c: L) -> (L, L, L, L, L, L) {
            (a * quarter, -(a + b + c) * sixth, -(a - b + c) * sixth, a * twentyFourth + b * twelfth + c * sixth,
             a * twentyFourth - b * twelfth + c * sixth, c)
        }
        // G applied to each column of g, then to each row of the 6×3 result.
        let c0 = gMul(g.0, g.3, g.6), c1 = gMul(g.1, g.4, g.7), c2 = gMul(g.2, g.5, g.8)
        @inline(__always) func store(_ i: Int, _ a: L, _ b: L, _ c: L) {
            let r = gMul(a, b, c), row = out + 6 * i * pairs
            r.0.store(row); r.1.store(row + pairs); r.2.store(row + 2 * pairs)
            r.3.store(row + 3 * pairs); r.4.store(row + 4 * pairs); r.5.store(row + 5 * pairs)
        }
        store(0, c0.0, c1.0, c2.0); store(1, c0.1, c1.1, c2.1); store(2, c0.2, c1.2, c2.2)
        store(3, c0.3, c1.3, c2.3); store(4, c0.4, c1.4, c2.4); store(5, c0.5, c1.5, c2.5)
    }

    /// Copies one image plane into `inputPlane`'s interior by column phase: input column w is
    /// padded column w + 1.
    @inline(__always)
    private func fillInputPlane(from source: UnsafePointer<Float>) {
        let q = phase
        for h in 0 ..< height {
            // Input column 4j + k is padded column 4j + k + 1: phase k + 1, or phase 0 at j + 1 for k = 3.
            let out = inputPlane + (h + 1) * planeRowStride
            ColumnPhases.split(source + h * width, count: width, into: (out + q, out + 2 * q, out + 3 * q, out + 1))
        }
    }

    /// V = Bᵀ d B for every 6×6 input window d of the chunk's images: tile (ty, tx) reads
    /// padded rows 4ty … 4ty + 5 and columns 4tx … 4tx + 5.
    func transformInput<L: TileLanes>(_: L.Type, _ x: UnsafePointer<Float>, images: Range<Int>, planes: PlaneMaker?) {
        let C = inChannels, T = images.count * tilesPerImage, CT = vStride(T), q = phase, stride = planeRowStride
        let scratch = block, w = L.count
        // Channel, then image: a spilling block writes only into tiles written after it.
        for c in 0 ..< C {
            for (g, image) in images.enumerated() {
                fillInputPlane(from: planes?(image, c) ?? x + (image * C + c) * height * width)
                for ty in Swift.stride(from: 0, to: tileRows, by: L.rowsPerBlock) {
                    let top = UnsafePointer(inputPlane + 4 * ty * stride), down = 4 * stride
                    let out = v + c * T + g * tilesPerImage + ty * tileColumns
                    forEachBlock(L.self) { tx in
                        // Column k of the window, rows 0 … 5: phase k mod 4 from j = tx + k/4.
                        for k in 0 ..< 6 {
                            let p = top + (k & 3) * q + tx + (k >> 2)
                            @inline(__always) func row(_ i: Int) -> L { L(loading: p + i * stride, nextRow: down) }
                            let t = Self.bt((row(0), row(1), row(2), row(3), row(4), row(5)))
                            t.0.store(scratch + (0 * 6 + k) * w); t.1.store(scratch + (1 * 6 + k) * w); t.2.store(scratch + (2 * 6 + k) * w)
                            t.3.store(scratch + (3 * 6 + k) * w); t.4.store(scratch + (4 * 6 + k) * w); t.5.store(scratch + (5 * 6 + k) * w)
                        }
                        for i in 0 ..< 6 {
                            let r = UnsafePointer(scratch + i * 6 * w)
                            let e = Self.bt((L(loading: r), L(loading: r + w), L(loading: r + 2 * w), L(loading: r + 3 * w),
                                             L(loading: r + 4 * w), L(loading: r + 5 * w)))
                            let o = out + tx + 6 * i * CT
                            e.0.store(o); e.1.store(o + CT); e.2.store(o + 2 * CT); e.3.store(o + 3 * CT); e.4.store(o + 4 * CT); e.5.store(o + 5 * CT)
                        }
                    }
                }
            }
        }
    }

    /// One output plane: each row of tiles gives four output rows, as four column phases in
    /// `runs` (output column 4j + k is run k's j-th value), then interleaved into y.
    func transformOutput<L: TileLanes>(_: L.Type, from mt: UnsafePointer<Float>, stride s: Int, bias: Float,
                                               into y: UnsafeMutablePointer<Float>) {
        let n = tileColumns, r = runStride, beta = L(repeating: bias), scratch = block, w = L.count
        for ty in stride(from: 0, to: tileRows, by: L.rowsPerBlock) {
            let row = mt + ty * n
            forEachBlock(L.self) { tx in
                let q = row + tx
                @inline(__always) func at(_ xi: Int) -> L { L(loading: q + xi * s) }
                // Aᵀ on each column k of M (rows ξ = 6i + k), then on each of the four result rows.
                for k in 0 ..< 6 {
                    let e = Self.at((at(k), at(6 + k), at(12 + k), at(18 + k), at(24 + k), at(30 + k)))
                    e.0.store(scratch + (0 * 6 + k) * w); e.1.store(scratch + (1 * 6 + k) * w)
                    e.2.store(scratch + (2 * 6 + k) * w); e.3.store(scratch + (3 * 6 + k) * w)
                }
                for i in 0 ..< 4 {
                    let p = UnsafePointer(scratch + i * 6 * w)
                    let f = Self.at((L(loading: p), L(loading: p + w), L(loading: p + 2 * w), L(loading: p + 3 * w),
                                     L(loading: p + 4 * w), L(loading: p + 5 * w)))
                    let out = runs + (4 * i) * r + tx, down = 16 * r
                    (f.0 + beta).store(out, nextRow: down); (f.1 + beta).store(out + r, nextRow: down)
                    (f.2 + beta).store(out + 2 * r, nextRow: down); (f.3 + beta).store(out + 3 * r, nextRow: down)
                }
            }
            for k in 0 ..< L.rowsPerBlock {
                for i in 0 ..< 4 where 4 * (ty + k) + i < height {
                    let phases = UnsafePointer(runs + (16 * k + 4 * i) * r)
                    ColumnPhases.merge((phases, phases + r, phases + 2 * r, phases + 3 * r), count: width, into: y + (4 * (ty + k) + i) * width)
                }
            }
        }
    }

    // MARK: Backward

    /// dM = A dy Aᵀ for each 4×4 tile of one gradient plane (zero beyond the image); returns the
    /// plane's sum when `sums`, row by row, else 0.
    func transformGradient<L: TileLanes>(_: L.Type, _ dy: UnsafePointer<Float>, into mt: UnsafeMutablePointer<Float>,
                                                 stride s: Int, sums: Bool) -> Float {
        let n = tileColumns, r = runStride, scratch = block, w = L.count
        var sum: Float = 0
        for ty in stride(from: 0, to: tileRows, by: L.rowsPerBlock) {
            // Each tile row's four gradient rows by column phase (run 16t + 4i + k), zero beyond the image.
            for t in 0 ..< L.rowsPerBlock {
                for i in 0 ..< 4 {
                    let phases = runs + (16 * t + 4 * i) * r
                    // Whole blocks of 8 zeros (runs have slack): a memset call per run of 2–7
                    // values cost more than the zeros (3 % of a fashion-resnet step in `perf`).
                    for k in 0 ..< 4 {
                        var j = 0
                        while j < n { SIMD8<Float>().store(phases + k * r + j); j += 8 }
                    }
                    guard 4 * (ty + t) + i < height else { continue }
                    let row = dy + (4 * (ty + t) + i) * width
                    ColumnPhases.split(row, count: width, into: (phases, phases + r, phases + 2 * r, phases + 3 * r))
                    if sums { for col in 0 ..< width { sum += row[col] } }
                }
            }
            let out = mt + ty * n
            forEachBlock(L.self) { tx in
                @inline(__always) func g(_ i: Int, _ k: Int) -> L { L(loading: runs + (4 * i + k) * r + tx, nextRow: 16 * r) }
                // A on each column k of the tile (rows i), then on each of the six result rows.
                for k in 0 ..< 4 {
                    let e = Self.a((g(0, k), g(1, k), g(2, k), g(3, k)))
                    e.0.store(scratch + (0 * 4 + k) * w); e.1.store(scratch + (1 * 4 + k) * w); e.2.store(scratch + (2 * 4 + k) * w)
                    e.3.store(scratch + (3 * 4 + k) * w); e.4.store(scratch + (4 * 4 + k) * w); e.5.store(scratch + (5 * 4 + k) * w)
                }
                for j in 0 ..< 6 {
                    let p = UnsafePointer(scratch + j * 4 * w)
                    let f = Self.a((L(loading: p), L(loading: p + w), L(loading: p + 2 * w), L(loading: p + 3 * w)))
                    let o = out + tx + 6 * j * s
                    f.0.store(o); f.1.store(o + s); f.2.store(o + 2 * s); f.3.store(o + 3 * s); f.4.store(o + 4 * s); f.5.store(o + 5 * s)
                }
            }
        }
        return sum
    }

    /// dx = Σ over tiles of B dV Bᵀ placed at the tile's 6×6 window, for one plane: each row of
    /// tiles' six window rows computed in lanes into `runs` (run 6i + k: window row i, column k),
    /// then added into `gradientPlane` by phase (`addWindowRow`), and its interior copied out.
    /// Every plane value is first written by the window row that first reaches it, as 0 + its
    /// sum — what adding into a zeroed plane gave, bit for bit — so the plane is never cleared
    /// (a memset of every plane was 0.6 % of a fashion-resnet step).
    func inverseTransformInput<L: TileLanes>(_: L.Type, from vt: UnsafePointer<Float>, stride s: Int,
                                                     into dx: UnsafeMutablePointer<Float>) {
        let n = tileColumns, r = runStride, q = phase, plane = gradientPlane, scratch = block, w = L.count
        for ty in stride(from: 0, to: tileRows, by: L.rowsPerBlock) {
            let row = vt + ty * n
            forEachBlock(L.self) { tx in
                let p = row + tx
                @inline(__always) func at(_ xi: Int) -> L { L(loading: p + xi * s) }
                // B on each column k of dV (rows ξ = 6i + k), then on each of the six result rows.
                for k in 0 ..< 6 {
                    let e = Self.b((at(k), at(6 + k), at(12 + k), at(18 + k), at(24 + k), at(30 + k)))
                    e.0.store(scratch + (0 * 6 + k) * w); e.1.store(scratch + (1 * 6 + k) * w); e.2.store(scratch + (2 * 6 + k) * w)
                    e.3.store(scratch + (3 * 6 + k) * w); e.4.store(scratch + (4 * 6 + k) * w); e.5.store(scratch + (5 * 6 + k) * w)
                }
                for i in 0 ..< 6 {
                    let h = UnsafePointer(scratch + i * 6 * w)
                    let f = Self.b((L(loading: h), L(loading: h + w), L(loading: h + 2 * w), L(loading: h + 3 * w),
                                    L(loading: h + 4 * w), L(loading: h + 5 * w)))
                    // Columns 4 and 5 of tile t land on phases 0 and 1 at t + 1: stored one further.
                    let out = runs + 6 * i * r + tx, down = 36 * r
                    f.0.store(out, nextRow: down); f.1.store(out + r, nextRow: down); f.2.store(out + 2 * r, nextRow: down)
                    f.3.store(out + 3 * r, nextRow: down); f.4.store(out + 4 * r + 1, nextRow: down); f.5.store(out + 5 * r + 1, nextRow: down)
                }
            }
            // Zeros where no tile contributes — before the first tile's columns 4 and 5, after the
            // row's n tiles (where a spilling block left values) — since the additions go in whole
            // blocks of 8, and adding +0 changes no plane value (a sum that starts at +0 is never −0).
            // Row of tiles by row of tiles, in order: the rows' windows overlap by two plane rows.
            for t in 0 ..< L.rowsPerBlock {
                let windowRows = runs + 36 * t * r
                for i in 0 ..< 6 {
                    let c = windowRows + 6 * i * r
                    for k in 0 ..< 4 { SIMD8<Float>().store(c + k * r + n) }
                    c[4 * r] = 0; c[5 * r] = 0
                    SIMD8<Float>().store(c + 4 * r + n + 1); SIMD8<Float>().store(c + 5 * r + n + 1)
                }
                // Window rows 0 and 1 of a row of tiles land on rows 4 and 5 of the one before.
                for i in 0 ..< 6 {
                    addWindowRow(UnsafePointer(windowRows + 6 * i * r), into: plane + (4 * (ty + t) + i) * planeRowStride,
                                 first: ty + t == 0 || i >= 2)
                }
            }
        }
        for h in 0 ..< height {
            let phases = UnsafePointer(plane + (h + 1) * planeRowStride)
            ColumnPhases.merge((phases + q, phases + 2 * q, phases + 3 * q, phases + 1), count: width, into: dx + h * width)
        }
    }

    /// One window row's six columns (runs `c`, `c + r`, …; columns 4 and 5 already shifted onto
    /// the phase index they reach) added into a plane row's four phases, eight values at a time:
    /// phase 0 takes column 4 of the tile before and column 0, phase 1 columns 5 and 1, phases
    /// 2 and 3 columns 2 and 3. No block reaches past its phase; the blocks cover every value of
    /// each phase. `first`: the row holds nothing yet, and gets 0 + the window's values (+0 for
    /// a −0 sum, as a zeroed row would).
    @inline(__always)
    private func addWindowRow(_ c: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, first: Bool) {
        typealias V = SIMD8<Float>
        let n = tileColumns, r = runStride, q = phase
        @inline(__always) func held(_ p: UnsafeMutablePointer<Float>) -> V { first ? V() : V(loading: p) }
        var t = 0
        while t <= n {
            (held(target + t) + (V(loading: c + 4 * r + t) + V(loading: c + t))).store(target + t)
            (held(target + q + t) + (V(loading: c + 5 * r + t) + V(loading: c + r + t))).store(target + q + t)
            (held(target + 2 * q + t) + V(loading: c + 2 * r + t)).store(target + 2 * q + t)
            (held(target + 3 * q + t) + V(loading: c + 3 * r + t)).store(target + 3 * q + t)
            t += 8
        }
    }

    /// dg = Gᵀ dU G for every (o, c), into the [out, in, 3, 3] weight gradient.
    func inverseTransformWeightGradient(into weightGrad: UnsafeMutablePointer<Float>) {
        let pairs = outChannels * inChannels
        let sixth: Float = 1.0 / 6, twelfth: Float = 1.0 / 12, twentyFourth: Float = 1.0 / 24
        func gt(_ w: (Float, Float, Float, Float, Float, Float)) -> (Float, Float, Float) {
            (w.0 * 0.25 - (w.1 + w.2) * sixth + (w.3 + w.4) * twentyFourth,
             (w.2 - w.1) * sixth + (w.3 - w.4) * twelfth,
             (w.3 + w.4 - w.1 - w.2) * sixth + w.5)
        }
        for pair in 0 ..< pairs {
            let d = du + pair
            func e(_ i: Int, _ k: Int) -> Float { d[(6 * i + k) * pairs] }
            // Gᵀ on each column k of dU, then on each of the three result rows.
            func column(_ k: Int) -> (Float, Float, Float) { gt((e(0, k), e(1, k), e(2, k), e(3, k), e(4, k), e(5, k))) }
            let k0 = column(0), k1 = column(1), k2 = column(2), k3 = column(3), k4 = column(4), k5 = column(5)
            let out = weightGrad + pair * 9
            let r0 = gt((k0.0, k1.0, k2.0, k3.0, k4.0, k5.0))
            let r1 = gt((k0.1, k1.1, k2.1, k3.1, k4.1, k5.1))
            let r2 = gt((k0.2, k1.2, k2.2, k3.2, k4.2, k5.2))
            out[0] = r0.0; out[1] = r0.1; out[2] = r0.2
            out[3] = r1.0; out[4] = r1.1; out[5] = r1.2
            out[6] = r2.0; out[7] = r2.1; out[8] = r2.2
        }
    }
}
