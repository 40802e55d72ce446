import Foundation

/// This machine's memory, for the size checks that refuse what cannot fit with one line naming
/// the sizes, before any allocation (a failed allocation traps, and under mpirun it is an abort).
public enum MachineMemory {
    /// Physical memory in bytes.
    public static var bytes: Double { Double(ProcessInfo.processInfo.physicalMemory) }

    /// "12.3 GB" (decimal gigabytes, one decimal).
    public static func gigabytes(_ bytes: Double) -> String { String(format: "%.1f GB", bytes / 1e9) }

    /// nil when `needed` bytes fit in this machine's memory (in half of it with `half`), else the
    /// clause an error ends on: "more than this machine's 25.3 GB of memory".
    public static func exceeded(by needed: Double, half: Bool = false) -> String? {
        guard needed > (half ? bytes / 2 : bytes) else { return nil }
        return "more than \(half ? "half of " : "")this machine's \(gigabytes(bytes)) of memory"
    }
}
