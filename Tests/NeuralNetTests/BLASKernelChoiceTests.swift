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

    /// Property: ringsgd runs itself again only with a DYNAMIC_ARCH OpenBLAS, only when the user
    /// set no `OPENBLAS_CORETYPE`, and reads /proc/cpuinfo only when OpenBLAS's own choice is
    /// known to be narrower than AVX-512; then with the kernels `coreType(widerThan:)` names.
    func testRunningAgainIsDecidedOnlyWhereOpenBLASReadsTheVariable() {
        let cpuinfo = "flags\t: " + avx512.sorted().joined(separator: " ")
        let dynamic = "OpenBLAS 0.3.21 NO_AFFINITY DYNAMIC_ARCH SkylakeX MAX_THREADS=64"
        func decide(_ own: String, _ configuration: String, _ user: String?) -> String? {
            BLASKernelChoice.coreTypeToRunAgainWith(ownChoice: own, configuration: configuration, userCoreType: user, cpuinfo: { cpuinfo })
        }
        XCTAssertEqual(decide("Prescott", dynamic, nil), "SkylakeX")
        XCTAssertEqual(decide("Prescott", dynamic, ""), "SkylakeX", "an empty OPENBLAS_CORETYPE is no choice")
        XCTAssertNil(decide("Prescott", dynamic, "Haswell"), "the user's choice stands")
        XCTAssertNil(decide("Prescott", "OpenBLAS 0.3.21 NO_AFFINITY SKYLAKEX MAX_THREADS=64", nil),
                     "an OpenBLAS built for one CPU ignores OPENBLAS_CORETYPE")
        XCTAssertNil(decide("SkylakeX", dynamic, nil))
        XCTAssertNil(decide("GraniteRapids", dynamic, nil), "a kernel set this list does not know stands")
        XCTAssertNil(BLASKernelChoice.coreTypeToRunAgainWith(ownChoice: "Prescott", configuration: dynamic, userCoreType: nil, cpuinfo: { nil }),
                     "no /proc/cpuinfo: nothing is chosen")
        for own in ["SkylakeX", "Cooperlake", "GraniteRapids"] {
            var read = false
            _ = BLASKernelChoice.coreTypeToRunAgainWith(ownChoice: own, configuration: dynamic, userCoreType: nil,
                                                        cpuinfo: { read = true; return cpuinfo })
            XCTAssertFalse(read, "/proc/cpuinfo read although \(own) is as wide as any CPU or unknown")
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
