/// Batch normalisation (Ioffe & Szegedy 2015) with PyTorch's semantics — `nn.BatchNorm2d` on
/// [C, H, W] samples, `nn.BatchNorm1d` on [C] or [C, L] samples: per channel,
///
///     training:   y = (x − μ_B)/√(σ²_B + eps)·γ + β,  μ_B, σ²_B the batch's mean and biased variance
///                 running_mean ← (1 − momentum)·running_mean + momentum·μ_B
///                 running_var  ← (1 − momentum)·running_var  + momentum·σ²_B·m/(m − 1)   (unbiased)
///                 num_batches_tracked += 1
///     evaluation: y = (x − running_mean)/√(running_var + eps)·γ + β
///
/// over the m = batch·H·W values of a channel. `momentum` nil is PyTorch's `momentum=None`, the
/// cumulative average: the factor is 1/num_batches_tracked (counted after this batch), so the
/// running statistics are the plain mean of every batch's so far (`_BatchNorm.forward`).
/// num_batches_tracked is a Float in the buffer: exact to 2²⁴ batches, after which it (and
/// the cumulative factor) stops moving. The running statistics are *buffers*: state in
/// the model's flat buffer of buffers (checkpointed, hashed, exported), not parameters.
///
/// Backward, with x̂ the normalised input: dγ = Σ dy·x̂, dβ = Σ dy,
/// dx = γ/√(σ² + eps) · (dy − Σdy/m − x̂·Σ(dy·x̂)/m).
///
/// `statisticsReducer`, when set, sums the per-channel statistics over every rank — PyTorch's
/// `SyncBatchNorm`: forward's Σx, Σx² and m, and backward's Σdy, Σdy·x̂ (the parameter gradients
/// stay this rank's sums, which the gradient all-reduce then averages). A step on n ranks is
/// then one step on the global batch. A reducer that throws leaves its error in
/// `failure`, which the model raises when the pass ends.
///
/// Right after a convolution, training's statistics are made by the convolution as it writes
/// each chunk of its output, and backward's input gradient by the convolution as it reads each
/// plane of it; right before one, the output is made by that convolution as it reads each
/// plane of its input, and backward's sums as it writes each plane of its input gradient — this
/// layer's dy (`fuseConvolutionsWithBatchNorms`). A residual block's ReLU mask makes the
/// backward sums of the batch norms ending its paths likewise (`Residual`). The same values,
/// in the same order.
///
/// A ReLU right after it is applied where its output is made (`ReLUFusing`: its output pass,
/// or `outputPlane`); backward recomputes the pre-activation x̂·γ + β, bit for bit, for the
/// ReLU's mask on dy.
public final class BatchNorm: Layer, CollectiveLayer, ReLUFusing, InputGradientPlacing {
    public let channels: Int
    public let epsilon: Float
    /// The running statistics' factor; nil: the cumulative average (PyTorch's `momentum=None`).
    public let momentum: Float?
    /// 2 for `nn.BatchNorm2d` ([C, H, W]), 1 for `nn.BatchNorm1d` ([C] or [C, L]).
    public let dimensions: Int
    public var statisticsReducer: ((UnsafeMutableBufferPointer<Double>) throws -> Void)?
    /// This rank's weight in the global batch's mean gradient (n·share/B: 1 when the ranks hold
    /// equal shares). Its dy is the gradient of its own batch's mean loss; backward's sums are
    /// scaled by it before they are added across ranks — so that they are the global batch's —
    /// and back after.
    public var gradientWeight: Double = 1
    var appliesReLU = false
    /// The input and batch the sums were begun for (`beginStatistics`), until forward uses
    /// them: set by the convolution before this batch norm when it adds its output's sums as it
    /// writes each chunk of images, while they are still in cache (`fuseConvolutionsWithBatchNorms`), so
    /// that training's forward makes no pass of its own over the batch for them.
    private var statisticsMadeFor: TensorBatch?
    /// Set when a convolution comes right before (`fuseConvolutionsWithBatchNorms`): backward
    /// then makes its sums only and returns its dy, and that convolution's backward asks for dx
    /// plane by plane as it reads it (`inputGradientPlane`), into cache — instead of this layer
    /// writing dx for the whole batch and the convolution reading it back. Why: on a core bound
    /// by its memory traffic, dx's write and read cost more than recomputing it, and the layer
    /// then needs no dx buffer.
    public internal(set) var leavesInputGradientToConvolution = false
    var placesInputGradient: Bool { !leavesInputGradientToConvolution }
    /// The dy and batch of the last backward, when it left dx to the convolution.
    private var pendingGradient: TensorBatch?
    /// Set when a convolution comes right after (a fused ReLU between them or not,
    /// `fuseConvolutionsWithBatchNorms`): forward then makes the statistics only and passes its
    /// input on, and that convolution normalises each plane as it reads it, in forward and
    /// again in backward (`outputPlane`) — so the output is never written, nor read back, nor
    /// kept. Backward needs only the input.
    public internal(set) var leavesOutputToConvolution = false
    /// The dy and batch the backward sums were begun for (`beginGradientSums`), until backward
    /// uses them: set by the layer that writes this layer's dy — the convolution after it, as
    /// it writes each plane of its input gradient, or a residual block's ReLU mask — which adds
    /// them plane by plane while it is in cache.
    private var gradientSumsMadeFor: TensorBatch?
    /// Whether the last training forward's statistics, and the last backward's sums, were
    /// made by a neighbour (so a test can tell the fused passes ran, not this layer's own).
    public private(set) var neighbourMadeStatistics = false, neighbourMadeGradientSums = false
    /// Per channel, mean(dy) then mean(dy·x̂) of the last backward: what dx needs beyond dy and x.
    private let gradientMeans = ActivationBuffer()
    /// A residual block's shortcut output when this batch norm ends the block's main path: the
    /// output pass writes BN(x) + side, then the block's ReLU when `sideReLU` — the block's sum
    /// made in this pass instead of one of its own over two stored tensors (`Residual`). Set
    /// by the block around each forward. Backward takes the block's masked dy, whose sums the
    /// block's mask adds (`Residual`).
    var residualSide: UnsafePointer<Float>?, sideReLU = false
    private var failure: Error?
    private var spatial = 1
    /// Values a sample gives each channel (H·W, L or 1), known once the model's shapes are.
    public var valuesPerSample: Int { spatial }
    private var weight: UnsafeMutablePointer<Float>!, bias: UnsafeMutablePointer<Float>!
    private var weightGrad: UnsafeMutablePointer<Float>!, biasGrad: UnsafeMutablePointer<Float>!
    private var runningMean: UnsafeMutablePointer<Float>!, runningVar: UnsafeMutablePointer<Float>!
    private var batchesTracked: UnsafeMutablePointer<Float>!
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()
    var inputGradientTarget: UnsafeMutablePointer<Float>?
    /// The last forward's input and batch and, per channel, the mean and 1/√(σ² + eps) it
    /// normalised with: backward recomputes x̂ = (x − μ)·rstd from them, bit for bit as forward
    /// did, instead of forward writing x̂ out (one stream less, and a batch-sized buffer less per
    /// batch norm).
    private var forwarded: TensorBatch?
    private var input: UnsafePointer<Float>? { forwarded?.tensor }
    private let means = ActivationBuffer(), rstds = ActivationBuffer()
    private let sums: UnsafeMutableBufferPointer<Double>
    /// The batch's values per channel, all ranks together with a reducer (for backward).
    private var count = 0.0

