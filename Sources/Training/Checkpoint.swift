import FileFormats
import Foundation
import GradientSync
import ModelFiles

/// A training checkpoint: everything needed to continue bit-identically.
///
/// ## File format (version 1, little-endian; no code-executing serialisation)
///
///     offset  size  field
///     0       8     magic "RSGDCKPT"
///     8       4     version (UInt32) = 1
///     12      4     world size that wrote it (UInt32; informational: resume may re-shard)
///     16      8     global step completed (UInt64)
///     24      8     skipped (non-finite) steps so far (UInt64)
///     32      4     section count (UInt32)
///     …             sections: tag (4 ASCII bytes) | length (UInt64) | payload
///     end−8   8     FastHash of every preceding byte
///
/// Sections: `CONF` the canonical config text; `PRMS` the flat parameters (Float32, in the
/// model's documented view order); `OPTM` the optimizer's state bytes (`Optimizer.stateBytes`);
/// `EFRS` the sum of all ranks' error-feedback residuals (Float32), present when error
/// feedback is on (always with PowerSGD, whose residuals it holds); `EFSH` how many ranks
/// shared each residual entry (UInt64: n for the flat ring, the hosts for the hierarchical one); `PSGD` PowerSGD's state (its layout line, a newline, every Q as Float32;
/// identical on every rank), present with `comm.compressor: powersgd`; `BUFS` the model's
/// buffers (Float32, batch norms' running statistics, in the buffer views' order), present when
/// it has any; `CLCK` the training seconds and bytes sent so far (two Float64, NaN: unknown);
/// `OUTR` the outer optimizer's state with `comm.sync: local_sgd | diloco`
/// (`OuterSynchronizer.stateBytes`; PRMS then holds θ_outer, OPTM the writing rank's inner state, and
/// each rank's inner parameters and state lie beside it in `step-N.local-rank-R`); `MODL` the
/// `ModelDescription` as JSON; `RUNI` the run's identity (UInt64: chosen when the run started,
/// kept by every resume, so that a supervisor relaunching a run takes only its checkpoints —
/// not an earlier run's left on a host's disk under the same run directory); `CHNG` the config
/// changes of the resumes so far (a JSON list of strings, present when there were any: each
/// resume compares the config with the checkpoint's alone, so without them a second resume
/// would forget that the run no longer matches an uninterrupted one); `CODC` the codec
/// `comm.codec: auto` chose at the run's start (UTF-8, present with auto), which every resume
/// keeps; `TRGT` the `--target` the run stopped at (UTF-8, `test_accuracy=0.8`; present only
/// in the checkpoint of a run that reached it), so that `--resume` with the same target has
/// nothing left to do rather than training past it. A reader that
/// predates a section skips it. The sampler position and every random stream are functions of (seed,
/// step), so the step is all the checkpoint needs of them.
public struct Checkpoint: Equatable {
    public static let magic = Array("RSGDCKPT".utf8)
    public static let version: UInt32 = 1

    public var worldSize: Int
    public var step: Int
    public var skippedSteps: Int
    public var config: String
    public var parameters: [Float]
    public var optimizerState: [UInt8]
    public var residualSum: [Float]?
    /// How many ranks shared each entry of the writer's error-feedback memory (n for the flat
    /// ring, the hosts for the hierarchical all-reduce): what `residualSum` owes is it divided by
    /// this (`ErrorFeedbackMemory`). nil: written before it was kept (the flat ring's n).
    public var residualSharers: Int?
    public var powerSGDState: [UInt8]?
    public var model: ModelDescription?
    /// The model's buffers (empty when it has none).
    public var buffers: [Float]
    /// The outer optimizer's state (`comm.sync: local_sgd | diloco`, once local steps began).
    public var outerState: [UInt8]?
    /// Training seconds (evaluations and checkpoint writes excluded) and bytes rank 0 had sent by this step, so that a
    /// resumed run's time and bytes to a target continue (nil: written before they were kept;
    /// bytes nil also when the all-reduce does not say).
    public var trainSeconds: Double?, bytesSent: Double?
    /// The run's identity (nil: written before runs had one).
    public var runID: UInt64?
    /// The config changes made at the run's resumes so far (`TrainingConfig.differences`).
    public var configChanges: [String] = []
    /// The codec `comm.codec: auto` chose at the run's start, which a resume keeps (nil: a
    /// fixed codec, or written before the choice was kept).
    public var chosenCodec: String?
    /// The `--target` this run reached and stopped at (`TrainingTarget.description`), nil
    /// while it has not.
    public var reachedTarget: String?

