import ArgumentParser
import Foundation

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
        return btl.contains("vader") || btl.contains("sm") ? .shared : .private
    }
}
