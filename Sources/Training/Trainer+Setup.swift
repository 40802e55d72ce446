import Collectives
import Datasets
import FileFormats
import Foundation
import GradientCodecs
import GradientSync
import NeuralNet
import Optimizers

/// Setting a run up: agreement on how the ranks were started, the run directory, data, model,
/// optimizer and schedule, and — with `--resume` — the checkpoint to continue from.
extension Trainer {
    /// Config keys that cannot change on resume: the checkpoint's parameters and optimizer
    /// state would no longer describe this model, data or optimizer.
    static let keysFixedAcrossResume = ["model.", "data.dataset", "data.synthetic.", "optimizer.name",
                                        "data.text", "data.val_fraction", "data.stride", "data.train_tokens",
                                        // Local steps: θ_outer, the schedule of outer steps and a fragment in flight belong to these.
                                        "comm.sync", "comm.sync_every", "comm.sync_warmup_steps", "comm.fragments", "comm.outer_delay"]

    /// A run that fails before it starts leaves no run directory it created behind (an empty
    /// one would only be in the way of the next attempt).
    func prepare(resume: Bool, stopAfter: Int?, overwrite: Bool) throws -> TrainingRun {
        // Before the first collective: no rank creates the directory before every rank has looked.
        let created = !FileManager.default.fileExists(atPath: runDirectory)
        try Agreement.requireSameStart(config: config, resume: resume, resumeIfPresent: resumeIfPresent, over: transport)
        let store = CheckpointStore(runDirectory: runDirectory, keep: config.checkpointKeep)
        do {
            let (resume, placement) = try prepareRunDirectory(store, resume: resume, overwrite: overwrite)
            return try prepareRun(store, placement, resume: resume, replacing: overwrite && !resume, stopAfter: stopAfter)
        } catch {
            if created { FileSystem.removeIfEmpty(runDirectory, allowing: ["checkpoints", "metrics.jsonl"]) }
            throw error
        }
    }

