import GradientSync

/// `comm.sync`: how often the replicas meet. Every step (data parallelism as DDP does it), or
/// every `comm.sync_every` = H local steps (local SGD; DiLoCo, Douillard et al. 2023,
/// arXiv:2311.08105), where what goes through the ring is the pseudo-gradient
/// Δ = θ_outer − θ_local and an outer optimizer moves θ_outer.
extension TrainingConfig {
    static let outerKeys = ["comm.outer.optimizer", "comm.outer.lr", "comm.outer.momentum"]
    static let streamingKeys = ["comm.fragments", "comm.outer_delay", "comm.outer_mix"]
    static let localSyncKeys = ["comm.sync_every", "comm.sync_warmup_steps", "consistency.inject_nonfinite_outer_at"] + outerKeys + streamingKeys

    /// Reads `comm.sync*` and `comm.outer.*` (after the model, optimizer and `comm.*` keys it
    /// is checked against).
    mutating func readSync(_ r: inout ConfigReader) throws {
        syncMode = try r.string("comm.sync", default: syncMode, allowed: ["every_step", "local_sgd", "diloco"])
        let present = Set(r.values.keys)
        if syncMode == "every_step" {
            if let stray = Self.localSyncKeys.first(where: present.contains) {
                throw ConfigError("\(stray) applies to comm.sync: local_sgd or diloco (comm.sync is every_step); remove it, or set comm.sync")
            }
            return
        }
        syncEvery = try r.int("comm.sync_every", default: 50, min: 1)
        syncWarmupSteps = try r.int("comm.sync_warmup_steps", default: 0, min: 0)
        if syncMode == "local_sgd", let stray = Self.outerKeys.first(where: present.contains) {
            throw ConfigError("\(stray): comm.sync: local_sgd averages the parameters (no outer optimizer); for an outer optimizer set comm.sync: diloco")
        }
        // DiLoCo's outer optimizer: Nesterov momentum 0.9 at lr 0.7 (the paper's best, §3).
        outerOptimizer = try r.string("comm.outer.optimizer", default: syncMode == "diloco" ? "nesterov" : "average",
                                      allowed: ["nesterov", "sgd", "average"])
        if outerOptimizer == "average", let stray = ["comm.outer.lr", "comm.outer.momentum"].first(where: present.contains) {
            throw ConfigError("\(stray): comm.outer.optimizer: average replaces θ_outer by the ranks' mean (lr 1, no momentum); remove it, or choose sgd or nesterov")
        }
        outerLR = try r.double("comm.outer.lr", default: outerOptimizer == "average" ? 1 : 0.7, min: 0, exclusiveMin: true)
        outerMomentum = try r.double("comm.outer.momentum", default: outerOptimizer == "nesterov" ? 0.9 : 0, min: 0, max: 1, exclusiveMax: true)
        if outerOptimizer == "nesterov" && outerMomentum == 0 {
            throw ConfigError("comm.outer.momentum must be > 0 with comm.outer.optimizer: nesterov (got 0); choose sgd for no momentum")
        }
        // Streaming DiLoCo (arXiv:2501.18512): fragments in turn, each applied τ steps after it
        // starts, mixed with weight 1 − α into the local parameters.
        fragments = try r.int("comm.fragments", default: 1, min: 1)
        outerDelay = try r.int("comm.outer_delay", default: 0, min: 0)
        outerMix = try r.double("comm.outer_mix", default: 0, min: 0, max: 1, exclusiveMax: true)
        if fragments > syncEvery {
            throw ConfigError("comm.fragments \(fragments) exceeds comm.sync_every \(syncEvery): each fragment needs a step of its own in every H; choose at most \(syncEvery)")
        }
        if fragments == 1 && outerDelay >= syncEvery && outerDelay > 0 {
            throw ConfigError("comm.outer_delay \(outerDelay) must be below comm.sync_every \(syncEvery) with one fragment: its average would be applied when its next outer step starts, which would then average nothing; choose at most \(syncEvery - 1)")
        }
        if outerDelay > 0 && !overlap {
            throw ConfigError("comm.outer_delay overlaps a fragment's all-reduce with local steps on the communication thread, which comm.overlap: false turns off; set comm.overlap: true, or comm.outer_delay: 0")
        }
        if outerDelay > syncEvery / fragments {
            throw ConfigError("comm.outer_delay \(outerDelay) exceeds H/P = \(syncEvery)/\(fragments) = \(syncEvery / fragments) steps: a fragment's average must be applied before the next fragment starts; choose at most \(syncEvery / fragments)")
        }
        if compressor == "powersgd" {
            throw ConfigError("comm.compressor: powersgd compresses gradients step by step and is not supported with comm.sync: \(syncMode); compress the pseudo-gradient with comm.codec (e.g. int8 or sign) instead")
        }
        if compressMomentum == .on {
            throw ConfigError("comm.compress_momentum carries the optimizer's momentum in every step's all-reduce; comm.sync: \(syncMode) has no such all-reduce: remove it")
        }
        if (layers ?? []).contains(where: \.containsBatchNorm) {
            throw ConfigError("comm.sync: \(syncMode) with batch norm layers is not supported yet (their running statistics would need an outer rule); use comm.sync: every_step for this model")
        }
    }

    /// What the outer synchronizer is told; nil for `every_step`.
    public var outerSettings: OuterSettings? {
        guard syncMode != "every_step" else { return nil }
        return OuterSettings(every: syncEvery, warmupSteps: syncWarmupSteps,
                             rule: OuterSettings.Rule(rawValue: outerOptimizer)!, lr: outerLR, momentum: outerMomentum,
                             fragments: fragments, delay: outerDelay, mix: outerMix)
    }
}
