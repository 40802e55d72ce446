/// Makes plane (image, channel) of a tensor a convolution reads, in place of reading it from
/// memory (a batch norm's output or input gradient: `fuseConvolutionsWithBatchNorms`).
typealias PlaneMaker = (_ image: Int, _ channel: Int) -> UnsafePointer<Float>

/// What a convolution's backward trades plane by plane with the batch norms beside it
/// (`Conv2d.followingNorm`, `Conv2d.precedingNorm`); nil: read or write memory as usual.
struct BackwardPlanes {
    /// Makes plane (image, channel) of the input x.
    var input: PlaneMaker?
    /// Makes plane (image, channel) of the output gradient dy.
    var outputGradient: PlaneMaker?
    /// Called once plane (image, channel) of the input gradient is written, addend included.
    var inputGradientWritten: ((_ image: Int, _ channel: Int) -> Void)?
}

/// A Winograd convolution — F(2×2, 3×3) (`Winograd3x3`) or F(4×4, 3×3) (`Winograd4x4`) — as
/// the transforms of one tile size, and the one driver both share: chunks of images, the
/// `products` GEMMs per product of the transformed tile, and which SIMD lanes the transforms
/// run in.
///
/// V and M hold `products` matrices each, `vStride`/`mStride` apart for a chunk of T tiles
/// (with `slack` after each, for a transform block that spills past a short row). The
/// `forward` and `backward` requirements are satisfied by the extension's implementations,
/// so each class's witness is that code specialised for it: the lane-generic transforms it
/// calls are specialised too.
protocol WinogradConvolution: AnyObject {
    var inChannels: Int { get }
    var outChannels: Int { get }
    var height: Int { get }
    var width: Int { get }
    var tileColumns: Int { get }
    var tilesPerImage: Int { get }
    /// Images per chunk.
    var chunk: Int { get }
    /// The widest lanes the transforms use: 8, or 4 or 1 (tests compare the widths).
    var maximumLanes: Int { get }
    /// Whether the transforms take blocks of two rows of tiles (`PairedQuads`, `PairedPairs`).
    static var pairsRows: Bool { get }
    /// Elements of a transformed tile: 16 for 4×4, 36 for 6×6.
    static var products: Int { get }
    var u: UnsafeMutablePointer<Float> { get }
    var du: UnsafeMutablePointer<Float> { get }
    /// V and M (`ConvolutionScratch`): the model's, shared by its convolutions, or made at
    /// `reserve` for this one alone.
    var scratch: ConvolutionScratch? { get set }

    /// U = G g Gᵀ for every (output, input) channel pair.
    func transformWeights(_ weight: UnsafePointer<Float>)
    /// V = Bᵀ d B for every input tile of the chunk's images (planes of x, or made by `planes`).
    func transformInput<L: TileLanes>(_: L.Type, _ x: UnsafePointer<Float>, images: Range<Int>, planes: PlaneMaker?)
    /// One output plane y = Aᵀ M A + bias from M at `from`, element ξ `stride` further each.
    func transformOutput<L: TileLanes>(_: L.Type, from mt: UnsafePointer<Float>, stride s: Int, bias: Float,
                                       into y: UnsafeMutablePointer<Float>)
    /// dM = A dy Aᵀ for one gradient plane; returns its sum when `sums`.
    func transformGradient<L: TileLanes>(_: L.Type, _ dy: UnsafePointer<Float>, into mt: UnsafeMutablePointer<Float>,
                                         stride s: Int, sums: Bool) -> Float
    /// dx += B dV Bᵀ over the overlapping windows of one input plane.
    func inverseTransformInput<L: TileLanes>(_: L.Type, from vt: UnsafePointer<Float>, stride s: Int,
                                             into dx: UnsafeMutablePointer<Float>)
    /// dg = Gᵀ dU G for every channel pair, into the [out, in, 3, 3] weight gradient.
    func inverseTransformWeightGradient(into weightGrad: UnsafeMutablePointer<Float>)

