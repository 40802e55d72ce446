/// 2-D convolution (PyTorch `nn.Conv2d` with square kernel, stride, zero padding), as
/// im2col + `sgemm` over chunks of images, or — for 3×3, stride 1, padding 1 with enough input
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
public final class Conv2d: Layer {
    /// How the products are computed. Both give the same function up to float rounding.
    public enum Algorithm: Sendable {
        /// im2col + sgemm; Winograd F(2×2, 3×3) (`Winograd3x3`); Winograd F(4×4, 3×3) (`Winograd4x4`).
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
    private var height = 0, width = 0, outHeight = 0, outWidth = 0
    private var weight: UnsafeMutablePointer<Float>!, bias: UnsafeMutablePointer<Float>!
    private var weightGrad: UnsafeMutablePointer<Float>!, biasGrad: UnsafeMutablePointer<Float>!
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()
    private let cols = ActivationBuffer(), product = ActivationBuffer()
    /// Stride 2: one input plane split into its even and odd columns (`EvenOdd`), so that each
    /// row of `cols` is a contiguous copy — and col2im's sums, merged back once per plane.
    private let halves = ActivationBuffer()
    private var halfWidth: Int { (width + 1) / 2 }
    private var input: UnsafePointer<Float>?

    /// `algorithm` nil chooses: Winograd F(4×4, 3×3) where it applies (3×3, stride 1, padding 1)
    /// and the input has at least 8 channels — with fewer, its products are too thin for sgemm
    /// and the transforms dominate (the cnn's first conv, 1 channel, is faster as im2col).
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
        switch chosen {
        case .im2col: winograd = nil
        case .winograd: winograd = Winograd3x3(inChannels: inChannels, outChannels: outChannels, height: height, width: width,
                                               maximumLanes: winogradLanes)
        case .winograd4x4: winograd = Winograd4x4(inChannels: inChannels, outChannels: outChannels, height: height, width: width,
                                                  maximumLanes: winogradLanes)
        }
        return [outChannels, outHeight, outWidth]
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGrad = gradients[0]
        (bias, biasGrad) = hasBias ? (parameters[1], gradients[1]) : (zeroBias.baseAddress!, unusedBiasGrad.baseAddress!)
    }

    /// PyTorch `_ConvNd.reset_parameters`, with fan_in = in·k·k.
    public func initialize(using generator: inout SeededGenerator) {
        generator.initializePyTorchDefault(weight: weight, weightCount: outChannels * fieldSize,
                                           bias: bias, biasCount: hasBias ? outChannels : 0, fanIn: fieldSize)
    }

    /// Images per chunk: `cols` of about 128 Ki floats (512 KB, L2-sized; measured against
    /// 256 Ki, 1 Mi and 2 Mi with `bench compute --model cnn`: 45–46 vs 46–50 ms per step).
    private var chunk: Int { max(1, (128 << 10) / max(1, fieldSize * positions)) }

