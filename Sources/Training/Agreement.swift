import Collectives
import Foundation

/// An error every rank raises at the same point, after agreeing on it; reported once, by
/// rank 0, and every rank then finishes cleanly (`MPIJob`). Only the agreement functions
/// below create one: an error that a rank meets alone must not end that rank quietly while
/// its peers wait in the next collective.
public struct AgreedError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Collective decisions that turn a failure on any rank into the same error on every rank.
///
/// Why: the facts a rank checks at start-up are often its own — its filesystem (config file,
/// run directory, dataset cache, checkpoints), its arguments (an MPMD launch can give ranks
/// different ones). A rank that fails alone and exits leaves its peers blocked in the next
/// collective until someone kills the job. So each such step runs on every rank, and the
/// ranks exchange a verdict with the failing rank's own message before anyone moves on.
public enum Agreement {
    /// Bytes of a failure message carried by the verdict exchange (longer ones are cut).
    static let messageBytes = 480

    /// Runs `body` on every rank; if it throws on any rank, every rank throws an
    /// `AgreedError` carrying the first failing rank's message ("rank 2: …" unless rank 0
    /// alone failed or every rank failed alike), so that rank 0 can report the cause
    /// whichever rank met it.
    public static func run<T>(_ what: String, over transport: Transport, _ body: () throws -> T) throws -> T {
        var result: T?, failure: String?
        do { result = try body() } catch { failure = "\(error)" }
        var record = [UInt8](repeating: 0, count: 1 + messageBytes)
        if let failure {
            record[0] = 1
            let text = Array(failure.utf8.prefix(messageBytes))
            record.replaceSubrange(1 ..< 1 + text.count, with: text)
        }
        let all = try RingAllGather.gather(record, over: transport)
        let failed = (0 ..< transport.size).filter { all[$0 * record.count] == 1 }
        guard let first = failed.first else { return result! }
        func message(_ rank: Int) -> String {
            String(decoding: all[rank * record.count + 1 ..< (rank + 1) * record.count].prefix { $0 != 0 }, as: UTF8.self)
        }
        // Every rank met the same failure (one shared file, one argument): the message alone.
        if failed.count == transport.size && failed.allSatisfy({ message($0) == message(first) }) {
            throw AgreedError(message(first))
        }
        if first == 0 && failed.count == 1 { throw AgreedError(message(0)) }
        let others = failed.count > 1 ? " (ranks \(failed.map(String.init).joined(separator: ", ")) could not \(what))" : ""
        throw AgreedError("rank \(first): \(message(first))\(others)")
    }

    /// Runs `body` on rank 0 only and gives every rank its result (or its error): for what
    /// one rank decides for all.
    public static func fromRankZero(_ what: String, over transport: Transport, _ body: () throws -> [UInt8]) throws -> [UInt8] {
        try fromRank(0, what, over: transport, body)
    }

    /// A random non-zero UInt64 drawn on rank 0 and given to every rank (a nonce, an identity).
    public static func randomFromRankZero(_ what: String, over transport: Transport) throws -> UInt64 {
        try fromRankZero(what, over: transport) { withUnsafeBytes(of: UInt64.random(in: 1 ... .max)) { Array($0) } }
            .withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    /// Runs `body` on rank `root` only and gives every rank its result (or its error): for
    /// what one rank has for all, such as the checkpoint to resume from.
    public static func fromRank(_ root: Int, _ what: String, over transport: Transport, _ body: () throws -> [UInt8]) throws -> [UInt8] {
        var payload: [UInt8] = [], failed = false
        if transport.rank == root {
            do { payload = try body() } catch { payload = Array("\(error)".utf8); failed = true }
        }
        var header = [Int64(payload.count), failed ? 1 : 0]
        try transport.broadcast(&header, root: root)
        if transport.rank != root { payload = [UInt8](repeating: 0, count: Int(header[0])) }
        if header[0] > 0 { try transport.broadcast(&payload, root: root) }
        if header[1] != 0 { throw AgreedError(String(decoding: payload, as: UTF8.self)) }
        return payload
    }

    /// Checks, as the first collective of a run, that every rank was started the same way:
    /// with `--resume`, `--resume-if-present` or neither, and with the same config. A
    /// difference is an error on every rank that names it — for the config, the first key
    /// that differs.
    public static func requireSameStart(config: TrainingConfig, resume: Bool, resumeIfPresent: Bool = false, over transport: Transport) throws {
        let all = try RingAllGather.gather(SIMD2<UInt64>(config.hash, resume ? 1 : resumeIfPresent ? 2 : 0), over: transport)
        let ifPresent = all.indices.filter { all[$0].y == 2 }
        if !ifPresent.isEmpty && ifPresent.count != all.count {
            let list = ifPresent.map(String.init).joined(separator: ", ")
            throw AgreedError("ranks disagree on --resume-if-present (given to rank\(ifPresent.count > 1 ? "s" : "") \(list) only); pass it to every rank or to none")
        }
        let resuming = all.indices.filter { all[$0].y == 1 }
        if !resuming.isEmpty && resuming.count != all.count {
            let list = resuming.map(String.init).joined(separator: ", ")
            throw AgreedError("ranks disagree on --resume (given to rank\(resuming.count > 1 ? "s" : "") \(list) only); pass it to every rank or to none")
        }
        guard let other = all.indices.first(where: { all[$0].x != all[0].x }) else { return }
        // Name the first key that differs: exchange the canonical texts (rare path, any size).
        var text = Array(config.canonicalText.utf8)
        let lengths = try RingAllGather.gather(Int64(text.count), over: transport)
        let width = Int(lengths.max() ?? 0)
        text += [UInt8](repeating: 0, count: width - text.count)
        let texts = try RingAllGather.gather(text, over: transport)
        func canonical(_ rank: Int) -> String {
            String(decoding: texts[rank * width ..< (rank + 1) * width].prefix { $0 != 0 }, as: UTF8.self)
        }
        let difference = TrainingConfig.differences(canonical(0), canonical(other)).first ?? "?"
        throw AgreedError("ranks disagree on the config hash: rank \(other) differs from rank 0 in \(difference) (rank 0 → rank \(other)); start every rank with the same config and --set")
    }
}
