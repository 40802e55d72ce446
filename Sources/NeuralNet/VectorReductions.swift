/// Sums, dot products and maxima over Float rows in eight SIMD lanes, combined in a fixed
/// order: the same inputs give the same bits on every rank. Written by hand because a
/// floating-point reduction in a plain loop stays scalar (LLVM may not reorder the additions),
/// and rows of 128 values — a layer norm's, a softmax's — are where a GPT step spends its
/// non-GEMM time.
enum VectorReductions {
    @inline(__always) static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var lanes = SIMD8<Float>(), i = 0
        while i + 8 <= n { lanes += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self); i += 8 }
        var total = lanes.sum()
        while i < n { total += p[i]; i += 1 }
        return total
    }

    /// Σ (p[i] − shift)².
    @inline(__always) static func squaredDeviations(_ p: UnsafePointer<Float>, _ n: Int, from shift: Float) -> Float {
        var lanes = SIMD8<Float>(), i = 0
        let center = SIMD8<Float>(repeating: shift)
        while i + 8 <= n {
            let d = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) - center
            lanes += d * d
            i += 8
        }
        var total = lanes.sum()
        while i < n { let d = p[i] - shift; total += d * d; i += 1 }
        return total
    }

    @inline(__always) static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var lanes = SIMD8<Float>(), i = 0
        while i + 8 <= n {
            lanes += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var total = lanes.sum()
        while i < n { total += a[i] * b[i]; i += 1 }
        return total
    }

    @inline(__always) static func maximum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var i = 0, best = -Float.infinity
        if n >= 8 {
            var lanes = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
            i = 8
            while i + 8 <= n {
                let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
                lanes.replace(with: v, where: v .> lanes)   // inlines (the generic pointwiseMax did not)
                i += 8
            }
            best = lanes.max()
        }
        while i < n { best = Swift.max(best, p[i]); i += 1 }
        return best
    }

    /// (Σ p[i], Σ p[i]²) in double precision — a batch norm's statistics, where Σx² − (Σx)²/m
    /// cancels and float sums would lose the variance of a channel whose mean is large
    /// against its spread. Each float widened exactly, into two chains of four double lanes
    /// (values 8k…8k+3 and 8k+4…8k+7), so that each chain's add depends on the one eight
    /// values back, not four: fashion-resnet's step 0.3–0.5 % faster in six of six alternating
    /// rounds (`bench compute`). The order is fixed, so every rank gets the same bits; it is
    /// not the one-chain order (fashion-resnet's `param_hash` happened to stay the same).
    @inline(__always) static func sumAndSquares(_ p: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        var s1 = DoubleChains(), s2 = DoubleChains(), i = 0
        while i + 8 <= n {
            let d = DoubleChains(UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self))
            s1 += d; s2 += d * d
            i += 8
        }
        var total1 = s1.sum(), total2 = s2.sum()
        while i < n { let d = Double(p[i]); total1 += d; total2 += d * d; i += 1 }
        return (total1, total2)
    }
}

/// Eight floats widened exactly to double, as two vectors of four lanes: the partial sums of
/// a reduction in two independent chains. `sum()` adds the chains lane by lane, then the
/// lanes — one fixed order, the same bits on every rank.
struct DoubleChains {
    var low = SIMD4<Double>(), high = SIMD4<Double>()
    @inline(__always) init() {}
    @inline(__always) init(low: SIMD4<Double>, high: SIMD4<Double>) { (self.low, self.high) = (low, high) }
    @inline(__always) init(_ v: SIMD8<Float>) {
        low = SIMD4<Double>(Double(v[0]), Double(v[1]), Double(v[2]), Double(v[3]))
        high = SIMD4<Double>(Double(v[4]), Double(v[5]), Double(v[6]), Double(v[7]))
    }
    @inline(__always) static func += (a: inout Self, b: Self) { a.low += b.low; a.high += b.high }
    @inline(__always) static func * (a: Self, b: Self) -> Self { Self(low: a.low * b.low, high: a.high * b.high) }
    @inline(__always) func sum() -> Double { (low + high).sum() }
}
