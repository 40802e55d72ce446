import ArgumentParser
import Collectives
import Foundation
import MPITransport
import Training

/// Where `bench allreduce` and `check allreduce` keep the buffers they reduce.
///
/// `shared`: an MPI shared-memory window when every rank is on this host, so the fp32 ring's
/// steps are direct loads (`RingAllReduce+ZeroCopy.swift`); `private`: ordinary memory, every
/// ring step an MPI message; `auto`: shared, unless the BTL list excludes shared memory (e.g.
/// `--mca btl tcp,self`, which asks to measure messages).
enum BufferPlacement: String, ExpressibleByArgument, CaseIterable {
    case auto, shared, `private`

    /// What each choice means, for `--help`.
    static let help = "shared: in an MPI shared-memory window when every rank is on this host, so fp32 ring steps are direct loads; private: ordinary memory, every ring step an MPI message; auto: shared unless the BTL list excludes shared memory (e.g. --mca btl tcp,self). MPI_Allreduce runs on the same buffers."

    /// `auto` resolved from the BTL list mpirun passes to the ranks.
    var resolved: BufferPlacement {
        guard self == .auto else { return self }
        guard let btl = ProcessInfo.processInfo.environment["OMPI_MCA_btl"] else { return .shared }
        return Self.btlAllowsSharedMemory(btl) ? .shared : .private
    }

    /// Whether an OpenMPI BTL list lets ranks use shared memory: "tcp,self" does not; "vader,self"
    /// and "^tcp" do; "^vader" and "^sm" (a list that excludes, by its leading ^) do not.
    static func btlAllowsSharedMemory(_ btl: String) -> Bool {
        let trimmed = btl.trimmingCharacters(in: .whitespaces)
        let excluding = trimmed.hasPrefix("^")
        let names = Set((excluding ? String(trimmed.dropFirst()) : trimmed).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let shared: Set<String> = ["vader", "sm"]
        return excluding ? names.isDisjoint(with: shared) : !names.isDisjoint(with: shared)
    }
}

/// Which all-reduce `bench allreduce` and `check allreduce` exercise besides the flat ring.
enum AllReduceTopology: String, ExpressibleByArgument, CaseIterable {
    case flat, hierarchical

    /// The host split and a buffer of `count` floats in this host's shared-memory window, as
    /// `HierarchicalAllReduce` needs them; an error on every rank where the layout has no
    /// hierarchy (h > 1 hosts with the same k > 1 ranks) or the window cannot be had. Collective.
    static func hostBuffers(_ transport: MPITransport, count: Int) throws -> (split: HostSplit, region: SharedRegion) {
        let (split, reason) = try transport.splitByHost()
        guard let split else { throw AgreedError("--topology hierarchical needs h > 1 hosts with the same k > 1 ranks each: \(reason)") }
        guard let region = try split.local.allocateShared(count: max(1, count)) else {
            throw AgreedError("--topology hierarchical: no shared-memory window on this host")
        }
        return (split, region)
    }
}
