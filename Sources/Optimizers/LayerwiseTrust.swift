/// Euclidean norm of a Float range, accumulated in Double in index order (deterministic,
/// identical on every rank).
@inline(__always)
func norm(_ x: UnsafeMutablePointer<Float>, _ range: Range<Int>) -> Double {
    var sum = 0.0
    for i in range { sum += Double(x[i]) * Double(x[i]) }
    return sum.squareRoot()
}