    /// `replacing`: `--overwrite` of a fresh run, whose earlier run is deleted only once every
    /// check has passed and the model, data and `--init-from` weights are loaded — a run that
    /// fails to start (a mistyped config, weights that do not fit) loses nothing.
    private func prepareRun(_ store: CheckpointStore, _ placement: CheckpointPlacement, resume: Bool, replacing: Bool,
                            stopAfter: Int?) throws -> TrainingRun {
        let n = transport.size, rank = transport.rank

        // Data: loaded on every rank; a failure anywhere stops every rank with the message.
        let (train, test) = try Agreement.run("load the dataset", over: transport) {
            try config.loadDatasets(log: { line in if rank == 0 { log(line) } })
        }
        // Hosts with several ranks each: shared memory inside a host, the ring across hosts —
        // unless something rules the hierarchical all-reduce out, which the log then says.
        var split: HostSplit?
        if config.topology == "auto" && config.allReduceAlgorithm == "ring" && n > 1, let topology = transport as? HostTopologyTransport {
            let (found, reason) = try topology.splitByHost()
            let note = { (line: String) in if rank == 0 { self.log("topology: \(line)") } }
            if let found {
                let layout = "\(found.hosts) hosts × \(n / found.hosts) ranks"
                if !config.sharedMemory {
                    note("\(layout), but comm.shared_memory is false: the hierarchical all-reduce needs the host's shared memory; every rank uses the flat ring")
                } else if config.outerDelay > 0 {
                    note("\(layout), but comm.outer_delay averages a fragment in a buffer of its own (not in the host's shared memory) while local steps go on; every rank uses the flat ring")
                } else if config.compressor == "powersgd" {
                    note("\(layout), but comm.compressor: powersgd averages its P and Q matrices (not in the host's shared memory) on the flat ring; every rank uses the flat ring")
                } else {
                    split = found
                    note("\(layout): hierarchical all-reduce")
                }
            } else if reason.hasPrefix("hosts have different") {
                note("\(reason): every rank uses the flat ring")
            }
        }
        // Every rank checks the model against the data before the (collective) allocation.
        let checked = try Agreement.run("check the model against the data", over: transport) { () -> CheckedModel in
            let checked = try config.checkedModel(for: train)
            try config.checkFitsInMemory(parameters: checked.parameterCount)
            return checked
        }
        let model = try buildModel(checked, sharing: split?.local)
        let parameters = model.parameters
        try RingAllGather.requireAgreement(Int64(parameters.count), on: "the parameter count", over: transport)
        // The hierarchical all-reduce reads the host's gradients in its shared memory: every
        // rank must have its window, or every rank uses the flat ring — each rank choosing for
        // itself would start two different all-reduces, and the first step would hang.
        if let found = split {
            let windows = try RingAllGather.gather(UInt8(found.local.sharedRegion(containing: parameters.gradients) != nil ? 1 : 0), over: transport)
            if let without = windows.firstIndex(of: 0) {
                split = nil
                if rank == 0 { log("topology: rank \(without) has no shared-memory window for the gradients: every rank uses the flat ring") }
            }
        }
        let (sampler, optimizer, schedule, synchronizer, totalSteps) = try Agreement.run("set up the run", over: transport) {
            let sampler = try DistributedSampler(datasetSize: train.count, globalBatch: config.globalBatch, worldSize: n, rank: rank, seed: config.seed)
            let shares = sampler.shareRange
            guard shares.allSatisfy({ $0 % config.accumulateSteps == 0 }) else {
                let what = shares.count == 1 ? "\(shares.lowerBound)" : "\(shares.lowerBound) or \(shares.upperBound)"
                throw ConfigError("train.accumulate_steps \(config.accumulateSteps) does not divide the per-rank batch (train.global_batch \(config.globalBatch) over \(n) ranks = \(what)); choose a divisor of \(what)\(shares.count == 1 ? "" : ", or a global batch the ranks divide")")
            }
            try checkBatchNormsSeeMoreThanOneValue(model, smallestMicroBatch: shares.lowerBound / config.accumulateSteps)
            let totalSteps = config.maxSteps > 0 ? min(config.maxSteps, config.epochs * sampler.stepsPerEpoch) : config.epochs * sampler.stepsPerEpoch
            let units = config.scheduleInterval == "epoch" ? (totalSteps + sampler.stepsPerEpoch - 1) / sampler.stepsPerEpoch : totalSteps
            let optimizer = try config.makeOptimizer(parameters: parameters)
            // Streaming fragments are whole buckets: the plan cuts where each begins.
            let fragmentStarts = try config.outerSettings.map { try OuterSynchronizer.fragmentStarts(extents: model.unitExtents, fragments: $0.fragments) } ?? []
            let synchronizer = try GradientSynchronizer(settings: config.syncSettings, transport: transport,
                                                        plan: BucketPlan(extents: model.unitExtents, bucketBytes: config.bucketBytes,
                                                                         closeAt: fragmentStarts.count > 1 ? Set(fragmentStarts) : []),
                                                        hosts: split, views: parameters.views)
            let carrier = (optimizer as? MomentumCarrying).flatMap { $0.momentumCarry != nil ? $0 : nil }
            if config.compressMomentum == .auto && config.carriesMomentumByDefault, let carrier {
                synchronizer.momentumCarrier = carrier
            } else if config.compressMomentum == .on {
                guard let carrier else {
                    throw ConfigError("comm.compress_momentum needs an optimizer with a momentum to carry (sgd with momentum > 0 and dampening < 1, adam, adamw); optimizer.name is \(config.optimizer)")
                }
                synchronizer.momentumCarrier = carrier
            }
            if config.warmup >= units && rank == 0 {
                let unit = config.scheduleInterval == "epoch" ? "epochs" : "steps"
                log("warning: schedule.warmup (\(config.warmup) \(unit)) is as long as the run (\(units) \(unit)): the rate never reaches optimizer.lr and schedule.name \(config.schedule) never runs; shorten the warm-up")
            }
            return (sampler, optimizer, try config.makeSchedule(total: units), synchronizer, totalSteps)
        }
        let outer = try Agreement.run("set up the outer steps", over: transport) { () -> OuterSynchronizer? in
            try target?.check(languageModel: train.labelsPerSample > 1)
            return try config.outerSettings.map { try OuterSynchronizer(settings: $0, count: parameters.count, extents: model.unitExtents, plan: synchronizer.plan) }
        }

        installBatchNormSync(model, synchronizer: synchronizer, weight: Double(sampler.gradientWeight))
        try synchronizer.chooseCodecIfAutomatic(probing: parameters.gradients)
        if let probe = synchronizer.probe, rank == 0 { log(probe.report) }
        try synchronizer.measureIsolatedCost(probing: parameters.gradients)

        // Start: rank 0's initial parameters everywhere (the seeded init already agrees; the
        // broadcast makes it a guarantee), or the newest valid checkpoint.
        model.initialize(seed: config.seed)
        if let initFromPath, !resume {
            let loaded = try Agreement.run("load --init-from", over: transport) { () -> Int in
                guard rank == 0 else { return 0 }
                return try InitialWeights.load(initFromPath, into: parameters, tiedHead: (model as? GPT)?.spec.tieEmbeddings ?? false)
            }
            if rank == 0 { log("initial weights: \(loaded) tensors from \(initFromPath)") }
        }
        try transport.broadcast(UnsafeMutableRawBufferPointer(parameters.parameters), root: 0)
        if !parameters.buffers.isEmpty { try transport.broadcast(UnsafeMutableRawBufferPointer(parameters.buffers), root: 0) }
        var startStep = 0, skipped = 0, changes: [String] = []
        var clockBefore: (seconds: Double, bytes: Double?)?
        var runID = continuingRunID
        var endStep = min(totalSteps, stopAfter ?? totalSteps), resumedAtItsTarget: String?
        if resume {
            let checkpoint = try restore(store, placement, model, optimizer, synchronizer, outer)
            (startStep, skipped) = (checkpoint.step, checkpoint.skippedSteps)
            runID = checkpoint.runID ?? runID
            clockBefore = checkpoint.trainSeconds.map { ($0, checkpoint.bytesSent) }
            // This resume's changes after the earlier resumes' (the checkpoint carries them).
            changes = checkpoint.configChanges + configChanges(since: checkpoint)
            // A run that stopped at its --target is complete for that target: a job script that
            // always passes --resume (or elastic.sh's relaunch) must not train past it and
            // rewrite summary.json. Another target, or none, asks for more training.
            if let reached = checkpoint.reachedTarget {
                if reached == target?.description {
                    (endStep, resumedAtItsTarget) = (startStep, reached)
                } else if rank == 0 {
                    log("the resumed run stopped at its target \(reached) at step \(startStep); training on to \(target.map { "--target \($0)" } ?? "the run's end")")
                }
            }
        }
        let batch = max(sampler.localBatch, min(config.evalBatch, max(1, test.count / n + 1)))
        try Agreement.run("reserve the activations", over: transport) {
            // The largest layer output at the batch, at least: a batch that cannot fit is this
            // line, not a failed allocation.
            if let layers = model as? Sequential {
                let bytes = Double(layers.largestOutputPerSample) * Double(batch) * 4
                if let exceeded = MachineMemory.exceeded(by: bytes) {
                    throw ShapeError("the model's activations at a batch of \(batch) take at least \(MachineMemory.gigabytes(bytes)), \(exceeded); make the layers smaller, or lower train.global_batch (\(config.globalBatch)) or train.eval_batch (\(config.evalBatch))")
                }
            }
            model.reserve(batch: batch)
        }
        if replacing { try removeEarlierRun(store) }
        let metrics = try Agreement.run("open metrics.jsonl", over: transport) { () -> AppendOnlyFile? in
            guard rank == 0 else { return nil }
            let path = (runDirectory as NSString).appendingPathComponent("metrics.jsonl")
            // Resumed: the epochs' records after the checkpoint are written again, so they go.
            if resume { _ = try keepRecords(EpochMetrics.self, in: path, upTo: startStep, what: "metrics.jsonl") }
            return try AppendOnlyFile(path: path, truncate: !resume)
        }
        let run = TrainingRun(train: train, test: test, model: model, sampler: sampler, optimizer: optimizer, schedule: schedule,
                              synchronizer: synchronizer, outer: outer, config: config, store: store, metrics: metrics, totalSteps: totalSteps,
                              perEpoch: config.scheduleInterval == "epoch", startStep: startStep,
                              endStep: endStep, skipped: skipped, configChanges: changes)
        run.resumedAtItsTarget = resumedAtItsTarget
        run.writesCheckpoint = placement.writes
        run.runID = try runID ?? Agreement.randomFromRankZero("choose the run's identity", over: transport)
        if rank == 0 && startStep < run.endStep { log(String(format: "run id %016llx", run.runID)) }
        if config.evalEverySteps > 0 {
            run.curve = try Agreement.run("open curve.jsonl", over: transport) { () -> AppendOnlyFile? in
                guard rank == 0 else { return nil }
                let path = (runDirectory as NSString).appendingPathComponent("curve.jsonl")
                // Resumed: the points after the checkpoint are run again, so they go; time goes on.
                if resume { (run.curveSecondsBefore, run.bytesSentBefore) = try CurvePoint.keep(path, upTo: startStep) }
                return try AppendOnlyFile(path: path, truncate: !resume)
            }
        }
        // The checkpoint's own clock, on every rank (the curve's last point may lie before it).
        if let clockBefore { (run.curveSecondsBefore, run.bytesSentBefore) = clockBefore }
        else if resume && run.curve == nil { run.bytesSentBefore = nil }   // an older checkpoint: the bytes before it are unknown
        if resume { try checkReplicas(run, step: startStep) }   // what was loaded is the same everywhere
        if rank == 0 && startStep < run.endStep { logStart(run) }
        return run
    }

    /// Creates the run directory on every rank (each writes its own error-feedback files;
    /// across hosts each may have its own disk) and finds which ranks share it
    /// (`placeCheckpoints`). A fresh run refuses a directory holding an earlier run's
    /// checkpoints — a later `--resume` would pick them up — unless `overwrite`. Returns
    /// whether the run resumes (`--resume-if-present`: when any directory holds a checkpoint).
    private func prepareRunDirectory(_ store: CheckpointStore, resume: Bool, overwrite: Bool) throws -> (resume: Bool, placement: CheckpointPlacement) {
        // The checkpoints a resume continues from may lie in any rank's directory (another
        // host's disk): it is an error only when no rank has one — decided before any rank
        // creates its own.
        if resume {
            let found = try RingAllGather.gather(UInt8(FileManager.default.fileExists(atPath: runDirectory) ? 1 : 0), over: transport)
            guard found.contains(1) else {
                throw AgreedError("--resume: the run directory \(runDirectory) does not exist; check --run-dir, or start without --resume")
            }
        }
        try Agreement.run("create the run directory", over: transport) {
            try FileSystem.makeDirectory(runDirectory, what: "run directory")
        }
        let placement = try placeCheckpoints()
        var resume = resume
        if resumeIfPresent && !resume {
            let held = try RingAllGather.gather(UInt8(placement.looks && holdsCheckpointOfThisRun(store) ? 1 : 0), over: transport)
            resume = held.contains(1)
            if transport.rank == 0 && !resume { log("--resume-if-present: no checkpoint in \(store.directory) on any rank; starting the run") }
        }
        try Agreement.run("check the run directory", over: transport) {
            guard placement.looks, !resume, !overwrite, let newest = store.existing().first else { return }
            throw FileError("run directory \(runDirectory) holds checkpoints of an earlier run (newest: \((newest as NSString).lastPathComponent)); continue it with --resume, start over with --overwrite (deletes them), or choose another --run-dir")
        }
        return (resume, placement)
    }

    /// `--overwrite`: the earlier run's checkpoints, and what `evaluate` and `export` wrote
    /// there by default — they describe the run being replaced, and beside the new run they
    /// would pass for its results.
    private func removeEarlierRun(_ store: CheckpointStore) throws {
        try Agreement.run("remove the earlier run's checkpoints", over: transport) {
            try store.removeAll()
            for name in ["evaluation.json", "model.safetensors", "model.npz"] {
                let path = (runDirectory as NSString).appendingPathComponent(name)
                guard unlink(path) == 0 || errno == ENOENT else { throw FileError.posix("remove the earlier run's \(name)", path) }
            }
        }
    }

    /// The model, with its gradient buffer in a shared-memory window when every rank is on
    /// one host (the fp32 ring's steps are then loads from the peers' buffers:
    /// RingAllReduce+ZeroCopy.swift). Allocating the window is collective.
    private func buildModel(_ checked: CheckedModel, sharing hostTransport: SharedMemoryTransport?) throws -> Model {
        let sharing = hostTransport ?? (config.sharedMemory && transport.size > 1 ? transport as? SharedMemoryTransport : nil)
        let rank = transport.rank
        // If the window cannot be had (e.g. a small /dev/shm), this rank keeps private memory:
        // the ring agrees on its path every call, so every rank then uses messages.
        return try checked.build(gradientStorage: sharing.map { shared in { count in
            do { return try shared.allocateShared(count: max(1, count))?.local } catch {
                self.log("warning: rank \(rank): no shared-memory window for the gradients (\(error)); the all-reduce uses messages")
                return nil
            }
        } })
    }

    /// The newest checkpoint that fits this model and optimizer, in whichever run directory
    /// holds it, sent to every rank (so ranks on hosts without the run directory's files
    /// resume too); every rank loads it; a failure on any rank is a failure on all.
    private func restore(_ store: CheckpointStore, _ placement: CheckpointPlacement, _ model: Model, _ optimizer: Optimizer,
                         _ synchronizer: GradientSynchronizer, _ outer: OuterSynchronizer?) throws -> Checkpoint {
        let count = model.parameters.count
        func fits(_ c: Checkpoint) throws {
            try requireThisRun(c)
            let changes = TrainingConfig.differences(c.config, config.canonicalText)
            if let fixed = changes.first(where: { change in Self.keysFixedAcrossResume.contains { change.hasPrefix($0) } }) {
                let origin = configOrigin.map { " (\($0))" } ?? ""
                throw CheckpointStore.Refusal("--resume: the checkpoint was written with a different \(fixed)\(origin); resume with the config it was written with, or start a new run")
            }
            guard c.parameters.count == count else {
                throw Checkpoint.Corrupt(reason: "holds \(c.parameters.count) parameters, this model has \(count)")
            }
            guard c.buffers.count == model.parameters.buffers.count else {
                throw Checkpoint.Corrupt(reason: "holds \(c.buffers.count) buffer values, this model has \(model.parameters.buffers.count)")
            }
            // The state's shape follows settings that may change on resume (optimizer.momentum
            // 0 → 0.9 adds a buffer; amsgrad, centered): a state that does not fit is such a
            // change, not a damaged file (its checksum passed) — every older checkpoint has the
            // same shape, so skipping to one would end in "no valid checkpoint".
            do { try optimizer.loadState(c.optimizerState) } catch let mismatch as HyperparameterError {
                let suspects = changes.filter { $0.hasPrefix("optimizer.") || $0.hasPrefix("schedule.") }
                throw CheckpointStore.Refusal("--resume: the checkpoint's optimizer state does not fit this optimizer (\(mismatch))"
                    + (suspects.isEmpty ? "" : " after changing \(suspects.joined(separator: ", "))")
                    + "; resume with the optimizer settings it was written with, or start a new run")
            }
        }
        let (bytes, copyHere) = try newestCheckpoint(store, placement, fits: fits)
        let checkpoint = try Checkpoint(decoding: bytes)
        // comm.codec: auto chose once, at the run's start: a resume keeps that codec (its error
        // feedback is the checkpoint's, and the continuation bit-identical) whatever the probe
        // picks today. The same checkpoint on every rank, so the same choice.
        if config.codec == "auto", let chosen = checkpoint.chosenCodec, chosen != synchronizer.codecName {
            let probed = synchronizer.codecName
            guard (try? CodecRegistry.make(chosen)) != nil else {
                throw AgreedError("--resume: the run chose the codec \(chosen) at its start, which this ringsgd does not have (\(CodecRegistry.validNames)); resume with the build that wrote it, or with --set comm.codec=NAME")
            }
            try synchronizer.keepCodec(chosen, probing: model.parameters.gradients)
            if transport.rank == 0 {
                log("comm.codec: auto: the run keeps \(chosen), its codec since its start (the probe picked \(probed) today), so the resume stays bit-identical")
            }
        }
        let warnings = try Agreement.run("load the checkpoint", over: transport) { () -> [String] in
            try fits(checkpoint)
            _ = model.parameters.parameters.update(fromContentsOf: checkpoint.parameters)
            _ = model.parameters.buffers.update(fromContentsOf: checkpoint.buffers)
            let own = checkpoint.worldSize == transport.size ? store.loadResidual(step: checkpoint.step, rank: transport.rank, runID: checkpoint.runID) : nil
            var warnings = synchronizer.restore(ownErrorFeedback: own, errorFeedbackSum: checkpoint.residualSum, writtenBy: checkpoint.worldSize,
                                                errorFeedbackSharers: checkpoint.residualSharers,
                                                step: checkpoint.step, powerSGDState: checkpoint.powerSGDState)
            if let outer, let state = checkpoint.outerState {
                warnings += try restoreLocalSteps(outer, state, checkpoint, store, model.parameters.parameters, optimizer)
            }
            return warnings
        }
        for warning in warnings { log("warning: \(warning)") }
        // A writing rank whose directory lacks the checkpoint it resumed from (its host's copy
        // lost, or older) keeps one now: until the next periodic checkpoint it would otherwise
        // exist only where it was found, and losing those hosts then would lose the run.
        // A copy that cannot be written (a full disk) is a warning: the run resumes all the same.
        if copyHere {
            do {
                try FileSystem.makeDirectory(store.directory, what: "checkpoint directory")
                try FileSystem.writeAtomically(bytes, to: store.path(step: checkpoint.step), what: "copy of the checkpoint")
                log("rank \(transport.rank): kept a copy of the checkpoint of step \(checkpoint.step) in \(store.directory)")
            } catch {
                log("warning: rank \(transport.rank): no copy of the checkpoint of step \(checkpoint.step) kept in \(store.directory) (\(error)); the run goes on")
            }
        }
        if transport.rank == 0 {
            log("resumed at step \(checkpoint.step) (written by \(checkpoint.worldSize) ranks, now \(transport.size))")
        }
        return checkpoint
    }

    /// With `continuingRunID` (a supervisor's relaunch): a checkpoint of another run is not
    /// this run's to continue — an earlier run's left on a host's disk under the same path.
    private func requireThisRun(_ c: Checkpoint) throws {
        guard let id = continuingRunID, c.runID != id else { return }
        throw Checkpoint.Corrupt(reason: "belongs to another run (run id \(c.runID.map { String(format: "%016llx", $0) } ?? "none"), this is run \(String(format: "%016llx", id)))")
    }

    /// Whether this rank's run directory holds a valid checkpoint this run may continue.
    private func holdsCheckpointOfThisRun(_ store: CheckpointStore) -> Bool {
        guard continuingRunID != nil else { return !store.existing().isEmpty }
        return (try? store.loadNewestValid(validate: requireThisRun).found) != nil
    }

    /// One rank per run directory looks for its newest valid checkpoint; the newest step any
    /// of them holds wins (agreed: every rank gathers the steps), and the lowest rank holding
    /// it sends its bytes to all. So a resume after a lost host takes the newest checkpoint a
    /// surviving host has, whichever rank that is. A checkpoint of another model or optimizer
    /// (a `Refusal`) on any rank is an error on all.
    /// The newest checkpoint's bytes, and whether this rank should keep a copy of it (it
    /// writes checkpoints, and its directory holds an older one or none).
    private func newestCheckpoint(_ store: CheckpointStore, _ placement: CheckpointPlacement,
                                  fits: (Checkpoint) throws -> Void) throws -> (bytes: [UInt8], copyHere: Bool) {
        var found: (checkpoint: Checkpoint, path: String)?, skipped: [String] = []
        let step = try Agreement.run("find a checkpoint", over: transport) { () -> Int64 in
            guard placement.looks else { return -1 }
            (found, skipped) = try store.loadNewestValid(validate: fits)
            return Int64(found?.checkpoint.step ?? -1)
        }
        // Each looker's newest step and its run: [step, run id (0: none), …] by rank.
        let records = try RingAllGather.gather([UInt64(bitPattern: step), found?.checkpoint.runID ?? 0], over: transport)
        let steps = stride(from: 0, to: records.count, by: 2).map { Int64(bitPattern: records[$0]) }
        let best = steps.max() ?? -1
        let tag = transport.rank == 0 ? "" : "rank \(transport.rank): "
        for note in skipped { log("warning: \(tag)skipping checkpoint \(note)") }
        // Without a run id to continue (RINGSGD_RUN_ID), checkpoints of two runs — an earlier
        // run's left on one host's disk under the same run directory — leave no way to tell
        // which is this run's: the newest step would win, whichever run it belongs to.
        let runs = steps.indices.filter { steps[$0] >= 0 && records[2 * $0 + 1] != 0 }
        if Set(runs.map { records[2 * $0 + 1] }).count > 1 {
            let listed = runs.map { String(format: "rank %d: run %016llx at step %lld", $0, records[2 * $0 + 1], steps[$0]) }.joined(separator: ", ")
            throw AgreedError("--resume: the run directories hold the checkpoints of different runs (\(listed)); remove the other run's checkpoints, or set RINGSGD_RUN_ID to the run id to continue (its log's 'run id' line)")
        }
        guard best >= 0 else {
            let why = skipped.isEmpty ? "it holds none" : skipped.joined(separator: "; ")
            let anywhere = placement.directories.count > 1 ? " nor in any other rank's run directory" : ""
            throw AgreedError("--resume: no valid checkpoint in \(store.directory) (\(why))\(anywhere); start without --resume")
        }
        let holder = steps.firstIndex(of: best)!
        if transport.rank == holder, let found {
            let whose = placement.directories.count > 1 ? " (rank \(holder)'s copy; newest of \(placement.directories.count) run directories)" : ""
            log("resuming from \(found.path)\(whose)")
        }
        let bytes = try Agreement.fromRank(holder, "send the checkpoint", over: transport) { found!.checkpoint.encoded() }
        return (bytes, placement.writes && steps[transport.rank] < best)
    }

    /// `comm.sync: local_sgd | diloco`: θ_outer and the outer optimizer from the checkpoint, and
    /// this rank's inner parameters and optimizer state from its own file — or, when that is
    /// missing (another world size, a host without the file), θ_outer and the writing rank's inner state,
    /// with a warning: the run goes on, but no longer as the uninterrupted one would.
    private func restoreLocalSteps(_ outer: OuterSynchronizer, _ state: [UInt8], _ checkpoint: Checkpoint, _ store: CheckpointStore,
                                   _ parameters: UnsafeMutableBufferPointer<Float>, _ optimizer: Optimizer) throws -> [String] {
        try outer.restore(state, outer: checkpoint.parameters, step: checkpoint.step)
        let rank = transport.rank
        guard checkpoint.worldSize == transport.size,
              let own = store.loadLocalState(step: checkpoint.step, rank: rank, count: parameters.count, runID: checkpoint.runID) else {
            let why = checkpoint.worldSize == transport.size ? "its file \((store.localStatePath(step: checkpoint.step, rank: rank) as NSString).lastPathComponent) is missing, damaged or another run's"
                : "the checkpoint was written by \(checkpoint.worldSize) ranks, now \(transport.size)"
            return ["rank \(rank) has no inner state of step \(checkpoint.step) (\(why)): it continues from θ_outer with the checkpoint's inner optimizer state"]
        }
        try optimizer.loadState(own.optimizerState)
        _ = parameters.update(fromContentsOf: own.parameters)
        if own.parameters != checkpoint.parameters { outer.resumedBetweenOuterSteps() }
        return []
    }

    /// The config keys that differ from the checkpoint's (those that make it meaningless were
    /// refused when it was chosen): a warning and a record in summary.json — the run then no
    /// longer matches any uninterrupted run.
    private func configChanges(since checkpoint: Checkpoint) -> [String] {
        let changes = TrainingConfig.differences(checkpoint.config, config.canonicalText)
        if !changes.isEmpty && transport.rank == 0 {
            log("warning: resuming with a changed config (\(changes.joined(separator: "; "))): this run no longer matches an uninterrupted one")
        }
        return changes
    }

    private func logStart(_ run: TrainingRun) {
        let zeroCopy = (transport as? SharedMemoryTransport)?.sharedRegion(containing: run.parameters.gradients) != nil
        log("ringsgd train: \(transport.size) ranks, model \(run.model.summary), \(config.optimizer) lr \(config.lr)\(config.lrBatch > 0 ? " at batch \(config.lrBatch), \(config.linearlyScaled(config.lr)) at \(config.globalBatch)" : ""), all-reduce \(run.synchronizer.description)"
            + (zeroCopy ? " (gradients in shared memory: fp32 ring steps are direct loads)" : "") + ", "
            + (run.synchronizer.momentumCarrier != nil ? "momentum carried in the all-reduce (comm.compress_momentum), " : "")
            + (run.outer.map { "\(config.syncMode): \($0.settings.every) local steps between outer steps"
                + ($0.settings.warmupSteps > 0 ? " after \($0.settings.warmupSteps) averaged every step" : "")
                + ($0.fragments.count > 1 ? ", \($0.fragments.count) fragments in turn" : "")
                + ($0.settings.delay > 0 ? ", each applied \($0.settings.delay) steps after it starts" : "")
                + ($0.settings.mix > 0 ? ", local parameters mixed at α \($0.settings.mix)" : "")
                + ", outer \($0.settings.rule.rawValue)\($0.settings.rule == .average ? "" : " lr \($0.settings.lr) momentum \($0.settings.momentum)"), pseudo-gradient " } ?? "")
            + "\(run.synchronizer.plan.description)\(config.overlap ? " averaged during backward" : " averaged after backward"), "
            + "global batch \(config.globalBatch) (\(run.sampler.shareRange.count == 1 ? "\(run.sampler.localBatch)" : "\(run.sampler.shareRange.lowerBound)–\(run.sampler.shareRange.upperBound)") per rank), \(run.stepsPerEpoch) steps/epoch, \(run.totalSteps) steps")
    }
}
