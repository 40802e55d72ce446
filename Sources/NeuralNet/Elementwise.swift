/// Element-wise passes over Float rows in eight SIMD lanes, with a scalar tail.
///
/// Written out because a plain loop over several pointers may stay scalar: LLVM cannot always
/// rule out that they overlap. `lanes` and `scalar` must compute the same function.
enum Elementwise {
    /// z[i] = f(a[i], b[i]).
    @inline(__always)
    static func map(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into z: UnsafeMutablePointer<Float>, count n: Int,
                    _ lanes: (SIMD8<Float>, SIMD8<Float>) -> SIMD8<Float>, scalar: (Float, Float) -> Float) {
        var i = 0
        while i + 8 <= n {
            let r = lanes(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self), UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self))
            UnsafeMutableRawPointer(z + i).storeBytes(of: r, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { z[i] = scalar(a[i], b[i]); i += 1 }
    }

    /// z[i] = f(a[i]).
    @inline(__always)
    static func map(_ a: UnsafePointer<Float>, into z: UnsafeMutablePointer<Float>, count n: Int,
                    _ lanes: (SIMD8<Float>) -> SIMD8<Float>, scalar: (Float) -> Float) {
        var i = 0
        while i + 8 <= n {
            UnsafeMutableRawPointer(z + i).storeBytes(of: lanes(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)), as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { z[i] = scalar(a[i]); i += 1 }
    }
}

/// Short runs of floats (a row of a small feature map: 7, 14, 28 values) copied and added
/// without a library call per run: `memcpy`'s call and size dispatch cost more than the
/// copy itself at these lengths.
enum ShortRuns {
    /// dst[i] = src[i] for i < n: blocks of 8 (or 4), the last one shifted back to end at n.
    @inline(__always)
    static func copy(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, count n: Int) {
        if n >= 8 {
            forEachOverlappingBlock(of: 8, covering: n) { j in SIMD8<Float>(loading: src + j).store(dst + j) }
        } else if n >= 4 {
            forEachOverlappingBlock(of: 4, covering: n) { j in SIMD4<Float>(loading: src + j).store(dst + j) }
        } else {
            for j in 0 ..< n { dst[j] = src[j] }
        }
    }

    /// dst[i] += src[i] for i < n: blocks of 8, then 4, then one by one (an add may not
    /// repeat, so no block overlaps another). Each value gets one add, so the sums are those
    /// of a plain loop.
    @inline(__always)
    static func add(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count n: Int) {
        var j = 0
        while j + 8 <= n { (SIMD8<Float>(loading: dst + j) + SIMD8<Float>(loading: src + j)).store(dst + j); j += 8 }
        if j + 4 <= n { (SIMD4<Float>(loading: dst + j) + SIMD4<Float>(loading: src + j)).store(dst + j); j += 4 }
        while j < n { dst[j] += src[j]; j += 1 }
    }
}
