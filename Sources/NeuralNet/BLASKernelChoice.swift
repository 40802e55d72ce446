/// Which OpenBLAS kernels a CPU should run, when OpenBLAS itself chose narrower ones.
///
/// Why: a DYNAMIC_ARCH OpenBLAS picks its kernels by CPU model when it loads, from a table
/// frozen at its release. A CPU newer than that table, or a virtual machine that hides the
/// model, falls back to the oldest kernels: Debian's OpenBLAS 0.3.21 runs **Prescott** (SSE3)
/// kernels on an Emerald Rapids Xeon (family 6, model 207) that has AVX-512, and the ResNet's
/// step then takes 2× as long as with SkylakeX kernels (`bench compute`, measured 2026-11-30).
/// OpenBLAS's documented override is the environment variable `OPENBLAS_CORETYPE`, read when the
/// library loads; `ringsgd` sets it and runs itself again (`RingSGD.main`), before MPI starts,
/// unless the user has set it.
///
/// The choice is made from the CPU's feature flags as the kernel reports them in
/// `/proc/cpuinfo` (Linux clears a flag whose register state the OS does not save), never from
/// its model, so a kernel is only ever chosen for a CPU that has every instruction it uses.
public enum BLASKernelChoice {
    /// The vector instruction sets OpenBLAS's x86-64 kernels are written for, narrowest first.
    public enum Width: Int, Comparable, CustomStringConvertible {
        case older = 0, avx2, avx512
        public static func < (a: Width, b: Width) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["below AVX2", "AVX2", "AVX-512"][rawValue] }
    }

    /// The widest width whose instructions the CPU has all of. OpenBLAS's SkylakeX kernels use
    /// AVX-512 F, CD, BW, DQ and VL (OpenBLAS's own `support_avx512` test); its Haswell kernels
    /// AVX2 and FMA.
    public static func width(ofCPUFlags flags: Set<String>) -> Width {
        if ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) { return .avx512 }
        if flags.contains("avx2") && flags.contains("fma") { return .avx2 }
        return .older
    }

    /// The width of an OpenBLAS kernel set, by the name `openblas_get_corename` gives
    /// (case-insensitive). Zen and Excavator are OpenBLAS's AVX2 choices for AMD CPUs;
    /// Cooperlake and Sapphire Rapids are SkylakeX's kernels with bf16 additions.
    public static func width(ofKernels coreName: String) -> Width {
        switch coreName.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return .avx512
        case "haswell", "zen", "excavator": return .avx2
        default: return .older
        }
    }

    /// The `OPENBLAS_CORETYPE` to run with when OpenBLAS's own choice (`coreName`) is narrower
    /// than the CPU, or nil when it is not. For AVX-512, Cooperlake when the CPU also has
    /// avx512_bf16 — what OpenBLAS picks on the CPUs it knows with it — else SkylakeX.
    public static func better(than coreName: String, cpuFlags flags: Set<String>) -> String? {
        let cpu = width(ofCPUFlags: flags)
        guard cpu > width(ofKernels: coreName) else { return nil }
        switch cpu {
        case .avx512: return flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX"
        case .avx2: return "Haswell"
        case .older: return nil
        }
    }

    /// The first processor's flags in `/proc/cpuinfo` ("flags : fpu vme … avx512f …"), or an
    /// empty set where there is no such file (then nothing is chosen).
    public static func cpuFlags(cpuinfo: String) -> Set<String> {
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }
}
