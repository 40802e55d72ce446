/// Memory that every rank of a job can load from and store to directly: an MPI-3
/// shared-memory window when all ranks run on one host (`MPI_Win_allocate_shared`), plain
/// memory for the in-process transport's threads.
///
/// Why: over shared memory a message is a copy — MPI's single-copy path reads the peer's
/// buffer into ours inside `MPI_Wait`, then we read that copy again to add it. When the
/// buffer itself lives in a shared region, the ring reads its left neighbour's chunk where
/// it lies and adds it in the same pass (`RingAllReduce`, "zero-copy steps"): one pass over
/// memory instead of two, and no system call or rendezvous per segment.
///
/// Each rank holds `count` floats; `base(of:)` is where rank q's floats start, in this
/// process's address space. Regions live until the transport's owner finalises (freeing an
/// MPI window is collective, so it is never left to whichever rank deinitialises first).
public final class SharedRegion: @unchecked Sendable {
    /// This rank's floats.
    public let local: UnsafeMutableBufferPointer<Float>
    private let bases: [UnsafeMutablePointer<Float>]
    private let fence: () -> Void

    /// `bases[q]` is rank q's part mapped here; `fence` orders this rank's loads and stores
    /// around a barrier (`MPI_Win_sync` for a window).
    public init(local: UnsafeMutableBufferPointer<Float>, bases: [UnsafeMutablePointer<Float>], fence: @escaping () -> Void) {
        self.local = local
        self.bases = bases
        self.fence = fence
    }

    /// Rank q's part.
    public func base(of q: Int) -> UnsafeMutablePointer<Float> { bases[q] }

    /// Where `buffer` starts inside this rank's part, if it lies wholly inside.
    public func offset(of buffer: UnsafeMutableBufferPointer<Float>) -> Int? {
        guard let start = buffer.baseAddress, let localStart = local.baseAddress else { return nil }
        let offset = start - localStart
        return offset >= 0 && offset + buffer.count <= local.count ? offset : nil
    }

    /// Makes this rank's stores before it visible to every rank's loads after it.
    public func synchronize(over transport: Transport) throws {
        fence()
        try transport.barrier()
        fence()
    }
}

/// A transport whose ranks can also share memory (all of them on one host).
public protocol SharedMemoryTransport: Transport {
    /// Collective: `count` floats per rank, loadable by every rank; nil when the ranks cannot
    /// all share memory (several hosts), in which case callers use ordinary buffers.
    func allocateShared(count: Int) throws -> SharedRegion?
    /// The region this transport allocated that holds `buffer`, if any.
    func sharedRegion(containing buffer: UnsafeMutableBufferPointer<Float>) -> SharedRegion?
}
