import FileFormats
import Foundation
import Yams

/// A config error: names the key and what is allowed. One line, for the user.
public struct ConfigError: Error, CustomStringConvertible {
    public let message: String
    /// One line whatever the config's keys and strings hold (a quoted key may contain "\n").
    public init(_ message: String) { self.message = message.shownOnOneLine }
    public var description: String { message }
}

/// A YAML document flattened to dotted key paths ("optimizer.lr" → scalar or list), with
/// typed getters that record which keys were read, so that every key left unread — a typo,
/// a key from another version — is reported instead of silently ignored.
struct ConfigReader {
    private(set) var values: [String: Node] = [:]
    private var read: Set<String> = []
    /// Keys taken away with `--set KEY=null` (checked to be known keys like any other).
    private var removed: Set<String> = []

    /// An empty document is an error, not "all defaults": an empty file is far more often a
    /// mistake (a wrong path, a truncated copy) than a wish. `yaml: nil` starts from the
    /// defaults (for `--set`-only configs built in code).
    init(yaml: String?, source: String) throws {
        guard let yaml else { return }
        try Self.checkNesting(yaml, source: source)
        let node: Node?
        do { node = try Yams.compose(yaml: yaml) } catch {
            // The parser's words for a tab that indents ("found character that cannot start any
            // token") do not say tab: the most common YAML mistake, named — when the line it
            // failed on is indented with one.
            let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
            if let line = Self.failedLine(error), line >= 1, line <= lines.count,
               lines[line - 1].prefix(while: { $0 == " " || $0 == "\t" }).contains("\t") {
                throw ConfigError("\(source) is not valid YAML: line \(line) is indented with a tab; YAML indents with spaces only")
            }
            throw ConfigError("\(source) is not valid YAML: \(Self.oneLine(error))")
        }
        guard let node else {
            throw ConfigError("\(source) is empty; write the keys to change (see configs/fashion-mlp.yaml), e.g. 'train: {epochs: 1}'")
        }
        guard case .mapping = node else { throw ConfigError("\(source) must be a YAML mapping of sections (train:, optimizer:, …)") }
        var visits = 0
        try Self.checkSize(node, visits: &visits, source: source)
        try flatten(node, prefix: "", source: source)
    }

    /// The deepest nesting a config may have: ringsgd's are a few levels deep (a residual
    /// block's layer's keys: 6). Yams's parser recurses once per level, so a file of 200 KB of
    /// '[' would overflow the stack before any error could be given.
    static let deepestNesting = 64
    /// The most nodes a config may expand to. YAML aliases share a node among its uses: 40
    /// anchors each naming the last one twice are under 1 KB of text and 2⁴⁰ nodes walked, a
    /// hang instead of an error. Real configs have a few hundred.
    static let mostNodes = 100_000