    public func reserve(batch: Int) {
        output.reserve(batch * outChannels * positions)
        inputGrad.reserve(batch * inChannels * height * width)
        guard winograd == nil else { return }
        let g = min(batch, chunk)
        product.reserve(g * outChannels * positions)
        cols.reserve(fieldSize * g * positions)
        if stride == 2 { halves.reserve(2 * height * halfWidth) }
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        input = x
        let y = output.pointer
        if let winograd {
            winograd.forward(x, weight: weight, bias: bias, into: y, batch: batch)
            return UnsafePointer(y)
        }
        let p = product.pointer, P = positions
        for first in Swift.stride(from: 0, to: batch, by: chunk) {
            let images = min(chunk, batch - first), columns = images * P
            im2col(x, images: first ..< first + images)
            sgemm(transposeA: false, transposeB: false, m: outChannels, n: columns, k: fieldSize,
                  a: weight, lda: fieldSize, b: cols.pointer, ldb: columns, beta: 0, c: p, ldc: columns)
            // [out, G·P] → NCHW, adding the bias on the way.
            for g in 0 ..< images {
                for o in 0 ..< outChannels {
                    let source = p + o * columns + g * P, destination = y + ((first + g) * outChannels + o) * P, b = bias[o]
                    for i in 0 ..< P { destination[i] = source[i] + b }
                }
            }
        }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        if let winograd {
            winograd.backward(dy, input: input!, weightGrad: weightGrad, biasGrad: hasBias ? biasGrad : nil,
                              inputGradient: needsInputGradient ? inputGrad.pointer : nil, batch: batch)
            return needsInputGradient ? UnsafePointer(inputGrad.pointer) : nil
        }
        let P = positions, d = product.pointer
        biasGrad.update(repeating: 0, count: outChannels)
        // Stride 2 writes every input-gradient plane whole (col2im's merge); others add into zeros.
        if needsInputGradient && stride != 2 { inputGrad.pointer.update(repeating: 0, count: batch * inChannels * height * width) }
        for first in Swift.stride(from: 0, to: batch, by: chunk) {
            let images = min(chunk, batch - first), columns = images * P
            // NCHW dY → [out, G·P], and the bias gradient on the way.
            for g in 0 ..< images {
                for o in 0 ..< outChannels {
                    let source = dy + ((first + g) * outChannels + o) * P, destination = d + o * columns + g * P
                    var sum: Float = 0
                    for i in 0 ..< P { destination[i] = source[i]; sum += source[i] }
                    biasGrad[o] += sum
                }
            }
            im2col(input!, images: first ..< first + images)
            sgemm(transposeA: false, transposeB: true, m: outChannels, n: fieldSize, k: columns,
                  a: d, lda: columns, b: cols.pointer, ldb: columns, beta: first == 0 ? 0 : 1, c: weightGrad, ldc: fieldSize)
            if needsInputGradient {
                sgemm(transposeA: true, transposeB: false, m: fieldSize, n: columns, k: outChannels,
                      a: weight, lda: fieldSize, b: d, ldb: columns, beta: 0, c: cols.pointer, ldc: columns)
                col2im(images: first ..< first + images)
            }
        }
        return needsInputGradient ? UnsafePointer(inputGrad.pointer) : nil
    }

    /// Row (c, ki, kj) of `cols`, column (g, oh, ow) = x[g, c, oh·s − pad + ki, ow·s − pad + kj]
    /// or 0 outside the image, for the images of one chunk. For stride 1 each output row is one
    /// contiguous copy.
    private func im2col(_ x: UnsafePointer<Float>, images: Range<Int>) {
        let hw = halfWidth, even = halves.pointer, odd = even + height * hw
        forEachKernelRow(images: images) { planeOffset, row, ki, kj in
            let plane = x + planeOffset
            // Stride 2: the plane's first kernel offset splits it (see `halves`).
            if stride == 2 && ki == 0 && kj == 0 {
                for h in 0 ..< height {
                    EvenOdd.split(plane + h * width, pairs: width / 2, even: even + h * hw, odd: odd + h * hw)
                    if width & 1 == 1 { even[h * hw + width / 2] = plane[h * width + width - 1] }
                }
            }
            forEachRow(ki: ki, kj: kj) { oh, ih, owStart, owEnd, iwStart in
                let dst = row + oh * outWidth
                guard let ih else { dst.update(repeating: 0, count: outWidth); return }
                if owStart > 0 { dst.update(repeating: 0, count: owStart) }
                if stride == 1 {
                    (dst + owStart).update(from: plane + ih * width + iwStart, count: owEnd - owStart)
                } else if stride == 2 {
                    // Columns iwStart, iwStart + 2, …: a run of the even or the odd half.
                    let half = iwStart & 1 == 0 ? even : odd
                    (dst + owStart).update(from: half + ih * hw + iwStart / 2, count: owEnd - owStart)
                } else {
                    for ow in owStart ..< owEnd { dst[ow] = plane[ih * width + iwStart + (ow - owStart) * stride] }
                }
                if owEnd < outWidth { (dst + owEnd).update(repeating: 0, count: outWidth - owEnd) }
            }
        }
    }

