/// Suggestions for a mistyped name: a config key, a command.
public enum Spelling {
    /// Levenshtein distance (insertions, deletions, substitutions), over characters.
    public static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var previous = Array(0 ... b.count)
        for i in 1 ... a.count {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in 1 ... b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// The one candidate within `limit` edits of `name` (the closest, if one is closer than
    /// every other); nil when none is, or several are equally close.
    public static func nearest(to name: String, among candidates: some Collection<String>, limit: Int) -> String? {
        let scored = candidates.map { ($0, distance($0, name)) }.filter { $0.1 <= limit }.sorted { $0.1 < $1.1 }
        guard let best = scored.first, scored.dropFirst().first?.1 != best.1 else { return nil }
        return best.0
    }
}
