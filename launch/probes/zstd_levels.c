/* How fast libzstd compresses an int8 gradient payload, and how much it saves, at level 1, at
 * negative ("fast") levels, and at negative levels with literal compression forced on: the
 * measurement behind docs/benchmarks.md's "zstd's floor". Not part of ringsgd's build.
 *
 *   cc -O2 launch/probes/zstd_levels.c -o /tmp/zstd_levels -lzstd -lm && /tmp/zstd_levels
 *
 * The payload: 16 Mi Gaussian values, heavier in some stretches (×20 in 64 of every 4096, ×5
 * for one value in ten), quantised to int8 in blocks of 256 by absmax as Int8BlockCodec does;
 * compressed in 1 MiB frames (the ring's segments), best of five. */
#define ZSTD_STATIC_LINKING_ONLY
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <zstd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const size_t n = (size_t)16 << 20, frame = (size_t)1 << 20;
    signed char *q = malloc(n);
    float *x = malloc(n * sizeof(float));
    srand(1);
    for (size_t i = 0; i < n; i++) {
        double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
        double g = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
        x[i] = (float)(g * (i % 4096 < 64 ? 20 : 1) * (rand() % 10 == 0 ? 5 : 1));
    }
    for (size_t b = 0; b < n; b += 256) {
        float m = 0;
        for (int i = 0; i < 256; i++) if (fabsf(x[b + i]) > m) m = fabsf(x[b + i]);
        for (int i = 0; i < 256; i++) q[b + i] = (signed char)lrintf(x[b + i] * 127 / m);
    }
    size_t capacity = ZSTD_compressBound(frame);
    void *out = malloc(capacity);
    const int levels[] = {1, -1, -3, -7, -20, -100};
    for (int forced = 0; forced < 2; forced++) {
        for (int l = 0; l < 6; l++) {
            ZSTD_CCtx *c = ZSTD_createCCtx();
            ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, levels[l]);
            ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
            if (forced) ZSTD_CCtx_setParameter(c, ZSTD_c_literalCompressionMode, ZSTD_ps_enable);
            double best = 1e9;
            size_t total = 0;
            for (int r = 0; r < 5; r++) {
                double t = now();
                total = 0;
                for (size_t o = 0; o < n; o += frame) {
                    size_t w = ZSTD_compress2(c, out, capacity, q + o, frame);
                    if (ZSTD_isError(w)) { fprintf(stderr, "zstd: %s\n", ZSTD_getErrorName(w)); return 1; }
                    total += w;
                }
                t = now() - t;
                if (t < best) best = t;
            }
            printf("level %4d, literals %s: keeps %.4f of the bytes at %.2f GB/s of input\n", levels[l],
                   forced ? "forced " : "default", (double)total / n, n / best / 1e9);
            ZSTD_freeCCtx(c);
        }
    }
    return 0;
}
