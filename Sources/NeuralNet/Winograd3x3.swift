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
final class Winograd3x3 {
    let inChannels: Int, outChannels: Int, height: Int, width: Int
    /// Tiles per image: ⌈H/2⌉ × ⌈W/2⌉.
    let tileRows: Int, tileColumns: Int
    /// Images per chunk.
    let chunk: Int
    private var tilesPerImage: Int { tileRows * tileColumns }
    private let u: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>
    private let v: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>
    /// Two planes of (2·tileRows + 2) × (2·tileColumns + 2), each with its own invariant:
    /// `inputPlane` is the zero-padded input of the forward transform — only its interior is
    /// ever written, so its border stays zero (the convolution's padding) for the layer's
    /// life; `gradientPlane` accumulates the overlapping windows of the input gradient, border
    /// included, and is cleared before each plane. Sharing one buffer for both made a forward
    /// that follows a backward read the last gradient's border values as padding: results
    /// then depended on the previous step, and a resumed run diverged from an uninterrupted one.
    private let inputPlane: UnsafeMutablePointer<Float>, gradientPlane: UnsafeMutablePointer<Float>
    private var planeWidth: Int { 2 * tileColumns + 2 }
    private var planeCount: Int { (2 * tileRows + 2) * planeWidth }

    /// Images per chunk: V and M together about 2 MB (swept 256 KB – 8 MB with `bench compute
    /// --model cnn`: 27.8–29.4 ms per step throughout, within noise; 2 MB was best on average).
    static let chunkBytes = 2 << 20

