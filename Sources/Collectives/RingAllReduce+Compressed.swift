import GradientCodecs

/// The ring's compressed step body, for any lossy codec.
///
/// - send: reduce-scatter hops encode the partial sum they forward; at the first all-gather
///   step the owner divides its chunk by n, encodes it once and keeps decode(encode(·)) in its
///   own buffer (`roundTrip`); later all-gather steps forward the bytes received one step
///   earlier, untouched — so every rank decodes the same bytes.
/// - receive: always into a scratch slot (two stripes: a slot is refilled two steps later,
///   once the bytes it held have been forwarded).
/// - absorb: decode-accumulate (reduce-scatter) or decode (all-gather) into the buffer.
///
/// With a residual, every encoding records its error there (scaled by n for the owner's
/// average, which lives in mean space): see "Error feedback" on `RingAllReduce`.
extension RingAllReduce {
    func averageCompressed(_ call: RingCall) throws {
        let n = call.n, m = call.m
        try runUnits(call, slotBytes: codec.maxEncodedBytes(count: call.part.maxSegmentValues),
            send: { u in
                let t = u / m, j = u % m
                let bytes: UnsafeRawBufferPointer
                if t >= n {
                    bytes = UnsafeRawBufferPointer(rebasing: scratch.slot(step: t - 1, segment: j)[0 ..< receivedBytes[u - m]])
                } else {
                    let segment = call.sendSegment(unit: u)
                    let becomesOwner = t == n - 1
                    if becomesOwner, let d = segment.baseAddress { FloatKernels.scale(d, by: 1 / Float(n), count: segment.count) }
                    if u >= 2 * m { try waitSend(unit: u - 2 * m) }   // the send slot's previous occupant
                    let out = scratch.sendSlot(step: t, segment: j)
                    let start = ContinuousClock.now
                    let residual = call.residual.map { $0 + call.part.segment(j, ofChunk: call.sendChunk(step: t)).lowerBound }
                    let written = try codec.encode(segment, into: out, residual: residual,
                                                   residualScale: becomesOwner ? Float(n) : 1, roundTrip: becomesOwner)
                    let end = ContinuousClock.now
                    lastCodecSeconds += (end - start).seconds
                    onPhase?(.encode, start, end)
                    bytes = UnsafeRawBufferPointer(rebasing: out[0 ..< written])
                }
                lastBytesSent += bytes.count
                pendingSends[u] = try transport.send(bytes, to: transport.rightNeighbour, tag: Self.tag)
            },
            receive: { k in
                let t = k / m
                // The slot's previous occupant (step t−2) may still be being forwarded (step t−1).
                if t >= 2 && t - 2 >= n - 1 { try waitSend(unit: k - m) }
                pendingReceives[k] = try transport.receive(into: scratch.slot(step: t, segment: k % m),
                                                           from: transport.leftNeighbour, tag: Self.tag)
            },
            absorb: { k, bytes in
                let t = k / m
                let payload = UnsafeRawBufferPointer(rebasing: scratch.slot(step: t, segment: k % m)[0 ..< bytes])
                let start = ContinuousClock.now
                defer {
                    let end = ContinuousClock.now
                    lastCodecSeconds += (end - start).seconds
                    onPhase?(.decode, start, end)
                }
                do {
                    if call.isReduceScatter(step: t) { try codec.decodeAccumulate(payload, into: call.receiveSegment(unit: k)) }
                    else { try codec.decode(payload, into: call.receiveSegment(unit: k)) }
                } catch {
                    throw CollectiveError.badPayload(rank: call.r, peer: transport.leftNeighbour, detail: "\(error)")
                }
            })
    }
}
