import ArgumentParser
import Foundation
import Training

/// A file a command was told to write (`--out`, `--timeline`, `--dump-gradient`), checked
/// before the work that produces it: a typo in its directory would otherwise be found only
/// when the training or evaluation is over — and a training run that failed there lost its
/// last steps and final checkpoint.
enum OutputFile {
    /// Refuses `path` when its directory is missing or not writable, or when it is a directory.
    /// A file directly in `createdDirectory` (the run directory, which training creates before
    /// it writes anything) is accepted while that directory does not exist yet.
    static func check(_ path: String, option: String, createdDirectory: String? = nil) throws {
        let parent = (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        if let createdDirectory, !FileManager.default.fileExists(atPath: createdDirectory),
           URL(fileURLWithPath: parent.isEmpty ? "." : parent).standardizedFileURL.path == URL(fileURLWithPath: createdDirectory).standardizedFileURL.path {
            return
        }
        if !parent.isEmpty {
            let exists = FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory)
            if exists && !isDirectory.boolValue {
                throw ValidationError("\(option) \(path): \(parent) is a file, not a directory; choose a path in a directory")
            }
            if !exists { throw ValidationError("\(option) \(path): the directory \(parent) does not exist; create it first") }
        }
        if access(parent.isEmpty ? "." : parent, W_OK) != 0 {
            throw ValidationError("\(option) \(path): cannot write into \(parent.isEmpty ? "the current directory" : parent) (\(String(cString: strerror(errno)))); choose another path")
        }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue {
            throw ValidationError("\(option) \(path) is a directory; name a file in it")
        }
    }

    /// Refuses `path` when writing it would replace what a training run keeps: one of its
    /// records in `runDirectory` (summary, metrics, curve), anything in its checkpoints
    /// directory, or any ringsgd checkpoint or per-rank file (by its magic) — the very
    /// checkpoint being evaluated or exported, for one.
    /// (And whatever `check` refuses.)
    static func check(_ path: String, option: String, notReplacingTheRunIn runDirectory: String?) throws {
        try check(path, option: option)
        try checkNotARunRecord(path, runDirectory: runDirectory, option: option)
    }

    private static func checkNotARunRecord(_ path: String, runDirectory: String?, option: String) throws {
        func resolved(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.resolvingSymlinksInPath().path }
        let target = resolved(path)
        if let runDirectory {
            for record in ["summary.json", "metrics.jsonl", "curve.jsonl"] where target == resolved((runDirectory as NSString).appendingPathComponent(record)) {
                throw ValidationError("\(option) \(path) is the run's own \(record); write the results elsewhere")
            }
            let checkpoints = resolved((runDirectory as NSString).appendingPathComponent("checkpoints")) + "/"
            if target.hasPrefix(checkpoints) {
                throw ValidationError("\(option) \(path) is in the run's checkpoints directory; write the results elsewhere")
            }
        }
        // Only a regular file is opened to read its magic (a FIFO would block the open).
        let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType
        if type == .typeRegular, let handle = FileHandle(forReadingAtPath: path) {
            defer { try? handle.close() }
            let head = Array((try? handle.read(upToCount: 8)) ?? Data())
            if head == Checkpoint.magic || head == CheckpointStore.rankFileMagic {
                throw ValidationError("\(option) \(path) is a ringsgd checkpoint; write the results elsewhere")
            }
        }
    }
}
