// MPITransport — the `Transport` on MPI point-to-point (OpenMPI).
//
// Owns: MPI initialisation and finalisation, error translation, and the transport itself.
// Only this module imports CMPI.
import CMPI

/// The process's MPI session: initialised once, finalised once.
///
/// MPI allows `MPI_Init_thread` exactly once per process, so this is a process-wide
/// singleton. We ask for `MPI_THREAD_SERIALIZED` — the gradient all-reduces run on a
/// communication thread while backward runs, and the training thread calls MPI between
/// steps, never at the same time as it — and fail clearly if the library grants less.
/// (`MPI_THREAD_MULTIPLE` would allow concurrent calls we never make, at the cost of locks
/// inside the library.)
public final class MPIRuntime: @unchecked Sendable {
    public static let shared = MPIRuntime()

    /// The thread level MPI granted, by name (`MPI_THREAD_FUNNELED`, …).
    public private(set) var threadLevel = "not initialised"
    public private(set) var isInitialised = false
    private var world: MPITransport?

    private init() {}

    /// Initialises MPI if needed and returns the transport over `MPI_COMM_WORLD`, whose error
    /// handler is set to `MPI_ERRORS_RETURN` so that failures come back as Swift errors.
    ///
    /// Reads `RINGSGD_MPI_MAX_MESSAGE_BYTES` (`MPITransport.maxMessageBytes`) first, so that a
    /// bad value is an error before MPI starts.
    public func worldTransport() throws -> MPITransport {
        if let world { return world }
        let maxMessageBytes = try MPITransport.maxMessageBytes(
            fromEnvironment: ProcessInfo.processInfo.environment[MPITransport.maxMessageBytesVariable])
        var provided: Int32 = 0
        try check(MPI_Init_thread(nil, nil, Int32(MPI_THREAD_SERIALIZED), &provided), call: "MPI_Init_thread")
        isInitialised = true
        threadLevel = Self.threadLevelName(Int(provided))
        guard provided >= Int32(MPI_THREAD_SERIALIZED) else {
            throw CollectiveError.transport(rank: -1, peer: nil, call: "MPI_Init_thread",
                detail: "the MPI library granted \(threadLevel); ringsgd needs MPI_THREAD_SERIALIZED (its communication thread calls MPI); use an MPI built with thread support, such as Debian's OpenMPI")
        }
        let comm = ringsgd_mpi_comm_world()!
        try check(MPI_Comm_set_errhandler(comm, ringsgd_mpi_errors_return()), call: "MPI_Comm_set_errhandler")
        let transport = try MPITransport(communicator: comm, maxMessageBytes: maxMessageBytes)
        world = transport
        // Both ends of a split message cut it by the limit: a rank with another would wait
        // for a length that never comes. (The all-gather's own messages are far below it.)
        try RingAllGather.requireAgreement(Int64(maxMessageBytes), on: "\(MPITransport.maxMessageBytesVariable) (pass it to every rank: mpirun -x)",
                                           over: transport)
        return transport
    }

    /// The MPI library's own version line ("Open MPI v4.1.4, …"); callable before MPI_Init.
    public static var libraryVersion: String {
        var buffer = [CChar](repeating: 0, count: Int(ringsgd_mpi_max_library_version_string()) + 1)
        var length: Int32 = 0
        guard MPI_Get_library_version(&buffer, &length) == MPI_SUCCESS else { return "unknown" }
        let text = String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespacesAndNewlines.union(.controlCharacters)) } ?? "unknown"
    }

    /// Finalises MPI (after a barrier-free shutdown: callers synchronise first if needed).
    public func finalize() {
        guard isInitialised else { return }
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 {
            world?.freeSharedWindows()   // collective, like MPI_Finalize itself
            for sub in world?.subTransports ?? [] { sub.freeSharedWindows(); sub.free() }
            MPI_Finalize()
        }
        isInitialised = false
    }

    /// Ends every rank of the job: the only safe exit once a collective has failed on one
    /// rank, since its peers may be waiting on it.
    public func abort(code: Int32 = 1) -> Never {
        if isInitialised { MPI_Abort(ringsgd_mpi_comm_world(), code) }
        exit(code)
    }

    /// Whether this process was started by mpirun/srun (and so may initialise MPI).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMI_SIZE"] != nil || env["PMIX_RANK"] != nil
    }

    /// The rank a launcher gave this process before MPI starts — mpirun's, a PMI/PMIx
    /// launcher's, or srun's task number (which an srun task has even without MPI) — or "0":
    /// which process of a job says what all of them would (one line, not one per rank).
    public static func launcherRank(in env: [String: String]) -> String {
        env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? env["PMI_RANK"] ?? env["SLURM_PROCID"] ?? "0"
    }

    static func threadLevelName(_ level: Int) -> String {
        switch level {
        case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE"
        case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED"
        case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED"
        case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE"
        default: return "unknown (\(level))"
        }
    }
}

/// MPI's error string for an error code.
func mpiErrorString(_ code: Int32) -> String {
    var buffer = [CChar](repeating: 0, count: Int(ringsgd_mpi_max_error_string()) + 1)
    var length: Int32 = 0
    MPI_Error_string(code, &buffer, &length)
    return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Throws unless `code` is `MPI_SUCCESS`, naming the call.
///
/// `call` is an autoclosure so that the name ("MPI_Isend of 524288 bytes") is only formatted
/// on failure: the sends and receives of every ring step pass through here, and an
/// interpolated string that long would otherwise be a heap allocation per message.
func check(_ code: Int32, call: @autoclosure () -> String, rank: Int = -1, peer: Int? = nil) throws {
    if code != MPI_SUCCESS {
        throw CollectiveError.transport(rank: rank, peer: peer, call: call(), detail: mpiErrorString(code))
    }
}

import Collectives
import Foundation