    init(inChannels: Int, outChannels: Int, height: Int, width: Int) {
        (self.inChannels, self.outChannels, self.height, self.width) = (inChannels, outChannels, height, width)
        (tileRows, tileColumns) = ((height + 1) / 2, (width + 1) / 2)
        let tiles = tileRows * tileColumns
        chunk = max(1, Winograd3x3.chunkBytes / (16 * (inChannels + outChannels) * tiles * 4))
        func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
            UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
                .initializeMemory(as: Float.self, repeating: 0, count: count)
        }
        u = allocate(16 * outChannels * inChannels)
        du = allocate(16 * outChannels * inChannels)
        v = allocate(16 * inChannels * chunk * tiles)
        m = allocate(16 * outChannels * chunk * tiles)
        inputPlane = allocate((2 * tileRows + 2) * (2 * tileColumns + 2))
        gradientPlane = allocate((2 * tileRows + 2) * (2 * tileColumns + 2))
    }

    deinit {
        for p in [u, du, v, m, inputPlane, gradientPlane] { UnsafeMutableRawPointer(p).deallocate() }
    }

    // MARK: Forward

    /// y = conv(x, weight) + bias for `batch` NCHW images.
    func forward(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                 into y: UnsafeMutablePointer<Float>, batch: Int) {
        transformWeights(weight)
        let (C, O) = (inChannels, outChannels)
        for first in stride(from: 0, to: batch, by: chunk) {
            let images = min(chunk, batch - first), T = images * tilesPerImage
            transformInput(x, images: first ..< first + images)
            for xi in 0 ..< 16 {
                sgemm(transposeA: false, transposeB: false, m: O, n: T, k: C, a: u + xi * O * C, lda: C,
                      b: v + xi * C * T, ldb: T, beta: 0, c: m + xi * O * T, ldc: T)
            }
            for g in 0 ..< images {
                for o in 0 ..< O {
                    transformOutput(from: m + o * T + g * tilesPerImage, stride: O * T, bias: bias[o],
                                    into: y + ((first + g) * O + o) * height * width)
                }
            }
        }
    }

    /// U = G g Gᵀ for every (o, c), with G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
    private func transformWeights(_ weight: UnsafePointer<Float>) {
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

    /// V = Bᵀ d B for every 4×4 input tile d of the chunk's images, with
    /// Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]. Tile (ty, tx) reads
    /// input rows 2ty − 1 … 2ty + 2 and columns 2tx − 1 … 2tx + 2, zero outside the image.
    private func transformInput(_ x: UnsafePointer<Float>, images: Range<Int>) {
        let C = inChannels, T = images.count * tilesPerImage, PW = planeWidth, CT = C * T
        for (g, image) in images.enumerated() {
            for c in 0 ..< C {
                let source = x + (image * C + c) * height * width
                for h in 0 ..< height { (inputPlane + (h + 1) * PW + 1).update(from: source + h * width, count: width) }
                for ty in 0 ..< tileRows {
                    let p0 = inputPlane + 2 * ty * PW, p1 = p0 + PW, p2 = p1 + PW, p3 = p2 + PW
                    let out = v + c * T + g * tilesPerImage + ty * tileColumns
                    for tx in 0 ..< tileColumns {
                        let k = 2 * tx
                        // Bᵀ d: four rows of four.
                        let a0 = p0[k] - p2[k], a1 = p0[k + 1] - p2[k + 1], a2 = p0[k + 2] - p2[k + 2], a3 = p0[k + 3] - p2[k + 3]
                        let b0 = p1[k] + p2[k], b1 = p1[k + 1] + p2[k + 1], b2 = p1[k + 2] + p2[k + 2], b3 = p1[k + 3] + p2[k + 3]
                        let c0 = p2[k] - p1[k], c1 = p2[k + 1] - p1[k + 1], c2 = p2[k + 2] - p1[k + 2], c3 = p2[k + 3] - p1[k + 3]
                        let d0 = p1[k] - p3[k], d1 = p1[k + 1] - p3[k + 1], d2 = p1[k + 2] - p3[k + 2], d3 = p1[k + 3] - p3[k + 3]
                        // (Bᵀ d) B, element ξ = 4·row + column at out[ξ·C·T].
                        let o = out + tx
                        o[0] = a0 - a2; o[CT] = a1 + a2; o[2 * CT] = a2 - a1; o[3 * CT] = a1 - a3
                        o[4 * CT] = b0 - b2; o[5 * CT] = b1 + b2; o[6 * CT] = b2 - b1; o[7 * CT] = b1 - b3
                        o[8 * CT] = c0 - c2; o[9 * CT] = c1 + c2; o[10 * CT] = c2 - c1; o[11 * CT] = c1 - c3
                        o[12 * CT] = d0 - d2; o[13 * CT] = d1 + d2; o[14 * CT] = d2 - d1; o[15 * CT] = d1 - d3
                    }
                }
            }
        }
    }

    /// One output plane: y = Aᵀ M A + bias per tile, Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
    /// `from` points at M[0][o][first tile of the image]; element ξ is `stride` further each.
    private func transformOutput(from mt: UnsafePointer<Float>, stride s: Int, bias: Float, into y: UnsafeMutablePointer<Float>) {
        for ty in 0 ..< tileRows {
            let row0 = y + 2 * ty * width, hasRow1 = 2 * ty + 1 < height
            for tx in 0 ..< tileColumns {
                let q = mt + ty * tileColumns + tx
                // Aᵀ M: two rows of four.
                let e0 = q[0] + q[4 * s] + q[8 * s], f0 = q[4 * s] - q[8 * s] - q[12 * s]
                let e1 = q[s] + q[5 * s] + q[9 * s], f1 = q[5 * s] - q[9 * s] - q[13 * s]
                let e2 = q[2 * s] + q[6 * s] + q[10 * s], f2 = q[6 * s] - q[10 * s] - q[14 * s]
                let e3 = q[3 * s] + q[7 * s] + q[11 * s], f3 = q[7 * s] - q[11 * s] - q[15 * s]
                let column = 2 * tx, hasColumn1 = column + 1 < width
                row0[column] = e0 + e1 + e2 + bias
                if hasColumn1 { row0[column + 1] = e1 - e2 - e3 + bias }
                if hasRow1 {
                    row0[width + column] = f0 + f1 + f2 + bias
                    if hasColumn1 { row0[width + column + 1] = f1 - f2 - f3 + bias }
                }
            }
        }
    }

    // MARK: Backward

    /// Writes the weight and bias gradients and, when `inputGradient` is given, dL/dx.
    func backward(_ dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, weightGrad: UnsafeMutablePointer<Float>,
                  biasGrad: UnsafeMutablePointer<Float>, inputGradient dx: UnsafeMutablePointer<Float>?, batch: Int) {
        let (C, O) = (inChannels, outChannels)
        biasGrad.update(repeating: 0, count: O)
        for first in stride(from: 0, to: batch, by: chunk) {
            let images = min(chunk, batch - first), T = images * tilesPerImage
            for g in 0 ..< images {
                for o in 0 ..< O {
                    biasGrad[o] += transformGradient(dy + ((first + g) * O + o) * height * width,
                                                     into: m + o * T + g * tilesPerImage, stride: O * T)
                }
            }
            transformInput(x, images: first ..< first + images)
            for xi in 0 ..< 16 {
                sgemm(transposeA: false, transposeB: true, m: O, n: C, k: T, a: m + xi * O * T, lda: T,
                      b: v + xi * C * T, ldb: T, beta: first == 0 ? 0 : 1, c: du + xi * O * C, ldc: C)
            }
            guard let dx else { continue }
            for xi in 0 ..< 16 {
                sgemm(transposeA: true, transposeB: false, m: C, n: T, k: O, a: u + xi * O * C, lda: C,
                      b: m + xi * O * T, ldb: T, beta: 0, c: v + xi * C * T, ldc: T)
            }
            for g in 0 ..< images {
                for c in 0 ..< C {
                    inverseTransformInput(from: v + c * T + g * tilesPerImage, stride: C * T,
                                          into: dx + ((first + g) * C + c) * height * width)
                }
            }
        }
        inverseTransformWeightGradient(into: weightGrad)
    }

    /// dM = A dy Aᵀ for each 2×2 tile of one gradient plane (zero beyond the image); returns
    /// the plane's sum, its share of the bias gradient.
    private func transformGradient(_ dy: UnsafePointer<Float>, into mt: UnsafeMutablePointer<Float>, stride s: Int) -> Float {
        var sum: Float = 0
        for ty in 0 ..< tileRows {
            let row0 = dy + 2 * ty * width, hasRow1 = 2 * ty + 1 < height
            for tx in 0 ..< tileColumns {
                let column = 2 * tx, hasColumn1 = column + 1 < width
                let g00 = row0[column], g01 = hasColumn1 ? row0[column + 1] : 0
                let g10 = hasRow1 ? row0[width + column] : 0, g11 = hasRow1 && hasColumn1 ? row0[width + column + 1] : 0
                sum += (g00 + g01) + (g10 + g11)
                // A g: rows (g0), (g0 + g1), (g0 − g1), (−g1); then each row (p, q) · Aᵀ = (p, p + q, p − q, −q).
                let o = mt + ty * tileColumns + tx
                func row(_ i: Int, _ p: Float, _ q: Float) {
                    o[4 * i * s] = p; o[(4 * i + 1) * s] = p + q; o[(4 * i + 2) * s] = p - q; o[(4 * i + 3) * s] = -q
                }
                row(0, g00, g01)
                row(1, g00 + g10, g01 + g11)
                row(2, g00 - g10, g01 - g11)
                row(3, -g10, -g11)
            }
        }
        return sum
    }

    /// dx = Σ over tiles of B dV Bᵀ placed at the tile's 4×4 input window, for one plane; the
    /// windows overlap, so they are summed in `gradientPlane` and its interior copied out.
    private func inverseTransformInput(from vt: UnsafePointer<Float>, stride s: Int, into dx: UnsafeMutablePointer<Float>) {
        let PW = planeWidth, plane = gradientPlane
        plane.update(repeating: 0, count: planeCount)
        for ty in 0 ..< tileRows {
            for tx in 0 ..< tileColumns {
                let q = vt + ty * tileColumns + tx
                // B dV: rows f0 = e0, f1 = e1 − e2 + e3, f2 = −e0 + e1 + e2, f3 = −e3 (e_i = row i of dV).
                let e0 = SIMD4(q[0], q[s], q[2 * s], q[3 * s]), e1 = SIMD4(q[4 * s], q[5 * s], q[6 * s], q[7 * s])
                let e2 = SIMD4(q[8 * s], q[9 * s], q[10 * s], q[11 * s]), e3 = SIMD4(q[12 * s], q[13 * s], q[14 * s], q[15 * s])
                // Each row r · Bᵀ = (r0, r1 − r2 + r3, −r0 + r1 + r2, −r3), added into the window.
                func add(_ i: Int, _ r: SIMD4<Float>) {
                    let d = plane + (2 * ty + i) * PW + 2 * tx
                    d[0] += r[0]; d[1] += r[1] - r[2] + r[3]; d[2] += r[1] + r[2] - r[0]; d[3] -= r[3]
                }
                add(0, e0); add(1, e1 - e2 + e3); add(2, e1 + e2 - e0); add(3, -e3)
            }
        }
        for h in 0 ..< height { dx.advanced(by: h * width).update(from: plane + (h + 1) * PW + 1, count: width) }
    }

    /// dg = Gᵀ dU G for every (o, c), into the [out, in, 3, 3] weight gradient.
    private func inverseTransformWeightGradient(into weightGrad: UnsafeMutablePointer<Float>) {
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
