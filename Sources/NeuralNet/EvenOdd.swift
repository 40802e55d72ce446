/// Rows split into their even and odd columns and merged back, in blocks of 8 (or 4) pairs,
/// the last block shifted back to end at the last pair (copies: repeating one changes nothing).
enum EvenOdd {
    /// even[j] = row[2j], odd[j] = row[2j + 1] over a row of `count` values: an odd count's
    /// last value is even[count / 2].
    @inline(__always)
    static func split(_ row: UnsafePointer<Float>, count: Int, even: UnsafeMutablePointer<Float>, odd: UnsafeMutablePointer<Float>) {
        split(row, pairs: count / 2, even: even, odd: odd)
        if count & 1 == 1 { even[count / 2] = row[count - 1] }
    }

    /// row[2j] = even[j], row[2j + 1] = odd[j] over a row of `count` values: an odd count's
    /// last value is even[count / 2].
    @inline(__always)
    static func merge(even: UnsafePointer<Float>, odd: UnsafePointer<Float>, count: Int, into row: UnsafeMutablePointer<Float>) {
        merge(even: even, odd: odd, pairs: count / 2, into: row)
        if count & 1 == 1 { row[count - 1] = even[count / 2] }
    }

    /// even[j] = row[2j], odd[j] = row[2j + 1] for j < pairs.
    @inline(__always)
    private static func split(_ row: UnsafePointer<Float>, pairs: Int, even: UnsafeMutablePointer<Float>, odd: UnsafeMutablePointer<Float>) {
        if pairs >= 8 {
            forEachOverlappingBlock(of: 8, covering: pairs) { j in
                let v = UnsafeRawPointer(row + 2 * j).loadUnaligned(as: SIMD16<Float>.self)
                v.evenHalf.store(even + j); v.oddHalf.store(odd + j)
            }
        } else if pairs >= 4 {
            forEachOverlappingBlock(of: 4, covering: pairs) { j in
                let v = UnsafeRawPointer(row + 2 * j).loadUnaligned(as: SIMD8<Float>.self)
                v.evenHalf.store(even + j); v.oddHalf.store(odd + j)
            }
        } else {
            for j in 0 ..< pairs { even[j] = row[2 * j]; odd[j] = row[2 * j + 1] }
        }
    }

    /// row[2j] = even[j], row[2j + 1] = odd[j] for j < pairs.
    @inline(__always)
    private static func merge(even: UnsafePointer<Float>, odd: UnsafePointer<Float>, pairs: Int, into row: UnsafeMutablePointer<Float>) {
        if pairs >= 8 {
            forEachOverlappingBlock(of: 8, covering: pairs) { j in
                var v = SIMD16<Float>()
                v.evenHalf = SIMD8(loading: even + j); v.oddHalf = SIMD8(loading: odd + j)
                UnsafeMutableRawPointer(row + 2 * j).storeBytes(of: v, as: SIMD16<Float>.self)
            }
        } else if pairs >= 4 {
            forEachOverlappingBlock(of: 4, covering: pairs) { j in
                var v = SIMD8<Float>()
                v.evenHalf = SIMD4(loading: even + j); v.oddHalf = SIMD4(loading: odd + j)
                v.store(row + 2 * j)
            }
        } else {
            for j in 0 ..< pairs { row[2 * j] = even[j]; row[2 * j + 1] = odd[j] }
        }
    }
}

/// The first index of each block of `width` covering 0 ..< n (n ≥ width), the last block
/// shifted back to end at n — for copies and transforms, where the overlap writes the same
/// values again.
@inline(__always)
func forEachOverlappingBlock(of width: Int, covering n: Int, _ body: (Int) -> Void) {
    var j = 0
    while j + width < n { body(j); j += width }
    body(n - width)
}
