/// Which OpenBLAS kernels a CPU should run, when OpenBLAS itself chose narrower ones.
///
/// Why: a DYNAMIC_ARCH OpenBLAS picks its kernels by CPU model when it loads, from a table
/// frozen at its release. A CPU newer than that table, or a virtual machine that hides the
/// model, falls back to the oldest kernels: Debian's OpenBLAS 0.3.21 runs **Prescott** (SSE3)
/// kernels on an Emerald Rapids Xeon (family 6, model 207) that has AVX-512, and the ResNet's
/// step then takes 2× as long as with SkylakeX kernels, the mlp's 3–4× (`bench compute`,
/// measured 2026-11-30). OpenBLAS's documented override is the environment variable
/// `OPENBLAS_CORETYPE`, read when the library loads; `ringsgd` sets it and runs itself again
/// (`RingSGD.main`), before MPI starts, unless the user has set it.
///
/// The choice is made from the CPU's feature flags as the kernel reports them in
/// `/proc/cpuinfo` (Linux clears a flag whose register state the OS does not save), never from
/// its model, so a kernel set is only ever chosen for a CPU that has every instruction it may
/// use; and it is made only against a kernel set this file knows to be narrower, never against
/// a name it does not know.
public enum BLASKernelChoice {
    /// The vector instruction sets OpenBLAS's x86-64 kernels are written for, narrowest first.
    public enum Width: Int, Comparable, CustomStringConvertible {
        case belowAVX2 = 0, avx2, avx512
        public static func < (a: Width, b: Width) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["below AVX2", "AVX2", "AVX-512"][rawValue] }
    }

    /// The widest width whose kernels the CPU can run. OpenBLAS's Haswell kernels use AVX2 and
    /// FMA. Its SkylakeX kernels include the Haswell ones, add AVX-512 F, CD, BW, DQ and VL, and
    /// are compiled for `-march=skylake-avx512`, which lets the compiler use BMI1, BMI2, LZCNT
    /// (`abm`) and MOVBE too: a virtual machine may mask any of these, so all are required.
    public static func width(ofCPUFlags flags: Set<String>) -> Width {
        guard ["avx2", "fma"].allSatisfy(flags.contains) else { return .belowAVX2 }
        let avx512 = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "bmi1", "bmi2", "abm", "movbe"]
        return avx512.allSatisfy(flags.contains) ? .avx512 : .avx2
    }

    /// The width of an OpenBLAS kernel set, by the name `openblas_get_corename` gives
    /// (case-insensitive; OpenBLAS's x86-64 names), or nil for a name not listed here — a
    /// kernel set newer than this list is never replaced. Zen and Excavator are OpenBLAS's
    /// AVX2 choices for AMD CPUs; Cooperlake and Sapphire Rapids are SkylakeX's kernels with
    /// bf16 additions.
    public static func width(ofKernels coreName: String) -> Width? {
        switch coreName.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return .avx512
        case "haswell", "zen", "excavator": return .avx2
        case "unknown", "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn", "dunnington",
             "nehalem", "athlon", "opteron", "opteron_sse3", "opteron(sse3)", "barcelona", "nano", "sandybridge", "bobcat",
             "bulldozer", "piledriver", "steamroller":
            return .belowAVX2
        default: return nil
        }
    }

    /// The `OPENBLAS_CORETYPE` to run with when OpenBLAS's own choice (`coreName`) is known to
    /// be narrower than the CPU, or nil. For AVX-512 always SkylakeX: ringsgd calls only sgemm
    /// and sgemv, where Cooperlake's kernels are SkylakeX's, and OpenBLAS before 0.3.22 does not
    /// recognise the name "Cooperlake" in `OPENBLAS_CORETYPE` (0.3.21 only finds it again by
    /// its own probe; older releases fall back to Prescott).
    public static func coreType(widerThan coreName: String, cpuFlags flags: Set<String>) -> String? {
        guard let current = width(ofKernels: coreName) else { return nil }
        switch width(ofCPUFlags: flags) {
        case .avx512 where current < .avx512: return "SkylakeX"
        case .avx2 where current < .avx2: return "Haswell"
        default: return nil
        }
    }

    /// The `OPENBLAS_CORETYPE` `ringsgd` runs itself again with (`RingSGD.main`), or nil to run
    /// on with OpenBLAS's own choice: only a DYNAMIC_ARCH OpenBLAS (`configuration`, from
    /// `openblas_get_config`) reads the variable, a `userCoreType` that is set (not empty) is
    /// never overridden, and `cpuinfo` (the text of `/proc/cpuinfo`) is read only when `ownChoice`
    /// is known to be narrower than AVX-512. One function for the executable and its test, so
    /// that the two cannot decide differently.
    public static func coreTypeToRunAgainWith(ownChoice: String, configuration: String, userCoreType: String?,
                                              cpuinfo: () -> String?) -> String? {
        guard (userCoreType ?? "").isEmpty, configuration.contains("DYNAMIC_ARCH"),
              let ownWidth = width(ofKernels: ownChoice), ownWidth < .avx512, let text = cpuinfo() else { return nil }
        return coreType(widerThan: ownChoice, cpuFlags: cpuFlags(cpuinfo: text))
    }

    /// The first processor's flags in `/proc/cpuinfo` ("flags : fpu vme … avx512f …"), or an
    /// empty set where there is no such line (then nothing is chosen).
    public static func cpuFlags(cpuinfo: String) -> Set<String> {
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }
}