    public init(worldSize: Int, step: Int, skippedSteps: Int, config: String, parameters: [Float],
                optimizerState: [UInt8], residualSum: [Float]?, powerSGDState: [UInt8]? = nil, model: ModelDescription? = nil,
                buffers: [Float] = [], outerState: [UInt8]? = nil) {
        self.worldSize = worldSize; self.step = step; self.skippedSteps = skippedSteps; self.config = config
        self.parameters = parameters; self.optimizerState = optimizerState; self.residualSum = residualSum
        self.powerSGDState = powerSGDState; self.model = model; self.buffers = buffers; self.outerState = outerState
    }

    public func encoded() -> [UInt8] {
        var out = Self.magic
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        put(Self.version); put(UInt32(worldSize)); put(UInt64(step)); put(UInt64(skippedSteps))
        var sections: [(String, [UInt8])] = [("CONF", Array(config.utf8)),
                                             ("PRMS", parameters.withUnsafeBytes { Array($0) }),
                                             ("OPTM", optimizerState)]
        if let residualSum { sections.append(("EFRS", residualSum.withUnsafeBytes { Array($0) })) }
        if let residualSharers { sections.append(("EFSH", withUnsafeBytes(of: UInt64(residualSharers).littleEndian) { Array($0) })) }
        if let powerSGDState { sections.append(("PSGD", powerSGDState)) }
        if !buffers.isEmpty { sections.append(("BUFS", buffers.withUnsafeBytes { Array($0) })) }
        if let outerState { sections.append(("OUTR", outerState)) }
        if let trainSeconds {
            var clock: [UInt8] = []
            for v in [trainSeconds, bytesSent ?? .nan] { withUnsafeBytes(of: v.bitPattern.littleEndian) { clock += $0 } }
            sections.append(("CLCK", clock))
        }
        if let model, let json = try? JSONEncoder.sorted.encode(model) { sections.append(("MODL", Array(json))) }
        if let runID { sections.append(("RUNI", withUnsafeBytes(of: runID.littleEndian) { Array($0) })) }
        if !configChanges.isEmpty, let json = try? JSONEncoder.sorted.encode(configChanges) { sections.append(("CHNG", Array(json))) }
        if let chosenCodec { sections.append(("CODC", Array(chosenCodec.utf8))) }
        if let reachedTarget { sections.append(("TRGT", Array(reachedTarget.utf8))) }
        put(UInt32(sections.count))
        for (tag, payload) in sections {
            out += Array(tag.utf8)
            put(UInt64(payload.count))
            out += payload
        }
        put(FastHash.hash(out))
        return out
    }

    public struct Corrupt: Error, CustomStringConvertible {
        public let reason: String
        public init(reason: String) { self.reason = reason.shownOnOneLine }
        public var description: String { reason }
    }

