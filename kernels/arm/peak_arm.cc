// Measures the int8 MAC peak of one ARM core with independent NEON multiply-accumulate chains.
#include "arm/peak_arm.h"

#include <algorithm>
#include <chrono>

namespace edgeopt {
namespace {

#if defined(__aarch64__) || defined(__arm__)

// 2 x 16 (AArch64) or 2 x 12 (ARMv7) widening multiply-accumulates per pass, each on its own
// accumulator, so throughput rather than latency (4 cycles on Cortex-A72/A76) bounds the loop.
// Inline assembly keeps the compiler from folding or reordering the chains; the int16 lanes wrap,
// which does not matter for timing.
double smlal_loop(long iterations) {
#if defined(__aarch64__)
  long n = iterations;
  __asm__ __volatile__(
      "movi v0.16b, #3\n"
      "movi v1.16b, #5\n"
      "1:\n"
      "smlal  v16.8h, v0.8b, v1.8b\n"
      "smlal2 v17.8h, v0.16b, v1.16b\n"
      "smlal  v18.8h, v0.8b, v1.8b\n"
      "smlal2 v19.8h, v0.16b, v1.16b\n"
      "smlal  v20.8h, v0.8b, v1.8b\n"
      "smlal2 v21.8h, v0.16b, v1.16b\n"
      "smlal  v22.8h, v0.8b, v1.8b\n"
      "smlal2 v23.8h, v0.16b, v1.16b\n"
      "smlal  v24.8h, v0.8b, v1.8b\n"
      "smlal2 v25.8h, v0.16b, v1.16b\n"
      "smlal  v26.8h, v0.8b, v1.8b\n"
      "smlal2 v27.8h, v0.16b, v1.16b\n"
      "smlal  v28.8h, v0.8b, v1.8b\n"
      "smlal2 v29.8h, v0.16b, v1.16b\n"
      "smlal  v30.8h, v0.8b, v1.8b\n"
      "smlal2 v31.8h, v0.16b, v1.16b\n"
      "smlal  v16.8h, v0.8b, v1.8b\n"
      "smlal2 v17.8h, v0.16b, v1.16b\n"
      "smlal  v18.8h, v0.8b, v1.8b\n"
      "smlal2 v19.8h, v0.16b, v1.16b\n"
      "smlal  v20.8h, v0.8b, v1.8b\n"
      "smlal2 v21.8h, v0.16b, v1.16b\n"
      "smlal  v22.8h, v0.8b, v1.8b\n"
      "smlal2 v23.8h, v0.16b, v1.16b\n"
      "smlal  v24.8h, v0.8b, v1.8b\n"
      "smlal2 v25.8h, v0.16b, v1.16b\n"
      "smlal  v26.8h, v0.8b, v1.8b\n"
      "smlal2 v27.8h, v0.16b, v1.16b\n"
      "smlal  v28.8h, v0.8b, v1.8b\n"
      "smlal2 v29.8h, v0.16b, v1.16b\n"
      "smlal  v30.8h, v0.8b, v1.8b\n"
      "smlal2 v31.8h, v0.16b, v1.16b\n"
      "subs %[n], %[n], #1\n"
      "b.ne 1b\n"
      : [n] "+r"(n)
      :
      : "cc", "v0", "v1", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25",
        "v26", "v27", "v28", "v29", "v30", "v31");
  return static_cast<double>(iterations) * 32 * 8;
#else
  // This file is built without -mfpu=neon on ARMv7 (only *_neon.cc files get it), so the
  // directive enables NEON for these instructions alone; the caller checked the CPU has it.
  long n = iterations;
  __asm__ __volatile__(
      ".fpu neon\n"
      "vmov.i8 d24, #3\n"
      "vmov.i8 d25, #5\n"
      "1:\n"
      "vmlal.s8 q0, d24, d25\n"
      "vmlal.s8 q1, d24, d25\n"
      "vmlal.s8 q2, d24, d25\n"
      "vmlal.s8 q3, d24, d25\n"
      "vmlal.s8 q4, d24, d25\n"
      "vmlal.s8 q5, d24, d25\n"
      "vmlal.s8 q6, d24, d25\n"
      "vmlal.s8 q7, d24, d25\n"
      "vmlal.s8 q8, d24, d25\n"
      "vmlal.s8 q9, d24, d25\n"
      "vmlal.s8 q10, d24, d25\n"
      "vmlal.s8 q11, d24, d25\n"
      "vmlal.s8 q0, d24, d25\n"
      "vmlal.s8 q1, d24, d25\n"
      "vmlal.s8 q2, d24, d25\n"
      "vmlal.s8 q3, d24, d25\n"
      "vmlal.s8 q4, d24, d25\n"
      "vmlal.s8 q5, d24, d25\n"
      "vmlal.s8 q6, d24, d25\n"
      "vmlal.s8 q7, d24, d25\n"
      "vmlal.s8 q8, d24, d25\n"
      "vmlal.s8 q9, d24, d25\n"
      "vmlal.s8 q10, d24, d25\n"
      "vmlal.s8 q11, d24, d25\n"
      "subs %[n], %[n], #1\n"
      "bne 1b\n"
      : [n] "+r"(n)
      :
      : "cc", "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11", "d12",
        "d13", "d14", "d15", "d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23", "d24", "d25");
  return static_cast<double>(iterations) * 24 * 8;
#endif
}

// Best MACs per second of `loop` over a few repetitions of about 8 ms each, after calibrating
// the iteration count (and warming the core's clock) for about 2 ms.
template <typename Loop>
double best_macs_per_second(Loop loop) {
  using clock = std::chrono::steady_clock;
  long iterations = 256;
  double seconds = 0.0;
  for (;;) {
    const auto t0 = clock::now();
    loop(iterations);
    seconds = std::chrono::duration<double>(clock::now() - t0).count();
    if (seconds > 2e-3 || iterations > (1L << 28)) break;
    iterations *= 4;
  }
  const double scale = 8e-3 / std::max(seconds, 1e-9);
  iterations = std::max(1L, static_cast<long>(static_cast<double>(iterations) * scale));
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = clock::now();
    const double macs = loop(iterations);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    if (s > 0.0) best = std::max(best, macs / s);
  }
  return best;
}

#endif  // ARM

}  // namespace

double peak_int8_gops_arm(Path p) {
#if defined(__aarch64__) || defined(__arm__)
  switch (p) {
    case kNeon: return 2.0 * best_macs_per_second(smlal_loop) / 1e9;
#if defined(EDGEOPT_HAVE_NEONDOT) && defined(__aarch64__)
    case kNeonDot: return 2.0 * best_macs_per_second(internal::peak_sdot_loop) / 1e9;
#endif
    default: return 0.0;
  }
#else
  (void)p;
  return 0.0;
#endif
}

}  // namespace edgeopt