    /// The adjoint of im2col for one chunk: dX[g, c, ih, iw] += the dcols entries that read it.
    private func col2im(images: Range<Int>) {
        let dx = inputGrad.pointer, hw = halfWidth, even = halves.pointer, odd = even + height * hw, k = kernel
        forEachKernelRow(images: images) { planeOffset, row, ki, kj in
            let plane = dx + planeOffset
            // Stride 2: the sums go into the zeroed halves, merged into the plane after its last
            // kernel offset — each value added in the order the plane itself would take them.
            if stride == 2 && ki == 0 && kj == 0 { even.update(repeating: 0, count: 2 * height * hw) }
            forEachRow(ki: ki, kj: kj) { oh, ih, owStart, owEnd, iwStart in
                guard let ih else { return }
                let src = row + oh * outWidth
                if stride == 1 {
                    // Contiguous: a plain vectorisable add of one row segment.
                    let dst = plane + ih * width + iwStart, s = src + owStart
                    for i in 0 ..< owEnd - owStart { dst[i] += s[i] }
                } else if stride == 2 {
                    let dst = (iwStart & 1 == 0 ? even : odd) + ih * hw + iwStart / 2, s = src + owStart
                    for i in 0 ..< owEnd - owStart { dst[i] += s[i] }
                } else {
                    let dst = plane + ih * width + iwStart
                    for ow in owStart ..< owEnd { dst[(ow - owStart) * stride] += src[ow] }
                }
            }
            if stride == 2 && ki == k - 1 && kj == k - 1 {
                for h in 0 ..< height {
                    EvenOdd.merge(even: even + h * hw, odd: odd + h * hw, pairs: width / 2, into: plane + h * width)
                    if width & 1 == 1 { plane[h * width + width - 1] = even[h * hw + width / 2] }
                }
            }
        }
    }

    /// The traversal im2col and col2im share: for each image of a chunk, input channel c and
    /// kernel offset (ki, kj), the offset of plane (image, c) in an NCHW input-shaped tensor
    /// and row (c, ki, kj) of `cols` at that image's columns.
    @inline(__always)
    private func forEachKernelRow(images: Range<Int>,
                                  _ body: (_ planeOffset: Int, _ row: UnsafeMutablePointer<Float>, _ ki: Int, _ kj: Int) -> Void) {
        let columns = images.count * positions, k = kernel
        for (g, image) in images.enumerated() {
            for c in 0 ..< inChannels {
                let planeOffset = (image * inChannels + c) * height * width
                for ki in 0 ..< k {
                    for kj in 0 ..< k {
                        body(planeOffset, cols.pointer + ((c * k + ki) * k + kj) * columns + g * positions, ki, kj)
                    }
                }
            }
        }
    }

    /// For kernel offset (ki, kj) and each output row oh: the input row ih (nil if padding)
    /// and the range of output columns [owStart, owEnd) that read inside the image, starting
    /// at input column iwStart.
    @inline(__always)
    private func forEachRow(ki: Int, kj: Int, _ body: (Int, Int?, Int, Int, Int) -> Void) {
        // ow is valid when 0 ≤ ow·s − pad + kj < width.
        let owStart = min(outWidth, max(0, (padding - kj + stride - 1) / stride))
        let owEnd = max(owStart, min(outWidth, (width + padding - kj + stride - 1) / stride))
        let iwStart = owStart * stride - padding + kj
        for oh in 0 ..< outHeight {
            let ih = oh * stride - padding + ki
            body(oh, ih >= 0 && ih < height ? ih : nil, owStart, owEnd, iwStart)
        }
    }

    /// FLOPs of the direct convolution, whatever the algorithm (the conventional measure, so
    /// that figures compare across implementations; Winograd F(4×4, 3×3) does 4× fewer multiplications).
    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        let macs = Double(outChannels * fieldSize * positions)
        return (2 * macs, 2 * macs, 2 * macs)
    }
}