    /// y = conv(x, weight) + bias for `batch` NCHW images, x's planes made by `inputPlanes`
    /// when given (x is then where they are made from, which the pass streams into cache).
    /// `afterChunk` is called with each chunk's images once their output planes are written.
    func forward(_ x: UnsafePointer<Float>, inputPlanes: PlaneMaker?, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                 into y: UnsafeMutablePointer<Float>, batch: Int, afterChunk: (Range<Int>) -> Void)
    /// Writes the weight and bias gradients and, when `inputGradient` is given, dL/dx (+ `addend`).
    /// `planes` makes the planes of x and dy in place of reading them, and hears of each plane
    /// of dx once it is written.
    func backward(_ dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, weightGrad: UnsafeMutablePointer<Float>,
                  biasGrad: UnsafeMutablePointer<Float>?, inputGradient dx: UnsafeMutablePointer<Float>?,
                  adding addend: UnsafePointer<Float>?, batch: Int, planes: BackwardPlanes)
}

extension WinogradConvolution {
    /// Floats of slack after every run a transform block may spill past.
    static var slack: Int { 16 }

    /// Images per chunk: V and M together about 1 MB, a core's L2 here. The transforms are
    /// bound by their V and M traffic, not their arithmetic (eight lanes in place of four for
    /// the 7×7 planes' transforms changed nothing), so V and M should stay in L2. Swept with
    /// `bench compute --config configs/fashion-resnet.yaml --batch 64` since every model's
    /// convolutions share one V and M (`ConvolutionScratch`), four alternating rounds, medians:
    /// 2 MB 78.5, 1.5 MB 78.2, 1 MB 76.6, 768 KB 77.6, 512 KB 78.5 ms a step; 1 MB against
    /// 2 MB in five more rounds 78.6 against 80.9, and `--model cnn` 33.0 against 33.7 ms.
    /// (Before the scratch was shared, 2 MB had been best: 256 KB 25 % slower.)
    static func imagesPerChunk(inChannels: Int, outChannels: Int, tilesPerImage: Int) -> Int {
        max(1, (1 << 20) / (products * (inChannels + outChannels) * tilesPerImage * 4))
    }

    /// U and its gradient, zero-filled (freed by the owner).
    static func allocateWeightMatrices(inChannels: Int, outChannels: Int) -> (u: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>) {
        (zeroedFloats(products * outChannels * inChannels), zeroedFloats(products * outChannels * inChannels))
    }

    /// Floats of V and of M for a chunk of `chunk` images.
    var scratchFloats: (v: Int, m: Int) {
        let T = chunk * tilesPerImage
        return (Self.products * (inChannels * T + Self.slack), Self.products * (outChannels * T + Self.slack))
    }
    var v: UnsafeMutablePointer<Float> { scratch!.input }
    var m: UnsafeMutablePointer<Float> { scratch!.output }

    /// V and M of this convolution's size when no model gave it its shared ones (at `reserve`).
    func reserveScratch() {
        if scratch == nil { scratch = ConvolutionScratch(input: scratchFloats.v, output: scratchFloats.m) }
    }
    /// How the transforms' blocks cover the tiles (`LaneChoice`).
    var lanes: LaneChoice {
        LaneChoice(maximum: maximumLanes, tileColumns: tileColumns, tileRows: tilesPerImage / tileColumns, pairsRows: Self.pairsRows)
    }
    /// The distance between V's matrices, and M's, for a chunk of T tiles.
    func vStride(_ T: Int) -> Int { inChannels * T + Self.slack }
    func mStride(_ T: Int) -> Int { outChannels * T + Self.slack }

