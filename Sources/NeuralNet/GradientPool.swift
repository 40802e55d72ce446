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
    func reserve(_ count: Int) -> [UnsafeMutablePointer<Float>] {
        buffers.map { $0.reserve(count); return $0.pointer }
    }
}

/// A layer whose backward can write its input gradient into a buffer it is given (`target`)
/// rather than into its own, which it then does not allocate.
protocol InputGradientPlacing: Layer {
    /// Where backward writes the input gradient; nil: the layer's own buffer. Set before `reserve`.
    var inputGradientTarget: UnsafeMutablePointer<Float>? { get set }
}

extension Residual {
    /// Places this block's backward gradients in the model's shared buffers P0, P1, P2
    /// (`GradientPool`) when the block applies the ReLU after it and its parts are convolutions,
    /// batch norms and fused ReLUs (the first a convolution); otherwise the parts keep their
    /// own buffers. Backward then runs (each layer reads the gradient before it):
    ///
    /// - dy masked by the ReLU → P0;
    /// - the main path's layers after the first, last layer first → P1, P2, P1, …; the first
    ///   layer's dy lands in one of them, D, and F is the other;
    /// - the shortcut's layers, last first → F, P0, F, … (the first reads P0; D is untouched);
    /// - the first layer adds the shortcut's gradient S (F or P0, or P0 itself for the
    ///   identity) into its own, written to whichever of F and P0 S is not: the block's
    ///   input gradient, which the block before masks into its own P0.
    ///
    /// No layer writes the buffer it reads, nor one that holds a gradient still to be read.
    func placeGradients(in pool: [UnsafeMutablePointer<Float>]?) {
        let parts = layers + shortcut
        let placeable = pool != nil && appliesReLU && layers.first is Conv2d
            && parts.allSatisfy { $0 is InputGradientPlacing || ($0 as? ReLU)?.isFused == true }
        for part in parts { (part as? InputGradientPlacing)?.inputGradientTarget = nil }
        pooledGradients = nil
        guard placeable, let pool else { return }
        let (p0, p1, p2) = (pool[0], pool[1], pool[2])
        var dy = p0
        for part in layers.dropFirst().reversed() {
            guard let layer = part as? InputGradientPlacing else { continue }
            let target = dy == p1 ? p2 : p1
            layer.inputGradientTarget = target
            dy = target
        }
        let free = dy == p1 ? p2 : p1
        var side = p0
        for part in shortcut.reversed() {
            guard let layer = part as? InputGradientPlacing else { continue }
            let target = side == free ? p0 : free
            layer.inputGradientTarget = target
            side = target
        }
        let result = side == free ? p0 : free
        (layers[0] as! InputGradientPlacing).inputGradientTarget = result
        pooledGradients = (masked: p0, result: result)
    }
}
