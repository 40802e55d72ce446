/// Rows split into their four column phases (column 4j + k is phase k's j-th value) and merged
/// back — how `Winograd4x4` reads a 6×6 window of every tile in a row as contiguous runs. In
/// blocks of 4 quads through SIMD16 registers, the last block shifted back to end at the last
/// whole quad (copies: repeating one changes nothing), then the row's last 1–3 values one by
/// one. Rows of 4 to 15 values (the 14×14, 8×8 and 7×7 planes of a ResNet) are split by two
/// overlapping vector loads and one store per phase, and merged by one load per phase and two
/// overlapping stores, the lanes placed by constant shuffles (`ShortRow`); value by value they
/// had cost 5–8 % of a fashion-resnet step (the split and merge of those rows skipped
/// altogether, on one core: 97–100 against 103–107 ms; the shuffles: 102–111 ms). Rows of
/// fewer than 4 values go value by value. Public for its tests only.
public enum ColumnPhases {
    /// phases.k[j] = row[4j + k] for 4j + k < count. A row of 4 to 15 values also writes zeros:
    /// phases.k[j] = 0 where 4j + k ≥ count, for j < 2 (fewer than 8 values) or j < 4 — the
    /// callers' runs have room there and hold zeros there (the convolution's padding, or runs
    /// zeroed before).
    @inline(__always)
    public static func split(_ row: UnsafePointer<Float>, count: Int,
                      into p: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)) {
        if ShortRow.split(row, count: count, into: p) { return }
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

    /// row[4j + k] = phases.k[j] for 4j + k < count. A row of 4 to 15 values reads phases.k[j]
    /// for j < 2 (fewer than 8 values) or j < 4 whatever the count (values past it unused).
    @inline(__always)
    public static func merge(_ p: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>), count: Int,
                      into row: UnsafeMutablePointer<Float>) {
        if ShortRow.merge(p, count: count, into: row) { return }
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

/// `ColumnPhases` for rows of 4 to 15 values, one function per length so that every lane's
/// place is a constant (the switch's literal, inlined) and the lanes move by shuffles: the row
/// as two overlapping vectors — its first 8 (or 4) values and its last 8 (or 4) — and each
/// phase as one vector of 4 (or 2).
private enum ShortRow {
    typealias Phases = (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)
    typealias ReadPhases = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>)

    /// Whether the row was short enough to be split here.
    @inline(__always)
    static func split(_ row: UnsafePointer<Float>, count: Int, into p: Phases) -> Bool {
        withLiteral(count) { split(row, $0, p) }
    }

    /// Whether the row was short enough to be merged here.
    @inline(__always)
    static func merge(_ p: ReadPhases, count: Int, into row: UnsafeMutablePointer<Float>) -> Bool {
        withLiteral(count) { merge(p, $0, row) }
    }

    /// `body(count)` with `count` as a literal, for 4 … 15 (inlined, every lane's place in
    /// `body` is then a constant); false, and no call, for any other count.
    @inline(__always)
    private static func withLiteral(_ count: Int, _ body: (Int) -> Void) -> Bool {
        switch count {
        case 4: body(4)
        case 5: body(5)
        case 6: body(6)
        case 7: body(7)
        case 8: body(8)
        case 9: body(9)
        case 10: body(10)
        case 11: body(11)
        case 12: body(12)
        case 13: body(13)
        case 14: body(14)
        case 15: body(15)
        default: return false
        }
        return true
    }

    /// `n` is a literal at every call: value i of the row is lane i of the first vector, or of
    /// the last at i − (n − width); 0 past the row.
    @inline(__always)
    private static func split(_ row: UnsafePointer<Float>, _ n: Int, _ p: Phases) {
        if n >= 8 {
            let first = SIMD8<Float>(loading: row), last = SIMD8<Float>(loading: row + n - 8)
            @inline(__always) func value(_ i: Int) -> Float { i < 8 ? first[i] : i < n ? last[i - n + 8] : 0 }
            @inline(__always) func phase(_ k: Int) -> SIMD4<Float> { SIMD4(value(k), value(k + 4), value(k + 8), value(k + 12)) }
            phase(0).store(p.0); phase(1).store(p.1); phase(2).store(p.2); phase(3).store(p.3)
        } else {
            let first = SIMD4<Float>(loading: row), last = SIMD4<Float>(loading: row + n - 4)
            @inline(__always) func value(_ i: Int) -> Float { i < 4 ? first[i] : i < n ? last[i - n + 4] : 0 }
            @inline(__always) func phase(_ k: Int, _ target: UnsafeMutablePointer<Float>) {
                UnsafeMutableRawPointer(target).storeBytes(of: SIMD2(value(k), value(k + 4)), as: SIMD2<Float>.self)
            }
            phase(0, p.0); phase(1, p.1); phase(2, p.2); phase(3, p.3)
        }
    }

    /// `n` is a literal at every call: the row's first and last vectors gathered from the phases'
    /// first 4 (or 2) values, the last stored over the first where they overlap (same values).
    @inline(__always)
    private static func merge(_ p: ReadPhases, _ n: Int, _ row: UnsafeMutablePointer<Float>) {
        if n >= 8 {
            let q = (SIMD4<Float>(loading: p.0), SIMD4<Float>(loading: p.1), SIMD4<Float>(loading: p.2), SIMD4<Float>(loading: p.3))
            @inline(__always) func value(_ i: Int) -> Float {
                switch i & 3 { case 0: q.0[i >> 2]; case 1: q.1[i >> 2]; case 2: q.2[i >> 2]; default: q.3[i >> 2] }
            }
            let s = n - 8
            SIMD8(value(0), value(1), value(2), value(3), value(4), value(5), value(6), value(7)).store(row)
            SIMD8(value(s), value(s + 1), value(s + 2), value(s + 3), value(s + 4), value(s + 5), value(s + 6), value(s + 7)).store(row + s)
        } else {
            @inline(__always) func load(_ x: UnsafePointer<Float>) -> SIMD2<Float> { UnsafeRawPointer(x).loadUnaligned(as: SIMD2<Float>.self) }
            let q = (load(p.0), load(p.1), load(p.2), load(p.3))
            @inline(__always) func value(_ i: Int) -> Float {
                switch i & 3 { case 0: q.0[i >> 2]; case 1: q.1[i >> 2]; case 2: q.2[i >> 2]; default: q.3[i >> 2] }
            }
            let s = n - 4
            SIMD4(value(0), value(1), value(2), value(3)).store(row)
            SIMD4(value(s), value(s + 1), value(s + 2), value(s + 3)).store(row + s)
        }
    }
}