    public init(decoding bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try Checkpoint(decodingBytes: $0) }
    }

    /// Decodes a checkpoint in place — a file's mapping (`load`), hashed and cut into sections
    /// where it lies: a checkpoint is mostly parameters and optimizer state, and a copy of the
    /// file for each step of reading it tripled the peak memory of loading one.
    public init(decodingBytes bytes: UnsafeRawBufferPointer) throws {
        guard !bytes.isEmpty else { throw Corrupt(reason: "empty (0 bytes: its write never completed)") }
        guard bytes.count >= 44, Array(bytes[0 ..< 8]) == Self.magic else { throw Corrupt(reason: "not a ringsgd checkpoint (bad magic)") }
        let stored = bytes.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self)
        guard FastHash.hash(UnsafeRawBufferPointer(rebasing: bytes[0 ..< bytes.count - 8])) == UInt64(littleEndian: stored) else {
            throw Corrupt(reason: "checksum mismatch (truncated or damaged)")
        }
        var offset = 8
        func get<T: FixedWidthInteger>(_: T.Type) throws -> T {
            guard offset + MemoryLayout<T>.size <= bytes.count - 8 else { throw Corrupt(reason: "truncated header") }
            let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
            offset += MemoryLayout<T>.size
            return T(littleEndian: v)
        }
        let version = try get(UInt32.self)
        guard version == Self.version else { throw Corrupt(reason: "version \(version), this ringsgd reads version \(Self.version)") }
        // Counts are read as UInt64 and must fit an Int: a crafted file (the checksum is no
        // secret) trapped converting 2⁶³ or adding a length near Int.max to the offset.
        func count(_ what: String) throws -> Int {
            guard let value = Int(exactly: try get(UInt64.self)) else { throw Corrupt(reason: "its \(what) is out of range") }
            return value
        }
        worldSize = Int(try get(UInt32.self))
        // Error feedback's sum is divided by it on resume (an infinite residual from 0).
        guard worldSize >= 1 else { throw Corrupt(reason: "its world size is 0") }
        step = try count("step")
        skippedSteps = try count("skipped-step count")
        var sections: [String: UnsafeRawBufferPointer] = [:]
        for _ in 0 ..< (try get(UInt32.self)) {
            guard offset + 4 <= bytes.count - 8 else { throw Corrupt(reason: "truncated section table") }
            let tagBytes = bytes[offset ..< offset + 4]
            // A tag is four printable ASCII letters ("CONF"); anything else is shown as hex, on one line.
            let tag = tagBytes.allSatisfy({ (0x21 ... 0x7E).contains($0) }) ? String(decoding: tagBytes, as: UTF8.self)
                : "0x" + tagBytes.map { String(format: "%02x", $0) }.joined()
            offset += 4
            let length = try count("section \(tag)'s length")
            guard length <= bytes.count - 8 - offset else { throw Corrupt(reason: "section \(tag) overruns the file") }
            sections[tag] = UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + length])
            offset += length
        }
        guard let conf = sections["CONF"], let prms = sections["PRMS"], let optm = sections["OPTM"], prms.count % 4 == 0 else {
            throw Corrupt(reason: "missing CONF, PRMS or OPTM section")
        }
        config = String(decoding: conf, as: UTF8.self)
        parameters = Self.floats(prms)
        optimizerState = Array(optm)
        residualSum = sections["EFRS"].map(Self.floats)
        powerSGDState = sections["PSGD"].map(Array.init)
        guard (sections["BUFS"]?.count ?? 0) % 4 == 0 else { throw Corrupt(reason: "its BUFS section is not whole Float32 values") }
        buffers = sections["BUFS"].map(Self.floats) ?? []
        outerState = sections["OUTR"].map(Array.init)
        if let clock = sections["CLCK"] {
            guard clock.count == 16 else { throw Corrupt(reason: "its CLCK section is not two Float64 values") }
            let values = (0 ..< 2).map { Double(bitPattern: UInt64(littleEndian: clock.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) }
            trainSeconds = values[0]
            bytesSent = values[1].isNaN ? nil : values[1]
        }
        if let sharers = sections["EFSH"] {
            guard sharers.count == 8 else { throw Corrupt(reason: "its EFSH section is not one UInt64") }
            let value = UInt64(littleEndian: sharers.loadUnaligned(as: UInt64.self))
            guard value >= 1 && value <= 1 << 24 else { throw Corrupt(reason: "its EFSH section holds \(value) sharers, not 1…2²⁴") }
            residualSharers = Int(value)
        }
        if let id = sections["RUNI"] {
            guard id.count == 8 else { throw Corrupt(reason: "its RUNI section is not one UInt64") }
            runID = UInt64(littleEndian: id.loadUnaligned(as: UInt64.self))
        }
        if let name = sections["CODC"] {
            guard name.count <= 64, let text = String(validating: name, as: UTF8.self), !text.isEmpty else {
                throw Corrupt(reason: "its chosen codec (CODC) is not a codec's name")
            }
            chosenCodec = text
        }
        if let target = sections["TRGT"] {
            guard target.count <= 64, let text = String(validating: target, as: UTF8.self), !text.isEmpty else {
                throw Corrupt(reason: "its reached target (TRGT) is not a target's METRIC=VALUE")
            }
            reachedTarget = text
        }
        if let json = sections["CHNG"] {
            do { configChanges = try JSONDecoder.ringsgd.decode([String].self, from: Data(json)) } catch {
                throw Corrupt(reason: "its config changes (CHNG) do not decode: \(error)")
            }
        }
        if let json = sections["MODL"] {
            do { model = try JSONDecoder.ringsgd.decode(ModelDescription.self, from: Data(json)) } catch {
                throw Corrupt(reason: "its model description (MODL) does not decode: \(error)")
            }
            if let problem = model?.problem { throw Corrupt(reason: "its model description (MODL) is out of range: \(problem)") }
        }
    }

    /// Float32 values copied out of a section, which may lie at any byte offset of the file.
    private static func floats(_ raw: UnsafeRawBufferPointer) -> [Float] {
        [Float](unsafeUninitializedCapacity: raw.count / 4) { values, count in
            if let base = raw.baseAddress, raw.count >= 4 { UnsafeMutableRawPointer(values.baseAddress!).copyMemory(from: base, byteCount: raw.count / 4 * 4) }
            count = raw.count / 4
        }
    }
}

