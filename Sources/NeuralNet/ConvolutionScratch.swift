/// The two scratch matrices of a convolution's passes: Winograd's V and M (a chunk of images'
/// transformed inputs — in backward their gradient — and products), or im2col's `cols` and
/// its product with the weight.
///
/// Why shared: nothing in them outlives a pass, so one pair, sized for the largest, serves
/// every convolution of a model (`Sequential.reserve`). Each pass then writes into matrices
/// still in cache from the convolution before; with a pair per convolution (2 MB each for
/// Winograd then) every pass began on matrices out of cache.
final class ConvolutionScratch {
    let input: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>
    /// The last sweep's sum (`WinogradConvolution.streamIntoCache`), kept so that its reads stay.
    var sink: Float = 0

    init(input inputFloats: Int, output outputFloats: Int) {
        (input, output) = (zeroedFloats(inputFloats), zeroedFloats(outputFloats))
    }

    deinit { UnsafeMutableRawPointer(input).deallocate(); UnsafeMutableRawPointer(output).deallocate() }
}
