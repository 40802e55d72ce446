/// Consecutive tiles a Winograd transform handles at once: one (`Float`) or a SIMD vector of
/// 4 or 8, loaded from and stored to unaligned runs of floats — or, for rows of tiles too
/// short to fill the lanes, the same tiles of `rowsPerBlock` consecutive rows of tiles
/// (`PairedRows`): their values sit one row of tiles apart in the planes and runs the
/// transforms read and write (`init(loading:nextRow:)`, `store(_:nextRow:)`), but
/// consecutively in V and M, whose tiles are numbered row by row.
protocol TileLanes {
    static var count: Int { get }
    /// Rows of tiles a block covers: 1, or 2 for `PairedRows`.
    static var rowsPerBlock: Int { get }
    init(loading p: UnsafePointer<Float>)
    /// The lanes of each row of tiles from its own run: row k's from `p + k·distance`.
    init(loading p: UnsafePointer<Float>, nextRow distance: Int)
    init(repeating value: Float)
    func store(_ p: UnsafeMutablePointer<Float>)
    func store(_ p: UnsafeMutablePointer<Float>, nextRow distance: Int)
    static func + (a: Self, b: Self) -> Self
    static func - (a: Self, b: Self) -> Self
    static func * (a: Self, b: Self) -> Self
    static prefix func - (x: Self) -> Self
}

extension TileLanes {
    static var rowsPerBlock: Int { 1 }
    @inline(__always) init(loading p: UnsafePointer<Float>, nextRow distance: Int) { self.init(loading: p) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>, nextRow distance: Int) { store(p) }

    /// The first tile of each block covering a row of n tiles, `count / rowsPerBlock` lanes a
    /// row: the last block ends at the row's end, overlapping the one before (its overlap
    /// recomputes the same values) — or, in a row shorter than a block, the one block spills
    /// past it.
    @inline(__always)
    static func forEachBlock(over n: Int, _ body: (Int) -> Void) {
        let w = count / rowsPerBlock
        guard n >= w else { body(0); return }
        forEachOverlappingBlock(of: w, covering: n, body)
    }
}

/// The lanes for rows of `tileColumns` tiles, at most `maximum`: 8 from 5 tiles on, else 4 (1
/// only when asked). Measured with `bench compute --model cnn`, whose 14×14 rows have 7 F(2×2)
/// tiles: one block of 8 spilling one lane beat two overlapping blocks of 4.
func tileLanes(maximum: Int, tileColumns: Int) -> Int {
    maximum == 1 ? 1 : maximum >= 8 && tileColumns >= 5 ? 8 : 4
}

/// How a Winograd transform's blocks cover its tiles.
enum LaneChoice {
    /// Blocks of 8, 4 or 1 lanes along each row of tiles (`tileLanes`).
    case rows(Int)
    /// Blocks of two whole rows of tiles: 2 × 4 in eight lanes, or 2 × 2 in four.
    case pairedRows(lanes: Int)

    /// Pairs of rows where a row of 4 or 2 tiles would leave lanes idle or spill them into
    /// tiles recomputed later (F(4×4) at 14×14 and 7×7) and the rows of tiles pair up evenly.
    init(maximum: Int, tileColumns: Int, tileRows: Int, pairsRows: Bool) {
        if pairsRows, tileRows % 2 == 0, maximum >= 8, tileColumns == 4 { self = .pairedRows(lanes: 8) }
        else if pairsRows, tileRows % 2 == 0, maximum >= 4, tileColumns == 2 { self = .pairedRows(lanes: 4) }
        else { self = .rows(tileLanes(maximum: maximum, tileColumns: tileColumns)) }
    }
}

extension Float: TileLanes {
    static var count: Int { 1 }
    @inline(__always) init(loading p: UnsafePointer<Float>) { self = p.pointee }
    @inline(__always) init(repeating value: Float) { self = value }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) { p.pointee = self }
}