    // The lane choice is switched on at each transform's call below, four times. One switch at
    // the top of forward and of backward, into chunk loops generic over the lanes, was measured
    // 1.5–2 % slower on fashion-resnet (2026-11-30, five alternating rounds), so the repetition stays.
    func forward(_ x: UnsafePointer<Float>, inputPlanes: PlaneMaker?, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                 into y: UnsafeMutablePointer<Float>, batch: Int, afterChunk: (Range<Int>) -> Void) {
        transformWeights(weight)
        let (C, O) = (inChannels, outChannels)
        for first in stride(from: 0, to: batch, by: chunk) {
            let images = first ..< min(first + chunk, batch), T = images.count * tilesPerImage
            streamIntoCache(x, images: images)
            transformInput(x, images: images, planes: inputPlanes)
            for xi in 0 ..< Self.products {
                ConvolutionProducts.multiply(m: O, n: T, k: C, a: u + xi * O * C, lda: C, transposeA: false,
                                             b: v + xi * vStride(T), ldb: T, c: m + xi * mStride(T), ldc: T)
            }
            switch lanes {
            case .rows(8): transformOutputs(SIMD8<Float>.self, images: images, bias: bias, into: y)
            case .rows(4): transformOutputs(SIMD4<Float>.self, images: images, bias: bias, into: y)
            case .rows: transformOutputs(Float.self, images: images, bias: bias, into: y)
            case .pairedRows(lanes: 8): transformOutputs(PairedQuads.self, images: images, bias: bias, into: y)
            case .pairedRows: transformOutputs(PairedPairs.self, images: images, bias: bias, into: y)
            }
            afterChunk(images)
        }
    }

    /// `addend`, when given, is added to the input gradient plane by plane as each is made
    /// (a residual block's other path: see `Conv2d.backward(_:batch:addingTo:)`).
    func backward(_ dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, weightGrad: UnsafeMutablePointer<Float>,
                  biasGrad: UnsafeMutablePointer<Float>?, inputGradient dx: UnsafeMutablePointer<Float>?,
                  adding addend: UnsafePointer<Float>?, batch: Int, planes: BackwardPlanes) {
        let (C, O) = (inChannels, outChannels)
        biasGrad?.update(repeating: 0, count: O)
        for first in stride(from: 0, to: batch, by: chunk) {
            let images = first ..< min(first + chunk, batch), T = images.count * tilesPerImage
            switch lanes {
            case .rows(8): transformGradients(SIMD8<Float>.self, dy, images: images, biasGrad: biasGrad, planes: planes.outputGradient)
            case .rows(4): transformGradients(SIMD4<Float>.self, dy, images: images, biasGrad: biasGrad, planes: planes.outputGradient)
            case .rows: transformGradients(Float.self, dy, images: images, biasGrad: biasGrad, planes: planes.outputGradient)
            case .pairedRows(lanes: 8): transformGradients(PairedQuads.self, dy, images: images, biasGrad: biasGrad, planes: planes.outputGradient)
            case .pairedRows: transformGradients(PairedPairs.self, dy, images: images, biasGrad: biasGrad, planes: planes.outputGradient)
            }
            streamIntoCache(x, images: images)
            transformInput(x, images: images, planes: planes.input)
            for xi in 0 ..< Self.products {
                ConvolutionProducts.multiplyTransposedB(m: O, n: C, k: T, a: m + xi * mStride(T), lda: T,
                                                        b: v + xi * vStride(T), ldb: T, c: du + xi * O * C, ldc: C,
                                                        accumulate: first != 0)
            }
            guard let dx else { continue }
            for xi in 0 ..< Self.products {
                ConvolutionProducts.multiply(m: C, n: T, k: O, a: u + xi * O * C, lda: C, transposeA: true,
                                             b: m + xi * mStride(T), ldb: T, c: v + xi * vStride(T), ldc: T)
            }
            switch lanes {
            case .rows(8): inverseTransformInputs(SIMD8<Float>.self, images: images, into: dx, adding: addend, written: planes.inputGradientWritten)
            case .rows(4): inverseTransformInputs(SIMD4<Float>.self, images: images, into: dx, adding: addend, written: planes.inputGradientWritten)
            case .rows: inverseTransformInputs(Float.self, images: images, into: dx, adding: addend, written: planes.inputGradientWritten)
            case .pairedRows(lanes: 8): inverseTransformInputs(PairedQuads.self, images: images, into: dx, adding: addend, written: planes.inputGradientWritten)
            case .pairedRows: inverseTransformInputs(PairedPairs.self, images: images, into: dx, adding: addend, written: planes.inputGradientWritten)
            }
        }
        inverseTransformWeightGradient(into: weightGrad)
    }

