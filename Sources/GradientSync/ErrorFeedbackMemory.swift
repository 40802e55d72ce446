import Collectives

/// This rank's error-feedback memory (EF-SGD, Karimireddy et al., ICML 2019; see
/// `RingAllReduce`): the error of every encoding this rank performed, added to its next
/// gradient. One gradient-sized buffer; a bucket uses its slice.
///
/// **Which entries are live.** The flat ring encodes every value on every rank, so every entry
/// is live and n ranks share each value's error. The hierarchical all-reduce encodes, per
/// bucket, only the chunk this rank owns after the host's reduce-scatter
/// (`HierarchicalAllReduce.ownedRange`): only those entries are live, and h ranks (one per
/// host) share each. The other entries stay zero, so in either layout the sum over ranks is
/// the total error the run carries.
///
/// **Checkpoint section.** Rank 0 stores the sum over ranks S, with the writer's `sharers`, and
/// every rank its own memory for an exact resume on the same ranks and layout. Otherwise S is
/// re-sharded. What the memory owes the next average is S / sharers: the flat ring adds each
/// rank's memory to its gradient and divides the sum by the n ranks (sharers n); the
/// hierarchical all-reduce adds the owner's memory to its host's average and the cross-host
/// ring divides by the h hosts (sharers h). In the new layout the next average receives
/// (sharers′ · v) / sharers′ = v from an entry whose sharers′ holders each hold v, so every live
/// entry takes v = S / sharers of the writer — whatever the new world or layout. (Keeping S
/// would apply sharers times the owed correction; S / n after a hierarchical writer, k times too
/// little with k ranks a host.)
///
/// **Non-finite steps.** The codecs record NaN errors for a non-finite input, and adding those
/// back would make every later step non-finite, so a skipped step clears the memory on every
/// rank (a streaming fragment's discarded outer step: that fragment's entries only). What it
/// holds is what the encodings have not yet delivered — one step's rounding for fp16 or int8,
/// often several steps' worth for sign or a low PowerSGD rank — and clearing drops it; keeping
/// the previous memory to restore would cost a copy of the whole memory every step.
public final class ErrorFeedbackMemory {
    public let values: UnsafeMutableBufferPointer<Float>
    /// The entries this rank's all-reduce uses (sorted, disjoint), and how many ranks share each.
    public let live: [Range<Int>]
    public let sharers: Int

    /// A zeroed memory of `count` values; `live` nil: every entry.
    public init(count: Int, live: [Range<Int>]? = nil, sharers: Int) {
        values = .allocate(capacity: count)
        values.initialize(repeating: 0)
        self.live = live ?? [0 ..< count]
        self.sharers = sharers
    }

    /// The memory the hierarchical all-reduce uses for `plan`'s buckets: in each, the chunk it
    /// owns after the host's reduce-scatter, shared by one rank per host.
    public convenience init(count: Int, plan: BucketPlan, hierarchical: HierarchicalAllReduce) {
        let live = plan.buckets.map { bucket in
            let owned = hierarchical.ownedRange(ofCount: bucket.count)
            return bucket.lowerBound + owned.lowerBound ..< bucket.lowerBound + owned.upperBound
        }.sorted { $0.lowerBound < $1.lowerBound }
        self.init(count: count, live: live, sharers: hierarchical.hosts)
    }

    deinit { values.deallocate() }

    public var count: Int { values.count }

    /// The memory of `range` of the flat gradient.
    public func slice(_ range: Range<Int>) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: values[range])
    }

    /// Zeros every entry, or those of `range` alone.
    public func clear(_ range: Range<Int>? = nil) {
        guard let range else { values.update(repeating: 0); return }
        slice(range).update(repeating: 0)
    }

    /// The sum over ranks (collective). A ring of its own, dropped after the call, so that its
    /// scratch does not stay allocated for the rest of the run. The fp32 ring receives its
    /// all-gather straight into the buffer it averages, so that buffer is memory of our own, not
    /// an array's: after a failed call a peer's segment may still land in it, and it is then
    /// left allocated (the job ends on that error), as the ring leaves its slots.
    public func sum(over transport: Transport) throws -> [Float] {
        let sum = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
        _ = sum.initialize(fromContentsOf: values)
        try RingAllReduce(transport: transport).average(sum)   // the fp32 ring's average times n
        defer { sum.deallocate() }
        let n = Float(transport.size)
        return sum.map { $0 * n }
    }

    /// Restores the memory: `own` (this rank's file) when the world (`worldSize` ranks now,
    /// `writtenBy` at the checkpoint) and the layout (`writerSharers`: nil for a checkpoint
    /// written before it was kept, whose writer was then the flat ring) are unchanged and it
    /// fits, else what the checkpoint's `sum` owes, in the live entries. Returns a warning, if any.
    ///
    /// The same world and hosts are not yet the same layout: the hierarchical all-reduce's
    /// owned chunks follow the rank's place on its host (mpirun's mapping) and the bucket plan
    /// (`comm.bucket_bytes`), which the checkpoint does not record. A rank's memory holds values
    /// in its live entries only (the codec's error where it encodes; everything else stays 0),
    /// so a file with a value outside the entries live now was written under another layout,
    /// and what it owes is the sum's share, as for another world.
    public func restore(own: [Float]?, sum: [Float]?, writtenBy: Int, writerSharers: Int? = nil, worldSize: Int, rank: Int, step: Int) -> String? {
        clear()
        // A checkpoint that does not say (written before EFSH): the rule of its time — its own
        // file when the world is the same, else S · (n′/n) / sharers — so that its resume stays
        // what it was (bit-identical on the same ranks, whichever layout wrote it).
        let sameWorld = writtenBy == worldSize && (writerSharers == nil || writerSharers == sharers)
        var otherLayout = false
        if sameWorld, let own, own.count == count {
            if holdsValuesOnlyInLiveEntries(own) {
                for range in live { for i in range { values[i] = own[i] } }
                return nil
            }
            otherLayout = true
        }
        guard let sum, sum.count == count else {
            return "rank \(rank): the checkpoint holds no error-feedback memory for this model; it restarts from zero"
        }
        let share = writerSharers.map { Float(1 / Double(max(1, $0))) } ?? Float(Double(worldSize) / Double(writtenBy) / Double(sharers))
        for range in live { for i in range { values[i] = sum[i] * share } }
        if otherLayout {
            return "rank \(rank): its own error-feedback file for step \(step) was written under another layout of the hierarchical all-reduce (another placement of the ranks on their hosts, or another comm.bucket_bytes); it takes an equal share of the checkpoint's sum"
        }
        return sameWorld ? "rank \(rank): its own error-feedback file for step \(step) is missing, damaged or another run's; it takes an equal share of the checkpoint's sum" : nil
    }

    /// Whether every non-zero value of `file` lies in an entry live now (`live` is sorted and disjoint).
    private func holdsValuesOnlyInLiveEntries(_ file: [Float]) -> Bool {
        var next = 0
        for range in live + [count ..< count] {
            for i in next ..< range.lowerBound where file[i] != 0 { return false }
            next = range.upperBound
        }
        return true
    }
}
