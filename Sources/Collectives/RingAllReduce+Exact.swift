import GradientCodecs

/// The ring's exact (fp32) step body: no scratch copies on the send side and none in the
/// all-gather.
///
/// - send: straight from the caller's buffer (the segment is not written again before the
///   send completes: the reduce-scatter only writes chunks it receives);
/// - receive: reduce-scatter units into a scratch slot, all-gather units straight into the
///   buffer region they overwrite — once the send from that region (reduce-scatter step
///   t − (n−1)) has completed;
/// - absorb: add the slot into the buffer; the last reduce-scatter step completes the owner's
///   chunk, so it adds and divides by n in one pass (`FloatKernels.addThenScale`).
extension RingAllReduce {
    func averageExact(_ call: RingCall) throws {
        let n = call.n, m = call.m
        try runUnits(call, slotBytes: call.part.maxSegmentValues * 4,
            send: { u in
                lastBytesSent += call.sendSegment(unit: u).count * 4
                pendingSends[u] = try transport.send(UnsafeRawBufferPointer(call.sendSegment(unit: u)),
                                                     to: transport.rightNeighbour, tag: Self.tag)
            },
            receive: { k in
                let t = k / m
                let destination: UnsafeMutableRawBufferPointer
                if call.isReduceScatter(step: t) {
                    destination = scratch.slot(step: t, segment: k % m)
                } else {
                    try waitSend(unit: k - (n - 1) * m)
                    destination = UnsafeMutableRawBufferPointer(call.receiveSegment(unit: k))
                }
                pendingReceives[k] = try transport.receive(into: destination, from: transport.leftNeighbour, tag: Self.tag)
            },
            absorb: { k, bytes in
                let t = k / m, segment = call.receiveSegment(unit: k)
                guard bytes == segment.count * 4 else {
                    throw CollectiveError.badPayload(rank: call.r, peer: transport.leftNeighbour,
                                                     detail: "expected \(segment.count * 4) bytes of fp32, got \(bytes)")
                }
                // All-gather units were received straight into the buffer: nothing to do.
                guard call.isReduceScatter(step: t), let d = segment.baseAddress else { return }
                let source = scratch.slot(step: t, segment: k % m).baseAddress!.assumingMemoryBound(to: Float.self)
                let start = ContinuousClock.now
                if t == n - 2 {
                    FloatKernels.addThenScale(source, into: d, by: 1 / Float(n), count: segment.count)
                } else {
                    FloatKernels.add(source, into: d, count: segment.count)
                }
                onPhase?(.reduce, start, .now)
            })
    }
}