    /// Reads one float of every cache line of the chunk's input, in memory order, before the
    /// input transform reads it channel by channel. Why: the transform takes one 3 KB plane of
    /// each image in turn, so the first lines of nearly every plane were misses the hardware
    /// prefetcher had not seen coming; one sequential sweep (200 KB at 16×28×28 and 4 images,
    /// within L2) streams them in instead. Measured (`bench compute --config
    /// configs/fashion-resnet.yaml --batch 64`, 11 alternating rounds): 78.5 → 76.8 ms a step,
    /// medians; at np 2, 1482 → 1500 samples/s (four rounds). The same sweep over dy before the
    /// gradient transform gained nothing (77.9 against 77.6 ms): dy is a gradient still in cache.
    private func streamIntoCache(_ x: UnsafePointer<Float>, images: Range<Int>) {
        let planes = inChannels * height * width, p = x + images.lowerBound * planes, n = images.count * planes
        var sum: Float = 0, i = 0
        while i < n { sum += p[i]; i += 16 }
        scratch!.sink = sum
    }

    /// V for the chunk's images, in the lanes that fit a row of tiles.
    private func transformInput(_ x: UnsafePointer<Float>, images: Range<Int>, planes: PlaneMaker?) {
        switch lanes {
        case .rows(8): transformInput(SIMD8<Float>.self, x, images: images, planes: planes)
        case .rows(4): transformInput(SIMD4<Float>.self, x, images: images, planes: planes)
        case .rows: transformInput(Float.self, x, images: images, planes: planes)
        case .pairedRows(lanes: 8): transformInput(PairedQuads.self, x, images: images, planes: planes)
        case .pairedRows: transformInput(PairedPairs.self, x, images: images, planes: planes)
        }
    }

    /// y for every output plane of the chunk's images (M holds them).
    private func transformOutputs<L: TileLanes>(_ lanes: L.Type, images: Range<Int>, bias: UnsafePointer<Float>,
                                                into y: UnsafeMutablePointer<Float>) {
        let O = outChannels, T = images.count * tilesPerImage
        for (g, image) in images.enumerated() {
            for o in 0 ..< O {
                transformOutput(lanes, from: m + o * T + g * tilesPerImage, stride: mStride(T), bias: bias[o],
                                into: y + (image * O + o) * height * width)
            }
        }
    }

    /// dM for every gradient plane of the chunk's images (read from dy, or made by `planes`),
    /// and their sums into `biasGrad`.
    private func transformGradients<L: TileLanes>(_ lanes: L.Type, _ dy: UnsafePointer<Float>, images: Range<Int>,
                                                  biasGrad: UnsafeMutablePointer<Float>?, planes: PlaneMaker?) {
        let O = outChannels, T = images.count * tilesPerImage
        // Channel, then image: a spilling block writes only into tiles written after it.
        for o in 0 ..< O {
            for (g, image) in images.enumerated() {
                let plane = planes?(image, o) ?? dy + (image * O + o) * height * width
                let sum = transformGradient(lanes, plane,
                                            into: m + o * T + g * tilesPerImage, stride: mStride(T), sums: biasGrad != nil)
                biasGrad?[o] += sum
            }
        }
    }

    /// dx for every input plane of the chunk's images (V holds dV), `written` called after each.
    private func inverseTransformInputs<L: TileLanes>(_ lanes: L.Type, images: Range<Int>, into dx: UnsafeMutablePointer<Float>,
                                                      adding addend: UnsafePointer<Float>?, written: ((Int, Int) -> Void)?) {
        let C = inChannels, T = images.count * tilesPerImage, size = height * width
        for (g, image) in images.enumerated() {
            for c in 0 ..< C {
                let plane = (image * C + c) * size
                inverseTransformInput(lanes, from: v + c * T + g * tilesPerImage, stride: vStride(T), into: dx + plane)
                if let addend { ShortRuns.add(addend + plane, into: dx + plane, count: size) }
                written?(image, c)
            }
        }
    }
}

/// `count` zero floats, 64-byte aligned: the Winograd convolutions' matrices and scratch.
func zeroedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64).initializeMemory(as: Float.self, repeating: 0, count: count)
}
