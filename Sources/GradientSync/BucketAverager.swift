import Collectives

/// How one bucket of the flat gradient is averaged across ranks: the one interface the
/// synchronizer calls, whether a codec's ring, the hierarchical all-reduce, MPI_Allreduce or
/// PowerSGD does the work.
///
/// Why buckets and not buffers: PowerSGD must know which weight matrices a bucket holds (it
/// compresses each as a matrix), so it is told where the bucket lies in the flat gradient.
/// Every implementation leaves bit-identical values on every rank.
protocol BucketAverager: AnyObject {
    /// What runs, for the log.
    var name: String { get }
    /// Averages `gradients[range]` (bucket `bucket` of the plan) in place. `memory` is the
    /// gradient-sized error-feedback memory, or nil without error feedback.
    func average(bucket: Int, _ range: Range<Int>, of gradients: UnsafeMutableBufferPointer<Float>,
                 memory: ErrorFeedbackMemory?) throws
    /// Bytes this rank sent in the last call, where known.
    var lastBytesSentIfKnown: Int? { get }
    /// Seconds of codec work in the last call.
    var lastCodecSeconds: Double { get }
}

/// An `AllReduce` (a ring with a codec, the hierarchical all-reduce, MPI_Allreduce) averaging
/// a bucket as one buffer, with the bucket's slice of the error-feedback memory.
final class AllReduceBuckets: BucketAverager {
    let allReduce: AllReduce
    init(_ allReduce: AllReduce) { self.allReduce = allReduce }

    var name: String { allReduce.name }
    var lastBytesSentIfKnown: Int? { allReduce.lastBytesSentIfKnown }
    var lastCodecSeconds: Double { allReduce.lastCodecSeconds }

    func average(bucket: Int, _ range: Range<Int>, of gradients: UnsafeMutableBufferPointer<Float>,
                 memory: ErrorFeedbackMemory?) throws {
        try allReduce.average(UnsafeMutableBufferPointer(rebasing: gradients[range]), residual: memory?.slice(range))
    }
}