extension Checkpoint {
    /// The checkpoint to use: the file given, or else the newest valid one of the run directory.
    /// Errors name the file or directory and say what to do.
    public static func locate(file: String?, runDirectory: String) throws -> (checkpoint: Checkpoint, path: String) {
        if let file {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else {
                throw FileError("cannot read checkpoint \(file): it does not exist; check --checkpoint")
            }
            guard !isDirectory.boolValue else {
                throw FileError("--checkpoint \(file) is a directory; name a checkpoint file in it, or pass the run directory as --run-dir")
            }
            // MappedFile's errno is its own (FileManager's was stale: "No such file" for a FIFO or a device).
            let mapped: MappedFile
            do { mapped = try MappedFile(path: file, what: "checkpoint", allowingEmpty: true) } catch { throw FileError("\(error); check --checkpoint") }
            do {
                return (try withExtendedLifetime(mapped) { try Checkpoint(decodingBytes: mapped.bytes) }, file)   // decoded before the unmap
            } catch { throw FileError("checkpoint \(file) is unusable: \(error); pass a checkpoint ringsgd wrote (RUN-DIR/checkpoints/step-….ckpt)") }
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: runDirectory, isDirectory: &isDirectory) else {
            throw FileError("the run directory \(runDirectory) does not exist; check --run-dir (a training run's directory), or pass --checkpoint FILE")
        }
        guard isDirectory.boolValue else {
            throw FileError("--run-dir \(runDirectory) is a file, not a run directory; pass a checkpoint file as --checkpoint FILE")
        }
        let store = CheckpointStore(runDirectory: runDirectory, keep: .max)
        let (found, skipped) = try store.loadNewestValid(validate: { _ in })
        guard let found else {
            let why = skipped.isEmpty ? "it holds none" : skipped.joined(separator: "; ")
            throw FileError("no valid checkpoint in \(store.directory) (\(why)); train first, or pass --checkpoint FILE")
        }
        return found
    }
}

