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
                        for j in 0 ..< k where x[row + j] > bestValue {
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

    public func backward(_ dy: UnsafePointer<Float>, batch: Int, needsInputGradient: Bool) -> UnsafePointer<Float>? {
        guard needsInputGradient else { return nil }
        let dx = inputGrad.pointer, planeOut = outHeight * outWidth, planeIn = height * width
        dx.update(repeating: 0, count: batch * channels * planeIn)
        for plane in 0 ..< batch * channels {
            let inBase = plane * planeIn, outBase = plane * planeOut
            for o in 0 ..< planeOut { dx[inBase + Int(winners[outBase + o])] += dy[outBase + o] }
        }
        return UnsafePointer(dx)
    }
}
