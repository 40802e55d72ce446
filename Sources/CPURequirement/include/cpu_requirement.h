// The check that this CPU runs what the build was compiled for (cpu_requirement.c): a
// constructor that runs by itself when the program loads. Nothing here to call; the header is
// the C target's public face, which SwiftPM expects.
