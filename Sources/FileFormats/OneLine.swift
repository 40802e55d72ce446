import Foundation

extension String {
    /// The text with every control character written as an escape ("\n", "\r", "\t",
    /// "\u{1b}"): an error message quotes what a file or config held — a key, a dtype, a
    /// tensor name — and a newline inside it must not break the one line the user (and, under
    /// mpirun, the last line of the job) sees.
    public var shownOnOneLine: String {
        guard unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return self }
        var out = ""
        for scalar in unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.properties.generalCategory == .control {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
