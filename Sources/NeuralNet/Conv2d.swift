/// 2-D convolution (PyTorch `nn.Conv2d` with square kernel, stride, zero padding), as im2col +
/// a matrix product (`ConvolutionProducts`) over chunks of images, or — for 3×3, stride 1, padding 1 with enough input
/// channels — Winograd's F(4×4, 3×3) (`Winograd4x4`), which does 4× less arithmetic (or
/// F(2×2, 3×3), `Winograd3x3`, 2.25× less, when asked for).
///
/// Weight is [out, in, k, k] = a matrix W of [out, K] with K = in·k·k. For a chunk of G
/// images, im2col lays the receptive fields out as columns, `cols` = [K, G·OH·OW] (column
/// g·OH·OW + p is position p of image g), so the forward is one product W·cols = [out, G·OH·OW]
/// — far more efficient than G small products — followed by one pass that adds the bias and
/// moves each image's block into NCHW. Backward, per chunk: dW += dY·colsᵀ (im2col recomputed)
/// and dcols = Wᵀ·dY (written over `cols`), then col2im scatters dcols into dX.
///
/// G is chosen so that `cols` stays about 512 KB: im2col, the GEMM's B panel, col2im and the
/// layout passes then run in cache instead of streaming a [K, N·OH·OW] matrix (29 MB for the
/// cnn's second conv at batch 128) through DRAM several times per step.
///
/// A batch norm right after it in a layer list (`followingNorm`, `fuseConvolutionsWithBatchNorms`)
/// takes its training statistics from this layer's output as each chunk is written, and
/// backward makes that batch norm's input gradient plane by plane as it reads it. A batch norm
/// right before it (`precedingNorm`, a fused ReLU between them or not) leaves its output to
/// this layer, which normalises each input plane as it reads it, and whose backward adds that
/// batch norm's sums as it writes each plane of its input gradient.
public final class Conv2d: Layer, InputGradientPlacing {
    /// How the products are computed. Both give the same function up to float rounding.
    public enum Algorithm: Sendable {
        /// im2col + a matrix product; Winograd F(2×2, 3×3) (`Winograd3x3`); Winograd F(4×4, 3×3) (`Winograd4x4`).
        case im2col, winograd, winograd4x4
    }

    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    /// `bias: false` (a convolution before a batch norm, whose β is the bias): the layer then
    /// declares its weight only, and the kernels add a zero bias they own.
    public let hasBias: Bool
    private let zeroBias: UnsafeMutableBufferPointer<Float>, unusedBiasGrad: UnsafeMutableBufferPointer<Float>
    /// The algorithm asked for at construction; nil picks per shape (see `algorithm`).
    private let requestedAlgorithm: Algorithm?
    private let winogradLanes: Int
    private var winograd: WinogradConvolution?
    /// How the Winograd transforms' SIMD blocks cover a row of tiles ("rows of 8 lanes",
    /// "pairs of rows in 8 lanes"); nil when this convolution does not run Winograd. For tests
    /// that compare the paths.
    public var winogradBlocks: String? {
        switch winograd?.lanes {
        case .rows(let lanes)?: return "rows of \(lanes) lane\(lanes == 1 ? "" : "s")"
        case .pairedRows(let lanes)?: return "pairs of rows in \(lanes) lanes"
        case nil: return nil
        }
    }
    /// The batch norm right after this convolution (`fuseConvolutionsWithBatchNorms`): forward
    /// adds its training statistics as it writes each chunk of output; backward makes its
    /// input gradient — this layer's output gradient — plane by plane as it reads it.
    public internal(set) var followingNorm: BatchNorm?
    /// One plane of the output gradient, made by `followingNorm` for the Winograd transforms.
    private let outputGradientPlane = ActivationBuffer()
    /// The batch norm right before this convolution (`fuseConvolutionsWithBatchNorms`), which
    /// passes its input on in place of its output: forward and backward normalise each plane
    /// of it as they read it, into `inputPlane`, and backward adds its sums (`addGradientSums`)
    /// as it writes each plane of the input gradient, that batch norm's dy.
    public internal(set) var precedingNorm: BatchNorm?
    private let inputPlane = ActivationBuffer()
    private var height = 0, width = 0, outHeight = 0, outWidth = 0
    private var weight: UnsafeMutablePointer<Float>!, bias: UnsafeMutablePointer<Float>!
    private var weightGrad: UnsafeMutablePointer<Float>!, biasGrad: UnsafeMutablePointer<Float>!
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()
    var inputGradientTarget: UnsafeMutablePointer<Float>?
    private var dx: UnsafeMutablePointer<Float> { inputGradientTarget ?? inputGrad.pointer }
    private let cols = ActivationBuffer(), product = ActivationBuffer()
    /// One input plane's polyphase components (`PolyphasePlanes`): im2col's source (its padding
    /// zeroed at every `reserve`, since a new shape moves it, and never written) and col2im's sums.
    private let phases = ActivationBuffer(), phaseSums = ActivationBuffer()
    private var polyphase: PolyphasePlanes!
    private var input: UnsafePointer<Float>?