    public init(channels: Int, dimensions: Int, epsilon: Float = 1e-5, momentum: Float? = 0.1) {
        precondition(channels > 0 && (dimensions == 1 || dimensions == 2), "BatchNorm needs channels > 0 and 1 or 2 dimensions")
        self.channels = channels
        self.dimensions = dimensions
        self.epsilon = epsilon
        self.momentum = momentum
        sums = .allocate(capacity: 2 * channels + 1)
        sums.initialize(repeating: 0)
    }

    deinit { sums.deallocate() }

    public var summary: String { "BatchNorm\(dimensions)d(\(channels))" }
    public var pytorchModule: String {
        let options = (epsilon != 1e-5 ? ", eps=\(epsilon)" : "") + (momentum.map { $0 != 0.1 ? ", momentum=\($0)" : "" } ?? ", momentum=None")
        return "nn.BatchNorm\(dimensions)d(\(channels)\(options))"
    }
    public var parameters: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [channels]), ParameterSpec(name: "bias", shape: [channels])]
    }
    /// PyTorch's buffer names and shapes (num_batches_tracked is a 0-dimensional tensor).
    public var buffers: [ParameterSpec] {
        [ParameterSpec(name: "running_mean", shape: [channels]), ParameterSpec(name: "running_var", shape: [channels]),
         ParameterSpec(name: "num_batches_tracked", shape: [])]
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        let expected = dimensions == 2 ? "[\(channels), H, W]" : "[\(channels)] or [\(channels), L]"
        let fits = input.first == channels && (dimensions == 2 ? input.count == 3 : (input.count == 1 || input.count == 2))
        guard fits else { throw ShapeError("\(summary) takes \(expected), got \(input)") }
        spatial = input.dropFirst().reduce(1, *)
        return input
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; bias = parameters[1]
        weightGrad = gradients[0]; biasGrad = gradients[1]
    }

    public func bind(buffers: [UnsafeMutablePointer<Float>]) {
        runningMean = buffers[0]; runningVar = buffers[1]; batchesTracked = buffers[2]
    }

    /// PyTorch's: γ = 1, β = 0, running mean 0, running variance 1, no batches tracked.
    public func initialize(using generator: inout SeededGenerator) {
        weight.update(repeating: 1, count: channels); bias.update(repeating: 0, count: channels)
        runningMean?.update(repeating: 0, count: channels); runningVar?.update(repeating: 1, count: channels)
        batchesTracked?.pointee = 0
    }

    public func reserve(batch: Int) {
        let n = batch * channels * spatial
        if !leavesOutputToConvolution { output.reserve(n) }
        means.reserve(channels); rstds.reserve(channels); gradientMeans.reserve(2 * channels)
        if inputGradientTarget == nil && placesInputGradient { inputGrad.reserve(n) }
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        let c = channels, s = spatial, y = output.pointer, mean = means.pointer, rstd = rstds.pointer
        forwarded = TensorBatch(x, batch)
        if training {
            // The convolution's sums only when they are this input's, whole batch: a layer run
            // outside its model, or after a convolution run for evaluation, makes its own.
            neighbourMadeStatistics = statisticsMadeFor == TensorBatch(x, batch)
            if !neighbourMadeStatistics {
                beginStatistics(of: x, batch: batch)
                addStatistics(of: x, images: 0 ..< batch)
            }
            statisticsMadeFor = nil
            sums[2 * c] = Double(batch * s)
            reduce()
            count = sums[2 * c]
            let momentum = self.momentum ?? 1 / (batchesTracked.pointee + 1)
            for ch in 0 ..< c {
                let mu = sums[ch] / count, variance = max(0, sums[c + ch] / count - mu * mu)
                rstd[ch] = Float(1 / (variance + Double(epsilon)).squareRoot())
                runningMean[ch] = (1 - momentum) * runningMean[ch] + momentum * Float(mu)
                runningVar[ch] = (1 - momentum) * runningVar[ch] + momentum * Float(variance * count / max(1, count - 1))
                mean[ch] = Float(mu)
            }
            batchesTracked.pointee += 1
        } else {
            for ch in 0 ..< c {
                mean[ch] = runningMean[ch]
                rstd[ch] = 1 / (runningVar[ch] + epsilon).squareRoot()
            }
        }
        if leavesOutputToConvolution { return x }
        for b in 0 ..< batch {
            for ch in 0 ..< c {
                let offset = (b * c + ch) * s
                if let side = residualSide {
                    Self.normalize(x + offset, s, mean: mean[ch], rstd: rstd[ch], gamma: weight[ch], beta: bias[ch], adding: side + offset,
                                   relu: sideReLU, y: y + offset)
                } else {
                    Self.normalize(x + offset, s, mean: mean[ch], rstd: rstd[ch], gamma: weight[ch], beta: bias[ch], relu: appliesReLU,
                                   y: y + offset)
                }
            }
        }
        return UnsafePointer(y)
    }

    /// Whether `x` and `batch` are those of the last forward, whose output was left to the
    /// convolution after this layer: then it is made plane by plane by `outputPlane`, until the
    /// next forward. The convolution asks before it reads its input, in forward and backward.
    func leftOutput(_ x: UnsafePointer<Float>, batch: Int) -> Bool {
        leavesOutputToConvolution && forwarded == TensorBatch(x, batch)
    }

    /// The output of one plane — `image`'s channel `channel` — of the last forward, into `y`:
    /// the values forward writes when it makes its output itself.
    @inline(__always)
    func outputPlane(image: Int, channel ch: Int, into y: UnsafeMutablePointer<Float>) {
        let offset = (image * channels + ch) * spatial
        Self.normalize(input! + offset, spatial, mean: means.pointer[ch], rstd: rstds.pointer[ch], gamma: weight[ch], beta: bias[ch],
                       relu: appliesReLU, y: y)
    }

    /// Zeroes the forward statistics' sums before the first `addStatistics` of a batch of
    /// `batch` inputs at `x`, which training's forward then checks it is given.
    func beginStatistics(of x: UnsafePointer<Float>, batch: Int) {
        sums.update(repeating: 0)
        statisticsMadeFor = TensorBatch(x, batch)
    }

    /// Adds Σx and Σx² of `images`' planes of x — this layer's input — to the statistics, image
    /// by image, every channel of an image before the next: the planes are read one after
    /// another, in memory order (a channel-outer loop jumped a whole image's channels between
    /// reads: 196-byte planes at 7×7, each a fresh miss). Each channel's sums still add image by
    /// image, so the bits are those of the channel-outer loop, and those of one call over the
    /// whole batch, whichever chunks of images the calls take in order.
    func addStatistics(of x: UnsafePointer<Float>, images: Range<Int>) {
        let c = channels, s = spatial
        for b in images {
            for ch in 0 ..< c {
                let (r1, r2) = VectorReductions.sumAndSquares(x + (b * c + ch) * s, s)
                sums[ch] += r1; sums[c + ch] += r2
            }
        }
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        let c = channels
        pendingGradient = nil
        // A neighbour's sums only when they were begun for this dy and batch.
        neighbourMadeGradientSums = gradientSumsMadeFor == TensorBatch(dy, batch)
        if !neighbourMadeGradientSums {
            beginGradientSums(of: dy, batch: batch)
            for b in 0 ..< batch {
                for ch in 0 ..< c { addGradientSums(of: dy, image: b, channel: ch) }
            }
        }
        gradientSumsMadeFor = nil
        for ch in 0 ..< c { weightGrad[ch] = Float(sums[c + ch]); biasGrad[ch] = Float(sums[ch]) }
        guard needsInputGradient else { return nil }
        sums[2 * c] = 0
        if statisticsReducer != nil && gradientWeight != 1 {
            for i in 0 ..< 2 * c { sums[i] *= gradientWeight }
            reduce()
            for i in 0 ..< 2 * c { sums[i] /= gradientWeight }
        } else {
            reduce()
        }
        let means = gradientMeans.pointer
        for ch in 0 ..< c { means[ch] = Float(sums[ch] / count); means[c + ch] = Float(sums[c + ch] / count) }
        if leavesInputGradientToConvolution {
            pendingGradient = TensorBatch(dy, batch)
            return dy
        }
        let dx = inputGradientTarget ?? inputGrad.pointer, s = spatial
        for b in 0 ..< batch {
            for ch in 0 ..< c { inputGradientPlane(dy, image: b, channel: ch, into: dx + (b * c + ch) * s) }
        }
        return UnsafePointer(dx)
    }

    /// Zeroes backward's sums before the first `addGradientSums` of a batch of `batch`
    /// gradients at `dy`, which backward then checks it is given.
    func beginGradientSums(of dy: UnsafePointer<Float>, batch: Int) {
        sums.update(repeating: 0)
        gradientSumsMadeFor = TensorBatch(dy, batch)
    }

    /// Adds Σdy and Σdy·x̂ of one plane of dy — `image`'s channel `channel` — to backward's
    /// sums. Each channel's sums add image by image, so calls that take every channel of an
    /// image before the next (backward's own order), or every image of a channel in order,
    /// give the same bits.
    @inline(__always)
    func addGradientSums(of dy: UnsafePointer<Float>, image: Int, channel ch: Int) {
        let offset = (image * channels + ch) * spatial
        let (r1, r2) = Self.sumsOfGradient(dy + offset, input! + offset, spatial, mean: means.pointer[ch], rstd: rstds.pointer[ch],
                                           relu: appliesReLU ? (weight[ch], bias[ch]) : nil)
        sums[ch] += r1; sums[channels + ch] += r2
    }

    /// Whether `dy` and `batch` are those of the last backward, whose dx was left to the
    /// convolution before this layer: then it is made plane by plane by `inputGradientPlane`,
    /// until the next backward. The convolution asks before it reads its output gradient.
    func leftInputGradient(_ dy: UnsafePointer<Float>, batch: Int) -> Bool {
        pendingGradient == TensorBatch(dy, batch)
    }

    /// dx of one plane — `image`'s channel `channel` — of the last backward, whose output
    /// gradient was `dy`, into `dx`: the values backward writes when it makes dx itself.
    @inline(__always)
    func inputGradientPlane(_ dy: UnsafePointer<Float>, image: Int, channel ch: Int, into dx: UnsafeMutablePointer<Float>) {
        let offset = (image * channels + ch) * spatial, rstd = rstds.pointer[ch], means = gradientMeans.pointer
        Self.inputGradient(dy + offset, input! + offset, spatial, mean: self.means.pointer[ch], rstd: rstd, scale: weight[ch] * rstd,
                           meanDy: means[ch], meanDyX: means[channels + ch],
                           relu: appliesReLU ? (weight[ch], bias[ch]) : nil, into: dx)
    }

    /// y = x̂·γ + β with x̂ = (x − μ)·rstd over one row, then max(y, 0) when `relu`, eight lanes
    /// at a time (a plain loop stays scalar: LLVM cannot rule out that the pointers overlap).
    @inline(__always)
    private static func normalize(_ x: UnsafePointer<Float>, _ n: Int, mean: Float, rstd: Float, gamma: Float, beta: Float,
                                  relu: Bool, y: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        let m = V(repeating: mean), r = V(repeating: rstd), g = V(repeating: gamma), b = V(repeating: beta)
        var i = 0
        if relu {
            while i + 8 <= n {
                let v = (UnsafeRawPointer(x + i).loadUnaligned(as: V.self) - m) * r
                UnsafeMutableRawPointer(y + i).storeBytes(of: rectified(v * g + b), as: V.self)
                i += 8
            }
        } else {
            while i + 8 <= n {
                let v = (UnsafeRawPointer(x + i).loadUnaligned(as: V.self) - m) * r
                UnsafeMutableRawPointer(y + i).storeBytes(of: v * g + b, as: V.self)
                i += 8
            }
        }
        while i < n { let v = (x[i] - mean) * rstd, z = v * gamma + beta; y[i] = relu ? max(z, 0) : z; i += 1 }
    }

    /// normalize's values plus `side` (a residual block's sum), then max(·, 0) when `relu`: the
    /// same operations, in the same order, as `normalize` followed by the block's sum.
    @inline(__always)
    private static func normalize(_ x: UnsafePointer<Float>, _ n: Int, mean: Float, rstd: Float, gamma: Float, beta: Float,
                                  adding side: UnsafePointer<Float>, relu: Bool, y: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        let m = V(repeating: mean), r = V(repeating: rstd), g = V(repeating: gamma), b = V(repeating: beta)
        var i = 0
        while i + 8 <= n {
            let v = (UnsafeRawPointer(x + i).loadUnaligned(as: V.self) - m) * r
            let sum = (v * g + b) + UnsafeRawPointer(side + i).loadUnaligned(as: V.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: relu ? rectified(sum) : sum, as: V.self)
            i += 8
        }
        while i < n { let v = (x[i] - mean) * rstd, z = (v * gamma + beta) + side[i]; y[i] = relu ? max(z, 0) : z; i += 1 }
    }

    /// (Σ dy, Σ dy·x̂) over one row in double precision (`DoubleChains`: two chains of four
    /// double lanes), x̂ recomputed from x as `normalize` computes it. With `relu` = (γ, β), dy
    /// is first masked where the fused ReLU's pre-activation x̂·γ + β was not positive.
    @inline(__always)
    private static func sumsOfGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int,
                                       mean: Float, rstd: Float, relu: (gamma: Float, beta: Float)?) -> (Double, Double) {
        typealias V = SIMD8<Float>
        let m = V(repeating: mean), r = V(repeating: rstd)
        let g = V(repeating: relu?.gamma ?? 0), b = V(repeating: relu?.beta ?? 0)
        var s1 = DoubleChains(), s2 = DoubleChains(), i = 0
        while i + 8 <= n {
            var d = UnsafeRawPointer(dy + i).loadUnaligned(as: V.self)
            let h = (UnsafeRawPointer(x + i).loadUnaligned(as: V.self) - m) * r
            if relu != nil { d = rectifiedGradient(d, preActivation: h * g + b) }
            let dd = DoubleChains(d)
            s1 += dd
            s2 += dd * DoubleChains(h)
            i += 8
        }
        var total1 = s1.sum(), total2 = s2.sum()
        while i < n {
            let h = (x[i] - mean) * rstd
            let d = Double(relu.map { h * $0.gamma + $0.beta > 0 ? dy[i] : 0 } ?? dy[i])
            total1 += d; total2 += d * Double(h); i += 1
        }
        return (total1, total2)
    }

    /// dx = scale·(dy − mean(dy) − x̂·mean(dy·x̂)) over one row, eight lanes at a time, x̂
    /// recomputed from x as `normalize` computes it.
    @inline(__always)
    private static func inputGradient(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int, mean: Float, rstd: Float,
                                      scale: Float, meanDy: Float, meanDyX: Float, relu: (gamma: Float, beta: Float)?,
                                      into dx: UnsafeMutablePointer<Float>) {
        typealias V = SIMD8<Float>
        let k = V(repeating: scale), md = V(repeating: meanDy), mdx = V(repeating: meanDyX)
        let m = V(repeating: mean), r = V(repeating: rstd)
        let g = V(repeating: relu?.gamma ?? 0), b = V(repeating: relu?.beta ?? 0)
        var i = 0
        while i + 8 <= n {
            var d = UnsafeRawPointer(dy + i).loadUnaligned(as: V.self)
            let h = (UnsafeRawPointer(x + i).loadUnaligned(as: V.self) - m) * r
            if relu != nil { d = rectifiedGradient(d, preActivation: h * g + b) }
            UnsafeMutableRawPointer(dx + i).storeBytes(of: k * (d - md - h * mdx), as: V.self)
            i += 8
        }
        while i < n {
            let h = (x[i] - mean) * rstd
            let d = relu.map { h * $0.gamma + $0.beta > 0 ? dy[i] : 0 } ?? dy[i]
            dx[i] = scale * (d - meanDy - h * meanDyX); i += 1
        }
    }

    /// Sums `sums` over the ranks when synchronised; a failure is kept for the model to raise.
    private func reduce() {
        guard let statisticsReducer, failure == nil else { return }
        do { try statisticsReducer(sums) } catch { failure = error }
    }

    public func takeFailure() -> Error? {
        defer { failure = nil }
        return failure
    }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        let n = Double(channels * spatial)
        return (6 * n, 4 * n, 5 * n)
    }
}

