/// A layer that can apply the ReLU that follows it in its own last pass over the values.
///
/// A separate ReLU reads and writes the whole activation in forward and again in backward,
/// and keeps two activation-sized buffers. Batch norm and a residual block's sum already make
/// a pass over the same values, so they take the ReLU into it (as cuDNN's and oneDNN's fused
/// batch-norm + ReLU do): forward clamps as it writes, backward zeroes dy where the output was
/// not positive. The ReLU stays in the layer list — names, summaries and exports are those of
/// the unfused model — and passes values and gradients through untouched.
///
/// Bit for bit the same as the unfused layers: the clamp is ReLU's `max(v, 0)` (−0 and 0 give
/// +0, NaN stays NaN), and the mask is ReLU's `y > 0`.
protocol ReLUFusing: Layer {
    /// Set once, before the first `reserve`.
    var appliesReLU: Bool { get set }
}

/// Fuses every ReLU that directly follows a `ReLUFusing` layer in `layers` into that layer,
/// and so on inside residual blocks' paths, nested blocks' included.
func fuseReLUs(_ layers: [Layer]) {
    forEachAdjacentPair(layers) { previous, next in
        guard let fusing = previous as? ReLUFusing, let relu = next as? ReLU else { return }
        fusing.appliesReLU = true
        relu.isFused = true
    }
}

// The lane helpers are written for the concrete vector types: in a function generic over
// `SIMD`, comparisons and `&` resolve to the protocol's lane-by-lane implementations even once
// specialised (measured: batch norm 2× slower), and so does `replacing(with:where:)`.

/// ReLU's clamp, `max(v, 0)`, in lanes: +0 where v ≤ 0 (−0 too), v otherwise (NaN too).
@inline(__always)
func rectified(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let keep = unsafeBitCast(.!(v .<= 0), to: SIMD8<Int32>.self)
    return unsafeBitCast(unsafeBitCast(v, to: SIMD8<Int32>.self) & keep, to: SIMD8<Float>.self)
}

/// ReLU's gradient, `y > 0 ? dy : 0`, in lanes, with the mask taken from the pre-activation v
/// (y > 0 exactly when v > 0).
@inline(__always)
func rectifiedGradient(_ dy: SIMD8<Float>, preActivation v: SIMD8<Float>) -> SIMD8<Float> {
    let keep = unsafeBitCast(v .> 0, to: SIMD8<Int32>.self)
    return unsafeBitCast(unsafeBitCast(dy, to: SIMD8<Int32>.self) & keep, to: SIMD8<Float>.self)
}
