/// Consecutive tiles a Winograd transform handles at once: one (`Float`) or a SIMD vector of
/// 4 or 8, loaded from and stored to unaligned runs of floats.
protocol TileLanes {
    static var count: Int { get }
    init(loading p: UnsafePointer<Float>)
    init(repeating value: Float)
    func store(_ p: UnsafeMutablePointer<Float>)
    static func + (a: Self, b: Self) -> Self
    static func - (a: Self, b: Self) -> Self
    static func * (a: Self, b: Self) -> Self
    static prefix func - (x: Self) -> Self
}

extension TileLanes {
    /// The first tile of each block of `count` lanes covering a row of n tiles: the last block
    /// ends at the row's end, overlapping the one before (its overlap recomputes the same
    /// values) — or, in a row shorter than a block, the one block spills past it.
    @inline(__always)
    static func forEachBlock(over n: Int, _ body: (Int) -> Void) {
        let w = count
        guard n >= w else { body(0); return }
        var tx = 0
        while true {
            let start = min(tx, n - w)
            body(start)
            if start + w >= n { return }
            tx += w
        }
    }
}

/// The lanes for rows of `tileColumns` tiles, at most `maximum`: 8 from 5 tiles on, else 4 (1
/// only when asked). Measured with `bench compute --model cnn`, whose 14×14 rows have 7 F(2×2)
/// tiles: one block of 8 spilling one lane beat two overlapping blocks of 4.
func tileLanes(maximum: Int, tileColumns: Int) -> Int {
    maximum == 1 ? 1 : maximum >= 8 && tileColumns >= 5 ? 8 : 4
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