extension SIMD4: TileLanes where Scalar == Float {
    static var count: Int { 4 }
    @inline(__always) init(loading p: UnsafePointer<Float>) { self = UnsafeRawPointer(p).loadUnaligned(as: Self.self) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: self, as: Self.self) }
}

extension SIMD8: TileLanes where Scalar == Float {
    static var count: Int { 8 }
    @inline(__always) init(loading p: UnsafePointer<Float>) { self = UnsafeRawPointer(p).loadUnaligned(as: Self.self) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: self, as: Self.self) }
}

/// A vector that loads and stores as two halves from two places: SIMD8 as two SIMD4, SIMD4 as
/// two SIMD2 (the lanes of `PairedRows`).
protocol HalvedLanes: TileLanes {
    init(low: UnsafePointer<Float>, high: UnsafePointer<Float>)
    func store(low: UnsafeMutablePointer<Float>, high: UnsafeMutablePointer<Float>)
}

extension SIMD8: HalvedLanes where Scalar == Float {
    @inline(__always) init(low: UnsafePointer<Float>, high: UnsafePointer<Float>) {
        self.init(lowHalf: UnsafeRawPointer(low).loadUnaligned(as: SIMD4<Float>.self),
                  highHalf: UnsafeRawPointer(high).loadUnaligned(as: SIMD4<Float>.self))
    }
    @inline(__always) func store(low: UnsafeMutablePointer<Float>, high: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(low).storeBytes(of: lowHalf, as: SIMD4<Float>.self)
        UnsafeMutableRawPointer(high).storeBytes(of: highHalf, as: SIMD4<Float>.self)
    }
}

extension SIMD4: HalvedLanes where Scalar == Float {
    @inline(__always) init(low: UnsafePointer<Float>, high: UnsafePointer<Float>) {
        self.init(lowHalf: UnsafeRawPointer(low).loadUnaligned(as: SIMD2<Float>.self),
                  highHalf: UnsafeRawPointer(high).loadUnaligned(as: SIMD2<Float>.self))
    }
    @inline(__always) func store(low: UnsafeMutablePointer<Float>, high: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(low).storeBytes(of: lowHalf, as: SIMD2<Float>.self)
        UnsafeMutableRawPointer(high).storeBytes(of: highHalf, as: SIMD2<Float>.self)
    }
}

/// Two rows of tiles in one vector: the low half of the lanes a row of tiles, the high half
/// the same tiles of the next row. The arithmetic is `Whole`'s own (its `TileLanes` witnesses,
/// specialised), so each lane computes what any lane width computes for its tile. `Whole` must
/// be a concrete vector of Float: generic `SIMD` operators would run lane by lane.
struct PairedRows<Whole: HalvedLanes>: TileLanes {
    var lanes: Whole
    static var count: Int { Whole.count }
    static var rowsPerBlock: Int { 2 }
    @inline(__always) init(_ lanes: Whole) { self.lanes = lanes }
    @inline(__always) init(repeating value: Float) { lanes = Whole(repeating: value) }
    @inline(__always) init(loading p: UnsafePointer<Float>) { lanes = Whole(loading: p) }
    @inline(__always) init(loading p: UnsafePointer<Float>, nextRow distance: Int) { lanes = Whole(low: p, high: p + distance) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) { lanes.store(p) }
    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>, nextRow distance: Int) { lanes.store(low: p, high: p + distance) }
    @inline(__always) static func + (a: Self, b: Self) -> Self { Self(a.lanes + b.lanes) }
    @inline(__always) static func - (a: Self, b: Self) -> Self { Self(a.lanes - b.lanes) }
    @inline(__always) static func * (a: Self, b: Self) -> Self { Self(a.lanes * b.lanes) }
    @inline(__always) static prefix func - (x: Self) -> Self { Self(-x.lanes) }
}

/// Two rows of four tiles in eight lanes (F(4×4) at 14×14).
typealias PairedQuads = PairedRows<SIMD8<Float>>
/// Two rows of two tiles in four lanes (F(4×4) at 7×7).
typealias PairedPairs = PairedRows<SIMD4<Float>>
