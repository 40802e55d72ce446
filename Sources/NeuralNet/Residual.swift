/// A residual block (He et al. 2016): out = F(x) + shortcut(x), F a chain of layers and the
/// shortcut the identity or a projection — a 1×1 convolution with F's stride and no bias,
/// then a batch norm (the "option B" shortcut of ResNets, `torchvision`'s `downsample`).
///
/// Backward adds the two paths' input gradients: the shortcut's first, then the first layer's —
/// a convolution adds the shortcut's into each plane of its own as it makes it. Names follow a PyTorch module with
/// `self.layers = nn.Sequential(…)` and `self.shortcut = nn.Sequential(…)` (empty for the
/// identity): "3.layers.0.weight", "3.shortcut.1.running_mean", … (the module's source:
/// `GPTModuleSource.residual`, in exports' metadata).
/// The ReLU that ResNets apply after the sum is the next layer of the list, not part of the
/// block; the block applies it in its sum when it is fused (`ReLUFusing`). Backward then
/// masks dy once, into `maskedGrad` (or the model's shared P0, `GradientPool`), for both paths.
public final class Residual: Layer, CollectiveLayer, ReLUFusing {
    public let layers: [Layer]
    public let shortcut: [Layer]
    var appliesReLU = false
    private var inputSize = 0, size = 0
    /// The most floats a gradient of one sample takes in this block: its input's, its output's or a part's input's.
    private(set) var largestGradient = 0
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer(), maskedGrad = ActivationBuffer()
    /// Set by `placeGradients`: where backward puts the masked dy (the model's P0).
    var pooledMaskedGradient: UnsafeMutablePointer<Float>?
    /// The main path's last layer, a batch norm, makes the block's sum (and ReLU) in its
    /// output pass (`BatchNorm.residualSide`): the block then has no sum pass of its own, nor
    /// an output buffer. Set by `fuseResidualSums`, before the first `reserve`.
    public internal(set) var sumsInLastNorm = false
    private var summingNorm: BatchNorm? { sumsInLastNorm ? layers.last as? BatchNorm : nil }
    /// The main path's first layer when it is a convolution: it makes the block's input
    /// gradient itself, adding the shortcut's (`Conv2d.backward(_:batch:addingTo:)`).
    var firstConvolution: Conv2d? { layers.first as? Conv2d }
    /// The last forward's output: the summing batch norm's buffer, or `output`.
    private var blockOutput: UnsafePointer<Float>?
    /// Whether backward passes its gradients through the model's shared buffers (`placeGradients`).
    public var sharesGradients: Bool { pooledMaskedGradient != nil }

    /// `layers` must already have their shapes (built from `input` on), `shortcut` too.
    public init(layers: [Layer], shortcut: [Layer]) {
        self.layers = layers
        self.shortcut = shortcut
    }

    public var summary: String {
        "Residual(\(layers.map(\.summary).joined(separator: " → "))\(shortcut.isEmpty ? "" : "; shortcut \(shortcut.map(\.summary).joined(separator: " → "))"))"
    }
    public var pytorchModule: String {
        "Residual(nn.Sequential(\(layers.map(\.pytorchModule).joined(separator: ", "))), nn.Sequential(\(shortcut.map(\.pytorchModule).joined(separator: ", "))))"
    }

    private var named: [(prefix: String, layer: Layer)] {
        layers.enumerated().map { ("layers.\($0.offset)", $0.element) } + shortcut.enumerated().map { ("shortcut.\($0.offset)", $0.element) }
    }
    public var parameters: [ParameterSpec] {
        named.flatMap { part in part.layer.parameters.map { ParameterSpec(name: "\(part.prefix).\($0.name)", shape: $0.shape) } }
    }
    public var buffers: [ParameterSpec] {
        named.flatMap { part in part.layer.buffers.map { ParameterSpec(name: "\(part.prefix).\($0.name)", shape: $0.shape) } }
    }
    /// Dropouts inside the block (nested blocks' included), for the model's per-step reseeding.
    public private(set) lazy var dropouts: [Dropout] =
        layers.flatMap { layer -> [Dropout] in (layer as? Dropout).map { [$0] } ?? (layer as? Residual)?.dropouts ?? [] }
    /// The parts whose passes may run a collective (batch norms, nested blocks).
    private lazy var collectiveParts: [CollectiveLayer] = (layers + shortcut).compactMap { $0 as? CollectiveLayer }

