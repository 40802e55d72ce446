/// Max pooling over k×k windows with stride k (PyTorch `nn.MaxPool2d(k)`; floor mode).
///
/// Forward remembers, per output, which input won; backward routes the gradient there (ties
/// go to the first maximum in row-major order, as PyTorch's CPU kernel does).
public final class MaxPool2d: Layer {
    public let kernel: Int
    private var channels = 0, height = 0, width = 0, outHeight = 0, outWidth = 0
    private let output = ActivationBuffer(), inputGrad = ActivationBuffer()
    private var winners: UnsafeMutablePointer<Int32> = .allocate(capacity: 1)
    private var winnerCapacity = 0

    public init(_ kernel: Int) {
        precondition(kernel >= 1, "MaxPool2d kernel must be ≥ 1, got \(kernel)")
        self.kernel = kernel
    }

    deinit { winners.deallocate() }

    public var summary: String { "MaxPool2d(\(kernel))" }
    public var pytorchModule: String { "nn.MaxPool2d(\(kernel))" }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 3, input[1] >= kernel, input[2] >= kernel else {
            throw ShapeError("\(summary) expects [C, H, W] with H, W ≥ \(kernel), got \(input)")
        }
        (channels, height, width) = (input[0], input[1], input[2])
        (outHeight, outWidth) = (height / kernel, width / kernel)
        return [channels, outHeight, outWidth]
    }

    public func reserve(batch: Int) {
        let outputs = batch * channels * outHeight * outWidth
        output.reserve(outputs)
        inputGrad.reserve(batch * channels * height * width)
        if outputs > winnerCapacity {
            winners.deallocate()
            winners = .allocate(capacity: outputs)
            winnerCapacity = outputs
        }
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool) -> UnsafePointer<Float> {
        if kernel == 2 { return forward2x2(x, batch: batch) }
        let y = output.pointer, k = kernel
        var o = 0
        for plane in 0 ..< batch * channels {
            let base = plane * height * width
            for oh in 0 ..< outHeight {
                for ow in 0 ..< outWidth {
                    var best = base + (oh * k) * width + ow * k
                    var bestValue = x[best]
                    for i in 0 ..< k {
                        let row = base + (oh * k + i) * width + ow * k
                        // A NaN wins (and the last one in row-major order), as in PyTorch's kernel
                        // (`val > maxval || isnan(val)`): a NaN input is not hidden behind a finite max.
                        for j in 0 ..< k where x[row + j] > bestValue || x[row + j].isNaN {
                            bestValue = x[row + j]
                            best = row + j
                        }
                    }
                    y[o] = bestValue
                    winners[o] = Int32(best - base)
                    o += 1
                }
            }
        }
        return UnsafePointer(y)
    }

    /// The common 2×2 window without inner loops or branches: the winner is chosen with
    /// selects in PyTorch's tie order (first maximum in row-major order; the last NaN, if any),
    /// and its position is kept as 0…3 within the window.
    private func forward2x2(_ x: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let y = output.pointer
        var o = 0
        for plane in 0 ..< batch * channels {
            let base = x + plane * height * width
            for oh in 0 ..< outHeight {
                let top = base + 2 * oh * width, bottom = top + width
                for ow in 0 ..< outWidth {
                    let a = top[2 * ow], b = top[2 * ow + 1], c = bottom[2 * ow], d = bottom[2 * ow + 1]
                    // NaN wins as in the general loop: `v > best || v.isNaN` at each choice.
                    let topRight = b > a || b.isNaN, topMax = topRight ? b : a
                    let bottomRight = d > c || d.isNaN, bottomMax = bottomRight ? d : c
                    let lower = bottomMax > topMax || bottomMax.isNaN
                    y[o] = lower ? bottomMax : topMax
                    winners[o] = Int32((lower ? 2 : 0) + ((lower ? bottomRight : topRight) ? 1 : 0))
                    o += 1
                }
            }
        }
        return UnsafePointer(y)
    }

    /// 2×2 backward: every input position of a window is written once (dy at the winner, 0
    /// elsewhere), so no separate zero-filling pass. Inputs outside any window (odd sizes)
    /// get 0.
    private func backward2x2(_ dy: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
        let dx = inputGrad.pointer, planeOut = outHeight * outWidth, planeIn = height * width
        if height % 2 != 0 || width % 2 != 0 { dx.update(repeating: 0, count: batch * channels * planeIn) }
        for plane in 0 ..< batch * channels {
            let base = dx + plane * planeIn
            var o = plane * planeOut
            for oh in 0 ..< outHeight {
                let top = base + 2 * oh * width, bottom = top + width
                for ow in 0 ..< outWidth {
                    let g = dy[o], w = winners[o]
                    top[2 * ow] = w == 0 ? g : 0
                    top[2 * ow + 1] = w == 1 ? g : 0
                    bottom[2 * ow] = w == 2 ? g : 0
                    bottom[2 * ow + 1] = w == 3 ? g : 0
                    o += 1
                }
            }
        }
        return UnsafePointer(dx)
    }

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        guard needsInputGradient else { return nil }
        if kernel == 2 { return backward2x2(dy, batch: batch) }
        let dx = inputGrad.pointer, planeOut = outHeight * outWidth, planeIn = height * width
        dx.update(repeating: 0, count: batch * channels * planeIn)
        for plane in 0 ..< batch * channels {
            let inBase = plane * planeIn, outBase = plane * planeOut
            for o in 0 ..< planeOut { dx[inBase + Int(winners[outBase + o])] += dy[outBase + o] }
        }
        return UnsafePointer(dx)
    }
}