    /// `algorithm` nil chooses: Winograd F(4×4, 3×3) where it applies (3×3, stride 1, padding 1)
    /// and the input has at least 8 channels — with fewer, its products are too thin (measured
    /// with OpenBLAS's products) and the transforms dominate (the cnn's first conv, 1 channel,
    /// is faster as im2col).
    /// Measured with `bench compute --config configs/fashion-resnet.yaml --batch 64`, five
    /// alternating rounds: F(4×4) everywhere 107.6 ms a step, F(4×4) at 28×28 only 109.5,
    /// F(2×2) everywhere 116.0.
    /// `winogradLanes` (8, 4 or 1) caps the SIMD width of Winograd's transforms; the result is
    /// the same bit for bit at every width (tests compare them).
    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                bias: Bool = true, algorithm: Algorithm? = nil, winogradLanes: Int = 8) {
        precondition(inChannels > 0 && outChannels > 0 && kernel > 0 && stride > 0 && padding >= 0,
                     "Conv2d needs positive channels, kernel and stride and padding ≥ 0")
        precondition([1, 4, 8].contains(winogradLanes), "Conv2d: winogradLanes is 1, 4 or 8")
        self.requestedAlgorithm = algorithm
        self.winogradLanes = winogradLanes
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        hasBias = bias
        zeroBias = .allocate(capacity: bias ? 0 : outChannels); zeroBias.initialize(repeating: 0)
        unusedBiasGrad = .allocate(capacity: bias ? 0 : outChannels); unusedBiasGrad.initialize(repeating: 0)
        precondition(algorithm == nil || algorithm == .im2col || winogradApplies,
                     "Conv2d: Winograd needs kernel 3, stride 1, padding 1")
    }

    deinit { zeroBias.deallocate(); unusedBiasGrad.deallocate() }

    /// Winograd F(2×2, 3×3) computes exactly this shape of convolution.
    private var winogradApplies: Bool { kernel == 3 && stride == 1 && padding == 1 }

    public var summary: String { "Conv2d(\(inChannels)→\(outChannels), \(kernel)×\(kernel), stride \(stride), pad \(padding))" }
    public var pytorchModule: String { "nn.Conv2d(\(inChannels), \(outChannels), kernel_size=\(kernel), stride=\(stride), padding=\(padding)\(hasBias ? "" : ", bias=False"))" }
    /// The algorithm in use (known once the input shape is).
    public var algorithm: Algorithm {
        switch winograd {
        case is Winograd4x4: return .winograd4x4
        case nil: return .im2col
        default: return .winograd
        }
    }
    private var fieldSize: Int { inChannels * kernel * kernel }
    private var positions: Int { outHeight * outWidth }

    public var parameters: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [outChannels, inChannels, kernel, kernel])]
            + (hasBias ? [ParameterSpec(name: "bias", shape: [outChannels])] : [])
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 3, input[0] == inChannels else {
            throw ShapeError("\(summary) expects input [\(inChannels), H, W], got \(input)")
        }
        (height, width) = (input[1], input[2])
        outHeight = (height + 2 * padding - kernel) / stride + 1
        outWidth = (width + 2 * padding - kernel) / stride + 1
        guard height + 2 * padding >= kernel, width + 2 * padding >= kernel else {
            throw ShapeError("\(summary): input \(height)×\(width) is smaller than the kernel")
        }
        let chosen = requestedAlgorithm ?? (winogradApplies && inChannels >= 8 ? .winograd4x4 : .im2col)
        // Asked again for the same shape (a model's builder asks, then the model): the same
        // convolution, with the scratch a model may have shared with it.
        if let winograd, chosen == algorithm, winograd.height == height, winograd.width == width { return [outChannels, outHeight, outWidth] }
        switch chosen {
        case .im2col:
            winograd = nil
            // Its stride at most the padded input's size: past it every phase is one value and
            // the one output position reads the same ones, while the s² phases of a larger
            // stride would ask for terabytes (or overflow).
            polyphase = PolyphasePlanes(height: height, width: width, kernel: kernel,
                                        stride: min(stride, max(height, width) + 2 * padding), padding: padding)
        case .winograd: winograd = Winograd3x3(inChannels: inChannels, outChannels: outChannels, height: height, width: width,
                                               maximumLanes: winogradLanes)
        case .winograd4x4: winograd = Winograd4x4(inChannels: inChannels, outChannels: outChannels, height: height, width: width,
                                                  maximumLanes: winogradLanes)
        }
        return [outChannels, outHeight, outWidth]
    }

    /// The floats of the two scratch matrices its passes need: Winograd's V and M, or im2col's
    /// `cols` and product for a whole chunk of images (known once the input shape is).
    var scratchFloats: (input: Int, output: Int) {
        if let winograd { return (winograd.scratchFloats.v, winograd.scratchFloats.m) }
        return (fieldSize * chunk * positions, chunk * outChannels * positions)
    }
    /// Makes the passes use the model's shared scratch matrices (`ConvolutionScratch`), which
    /// `reserve` then does not allocate.
    func shareScratch(_ scratch: ConvolutionScratch) {
        if let winograd { winograd.scratch = scratch } else { sharedScratch = scratch }
    }
    private var sharedScratch: ConvolutionScratch?
    private var colsPointer: UnsafeMutablePointer<Float> { sharedScratch?.input ?? cols.pointer }
    private var productPointer: UnsafeMutablePointer<Float> { sharedScratch?.output ?? product.pointer }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGrad = gradients[0]
        (bias, biasGrad) = hasBias ? (parameters[1], gradients[1]) : (zeroBias.baseAddress!, unusedBiasGrad.baseAddress!)
    }

    /// PyTorch `_ConvNd.reset_parameters`, with fan_in = in·k·k.
    public func initialize(using generator: inout SeededGenerator) {
        generator.initializePyTorchDefault(weight: weight, weightCount: outChannels * fieldSize,
                                           bias: bias, biasCount: hasBias ? outChannels : 0, fanIn: fieldSize)
    }

    /// Images per chunk of the forward and backward passes, either algorithm's (known once
    /// the input shape is).
    public var imagesPerChunk: Int { winograd?.chunk ?? chunk }
    /// im2col's images per chunk: `cols` and the product together about 128 Ki floats (512 KB,
    /// within a core's L2; cols alone measured against 256 Ki, 1 Mi and 2 Mi with `bench compute
    /// --model cnn`: 45–46 vs 46–50 ms per step). The product counts: with more output
    /// channels than K (a stem's 9, a 1×1 projection's C) it was up to twice cols, and the
    /// pair spilled out of L2 — counting it made fashion-resnet's step 75.8 → 74.3 ms and
    /// fashion-cnn's 31.8 → 30.9 ms (medians of 12 and 3 alternating rounds).
    private var chunk: Int { max(1, (128 << 10) / max(1, (fieldSize + outChannels) * positions)) }

    public func reserve(batch: Int) {
        output.reserve(batch * outChannels * positions)
        if inputGradientTarget == nil { inputGrad.reserve(batch * inChannels * height * width) }
        if precedingNorm != nil { inputPlane.reserve(height * width) }
        if let winograd {
            winograd.reserveScratch()
            if followingNorm != nil { outputGradientPlane.reserve(positions) }
            return
        }
        let g = min(batch, chunk)
        if sharedScratch == nil {
            product.reserve(g * outChannels * positions)
            cols.reserve(fieldSize * g * positions)
        }
        // Zeroed here, not only when allocated: a new shape puts the padding elsewhere.
        phases.reserve(polyphase.size); phaseSums.reserve(polyphase.size)
        phases.pointer.update(repeating: 0, count: polyphase.size)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        input = x
        let y = output.pointer
        let statistics = training ? followingNorm : nil
        statistics?.beginStatistics(of: y, batch: batch)
        let planes = inputPlanes(x, batch: batch)
        if let winograd {
            winograd.forward(x, inputPlanes: planes, weight: weight, bias: bias, into: y, batch: batch) { images in
                statistics?.addStatistics(of: y, images: images)
            }
            return UnsafePointer(y)
        }
        let p = productPointer, P = positions
        for first in Swift.stride(from: 0, to: batch, by: chunk) {
            let images = min(chunk, batch - first), columns = images * P
            im2col(x, images: first ..< first + images, planes: planes)
            ConvolutionProducts.multiply(m: outChannels, n: columns, k: fieldSize, a: weight, lda: fieldSize, transposeA: false,
                                         b: colsPointer, ldb: columns, c: p, ldc: columns)
            // [out, G·P] → NCHW, adding the bias on the way.
            for g in 0 ..< images {
                for o in 0 ..< outChannels {
                    let source = p + o * columns + g * P, destination = y + ((first + g) * outChannels + o) * P
                    let b = bias[o]
                    Elementwise.map(source, into: destination, count: P) { $0 + SIMD8(repeating: b) } scalar: { $0 + b }
                }
            }
            statistics?.addStatistics(of: y, images: first ..< first + images)
        }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        backward(dy, batch: batch, needsInputGradient: needsInputGradient, addend: nil)
    }

    /// Backward whose input gradient is dx + `addend`: a residual block's sum of its two paths,
    /// added to each plane of dx as it is made, while it is in cache, instead of in a pass of
    /// its own over both (`Residual`). The same bits as that pass: each value is one addition.
    /// `addend` must not be where the input gradient goes (it may be `dy`: both are only read).
    public func backward(_ dy: UnsafePointer<Float>, batch: Int, addingTo addend: UnsafePointer<Float>) -> UnsafePointer<Float> {
        backward(dy, batch: batch, needsInputGradient: true, addend: addend)!
    }

    private func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool,
                          addend: UnsafePointer<Float>?) -> UnsafePointer<Float>? {
        // dy is the batch norm's own when it left its input gradient to this layer: planes of
        // that gradient are then made from dy as they are read.
        let following = followingNorm.flatMap { $0.leftInputGradient(dy, batch: batch) ? $0 : nil }
        let planes = inputPlanes(input!, batch: batch)
        // dx is the dy of the batch norm before, when it left its output to this layer: its
        // backward's sums are then added as each plane of dx is written, while it is in cache.
        let preceding = needsInputGradient && planes != nil ? precedingNorm : nil
        let dx = self.dx
        preceding?.beginGradientSums(of: dx, batch: batch)
        let written = preceding.map { norm in
            { (image: Int, channel: Int) in norm.addGradientSums(of: dx, image: image, channel: channel) }
        }
        if let winograd {
            let plane = outputGradientPlane.pointer
            let outputGradient = following.map { norm in
                { (image: Int, channel: Int) -> UnsafePointer<Float> in
                    norm.inputGradientPlane(dy, image: image, channel: channel, into: plane)
                    return UnsafePointer(plane)
                }
            }
            winograd.backward(dy, input: input!, weightGrad: weightGrad, biasGrad: hasBias ? biasGrad : nil,
                              inputGradient: needsInputGradient ? dx : nil, adding: addend, batch: batch,
                              planes: BackwardPlanes(input: planes, outputGradient: outputGradient, inputGradientWritten: written))
            return needsInputGradient ? UnsafePointer(dx) : nil
        }
        let P = positions, d = productPointer
        if hasBias { biasGrad.update(repeating: 0, count: outChannels) }
        for first in Swift.stride(from: 0, to: batch, by: chunk) {
            let images = min(chunk, batch - first), columns = images * P
            // NCHW dY → [out, G·P], and the bias gradient on the way.
            for g in 0 ..< images {
                for o in 0 ..< outChannels {
                    let destination = d + o * columns + g * P
                    if let following {
                        following.inputGradientPlane(dy, image: first + g, channel: o, into: destination)
                    } else {
                        ShortRuns.copy(dy + ((first + g) * outChannels + o) * P, to: destination, count: P)
                    }
                    guard hasBias else { continue }
                    // A sum in order, so scalar: the bias gradient's bits are those of a plain loop.
                    var sum: Float = 0
                    for i in 0 ..< P { sum += destination[i] }
                    biasGrad[o] += sum
                }
            }
            im2col(input!, images: first ..< first + images, planes: planes)
            ConvolutionProducts.multiplyTransposedB(m: outChannels, n: fieldSize, k: columns, a: d, lda: columns,
                                                    b: colsPointer, ldb: columns, c: weightGrad, ldc: fieldSize,
                                                    accumulate: first != 0)
            if needsInputGradient {
                ConvolutionProducts.multiply(m: fieldSize, n: columns, k: outChannels, a: weight, lda: fieldSize, transposeA: true,
                                             b: d, ldb: columns, c: colsPointer, ldc: columns)
                col2im(images: first ..< first + images, adding: addend, written: written)
            }
        }
        return needsInputGradient ? UnsafePointer(dx) : nil
    }

    /// The planes of the input x as `precedingNorm` makes them, when x is what it passed on
    /// in place of its output (its own input, for this batch); nil: x holds them.
    private func inputPlanes(_ x: UnsafePointer<Float>, batch: Int) -> PlaneMaker? {
        guard let norm = precedingNorm, norm.leftOutput(x, batch: batch) else { return nil }
        let plane = inputPlane.pointer
        return { image, channel in
            norm.outputPlane(image: image, channel: channel, into: plane)
            return UnsafePointer(plane)
        }
    }

    /// Row (c, ki, kj) of `cols`, column (g, oh, ow) = x[g, c, oh·s − pad + ki, ow·s − pad + kj]
    /// or 0 outside the image, for the images of one chunk: per plane (read from x, or made by
    /// `planes`), its polyphase split, then one run of outWidth floats per output row and
    /// kernel offset (`PolyphasePlanes`).
    private func im2col(_ x: UnsafePointer<Float>, images: Range<Int>, planes: PlaneMaker?) {
        let phases = self.phases.pointer
        forEachPlane(images: images) { image, channel, planeOffset, rows in
            polyphase.split(planes?(image, channel) ?? x + planeOffset, into: phases)
            forEachKernelOffset(rows, images: images.count) { offset, row in
                let window = polyphase.window(offset, in: phases)
                for oh in 0 ..< outHeight {
                    ShortRuns.copy(window + oh * polyphase.columns, to: row + oh * outWidth, count: outWidth)
                }
            }
        }
    }

    /// The adjoint of im2col for one chunk: dX[g, c, ih, iw] = the sum of the dcols entries that
    /// read it, each plane written whole, then `written` called. Each value's terms are added in
    /// kernel-offset order, starting from zero.
    private func col2im(images: Range<Int>, adding addend: UnsafePointer<Float>?, written: ((Int, Int) -> Void)?) {
        let dx = self.dx, phases = phaseSums.pointer
        forEachPlane(images: images) { image, channel, planeOffset, rows in
            phases.update(repeating: 0, count: polyphase.size)
            forEachKernelOffset(rows, images: images.count) { offset, row in
                let window = polyphase.window(offset, in: phases)
                for oh in 0 ..< outHeight {
                    ShortRuns.add(row + oh * outWidth, into: window + oh * polyphase.columns, count: outWidth)
                }
            }
            polyphase.merge(phases, into: dx + planeOffset)
            if let addend { ShortRuns.add(addend + planeOffset, into: dx + planeOffset, count: height * width) }
            written?(image, channel)
        }
    }

    /// For each image of a chunk and input channel c: the image, c, the offset of plane
    /// (image, c) in an NCHW input-shaped tensor, and where that image's columns start in row
    /// (c, 0, 0) of `cols`.
    @inline(__always)
    private func forEachPlane(images: Range<Int>,
                              _ body: (_ image: Int, _ channel: Int, _ planeOffset: Int, _ rows: UnsafeMutablePointer<Float>) -> Void) {
        let columns = images.count * positions
        for (g, image) in images.enumerated() {
            for c in 0 ..< inChannels {
                body(image, c, (image * inChannels + c) * height * width, colsPointer + c * kernel * kernel * columns + g * positions)
            }
        }
    }

    /// Kernel offsets (ki, kj) in order, as ki·kernel + kj, with the image's columns in row
    /// (c, ki, kj) of `cols` (`rows`: those of row (c, 0, 0); a row holds a chunk of `images`).
    @inline(__always)
    private func forEachKernelOffset(_ rows: UnsafeMutablePointer<Float>, images: Int,
                                     _ body: (_ offset: Int, _ row: UnsafeMutablePointer<Float>) -> Void) {
        let columns = images * positions
        for offset in 0 ..< kernel * kernel { body(offset, rows + offset * columns) }
    }

    /// FLOPs of the direct convolution, whatever the algorithm (the conventional measure, so
    /// that figures compare across implementations; Winograd F(4×4, 3×3) does 4× fewer multiplications).
    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        let macs = Double(outChannels * fieldSize * positions)
        return (2 * macs, 2 * macs, 2 * macs)
    }
}
