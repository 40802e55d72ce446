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
}
