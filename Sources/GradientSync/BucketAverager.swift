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
    /// Whether `average(…, carry:)` folds the momentum carry into its own passes; when not,
    /// the caller adds it before and takes it off after.
    var foldsCarry: Bool { get }
    /// `average` with the carry riding along (only when `foldsCarry`).
    func average(bucket: Int, _ range: Range<Int>, of gradients: UnsafeMutableBufferPointer<Float>,
                 memory: ErrorFeedbackMemory?, carry: CarriedAddend?) throws
    /// Σ x² of the last call's averaged values when it took it on the way (identical on every
    /// rank), else nil.
    var lastSquaredSum: Double? { get }
}

extension BucketAverager {
    var foldsCarry: Bool { false }
    var lastSquaredSum: Double? { nil }
    func average(bucket: Int, _ range: Range<Int>, of gradients: UnsafeMutableBufferPointer<Float>,
                 memory: ErrorFeedbackMemory?, carry: CarriedAddend?) throws {
        precondition(carry == nil, "\(name) does not fold the momentum carry")
        try average(bucket: bucket, range, of: gradients, memory: memory)
    }
}

/// An `AllReduce` (a ring with a codec, the hierarchical all-reduce, MPI_Allreduce) averaging
/// a bucket as one buffer, with the bucket's slice of the error-feedback memory.
final class AllReduceBuckets: BucketAverager {
    let allReduce: AllReduce
    init(_ allReduce: AllReduce) { self.allReduce = allReduce }

    var name: String { allReduce.name }
    var lastBytesSentIfKnown: Int? { allReduce.lastBytesSentIfKnown }
    var lastCodecSeconds: Double { allReduce.lastCodecSeconds }

    /// Our flat ring folds the carry (and takes the squared norm as it decodes).
    var foldsCarry: Bool { allReduce is RingAllReduce }
    var lastSquaredSum: Double? { (allReduce as? RingAllReduce)?.lastSquaredSum }

    func average(bucket: Int, _ range: Range<Int>, of gradients: UnsafeMutableBufferPointer<Float>,
                 memory: ErrorFeedbackMemory?) throws {
        try average(bucket: bucket, range, of: gradients, memory: memory, carry: nil)
    }

    func average(bucket: Int, _ range: Range<Int>, of gradients: UnsafeMutableBufferPointer<Float>,
                 memory: ErrorFeedbackMemory?, carry: CarriedAddend?) throws {
        let values = UnsafeMutableBufferPointer(rebasing: gradients[range])
        if let ring = allReduce as? RingAllReduce {
            return try ring.average(values, residual: memory?.slice(range), carry: carry)
        }
        precondition(carry == nil, "\(name) does not fold the momentum carry")
        try allReduce.average(values, residual: memory?.slice(range))
    }
}