    public func outputShape(for input: [Int]) throws -> [Int] {
        var main = input, largest = input.reduce(1, *)
        for layer in layers { largest = max(largest, main.reduce(1, *)); main = try layer.outputShape(for: main) }
        var side = input
        for layer in shortcut { largest = max(largest, side.reduce(1, *)); side = try layer.outputShape(for: side) }
        largestGradient = max(largest, main.reduce(1, *))
        guard main == side else {
            throw ShapeError("the block's layers give \(main) but its shortcut \(side)\(shortcut.isEmpty ? " (identity): use shortcut: projection when the block changes channels or size" : "")")
        }
        inputSize = input.reduce(1, *)
        size = main.reduce(1, *)
        return main
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>]) {
        bindParts(named.map(\.layer), parameters: parameters, gradients: gradients)
    }

    public func bind(buffers: [UnsafeMutablePointer<Float>]) {
        var next = 0
        for part in named {
            let n = part.layer.buffers.count
            if n > 0 { part.layer.bind(buffers: Array(buffers[next ..< next + n])) }
            next += n
        }
    }

    public func initialize(using generator: inout SeededGenerator) {
        for part in named { part.layer.initialize(using: &generator) }
    }

    public func reserve(batch: Int) {
        for part in named { part.layer.reserve(batch: batch) }
        if summingNorm == nil { output.reserve(batch * size) }
        guard pooledMaskedGradient == nil else { return }
        // A first convolution makes the block's input gradient itself (`backward`).
        if firstConvolution == nil { inputGrad.reserve(batch * inputSize) }
        if appliesReLU { maskedGrad.reserve(batch * size) }
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        if let last = summingNorm {
            // The shortcut first, so that the main path's last batch norm adds it (and applies
            // the ReLU) in its own output pass: that pass's output is the block's.
            var side = x
            for layer in shortcut { side = layer.forward(side, batch: batch, training: training) }
            (last.residualSide, last.sideReLU) = (side, appliesReLU)
            defer { last.residualSide = nil }
            var main = x
            for layer in layers { main = layer.forward(main, batch: batch, training: training) }
            blockOutput = main
            return main
        }
        var main = x
        for layer in layers { main = layer.forward(main, batch: batch, training: training) }
        var side = x
        for layer in shortcut { side = layer.forward(side, batch: batch, training: training) }
        let y = output.pointer, n = batch * size
        blockOutput = UnsafePointer(y)
        if appliesReLU {
            Elementwise.map(main, side, into: y, count: n) { a, b in rectified(a + b) } scalar: { a, b in max(a + b, 0) }
        } else {
            for i in 0 ..< n { y[i] = main[i] + side[i] }
        }
        return UnsafePointer(y)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        var dy = dy
        if appliesReLU {
            let masked = pooledMaskedGradient ?? maskedGrad.pointer
            mask(dy, into: masked, batch: batch)
            dy = UnsafePointer(masked)
        }
        var main: UnsafePointer<Float>? = dy
        for layer in layers.dropFirst().reversed() { main = layer.backward(main!, batch: batch, needsInputGradient: true) }
        // The block's input gradient, when asked for: each path's first layer's, summed.
        var side: UnsafePointer<Float>? = dy
        for (index, layer) in shortcut.enumerated().reversed() {
            side = layer.backward(side!, batch: batch, needsInputGradient: needsInputGradient || index > 0)
        }
        // Summed by a first convolution as it makes its planes (the usual case), else in a pass of their own.
        if needsInputGradient, let conv = firstConvolution { return conv.backward(main!, batch: batch, addingTo: side!) }
        let first = layers[0].backward(main!, batch: batch, needsInputGradient: needsInputGradient)
        guard needsInputGradient, let first, let side else { return nil }
        let dx = inputGrad.pointer
        for i in 0 ..< batch * inputSize { dx[i] = first[i] + side[i] }
        return UnsafePointer(dx)
    }

    /// The batch norms that end the main path and the shortcut: both take the masked dy.
    private lazy var normsTakingMaskedGradient: [BatchNorm] = [layers.last, shortcut.last].compactMap { $0 as? BatchNorm }

    /// dy where the block's output is positive, else 0 (the fused ReLU's backward), into
    /// `masked`. With batch norms that take it (`normsTakingMaskedGradient`), plane by plane,
    /// each plane's backward sums added for them as it is written, while it is in cache
    /// (`BatchNorm.addGradientSums`): their own pass over the batch is then not needed.
    private func mask(_ dy: UnsafePointer<Float>, into masked: UnsafeMutablePointer<Float>, batch: Int) {
        @inline(__always) func mask(_ offset: Int, _ count: Int) {
            Elementwise.map(dy + offset, blockOutput! + offset, into: masked + offset, count: count) { d, y in
                rectifiedGradient(d, preActivation: y)
            } scalar: { d, y in y > 0 ? d : 0 }
        }
        // Planes of fewer than eight values (a batchnorm1d's on [C]) in one pass instead: the
        // norms then make their sums themselves.
        let norms = normsTakingMaskedGradient
        guard let channels = norms.first?.channels, size / channels >= 8 else { return mask(0, batch * size) }
        for norm in norms { norm.beginGradientSums(of: masked, batch: batch) }
        let plane = size / channels
        for image in 0 ..< batch {
            for channel in 0 ..< channels {
                mask((image * channels + channel) * plane, plane)
                for norm in norms { norm.addGradientSums(of: masked, image: image, channel: channel) }
            }
        }
    }

    /// Every part's failure is taken (so none is left to silence a later reduction); the first returned.
    public func takeFailure() -> Error? {
        collectiveParts.compactMap { $0.takeFailure() }.first
    }

    /// Floats the largest gradient of this block takes at `batch`: that of its input, its
    /// output or any part's input (a block may be wider inside than at its ends).
    func gradientSize(batch: Int) -> Int { batch * largestGradient }

    public var flopsPerSample: (forward: Double, weightGradient: Double, inputGradient: Double) {
        named.reduce((0, 0, 0)) { total, part in
            let f = part.layer.flopsPerSample
            return (total.0 + f.forward, total.1 + f.weightGradient, total.2 + f.inputGradient)
        }
    }
}

/// Lets every residual block in `layers` (nested ones included) whose main path ends with a
/// batch norm make its sum in that batch norm's output pass (`Residual.sumsInLastNorm`): the
/// same operations in the same order, one pass and one stored tensor fewer.
func fuseResidualSums(_ layers: [Layer]) {
    forEachLayerList(layers) { list in
        for case let block as Residual in list { block.sumsInLastNorm = block.layers.last is BatchNorm }
    }
}

/// `body` on `layers`, then on every residual block's main path and shortcut in them, nested
/// blocks' too — the lists whose consecutive layers the fusions and sharings pair up.
func forEachLayerList(_ layers: [Layer], _ body: ([Layer]) -> Void) {
    body(layers)
    for case let block as Residual in layers {
        forEachLayerList(block.layers, body)
        forEachLayerList(block.shortcut, body)
    }
}

/// Calls `body` with every two layers where the second directly follows the first, in
/// `layers` and in every residual block's paths: where one layer can take over the next's pass.
func forEachAdjacentPair(_ layers: [Layer], _ body: (_ previous: Layer, _ next: Layer) -> Void) {
    forEachLayerList(layers) { list in
        for (previous, next) in zip(list, list.dropFirst()) { body(previous, next) }
    }
}
