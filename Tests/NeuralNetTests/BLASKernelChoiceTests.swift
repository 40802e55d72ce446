import NeuralNet
import XCTest

/// `BLASKernelChoice`: which OpenBLAS kernels a CPU is moved to when OpenBLAS's own choice is
/// narrower than the CPU's vector instructions.
final class BLASKernelChoiceTests: XCTestCase {
    let avx2: Set<String> = ["sse2", "avx", "avx2", "fma", "f16c"]
    var avx512: Set<String> { avx2.union(["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]) }

    /// Property: a kernel set narrower than the CPU is replaced by the widest the CPU has all the
    /// instructions of — never by a wider one, and Cooperlake only with avx512_bf16.
    func testNarrowerKernelsAreReplacedByTheCPUsWidest() {
        XCTAssertEqual(BLASKernelChoice.better(than: "Prescott", cpuFlags: avx512), "SkylakeX")
        XCTAssertEqual(BLASKernelChoice.better(than: "Prescott", cpuFlags: avx512.union(["avx512_bf16"])), "Cooperlake")
        XCTAssertEqual(BLASKernelChoice.better(than: "Haswell", cpuFlags: avx512), "SkylakeX")
        XCTAssertEqual(BLASKernelChoice.better(than: "Sandybridge", cpuFlags: avx2), "Haswell")
        XCTAssertEqual(BLASKernelChoice.better(than: "Prescott", cpuFlags: avx2.union(["avx512_bf16"])), "Haswell",
                       "bf16 alone is no AVX-512 kernel set")
        // One of SkylakeX's five AVX-512 subsets missing: only AVX2 kernels are safe.
        XCTAssertEqual(BLASKernelChoice.better(than: "Prescott", cpuFlags: avx512.subtracting(["avx512vl"])), "Haswell")
        XCTAssertEqual(BLASKernelChoice.better(than: "Core2", cpuFlags: avx2.subtracting(["fma"])), nil)
    }

    /// Property: OpenBLAS's choice stands when it is as wide as the CPU (whichever vendor's
    /// kernels it is), when the CPU's flags are unknown, and for a name it does not know to be
    /// narrower than a CPU without AVX2.
    func testAChoiceAsWideAsTheCPUStands() {
        for (core, flags) in [("SkylakeX", avx512), ("Cooperlake", avx512), ("SapphireRapids", avx512), ("cooperlake", avx512),
                              ("Haswell", avx2), ("Zen", avx2), ("Excavator", avx2), ("Prescott", []), ("Prescott", ["sse3"])] {
            XCTAssertNil(BLASKernelChoice.better(than: core, cpuFlags: flags), "\(core) on \(flags.sorted())")
        }
    }

    /// Property: the flags are the first processor's `flags` line of /proc/cpuinfo, split at
    /// spaces (not the `vmx flags` or `bugs` lines), and no file gives no flags.
    func testCPUFlagsAreReadFromTheFirstFlagsLine() {
        let cpuinfo = """
            processor\t: 0
            model name\t: Intel(R) Xeon(R) Processor
            flags\t\t: fpu sse2 avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl
            vmx flags\t: vnmi
            bugs\t\t: spectre_v1

            processor\t: 1
            flags\t\t: fpu
            """
        let flags = BLASKernelChoice.cpuFlags(cpuinfo: cpuinfo)
        XCTAssertEqual(flags, ["fpu", "sse2", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"])
        XCTAssertEqual(BLASKernelChoice.width(ofCPUFlags: flags), .avx512)
        XCTAssertEqual(BLASKernelChoice.cpuFlags(cpuinfo: ""), [])
    }
}
