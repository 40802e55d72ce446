import GradientCodecs

/// The ring's steps when the buffer lives in a `SharedRegion`: the same step table, the same
/// chunks, the same order of additions — so bit-identical results to the message ring — but
/// a "transfer" is a load from the left neighbour's part of the region.
///
/// Reduce-scatter step s: rank r adds its left neighbour's chunk (r − s − 1) mod n into its
/// own (the last step also divides by n); all-gather step s: it copies its left neighbour's
/// chunk (r − s) mod n. Within one step a rank writes only the chunk it reads from its left
/// neighbour, and its right neighbour reads a different chunk of it, so a barrier between
/// steps is the only synchronisation needed: one before the first step (every rank has
/// finished writing its buffer) and one after each, 2n − 1 per call. Each barrier is fenced
/// (`SharedRegion.synchronize`) so that stores before it are visible to loads after it.
///
/// Per rank and call this reads 2(n − 1)/n of the buffer from peers, like the ring, but in
/// one pass that loads, adds and stores, where a message costs a copy into scratch (MPI's
/// single-copy read in `MPI_Wait`) and then the add reading that copy again.
extension RingAllReduce {
    func averageInSharedMemory(_ buffer: UnsafeMutableBufferPointer<Float>, region: SharedRegion,
                               offsets: [Int]) throws {
        let part = RingPartition(count: buffer.count, ranks: transport.size, maxSegmentValues: buffer.count)
        try reduceScatterInSharedMemory(buffer, region: region, offsets: offsets, part: part)
        try allGatherInSharedMemory(buffer, region: region, offsets: offsets, part: part)
        lastBytesSent = part.chunkSum(ranks: transport.size) * 4   // what the message ring would have sent
        lastCallWasZeroCopy = true
    }

    /// The reduce-scatter half: afterwards this rank's chunk (r + 1) mod n holds the average
    /// of every rank's chunk (its "owned" chunk; see the step table).
    func reduceScatterInSharedMemory(_ buffer: UnsafeMutableBufferPointer<Float>, region: SharedRegion,
                                     offsets: [Int], part: RingPartition) throws {
        let n = transport.size, r = transport.rank
        let mine = buffer.baseAddress!, left = region.base(of: transport.leftNeighbour) + offsets[transport.leftNeighbour]
        try region.synchronize(over: transport)
        for s in 0 ..< n - 1 {
            let chunk = part.chunk((r - s - 1 + 2 * n) % n)
            if s == n - 2 {
                FloatKernels.addThenScale(left + chunk.lowerBound, into: mine + chunk.lowerBound, by: 1 / Float(n), count: chunk.count)
            } else {
                FloatKernels.add(left + chunk.lowerBound, into: mine + chunk.lowerBound, count: chunk.count)
            }
            try region.synchronize(over: transport)
        }
    }

    /// The all-gather half: copies every owner's chunk around the ring, so that every rank
    /// ends with every owned chunk.
    func allGatherInSharedMemory(_ buffer: UnsafeMutableBufferPointer<Float>, region: SharedRegion,
                                 offsets: [Int], part: RingPartition) throws {
        let n = transport.size, r = transport.rank
        let mine = buffer.baseAddress!, left = region.base(of: transport.leftNeighbour) + offsets[transport.leftNeighbour]
        for s in 0 ..< n - 1 {
            let chunk = part.chunk((r - s + n) % n)
            (mine + chunk.lowerBound).update(from: left + chunk.lowerBound, count: chunk.count)
            try region.synchronize(over: transport)
        }
    }

    /// Agrees with the other ranks on an exact call over `buffer` and returns every rank's
    /// offset in its shared region, or nil when some rank's buffer is not in one.
    func agreedSharedOffsets(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> (region: SharedRegion, offsets: [Int])? {
        let region = (transport as? SharedMemoryTransport)?.sharedRegion(containing: buffer)
        let shape = RingCallShape(count: buffer.count, offsetInSharedRegion: region?.offset(of: buffer) ?? -1,
                                  segmentBytes: segmentBytes, codecName: "exact")
        let plan = try agreement.begin(shape, over: transport)
        try agreement.confirm()
        guard let region, let offsets = plan.sharedOffsets else { return nil }
        return (region, offsets)
    }
}
