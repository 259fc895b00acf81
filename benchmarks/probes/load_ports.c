/* How many vector loads a core issues per FMA / VNNI dot product: the bound of a 1x1 conv kernel
 * that broadcasts one activation per multiply-add (benchmarks/load_ports.py builds and runs this).
 *
 * Each probe runs 14 independent instructions per iteration (14 accumulators, as the conv kernels'
 * register tiles do), from L1-resident memory, on one thread. Printed: probe name and
 * instructions per nanosecond. Compile with -march=native; probes the CPU lacks are skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

#define X14(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11) op(12) op(13)
#define ITERATIONS 20000000L
#define PROBE(name, body, ...)                                                        \
  do {                                                                                 \
    double best = 0;                                                                   \
    for (int repeat = 0; repeat < 3; repeat++) {                                       \
      double t = now();                                                                \
      for (long i = 0; i < ITERATIONS; i++) __asm__ volatile(body __VA_ARGS__);        \
      t = now() - t;                                                                   \
      if (14.0 * ITERATIONS / t * 1e-9 > best) best = 14.0 * ITERATIONS / t * 1e-9;   \
    }                                                                                  \
    printf("%s %.3f\n", name, best);                                                   \
  } while (0)

/* ymm (AVX2 + FMA) */
#define FMA_Y(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define BCAST_FMA_Y(i) "vbroadcastss " #i "*256(%0), %%ymm15\n\tvfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define BCAST_Y(i) "vbroadcastss " #i "*256(%0), %%ymm" #i "\n\t"
/* zmm (AVX-512) */
#define FMA_Z(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define BCAST_FMA_Z(i) "vbroadcastss " #i "*256(%0), %%zmm15\n\tvfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define BCAST_Z(i) "vbroadcastss " #i "*256(%0), %%zmm" #i "\n\t"
#define LOAD_Z(i) "vmovups " #i "*256(%0), %%zmm" #i "\n\t"
#define DOT_Z(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define BCAST_DOT_Z(i) "vpbroadcastd " #i "*256(%0), %%zmm15\n\tvpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n\t"

int main(void) {
  float *buffer = aligned_alloc(64, 1 << 16);
  for (int i = 0; i < (1 << 14); i++) buffer[i] = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __asm__ volatile("vxorps %%ymm14, %%ymm14, %%ymm14\n\tvxorps %%ymm15, %%ymm15, %%ymm15" ::: "memory");
  PROBE("fma_ymm", X14(FMA_Y), ::: "memory");
  PROBE("broadcast_load_ymm", X14(BCAST_Y), :: "r"(buffer) : "memory");
  PROBE("broadcast_then_fma_ymm", X14(BCAST_FMA_Y), :: "r"(buffer) : "memory");
#endif
#if defined(__AVX512F__)
  __asm__ volatile("vxorps %%zmm14, %%zmm14, %%zmm14\n\tvxorps %%zmm15, %%zmm15, %%zmm15" ::: "memory");
  PROBE("fma_zmm", X14(FMA_Z), ::: "memory");
  PROBE("vector_load_zmm", X14(LOAD_Z), :: "r"(buffer) : "memory");
  PROBE("broadcast_load_zmm", X14(BCAST_Z), :: "r"(buffer) : "memory");
  PROBE("broadcast_then_fma_zmm", X14(BCAST_FMA_Z), :: "r"(buffer) : "memory");
#endif
#if defined(__AVX512VNNI__)
  PROBE("vpdpbusd_zmm", X14(DOT_Z), ::: "memory");
  PROBE("broadcast_then_vpdpbusd_zmm", X14(BCAST_DOT_Z), :: "r"(buffer) : "memory");
#endif
  free(buffer);
  return 0;
}
