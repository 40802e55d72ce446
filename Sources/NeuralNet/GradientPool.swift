/// Three batch-sized buffers that a model's residual blocks share for the gradients their
/// backward passes hand from layer to layer, instead of each layer writing into its own.
///
/// Why: a layer's own input-gradient buffer is touched once a step, so by then it is out of
/// every cache, and each write first fetches its line from memory — at 16×28×28 and batch 64
/// that is 3.2 MB for every layer of a block, five times per block. Three shared buffers
/// (about 10 MB for fashion-resnet at batch 64) stay in L3 between the layers that use them,
/// and the model holds three instead of one per layer.
///
/// Where each gradient goes is `Residual.placeGradients`' rule; layers that can write their
/// input gradient where they are told are `InputGradientPlacing`.
final class GradientPool {
    private let buffers = [ActivationBuffer(), ActivationBuffer(), ActivationBuffer()]

    /// P0, P1, P2, each of at least `count` floats (valid until the next `reserve`).
    func reserve(_ count: Int) -> (buffers: [UnsafeMutablePointer<Float>], capacity: Int) {
        (buffers.map { $0.reserve(count); return $0.pointer }, buffers[0].capacity)
    }
}

/// A layer whose backward can write its input gradient into a buffer it is given (`target`)
/// rather than into its own, which it then does not allocate.
protocol InputGradientPlacing: Layer {
    /// Where backward writes the input gradient; nil: the layer's own buffer. Set before `reserve`.
    var inputGradientTarget: UnsafeMutablePointer<Float>? { get set }
    /// Whether backward writes an input gradient at all: false for a batch norm that leaves it
    /// to the convolution before it and passes its dy on (`fuseConvolutionsWithBatchNorms`).
    var placesInputGradient: Bool { get }
}

extension InputGradientPlacing {
    var placesInputGradient: Bool { true }
}

extension Residual {
    /// Whether `placeGradients` would place this block's gradients: it applies the ReLU after
    /// it, its first layer is a convolution, and its parts are convolutions, batch norms and
    /// fused ReLUs (a nested block, say, keeps its own buffers).
    var canShareGradients: Bool {
        appliesReLU && firstConvolution != nil
            && (layers + shortcut).allSatisfy { $0 is InputGradientPlacing || ($0 as? ReLU)?.isFused == true }
    }

    /// Places this block's backward gradients in the model's shared buffers P0, P1, P2
    /// (`GradientPool`) when `canShareGradients`; otherwise (or with no pool) the parts keep
    /// their own buffers. Backward then runs, each layer reading the gradient before it:
    ///
    /// - dy masked by the ReLU → P0;
    /// - the main path's layers after the first, last layer first → P1, P2, P1, …; the first
    ///   layer's dy lands in D: one of them, or P0 when no layer comes after the first. A batch
    ///   norm that leaves its input gradient to the convolution before it
    ///   (`fuseConvolutionsWithBatchNorms`) takes no buffer: it passes its dy on, which that
    ///   convolution reads to make the gradient, so the convolution writes elsewhere;
    /// - the shortcut's layers, last first: each into a buffer that is neither D nor the one
    ///   it reads (the first reads P0);
    /// - the first layer adds the shortcut's gradient S (P0 itself for the identity) into its
    ///   own, written to a buffer that is neither D nor S: the block's input gradient, which
    ///   the block before masks into its own P0.
    ///
    /// No layer writes a buffer that holds a gradient still to be read, nor (but for the
    /// element-wise mask, which may mask P0 in place) the buffer it reads.
    func placeGradients(in shared: (buffers: [UnsafeMutablePointer<Float>], capacity: Int)?, batch: Int) {
        for part in layers + shortcut { (part as? InputGradientPlacing)?.inputGradientTarget = nil }
        pooledMaskedGradient = nil
        guard let shared, canShareGradients else { return }
        precondition(gradientSize(batch: batch) <= shared.capacity, "GradientPool: buffers smaller than a block's widest gradient")
        let pool = shared.buffers
        func other(than used: UnsafeMutablePointer<Float>...) -> UnsafeMutablePointer<Float> { pool.first { !used.contains($0) }! }
        func placing(_ part: Layer) -> InputGradientPlacing? {
            (part as? InputGradientPlacing).flatMap { $0.placesInputGradient ? $0 : nil }
        }
        var dy = pool[0]
        for part in layers.dropFirst().reversed() {
            guard let layer = placing(part) else { continue }
            layer.inputGradientTarget = other(than: dy, pool[0])
            dy = layer.inputGradientTarget!
        }
        var side = pool[0]
        for part in shortcut.reversed() {
            guard let layer = placing(part) else { continue }
            layer.inputGradientTarget = other(than: dy, side)
            side = layer.inputGradientTarget!
        }
        firstConvolution!.inputGradientTarget = other(than: dy, side)
        pooledMaskedGradient = pool[0]
    }
}
