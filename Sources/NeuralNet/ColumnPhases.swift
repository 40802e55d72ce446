/// Rows split into their four column phases (column 4j + k is phase k's j-th value) and merged
/// back — how `Winograd4x4` reads a 6×6 window of every tile in a row as contiguous runs. In
/// blocks of 4 quads through SIMD16 registers, the last block shifted back to end at the last
/// whole quad (copies: repeating one changes nothing) — rows of fewer than 4 quads value by
/// value — then the row's last 1–3 values one by one.
enum ColumnPhases {
    /// phases.k[j] = row[4j + k] for 4j + k < count.
    @inline(__always)
    static func split(_ row: UnsafePointer<Float>, count: Int,
                      into p: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)) {
        let quads = count / 4
        if quads >= 4 {
            forEachOverlappingBlock(of: 4, covering: quads) { j in
                let v = UnsafeRawPointer(row + 4 * j).loadUnaligned(as: SIMD16<Float>.self)
                let e = v.evenHalf, o = v.oddHalf
                e.evenHalf.store(p.0 + j); o.evenHalf.store(p.1 + j); e.oddHalf.store(p.2 + j); o.oddHalf.store(p.3 + j)
            }
        } else {
            for j in 0 ..< quads { p.0[j] = row[4 * j]; p.1[j] = row[4 * j + 1]; p.2[j] = row[4 * j + 2]; p.3[j] = row[4 * j + 3] }
        }
        var i = 4 * quads
        if i < count { p.0[quads] = row[i]; i += 1 }
        if i < count { p.1[quads] = row[i]; i += 1 }
        if i < count { p.2[quads] = row[i] }
    }

    /// row[4j + k] = phases.k[j] for 4j + k < count.
    @inline(__always)
    static func merge(_ p: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>), count: Int,
                      into row: UnsafeMutablePointer<Float>) {
        let quads = count / 4
        if quads >= 4 {
            forEachOverlappingBlock(of: 4, covering: quads) { j in
                var e = SIMD8<Float>(), o = SIMD8<Float>()
                e.evenHalf = SIMD4(loading: p.0 + j); o.evenHalf = SIMD4(loading: p.1 + j)
                e.oddHalf = SIMD4(loading: p.2 + j); o.oddHalf = SIMD4(loading: p.3 + j)
                var v = SIMD16<Float>()
                v.evenHalf = e; v.oddHalf = o
                UnsafeMutableRawPointer(row + 4 * j).storeBytes(of: v, as: SIMD16<Float>.self)
            }
        } else {
            for j in 0 ..< quads { row[4 * j] = p.0[j]; row[4 * j + 1] = p.1[j]; row[4 * j + 2] = p.2[j]; row[4 * j + 3] = p.3[j] }
        }
        var i = 4 * quads
        if i < count { row[i] = p.0[quads]; i += 1 }
        if i < count { row[i] = p.1[quads]; i += 1 }
        if i < count { row[i] = p.2[quads] }
    }
}