    /// Refuses flow brackets or block indentation nested deeper than `deepestNesting`, from
    /// the text (before the parser sees it). Counted: distinct indentation levels, compact
    /// sequence or key markers ("- - - x"), and open flow brackets; a bracket inside a quoted
    /// scalar (one that starts a token: "it's" opens none) or a comment is not one, and a
    /// stray "]" in a plain scalar does not lower the count below zero.
    static func checkNesting(_ yaml: String, source: String) throws {
        var brackets = 0, indents: [Int] = [], quote: UInt8? = nil, escaped = false
        let space = UInt8(ascii: " "), dash = UInt8(ascii: "-"), question = UInt8(ascii: "?")
        func refuse() -> ConfigError { ConfigError("\(source) nests more than \(deepestNesting) levels deep; a ringsgd config needs a few") }
        for line in Array(yaml.utf8).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            var i = line.startIndex
            while i < line.endIndex && line[i] == space { i += 1 }
            let indent = i - line.startIndex
            var markers = 0
            if quote == nil && brackets == 0 && i < line.endIndex && line[i] != UInt8(ascii: "#") {
                while let last = indents.last, last >= indent { indents.removeLast() }
                indents.append(indent)
                // "- - - x": each marker opens a level on the same line.
                while i < line.endIndex, line[i] == dash || line[i] == question,
                      i + 1 == line.endIndex || line[i + 1] == space {
                    markers += 1
                    i += 1
                    while i < line.endIndex && line[i] == space { i += 1 }
                }
            }
            var previous: UInt8 = space
            while i < line.endIndex {
                let byte = line[i]
                if let open = quote {
                    if escaped { escaped = false } else if open == UInt8(ascii: "\"") && byte == UInt8(ascii: "\\") { escaped = true } else if byte == open { quote = nil }
                } else if (byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'")) && [space, UInt8(ascii: ":"), UInt8(ascii: ","), UInt8(ascii: "["), UInt8(ascii: "{"), dash, question].contains(previous) {
                    quote = byte
                } else if byte == UInt8(ascii: "#") && previous == space {
                    break
                } else if byte == UInt8(ascii: "[") || byte == UInt8(ascii: "{") {
                    brackets += 1
                } else if byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}") {
                    brackets = max(0, brackets - 1)
                }
                if brackets + indents.count + markers > deepestNesting { throw refuse() }
                previous = byte
                i += 1
            }
            if brackets + indents.count + markers > deepestNesting { throw refuse() }
        }
    }

    /// Walks the document as the reader will — aliases expanded — and refuses it past
    /// `mostNodes` (an alias bomb) or `deepestNesting` levels.
    static func checkSize(_ node: Node, visits: inout Int, depth: Int = 0, source: String) throws {
        visits += 1
        guard visits <= mostNodes, depth <= deepestNesting else {
            throw ConfigError("\(source) expands to more than \(mostNodes) values or \(deepestNesting) levels (YAML aliases repeating aliases?); write the config out")
        }
        switch node {
        case let .mapping(mapping): for (key, value) in mapping { try checkSize(key, visits: &visits, depth: depth + 1, source: source); try checkSize(value, visits: &visits, depth: depth + 1, source: source) }
        case let .sequence(items): for item in items { try checkSize(item, visits: &visits, depth: depth + 1, source: source) }
        default: break
        }
    }

    private mutating func flatten(_ node: Node, prefix: String, source: String) throws {
        if case let .mapping(mapping) = node {
            var seen: Set<String> = []
            for (key, value) in mapping {
                guard let name = key.string else { throw ConfigError("\(source): a key under '\(prefix)' is not a string") }
                let path = prefix.isEmpty ? name : "\(prefix).\(name)"
                guard seen.insert(name).inserted else {
                    throw ConfigError("\(source): duplicate key '\(path)' (line \(key.mark.map { "\($0.line)" } ?? "?")); keep one")
                }
                try flatten(value, prefix: path, source: source)
            }
        } else {
            values[prefix] = node
        }
    }

    /// The parser's error on one line: "line L, column C: problem".
    /// The line (from 1) a YAML error points at, if it points at one.
    static func failedLine(_ error: Error) -> Int? {
        switch error as? YamlError {
        case let .scanner(_, _, mark, _), let .parser(_, _, mark, _), let .composer(_, _, mark, _): return mark.line
        default: return nil
        }
    }

    static func oneLine(_ error: Error) -> String {
        guard let yaml = error as? YamlError else { return "\(error)".split(separator: "\n").first.map(String.init) ?? "\(error)" }
        switch yaml {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            return "line \(mark.line), column \(mark.column): \(problem)" + (context.map { " (\($0.text))" } ?? "")
        case let .reader(problem, _, _, _):
            return problem
        default:
            return "\(yaml)".split(separator: "\n").first.map(String.init) ?? "\(yaml)"
        }
    }

    /// Applies `key.path=value` (the value parsed as YAML: numbers, booleans, [lists]);
    /// `key.path=null` removes the key, so that its default holds — how a key of the config
    /// file is taken away, e.g. `optimizer.momentum` when `--set optimizer.name=adam` would
    /// make it a key that does nothing (refused).
    mutating func override(_ assignment: String) throws {
        guard let eq = assignment.firstIndex(of: "="), eq != assignment.startIndex else {
            throw ConfigError("--set expects key.path=value, got '\(assignment)'")
        }
        let key = String(assignment[..<eq]), text = String(assignment[assignment.index(after: eq)...])
        if text == "null" || text == "~" { values[key] = nil; removed.insert(key); return }
        try Self.checkNesting(text, source: "--set \(key)")
        guard let node = try? Yams.compose(yaml: text.isEmpty ? "''" : text) else {
            throw ConfigError("--set \(key): '\(text)' is not a valid value")
        }
        var visits = 0
        try Self.checkSize(node, visits: &visits, source: "--set \(key)")
        values[key] = node
    }

    /// Whether the document (or an override) sets `key`.
    func has(_ key: String) -> Bool { values[key] != nil }

    /// The raw YAML under `key` (a list of layers), for a reader of its own.
    mutating func node(_ key: String) -> Node? {
        read.insert(key)
        return values[key]
    }

    mutating func string(_ key: String, default value: String, allowed: [String]? = nil) throws -> String {
        read.insert(key)
        guard let node = values[key] else { return value }
        guard let s = node.string, node.scalar != nil else { throw ConfigError("\(key) must be a string, got \(describe(node))") }
        if let allowed, !allowed.contains(s) {
            throw ConfigError("\(key) must be one of \(allowed.joined(separator: ", ")), got '\(s)'")
        }
        return s
    }

    mutating func int(_ key: String, default value: Int, min: Int? = nil, max: Int? = nil) throws -> Int {
        read.insert(key)
        guard let node = values[key] else { return value }
        guard let scalar = node.scalar, let v = Int(scalar.string) else {
            throw ConfigError("\(key) must be an integer, got \(describe(node))")
        }
        if let min, v < min { throw ConfigError("\(key) must be ≥ \(min), got \(v)") }
        if let max, v > max { throw ConfigError("\(key) must be ≤ \(max), got \(v)") }
        return v
    }

    mutating func double(_ key: String, default value: Double, min: Double? = nil, max: Double? = nil,
                         exclusiveMin: Bool = false, exclusiveMax: Bool = false) throws -> Double {
        read.insert(key)
        guard let node = values[key] else { return value }
        guard let scalar = node.scalar, let v = Double(scalar.string), v.isFinite else {
            throw ConfigError("\(key) must be a number, got \(describe(node))")
        }
        if let min, exclusiveMin ? v <= min : v < min { throw ConfigError("\(key) must be \(exclusiveMin ? ">" : "≥") \(min), got \(v)") }
        if let max, exclusiveMax ? v >= max : v > max { throw ConfigError("\(key) must be \(exclusiveMax ? "<" : "≤") \(max), got \(v)") }
        return v
    }

    mutating func bool(_ key: String, default value: Bool) throws -> Bool {
        try toggle(key, default: value ? "true" : "false", allowingAuto: false) == "true"
    }

    /// A boolean that may also be left to ringsgd: "auto", "true" or "false" (YAML's spellings
    /// of a boolean — yes/no, on/off, any case — accepted as for every boolean key).
    mutating func toggle(_ key: String, default value: String, allowingAuto: Bool = true) throws -> String {
        read.insert(key)
        guard let node = values[key] else { return value }
        switch node.scalar?.string.lowercased() {
        case "true", "yes", "on": return "true"
        case "false", "no", "off": return "false"
        case "auto" where allowingAuto: return "auto"
        default: throw ConfigError("\(key) must be \(allowingAuto ? "auto, true or false" : "true or false"), got \(describe(node))")
        }
    }

    mutating func ints(_ key: String, default value: [Int], min: Int? = nil) throws -> [Int] {
        read.insert(key)
        guard let node = values[key] else { return value }
        guard case let .sequence(sequence) = node else { throw ConfigError("\(key) must be a list of integers, got \(describe(node))") }
        return try sequence.map { item in
            guard let v = item.scalar.flatMap({ Int($0.string) }) else {
                throw ConfigError("\(key) must be a list of integers, got an item \(describe(item))")
            }
            if let min, v < min { throw ConfigError("every item of \(key) must be ≥ \(min), got \(v)") }
            return v
        }
    }

    /// A list of strings; a single string is a list of one.
    mutating func strings(_ key: String, default value: [String]) throws -> [String] {
        read.insert(key)
        guard let node = values[key] else { return value }
        if let scalar = node.scalar { return [scalar.string] }
        guard case let .sequence(sequence) = node, !sequence.isEmpty else {
            throw ConfigError("\(key) must be a string or a list of strings, got \(describe(node))")
        }
        return try sequence.map { item in
            guard let s = item.scalar?.string else { throw ConfigError("\(key) must be a list of strings, got an item \(describe(item))") }
            return s
        }
    }

    mutating func doubles(_ key: String, default value: [Double]) throws -> [Double] {
        read.insert(key)
        guard let node = values[key] else { return value }
        guard case let .sequence(sequence) = node else { throw ConfigError("\(key) must be a list of numbers, got \(describe(node))") }
        return try sequence.map { item in
            guard let v = item.scalar.flatMap({ Double($0.string) }) else {
                throw ConfigError("\(key) must be a list of numbers, got an item \(describe(item))")
            }
            return v
        }
    }

    /// Throws for the first key that no getter asked for, listing the keys of its section.
    func rejectUnknownKeys() throws {
        // A key taken away with --set KEY=null must be one that exists: a typo is reported too.
        for key in (Set(values.keys).union(removed)).sorted() where !read.contains(key) {
            if let guess = Self.nearest(to: key, among: read) {
                throw ConfigError("unknown config key '\(key)'; did you mean \(guess)?")
            }
            let section = key.split(separator: ".").first.map(String.init) ?? key
            let siblings = read.filter { $0.hasPrefix(section + ".") }.sorted()
            // A section written as a value (`optimizer: sgd`): name the key it meant.
            if key == section, !siblings.isEmpty, case let .scalar(scalar)? = values[key] {
                let first = siblings.first { $0.hasSuffix(".name") || $0.hasSuffix(".kind") || $0.hasSuffix(".dataset") } ?? siblings[0]
                throw ConfigError("'\(key): \(scalar.string)' gives a value to the section \(key), which holds keys (\(siblings.joined(separator: ", "))); write them inside it, e.g. \(key): {\(first.dropFirst(section.count + 1)): \(scalar.string)}")
            }
            let hint = siblings.isEmpty
                ? "known sections: \(Set(read.compactMap { $0.split(separator: ".").first.map(String.init) }).sorted().joined(separator: ", "))"
                : "known keys in \(section): \(siblings.joined(separator: ", "))"
            throw ConfigError("unknown config key '\(key)' (\(hint))")
        }
    }

    /// The known key a mistyped one most likely meant: a near spelling in its own section
    /// (`optimizer.momentun`), else the same last part in another section (`train.lr` →
    /// `optimizer.lr`), else one edit away. Nil if none or several match equally.
    static func nearest(to key: String, among known: Set<String>) -> String? {
        // A slip inside the right section first: a typo (`optimizer.momentun`), or a longer or
        // shorter name for the same key (`schedule.warmup_steps` → `schedule.warmup`).
        let section = key.split(separator: ".").dropLast().joined(separator: "."), leaf = key.split(separator: ".").last.map(String.init) ?? key
        let siblings = section.isEmpty ? [] : known.filter { $0.hasPrefix(section + ".") && !$0.dropFirst(section.count + 1).contains(".") }
        if let typo = Spelling.nearest(to: key, among: siblings, limit: 2) { return typo }
        let extended = siblings.filter { let other = String($0.dropFirst(section.count + 1)); return other.hasPrefix(leaf) || leaf.hasPrefix(other) }
        if extended.count == 1 { return extended.first }
        let sameLeaf = known.filter { $0.split(separator: ".").last.map(String.init) == leaf }
        if sameLeaf.count == 1 { return sameLeaf.first }
        return Spelling.nearest(to: key, among: known, limit: 1)
    }

    private func describe(_ node: Node) -> String {
        switch node {
        case let .scalar(s): return "'\(s.string)'"
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        }
    }
}
