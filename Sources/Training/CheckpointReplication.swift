import Collectives
import FileFormats
import Foundation

/// Where a run's checkpoints live when ranks on different hosts may or may not see the same
/// run directory (`checkpoint.replicate`).
///
/// Why: replicas are bit-identical, so any rank can write the checkpoint. With a run
/// directory on a shared filesystem one copy is enough; with a directory on each host's
/// local disk, a checkpoint written by rank 0 alone dies with rank 0's host. So the ranks
/// find out which of them share a directory — by looking, not by guessing from host names:
/// every rank drops a probe file named after a fresh nonce and its rank into the run
/// directory, and lists the directory. Ranks that see each other's probes share it; the
/// lowest of them is that directory's writer and looker. `per_host` (the default) makes
/// every such writer write, which is one copy on a shared filesystem and one per host on
/// local disks; `rank0` makes rank 0 write alone (with a warning when that leaves other
/// directories without a checkpoint). A resume looks in every directory and takes the newest
/// valid checkpoint any of them holds (`Trainer.restore`).
///
/// Caveat: an NFS client may cache a directory listing for some seconds (acdirmin) and miss
/// a peer's probe; ranks sharing that directory then both write — the same bytes, each
/// through its own temporary file and an atomic rename — which costs a second write, not a
/// checkpoint.
struct CheckpointPlacement {
    /// This rank is the lowest of those that see its run directory.
    let looks: Bool
    /// This rank writes the checkpoint.
    let writes: Bool
    /// The lowest rank of each distinct run directory (one entry on a shared filesystem).
    let directories: [Int]

    static let single = CheckpointPlacement(looks: true, writes: true, directories: [0])
}

extension Trainer {
    /// Finds which ranks share a run directory (collective; the directory exists on every rank).
    func placeCheckpoints() throws -> CheckpointPlacement {
        guard transport.size > 1 else { return .single }
        let rank = transport.rank
        let nonce = try Agreement.randomFromRankZero("choose a probe name", over: transport)
        let prefix = ".replica-probe-" + String(format: "%016llx", nonce) + "-rank-"
        let probe = (runDirectory as NSString).appendingPathComponent(prefix + "\(rank)")
        try Agreement.run("write a probe file into the run directory", over: transport) {
            try FileSystem.writeAtomically([], to: probe, what: "probe file")
        }
        let seen = try Agreement.run("list the run directory", over: transport) { () -> [Int] in
            let names = try FileManager.default.contentsOfDirectory(atPath: runDirectory)
            return names.compactMap { $0.hasPrefix(prefix) ? Int($0.dropFirst(prefix.count)) : nil }
        }
        // Every rank has listed before any probe goes.
        try Agreement.run("remove the probe file", over: transport) {
            guard unlink(probe) == 0 || errno == ENOENT else { throw FileError.posix("remove the probe file", probe) }
        }
        let looks = seen.min() == rank || !seen.contains(rank)
        let lookers = try RingAllGather.gather(UInt8(looks ? 1 : 0), over: transport)
        let directories = lookers.indices.filter { lookers[$0] == 1 }
        let writes = config.checkpointReplicate == "rank0" ? rank == 0 : looks
        if rank == 0 && directories.count > 1 {
            let list = directories.map(String.init).joined(separator: ", ")
            if config.checkpointReplicate == "rank0" {
                log("warning: checkpoint.replicate: rank0, but the ranks see \(directories.count) different run directories (lowest ranks \(list)): losing rank 0's host loses every checkpoint; per_host writes one copy in each")
            } else {
                log("checkpoints: one copy in each of \(directories.count) run directories not shared between hosts (written by ranks \(list))")
            }
        }
        return CheckpointPlacement(looks: looks, writes: writes, directories: directories)
    }
}
