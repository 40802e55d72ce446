/// A Winograd convolution: F(2×2, 3×3) (`Winograd3x3`) or F(4×4, 3×3) (`Winograd4x4`).
protocol WinogradConvolution: AnyObject {
    /// y = conv(x, weight) + bias for `batch` NCHW images.
    func forward(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                 into y: UnsafeMutablePointer<Float>, batch: Int)
    /// Writes the weight and bias gradients and, when `inputGradient` is given, dL/dx.
    func backward(_ dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, weightGrad: UnsafeMutablePointer<Float>,
                  biasGrad: UnsafeMutablePointer<Float>?, inputGradient dx: UnsafeMutablePointer<Float>?, batch: Int)
}

extension Winograd3x3: WinogradConvolution {}
extension Winograd4x4: WinogradConvolution {}
