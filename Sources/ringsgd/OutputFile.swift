import ArgumentParser
import Foundation

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
        if !parent.isEmpty && !(FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory) && isDirectory.boolValue) {
            throw ValidationError("\(option) \(path): the directory \(parent) does not exist; create it first")
        }
        if access(parent.isEmpty ? "." : parent, W_OK) != 0 {
            throw ValidationError("\(option) \(path): cannot write into \(parent.isEmpty ? "the current directory" : parent) (\(String(cString: strerror(errno)))); choose another path")
        }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue {
            throw ValidationError("\(option) \(path) is a directory; name a file in it")
        }
    }

    /// Refuses `path` when it is one of the files a training run keeps in `runDirectory`
    /// (its summary, metrics, curve): writing there would replace the run's own record.
    static func checkNotARunRecord(_ path: String, runDirectory: String?, option: String) throws {
        guard let runDirectory else { return }
        let target = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        for record in ["summary.json", "metrics.jsonl", "curve.jsonl"] {
            let own = URL(fileURLWithPath: (runDirectory as NSString).appendingPathComponent(record)).standardizedFileURL.resolvingSymlinksInPath().path
            if target == own { throw ValidationError("\(option) \(path) is the run's own \(record); write the results elsewhere") }
        }
    }
}
