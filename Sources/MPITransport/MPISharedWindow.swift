import CMPI
import Collectives

/// `SharedMemoryTransport` on MPI-3 shared-memory windows.
///
/// `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)` groups the ranks that share a host; only when
/// that group is the whole job does `allocateShared` return a segment (a ring spanning hosts
/// must use messages for its cross-host steps). The window is allocated with
/// `alloc_shared_noncontig` so each rank's part sits on its own pages (first-touched, hence
/// NUMA-local, by its owner), and held in a passive epoch (`MPI_Win_lock_all`) for its
/// lifetime, which is what makes `MPI_Win_sync` the fence of MPI-3's "unified" shared memory
/// idiom: sync, barrier, sync. Windows are freed (collectively) by `MPIRuntime.finalize`.
extension MPITransport: SharedMemoryTransport {
    public func allocateShared(count: Int) throws -> SharedRegion? {
        precondition(count > 0, "a shared segment needs at least one float")
        var node: MPI_Comm? = nil
        try check(MPI_Comm_split_type(comm, ringsgd_mpi_comm_type_shared(), Int32(rank), ringsgd_mpi_info_null(), &node),
                  call: "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)", rank: rank)
        var nodeSize: Int32 = 0
        try check(MPI_Comm_size(node, &nodeSize), call: "MPI_Comm_size", rank: rank)
        // Every rank sees the same answer: either all share one host or none has all peers.
        guard Int(nodeSize) == size else {
            MPI_Comm_free(&node)
            return nil
        }
        var info: MPI_Info? = nil
        MPI_Info_create(&info)
        MPI_Info_set(info, "alloc_shared_noncontig", "true")
        defer { MPI_Info_free(&info) }
        var base: UnsafeMutableRawPointer? = nil
        var window: MPI_Win? = ringsgd_mpi_win_null()
        try check(MPI_Win_allocate_shared(MPI_Aint(count * 4), 4, info, node, &base, &window),
                  call: "MPI_Win_allocate_shared of \(count * 4) bytes", rank: rank)
        var bases: [UnsafeMutablePointer<Float>] = []
        for q in 0 ..< size {
            var bytes: MPI_Aint = 0, unit: Int32 = 0
            var pointer: UnsafeMutableRawPointer? = nil
            try check(MPI_Win_shared_query(window, Int32(q), &bytes, &unit, &pointer),
                      call: "MPI_Win_shared_query", rank: rank, peer: q)
            guard let pointer, bytes >= count * 4 else {
                throw CollectiveError.transport(rank: rank, peer: q, call: "MPI_Win_shared_query",
                                                detail: "rank \(q)'s segment is \(bytes) bytes, expected \(count * 4)")
            }
            bases.append(pointer.bindMemory(to: Float.self, capacity: count))
        }
        try check(MPI_Win_lock_all(Int32(ringsgd_mpi_mode_nocheck()), window), call: "MPI_Win_lock_all", rank: rank)
        let local = UnsafeMutableBufferPointer(start: bases[rank], count: count)
        local.initialize(repeating: 0)
        let fenced = window
        let segment = SharedRegion(local: local, bases: bases, fence: { _ = MPI_Win_sync(fenced) })
        sharedWindows.append(SharedWindow(segment: segment, window: window, node: node))
        return segment
    }

    public func sharedRegion(containing buffer: UnsafeMutableBufferPointer<Float>) -> SharedRegion? {
        sharedWindows.first { $0.segment.offset(of: buffer) != nil }?.segment
    }

    /// Collective: ends the epochs and frees every window and its communicator.
    func freeSharedWindows() {
        for var held in sharedWindows {
            MPI_Win_unlock_all(held.window)
            MPI_Win_free(&held.window)
            MPI_Comm_free(&held.node)
        }
        sharedWindows.removeAll()
    }
}

/// A window this transport allocated, kept for look-up and for freeing at finalisation.
struct SharedWindow {
    let segment: SharedRegion
    var window: MPI_Win?
    var node: MPI_Comm?
}
