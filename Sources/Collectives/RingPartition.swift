/// How the ring cuts a buffer: the vocabulary every loop in `RingAllReduce` keeps to.
///
/// - A buffer of `count` values is cut into `ranks` **chunks**, chunk c = values
///   `[c·count/n, (c+1)·count/n)` (integer division): sizes differ by at most one, and when
///   `count < n` some chunks are empty. Each rank ends up owning one chunk.
/// - Each chunk is cut the same way into `segmentsPerChunk` **segments**, the unit that
///   travels in one message and that a codec encodes. Every chunk has the same number of
///   segments (some may be empty), so every rank sends and receives the same number of
///   messages — a rank never waits for a message that no one will send.
public struct RingPartition: Equatable {
    public let count: Int
    public let ranks: Int
    public let segmentsPerChunk: Int

    /// `maxSegmentValues` bounds a segment's length; it is rounded so segments stay balanced.
    public init(count: Int, ranks: Int, maxSegmentValues: Int) {
        precondition(count >= 0 && ranks >= 1 && maxSegmentValues >= 1)
        self.count = count
        self.ranks = ranks
        let largestChunk = (count + ranks - 1) / ranks
        self.segmentsPerChunk = max(1, (largestChunk + maxSegmentValues - 1) / maxSegmentValues)
    }

    /// Values of chunk `c`.
    @inlinable
    public func chunk(_ c: Int) -> Range<Int> {
        (c * count / ranks) ..< ((c + 1) * count / ranks)
    }

    /// Values of segment `j` of chunk `c`, as offsets into the whole buffer.
    @inlinable
    public func segment(_ j: Int, ofChunk c: Int) -> Range<Int> {
        let range = chunk(c), length = range.count, m = segmentsPerChunk
        return (range.lowerBound + j * length / m) ..< (range.lowerBound + (j + 1) * length / m)
    }

    /// Values one rank sends in a full fp32 all-reduce: 2(n−1) chunks (any chunks of this
    /// partition: sizes differ by at most one, so this is exact up to that rounding).
    public func chunkSum(ranks n: Int) -> Int {
        guard n > 1 else { return 0 }
        return (0 ..< n).map { chunk($0).count }.reduce(0, +) * 2 * (n - 1) / n
    }

    /// The longest segment of any chunk (every scratch slot must hold its encoding).
    public var maxSegmentValues: Int {
        let largestChunk = (count + ranks - 1) / ranks
        return (largestChunk + segmentsPerChunk - 1) / segmentsPerChunk
    }
}
