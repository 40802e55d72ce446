import NeuralNet
import XCTest

/// `BLASKernelChoice`: which OpenBLAS kernels a CPU is moved to when OpenBLAS's own choice is
/// narrower than the CPU's vector instructions.
final class BLASKernelChoiceTests: XCTestCase {
    let avx2: Set<String> = ["sse2", "avx", "avx2", "fma", "f16c"]
    var avx512: Set<String> {
        avx2.union(["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "bmi1", "bmi2", "abm", "movbe"])
    }

    /// Property: a kernel set known to be narrower than the CPU is replaced by the widest the
    /// CPU has every instruction of: SkylakeX only with AVX2, FMA, the five AVX-512 subsets and
    /// the scalar extensions its compiler may use; SkylakeX, never Cooperlake, whatever bf16.
    func testNarrowerKernelsAreReplacedByTheCPUsWidest() {
        XCTAssertEqual(BLASKernelChoice.coreType(widerThan: "Prescott", cpuFlags: avx512), "SkylakeX")
        XCTAssertEqual(BLASKernelChoice.coreType(widerThan: "Prescott", cpuFlags: avx512.union(["avx512_bf16"])), "SkylakeX")
        XCTAssertEqual(BLASKernelChoice.coreType(widerThan: "Haswell", cpuFlags: avx512), "SkylakeX")
        XCTAssertEqual(BLASKernelChoice.coreType(widerThan: "Sandybridge", cpuFlags: avx2), "Haswell")
        XCTAssertEqual(BLASKernelChoice.coreType(widerThan: "Prescott", cpuFlags: avx2.union(["avx512_bf16"])), "Haswell",
                       "bf16 alone is no AVX-512 kernel set")
        for missing in ["avx512vl", "bmi2", "movbe", "abm"] {
            XCTAssertEqual(BLASKernelChoice.coreType(widerThan: "Prescott", cpuFlags: avx512.subtracting([missing])), "Haswell",
                           "without \(missing) only AVX2 kernels are safe")
        }
        XCTAssertNil(BLASKernelChoice.coreType(widerThan: "Core2", cpuFlags: avx512.subtracting(["fma"])),
                     "without FMA neither Haswell's kernels nor SkylakeX's (which include them) run")
    }

    /// Property: OpenBLAS's choice stands when it is as wide as the CPU (whichever vendor's
    /// kernels it is), when the CPU's flags are unknown or name no AVX2, and when its name is
    /// not one this list knows (a kernel set newer than it is never replaced).
    func testAChoiceAsWideAsTheCPUOrUnknownStands() {
        for (core, flags) in [("SkylakeX", avx512), ("Cooperlake", avx512), ("SapphireRapids", avx512), ("cooperlake", avx512),
                              ("Haswell", avx2), ("Zen", avx2), ("Excavator", avx2), ("Prescott", []), ("Prescott", ["sse3"]),
                              ("GraniteRapids", avx512), ("Zen5", avx512), ("", avx512)] {
            XCTAssertNil(BLASKernelChoice.coreType(widerThan: core, cpuFlags: flags), "'\(core)' on \(flags.sorted())")
        }
    }

    /// Property: the flags are the first processor's `flags` line of /proc/cpuinfo, split at
    /// spaces (not the `vmx flags` or `bugs` lines), and no such line gives no flags.
    func testCPUFlagsAreReadFromTheFirstFlagsLine() {
        let cpuinfo = """
            processor\t: 0
            model name\t: Intel(R) Xeon(R) Processor
            flags\t\t: fpu sse2 avx2 fma bmi1 bmi2 abm movbe avx512f avx512cd avx512bw avx512dq avx512vl
            vmx flags\t: vnmi
            bugs\t\t: spectre_v1

            processor\t: 1
            flags\t\t: fpu
            """
        let flags = BLASKernelChoice.cpuFlags(cpuinfo: cpuinfo)
        XCTAssertEqual(flags, ["fpu", "sse2", "avx2", "fma", "bmi1", "bmi2", "abm", "movbe",
                               "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"])
        XCTAssertEqual(BLASKernelChoice.width(ofCPUFlags: flags), .avx512)
        XCTAssertEqual(BLASKernelChoice.cpuFlags(cpuinfo: ""), [])
    }
}