/// The checkpoints of a run directory: `checkpoints/step-00001234.ckpt`.
///
/// Writing is atomic — a temporary file, fsync, rename, fsync of the directory — so a crash
/// leaves either the previous set or the new one, never half a file under a real name. The
/// newest `keep` are kept. Loading walks from the newest down and skips (and reports) any
/// that fails its checks.
public struct CheckpointStore {
    public let directory: String
    public let keep: Int

    public init(runDirectory: String, keep: Int) {
        directory = (runDirectory as NSString).appendingPathComponent("checkpoints")
        self.keep = keep
    }

    public func path(step: Int) -> String { path(step: step, suffix: ".ckpt") }

    /// A file of step `step` in the checkpoint directory: "step-00000040" and `suffix` (".ckpt",
    /// ".ef-rank-3"). Named here, never by editing another file's path: the run directory's own
    /// path may hold ".ckpt" too.
    func path(step: Int, suffix: String) -> String {
        (directory as NSString).appendingPathComponent(String(format: "step-%08d", step) + suffix)
    }

    /// Checkpoint files, newest step first (by the step's number: names are zero-padded to 8
    /// digits, which a step past 99 999 999 outgrows).
    public func existing() -> [String] { checkpoints().map(\.path) }

    /// Checkpoint files with their steps, newest first.
    private func checkpoints() -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".ckpt") }.compactMap { name in Self.step(ofFile: name).map { ($0, name) } }
            .sorted { $0.0 > $1.0 }.map { ($0.0, (directory as NSString).appendingPathComponent($0.1)) }
    }

    /// The step a file of the directory belongs to: 16 for "step-00000016.ckpt" and for its
    /// per-rank files ("step-00000016.ef-rank-1"); nil for any other name.
    static func step(ofFile name: String) -> Int? {
        guard name.hasPrefix("step-") else { return nil }
        let digits = name.dropFirst(5).prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, name.dropFirst(5 + digits.count).first == "." else { return nil }
        return Int(digits)
    }

    /// Writes `checkpoint` and removes the older ones beyond the newest `keep`, with their
    /// per-rank files. Only checkpoints of steps up to the one written are counted: files of a
    /// later step are another run's (a host's disk holding an earlier run: this run's would be
    /// refused by its run id at a resume), and counting them would delete this run's checkpoint
    /// as soon as it is written.
    public func write(_ checkpoint: Checkpoint) throws {
        try FileSystem.makeDirectory(directory, what: "checkpoint directory")
        try FileSystem.writeAtomically(checkpoint.encoded(), to: path(step: checkpoint.step), what: "checkpoint")
        FileSystem.removeStaleTemporaries(in: directory)
        for old in checkpoints().filter({ $0.step <= checkpoint.step }).map(\.path).dropFirst(keep) {
            try? FileManager.default.removeItem(atPath: old)
            // Its per-rank files: error feedback (`.ef-rank-R`) and inner state (`.local-rank-R`).
            let prefix = ((old as NSString).lastPathComponent as NSString).deletingPathExtension + "."
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix(prefix) {
                try? FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(name))
            }
        }
    }

    /// Removes rank `rank`'s own files (`.ef-rank-R`, `.local-rank-R`) of steps up to `step`
    /// (the one just written) beyond the newest `keep` + 1 steps. Why: only a rank that writes
    /// the checkpoint prunes (`write`), so a rank that writes none — `checkpoint.replicate:
    /// rank0`, its run directory on a disk of its own — would keep every step's copy of its
    /// error feedback or inner parameters, each the size of the model, until its disk filled.
    /// One more than `keep`: this rank prunes as soon as its own file is written, before the
    /// writer's checkpoint of that step is known to be on disk, and a resume from the previous
    /// one (a failed write) needs its file. Later steps are another run's, as in `write`.
    public func pruneRankFiles(rank: Int, upTo step: Int) {
        FileSystem.removeStaleTemporaries(in: directory)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let suffixes = [".ef-rank-\(rank)", ".local-rank-\(rank)"]
        let steps = Set(names.compactMap { name -> Int? in
            guard suffixes.contains(where: { name.hasSuffix($0) }), let fileStep = Self.step(ofFile: name), fileStep <= step else { return nil }
            return fileStep
        }).sorted(by: >)
        for old in steps.dropFirst(keep + 1) {
            for suffix in suffixes { try? FileManager.default.removeItem(atPath: path(step: old, suffix: suffix)) }
        }
    }

    /// Removes every checkpoint and residual file (a fresh run with `--overwrite`).
    /// Thrown by `loadNewestValid`'s `validate` for a sound checkpoint that must not be used
    /// (it belongs to another model): older ones of the same run would not fit either, so the
    /// search ends with this message instead of falling back.
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    public func removeAll() throws {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        where name.hasPrefix("step-") {
            let file = (directory as NSString).appendingPathComponent(name)
            // ENOENT: another rank on the same shared filesystem removed it first.
            guard unlink(file) == 0 || errno == ENOENT else { throw FileError.posix("remove the earlier run's checkpoint", file) }
        }
    }

    /// Each rank's own error-feedback residual, beside the checkpoint (`step-N.ef-rank-R`):
    /// a per-rank file (`rankFile`) of Float32 values. Written atomically like the checkpoint.
    public func residualPath(step: Int, rank: Int) -> String {
        path(step: step, suffix: ".ef-rank-\(rank)")
    }

    public func writeResidual(_ values: UnsafeBufferPointer<Float>, step: Int, rank: Int, runID: UInt64) throws {
        try FileSystem.makeDirectory(directory, what: "checkpoint directory")
        try FileSystem.writeAtomically(Self.rankFile(Array(UnsafeRawBufferPointer(values)), runID: runID),
                                       to: residualPath(step: step, rank: rank), what: "error-feedback state")
    }

    /// This rank's residual of `step` in run `runID`; nil when the file is missing, damaged, or another run's.
    public func loadResidual(step: Int, rank: Int, runID: UInt64?) -> [Float]? {
        guard let bytes = Self.rankFilePayload(residualPath(step: step, rank: rank), runID: runID), bytes.count % 4 == 0 else { return nil }
        return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// Each rank's inner parameters and inner optimizer state between outer steps
    /// (`comm.sync: local_sgd | diloco`), beside the checkpoint (`step-N.local-rank-R`): a
    /// per-rank file (`rankFile`) of the parameter count (UInt64), the parameters (Float32)
    /// and the optimizer's state bytes. Written atomically like the checkpoint.
    public func localStatePath(step: Int, rank: Int) -> String {
        path(step: step, suffix: ".local-rank-\(rank)")
    }

    public func writeLocalState(parameters: UnsafeBufferPointer<Float>, optimizerState: [UInt8], step: Int, rank: Int, runID: UInt64) throws {
        try FileSystem.makeDirectory(directory, what: "checkpoint directory")
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(parameters.count).littleEndian) { bytes += $0 }
        bytes += Array(UnsafeRawBufferPointer(parameters)) + optimizerState
        try FileSystem.writeAtomically(Self.rankFile(bytes, runID: runID), to: localStatePath(step: step, rank: rank), what: "inner state")
    }

    /// This rank's inner parameters and optimizer state of `step` in run `runID`; nil when the
    /// file is missing, damaged, another run's, or holds another parameter count.
    public func loadLocalState(step: Int, rank: Int, count: Int, runID: UInt64?) -> (parameters: [Float], optimizerState: [UInt8])? {
        guard let bytes = Self.rankFilePayload(localStatePath(step: step, rank: rank), runID: runID), bytes.count >= 8 + 4 * count,
              bytes.withUnsafeBytes({ UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }) == UInt64(count) else { return nil }
        let parameters = bytes[8 ..< 8 + 4 * count].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return (parameters, Array(bytes[(8 + 4 * count)...]))
    }

    /// A per-rank file's first bytes: then the identity of the run that wrote it (UInt64).
    public static let rankFileMagic = Array("RSGDRNK1".utf8)

    /// A per-rank file: magic, the run's identity (`Checkpoint.runID`), the payload, then the
    /// FastHash of all before it. The identity is why: the files are found by name (step and
    /// rank), and a host may hold an earlier run's under the same path — a relaunch that puts
    /// this rank there must not load another run's residual or inner parameters, as the
    /// checkpoint itself is refused (`requireThisRun`).
    static func rankFile(_ payload: [UInt8], runID: UInt64) -> [UInt8] {
        var bytes = rankFileMagic
        withUnsafeBytes(of: runID.littleEndian) { bytes += $0 }
        bytes += payload
        let hash = FastHash.hash(bytes)
        withUnsafeBytes(of: hash.littleEndian) { bytes += $0 }
        return bytes
    }

    /// A per-rank file's payload, if its trailing FastHash matches and it is run `runID`'s
    /// (nil: a checkpoint that names no run accepts any). A file without the magic was written
    /// before files carried their run (one identity-less payload and its hash): read as it is.
    static func rankFilePayload(_ path: String, runID: UInt64?) -> [UInt8]? {
        guard let bytes = checkedBytes(path) else { return nil }
        guard bytes.starts(with: rankFileMagic) else { return bytes }
        guard bytes.count >= 16 else { return nil }
        let writer = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
        if let runID, writer != runID { return nil }
        return Array(bytes[16...])
    }

    /// A file's payload, if its trailing FastHash matches.
    static func checkedBytes(_ path: String) -> [UInt8]? {
        guard let mapped = try? MappedFile(path: path, what: "per-rank file") else { return nil }
        return withExtendedLifetime(mapped) { () -> [UInt8]? in
            let bytes = mapped.bytes
            guard bytes.count >= 8 else { return nil }
            let payload = UnsafeRawBufferPointer(rebasing: bytes[0 ..< bytes.count - 8])
            guard FastHash.hash(payload) == UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self)) else { return nil }
            return Array(payload)
        }
    }

    /// The newest checkpoint that passes its checks (nil if none does), and for each newer
    /// one skipped, a note with the reason.
    public func loadNewestValid(validate: (Checkpoint) throws -> Void) throws -> (found: (checkpoint: Checkpoint, path: String)?, skipped: [String]) {
        var skipped: [String] = []
        for file in existing() {
            do {
                // Decoded from the file's mapping, which is gone before the next file's (an empty
                // file is the decoder's to name).
                let mapped = try MappedFile(path: file, what: "checkpoint", allowingEmpty: true)
                let checkpoint = try withExtendedLifetime(mapped) { try Checkpoint(decodingBytes: mapped.bytes) }
                try validate(checkpoint)
                return ((checkpoint, file), skipped)
            } catch let refusal as Refusal {
                throw refusal
            } catch {
                skipped.append("\((file as NSString).lastPathComponent): \(error)")
            }
        }
        return (nil, skipped)
    }
}

extension ModelExport {
    /// A checkpoint's parameters as the file's bytes (its step and config hash in the metadata).
    public static func encode(_ checkpoint: Checkpoint, format: Format) throws -> (bytes: [UInt8], tensors: [NamedTensor]) {
        guard let description = checkpoint.model else {
            throw Checkpoint.Corrupt(reason: "has no model description (written before ringsgd could export); resume the run once to write a new checkpoint")
        }
        return try encode(checkpoint.parameters, buffers: checkpoint.buffers, model: description, format: format,
                          extra: ["ringsgd.step": "\(checkpoint.step)",
                                  "ringsgd.config_hash": String(format: "%016llx", FastHash.hash(Array(checkpoint.config.utf8)))])
    }
}
