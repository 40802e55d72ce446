// Package.swift compiles ringsgd's Swift code for Haswell (`-target-cpu haswell`: AVX2, FMA,
// F16C, BMI1/2, LZCNT, MOVBE — every x86-64 server CPU since 2013). On an older CPU the first
// such instruction stops the process with SIGILL and no word of why, on every rank. This file
// is C, compiled for the baseline x86-64 (no target flags), and its constructor runs before any
// Swift code: it asks CPUID what the CPU has, and when something is missing says so on one line
// and exits 2. (BLASKernelChoice reads the CPU's flags too, for OpenBLAS's kernels, but it is
// Swift compiled for Haswell: it cannot run first on a CPU without it.)
#include "cpu_requirement.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>

/// Appends `name` to the comma-separated list in `buffer`.
static void append(char *buffer, unsigned long size, const char *name) {
    size_t used = strlen(buffer);
    snprintf(buffer + used, size - used, "%s%s", used ? ", " : "", name);
}

/// The extensions this CPU lacks of those Package.swift compiles for, comma-separated ("" when
/// none), in `buffer` of `size` bytes; returns `buffer`.
static const char *missing_cpu_features(char *buffer, unsigned long size) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    buffer[0] = 0;
    __get_cpuid(1, &a, &b, &c, &d);
    // The OS must save the AVX registers too (OSXSAVE, then XCR0's SSE and AVX state bits).
    int osAVX = 0;
    if ((c & bit_OSXSAVE) && (c & bit_AVX)) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        osAVX = (lo & 6) == 6;
    }
    if (!osAVX) append(buffer, size, "avx");
    if (!(c & bit_FMA)) append(buffer, size, "fma");
    if (!(c & bit_F16C)) append(buffer, size, "f16c");
    if (!(c & bit_MOVBE)) append(buffer, size, "movbe");
    unsigned b7 = 0;
    if (__get_cpuid_max(0, 0) >= 7) { unsigned a7, c7, d7; __cpuid_count(7, 0, a7, b7, c7, d7); }
    if (!(b7 & bit_AVX2)) append(buffer, size, "avx2");
    if (!(b7 & bit_BMI)) append(buffer, size, "bmi1");
    if (!(b7 & bit_BMI2)) append(buffer, size, "bmi2");
    unsigned ce = 0;
    if (__get_cpuid(0x80000001, &a, &b, &ce, &d) == 0) ce = 0;
    if (!(ce & bit_LZCNT)) append(buffer, size, "lzcnt");
    return buffer;
}

__attribute__((constructor)) static void ringsgd_require_cpu_features(void) {
    char missing[128];
    if (missing_cpu_features(missing, sizeof missing)[0] == 0) return;
    fprintf(stderr, "ringsgd: error: this CPU lacks %s, which this build was compiled for (Package.swift's "
                    "cpuFlags: -target-cpu haswell, x86-64 CPUs since 2013); set cpuFlags to [] in Package.swift "
                    "and build again\n", missing);
    _exit(2);
}
#endif