/// A layer whose pass may run a collective (a synchronised batch norm): its failure is kept
/// until the model asks, because `Layer.forward` and `backward` do not throw.
public protocol CollectiveLayer: AnyObject {
    func takeFailure() -> Error?
}

/// Pairs every convolution in `layers` (and in residual blocks' paths) with the batch norm
/// right after it, so that the convolution makes two of the batch norm's passes as part of
/// its own, while the data is in cache: training's statistics, added as each chunk of images'
/// output is written (instead of the batch norm reading the whole batch again), and
/// backward's input gradient, made plane by plane as the convolution's backward reads it
/// (instead of being written for the whole batch and read back). The same operations in the
/// same order, so the same bits.
///
/// And every batch norm followed by a convolution — directly, or through a ReLU it has fused
/// (`fuseReLUs`, which must run first) — leaves its output to that convolution, which
/// normalises each input plane as it reads it (into cache), in forward and again in backward:
/// the batch norm's output pass, and its output, are gone. That convolution's backward also
/// adds the batch norm's backward sums as it writes each plane of its input gradient.
func fuseConvolutionsWithBatchNorms(_ layers: [Layer]) {
    forEachLayerList(layers) { list in
        // A fused ReLU passes values and gradients through untouched, so it does not part the
        // two (a convolution fuses none, so one only ever sits between a batch norm and what follows).
        let passes = list.filter { ($0 as? ReLU)?.isFused != true }
        for (previous, next) in zip(passes, passes.dropFirst()) {
            if let convolution = previous as? Conv2d, let batchNorm = next as? BatchNorm {
                convolution.followingNorm = batchNorm
                batchNorm.leavesInputGradientToConvolution = true
            } else if let batchNorm = previous as? BatchNorm, let convolution = next as? Conv2d {
                convolution.precedingNorm = batchNorm
                batchNorm.leavesOutputToConvolution = true
            }
        }
    }
}

/// A tensor and the batch it holds: what the second half of a pass that two layers share checks
/// it is given — the statistics or sums begun, the output or input gradient left — so that it
/// never finishes one begun for other data (a layer run outside its model, an evaluation at
/// another batch size).
struct TensorBatch: Equatable {
    let tensor: UnsafePointer<Float>, batch: Int
    init(_ tensor: UnsafePointer<Float>, _ batch: Int) { (self.tensor, self.batch) = (tensor, batch) }
}
