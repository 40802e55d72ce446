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
