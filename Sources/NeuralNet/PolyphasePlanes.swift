/// An input plane zero-padded and split into its stride² polyphase components: the layout in
/// which every row of im2col's `cols` is one run of consecutive floats.
///
/// A convolution with stride s and padding p reads x_pad[s·oh + ki, s·ow + kj], x_pad being x
/// with p zeros around it. Phase (a, b) holds x_pad[s·i + a, s·j + b], so kernel offset
/// (ki, kj) reads phase (ki mod s, kj mod s) at row oh + ⌊ki/s⌋, column ow + ⌊kj/s⌋: a window
/// of outHeight runs of outWidth floats (`window`), with no bound, padding or stride left to
/// test per value. col2im is the adjoint: the windows summed into zeroed phases, then each
/// phase value written back to its place in the plane (`merge`), which writes the plane whole
/// (values no window reads get zero).
struct PolyphasePlanes {
    let height: Int, width: Int, stride: Int, padding: Int
    /// Each phase's rows and columns: ⌈(height + 2p) / s⌉ × ⌈(width + 2p) / s⌉.
    let rows: Int, columns: Int
    /// Stride 2: where the plane's even columns 2m (phase p mod 2) and odd columns 2m + 1 (the
    /// other phase) start in a row of phases (from phase 0's row): their first inside columns.
    private let evenStart: Int, oddStart: Int
    /// Where kernel offset (ki, kj)'s window starts in the phases, at ki·kernel + kj. Worked
    /// out once: the divisions by a stride not known at compile time cost more than a copy.
    private let windowOffsets: [Int]

    init(height: Int, width: Int, kernel: Int, stride s: Int, padding p: Int) {
        (self.height, self.width, self.stride, self.padding) = (height, width, s, p)
        let (rows, columns) = ((height + 2 * p + s - 1) / s, (width + 2 * p + s - 1) / s)
        (self.rows, self.columns) = (rows, columns)
        // Phase b's first column j whose x_pad column s·j + b is inside the plane (s·j + b ≥ p).
        func firstInside(_ b: Int) -> Int { max(0, (p - b + s - 1) / s) }
        let evenPhase = p & 1, oddPhase = 1 - evenPhase
        evenStart = s == 2 ? evenPhase * rows * columns + firstInside(evenPhase) : 0
        oddStart = s == 2 ? oddPhase * rows * columns + firstInside(oddPhase) : 0
        windowOffsets = (0 ..< kernel * kernel).map { offset in
            let (ki, kj) = (offset / kernel, offset % kernel)
            return ((ki % s) * s + kj % s) * rows * columns + (ki / s) * columns + kj / s
        }
    }

    var phaseSize: Int { rows * columns }
    /// Floats of all s² phases.
    var size: Int { stride * stride * phaseSize }

    /// The first float of the window kernel offset (ki, kj) reads (`offset` = ki·kernel + kj);
    /// its rows are `columns` apart.
    @inline(__always)
    func window(_ offset: Int, in phases: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        phases + windowOffsets[offset]
    }

    /// The plane's values into their places in the phases. Only those places are written: the
    /// padding keeps whatever the buffer held, so a buffer zeroed once and used for nothing
    /// else keeps its padding zero.
    func split(_ plane: UnsafePointer<Float>, into phases: UnsafeMutablePointer<Float>) {
        forEachRow(of: phases) { source, row in
            switch stride {
            case 1: ShortRuns.copy(plane + source, to: row + padding, count: width)
            case 2:
                EvenOdd.split(plane + source, count: width, even: row + evenStart, odd: row + oddStart)
            default:
                for c in 0 ..< width { row[(c + padding) % stride * phaseSize + (c + padding) / stride] = plane[source + c] }
            }
        }
    }

    /// plane[r, c] = the phase value at x_pad[r + p, c + p], for every r and c (the padding's
    /// values are dropped).
    func merge(_ phases: UnsafeMutablePointer<Float>, into plane: UnsafeMutablePointer<Float>) {
        forEachRow(of: phases) { target, row in
            switch stride {
            case 1: ShortRuns.copy(row + padding, to: plane + target, count: width)
            case 2:
                EvenOdd.merge(even: row + evenStart, odd: row + oddStart, count: width, into: plane + target)
            default:
                for c in 0 ..< width { plane[target + c] = row[(c + padding) % stride * phaseSize + (c + padding) / stride] }
            }
        }
    }

    /// For each plane row r: its offset in the plane, and the phases' row holding x_pad row r + p
    /// (at phase (a, 0), a = (r + p) mod s; phase b's row is `phaseSize`·b further).
    @inline(__always)
    private func forEachRow(of phases: UnsafeMutablePointer<Float>, _ body: (_ planeOffset: Int, _ row: UnsafeMutablePointer<Float>) -> Void) {
        for a in 0 ..< stride {
            var i = (padding - a + stride - 1) / stride, r = stride * i + a - padding
            while r < height {
                body(r * width, phases + a * stride * phaseSize + i * columns)
                i += 1; r += stride
            }
        }
    }
}
