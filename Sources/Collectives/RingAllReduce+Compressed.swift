import GradientCodecs

/// The ring's compressed step body, for any lossy codec.
///
/// - reduce-scatter: step 0 encodes this rank's own chunk; every later hop decode-accumulates
///   the left neighbour's partial sum into its own values and encodes the result for the right
///   neighbour in the same sweep (`FusedSegmentPass`), as soon as the segment has arrived; at
///   the last hop the owner also divides by n, keeps decode(encode(·)) in its own buffer and
///   sends those bytes: the first all-gather message.
/// - all-gather: later steps forward the bytes received one step earlier, untouched — so
///   every rank decodes the same bytes — and decode them into the buffer.
/// - receives go to a scratch slot (two stripes: a slot is refilled two steps later, once the
///   bytes it held have been forwarded); encodings to a send slot (likewise).
///
/// With a residual, every encoding records its error there (scaled by n for the owner's
/// average, which lives in mean space): see "Error feedback" on `RingAllReduce`. With a carry,
/// s·b rides in every encoding and comes off every decoded value. The squared norm of the
/// averaged values is summed on the way (`lastSquaredSum`).
extension RingAllReduce {
    func averageCompressed(_ call: RingCall) throws {
        let n = call.n, m = call.m
        let segment = call.part.maxSegmentValues
        let pass = FusedSegmentPass(codec: codec, buffer: call.buffer.baseAddress!, residual: call.residual, carry: call.carry,
                                    scratch: scratch.tile(values: FusedSegmentPass.tileValues(for: codec, maxSegmentValues: segment)),
                                    maxSegmentValues: segment)
        squares.removeAll(keepingCapacity: true)
        squares.append(contentsOf: repeatElement(0, count: n * m))
        // Encodes the send of unit u (a reduce-scatter step, or the owner's at step n − 1) into its slot.
        func encode(unit u: Int, incoming: UnsafeRawBufferPointer?) throws {
            let t = u / m, j = u % m, chunk = call.sendChunk(step: t)
            if u >= 2 * m { try waitSend(unit: u - 2 * m) }   // the send slot's previous occupant
            let start = ContinuousClock.now
            let (bytes, sum) = try pass.encode(call.part.segment(j, ofChunk: chunk), incoming: incoming,
                                               owner: t == n - 1 ? n : nil, into: scratch.sendSlot(step: t, segment: j))
            let end = ContinuousClock.now
            lastCodecSeconds += (end - start).seconds
            onPhase?(.encode, start, end)
            encodedBytes[u] = bytes
            if t == n - 1 { squares[chunk * m + j] = sum }
        }
        try runUnits(call, slotBytes: codec.maxEncodedBytes(count: call.part.maxSegmentValues),
            send: { u in
                let t = u / m, j = u % m
                if t == 0 { try encode(unit: u, incoming: nil) }
                let bytes = t >= n
                    ? UnsafeRawBufferPointer(rebasing: scratch.slot(step: t - 1, segment: j)[0 ..< receivedBytes[u - m]])
                    : UnsafeRawBufferPointer(rebasing: scratch.sendSlot(step: t, segment: j)[0 ..< encodedBytes[u]])
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
                let t = k / m, j = k % m
                let payload = UnsafeRawBufferPointer(rebasing: scratch.slot(step: t, segment: j)[0 ..< bytes])
                do {
                    if call.isReduceScatter(step: t) { return try encode(unit: k + m, incoming: payload) }
                    let start = ContinuousClock.now
                    let chunk = call.receiveChunk(step: t)
                    squares[chunk * m + j] = try pass.decode(payload, into: call.part.segment(j, ofChunk: chunk))
                    let end = ContinuousClock.now
                    lastCodecSeconds += (end - start).seconds
                    onPhase?(.decode, start, end)
                } catch let bad as FusedSegmentPass.BadIncoming {
                    throw CollectiveError.badPayload(rank: call.r, peer: transport.leftNeighbour, detail: "\(bad.error)")
                }
            })
        lastSquaredSum = squares.reduce(0, +)
    }
}
