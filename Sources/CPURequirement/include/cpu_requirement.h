// The check that this CPU runs what the build was compiled for (cpu_requirement.c). Nothing to
// call: it runs by itself when the program loads.
#ifndef RINGSGD_CPU_REQUIREMENT_H
#define RINGSGD_CPU_REQUIREMENT_H
/// The instruction-set extensions this CPU lacks of those Package.swift compiles for, as a
/// comma-separated list ("" when none), in `buffer` of `size` bytes; returns `buffer`.
const char *ringsgd_missing_cpu_features(char *buffer, unsigned long size);
#endif
