import Foundation

/// How the flat gradient is cut into buckets that are averaged one by one, in the order
/// backward finishes them.
///
/// Why: averaging a bucket can start as soon as backward has written all of its gradients,
/// while backward goes on with earlier layers — the overlap that makes data-parallel
/// training scale (PyTorch DDP's gradient buckets, Li et al., VLDB 2020; Horovod's tensor
/// fusion). Backward produces gradients from the last layer to the first, and the flat buffer
/// holds layers in forward order, so buckets are contiguous ranges taken from the end of the
/// buffer: whole layers, the first bucket small (`firstBucketBytes`, DDP's 1 MB, so that
/// communication starts early), then about `bucketBytes` each. A layer larger than the target
/// is a bucket of its own; `bucketBytes` 0 gives one bucket.
///
/// The plan depends on the model and the config only, so every rank cuts the same buckets.
public struct BucketPlan: Equatable {
    /// Buckets in the order they are averaged (backward's): ranges of the flat buffer.
    public let buckets: [Range<Int>]
    /// For each layer, the bucket that is complete once that layer's gradients are final
    /// (the bucket's lowest layer), or nil.
    public let completedBy: [Int?]

    public static let firstBucketBytes = 1 << 20

    /// `extents[i]`: layer i's range of the flat buffer (nil without parameters); they tile it.
    /// `closeAt`: layers that end a bucket whatever its size (the first layer of each streaming
    /// fragment: a fragment is then whole buckets).
    public init(extents: [Range<Int>?], bucketBytes: Int, firstBucketBytes: Int = BucketPlan.firstBucketBytes, closeAt: Set<Int> = []) {
        var buckets: [Range<Int>] = [], completedBy: [Int?] = Array(repeating: nil, count: extents.count)
        var current: Range<Int>?
        var lowestLayer = 0
        for i in extents.indices.reversed() {
            guard let extent = extents[i] else { continue }
            current = current.map { extent.lowerBound ..< $0.upperBound } ?? extent
            lowestLayer = i
            let target = bucketBytes == 0 ? Int.max : buckets.isEmpty ? min(firstBucketBytes, bucketBytes) : bucketBytes
            if current!.count * 4 >= target || closeAt.contains(i) {
                completedBy[lowestLayer] = buckets.count
                buckets.append(current!)
                current = nil
            }
        }
        if let current {
            completedBy[lowestLayer] = buckets.count
            buckets.append(current)
        }
        self.buckets = buckets
        self.completedBy = completedBy
    }

    public var description: String {
        let sizes = buckets.map { String(format: "%.2f", Double($0.count) * 4 / 1e6) }
        return "\(buckets.count) bucket\(buckets.count == 1 ? "" : "s") (MB, in backward order: \(sizes.joined(separator: ", ")))"
    }
}
