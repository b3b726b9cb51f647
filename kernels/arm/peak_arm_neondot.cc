// SDOT chains for the int8 peak measurement (AArch64 with the dot product; built with +dotprod).
#include "arm/peak_arm.h"

namespace edgeopt {
namespace internal {

// 2 x 16 SDOTs per pass, each on its own accumulator (SDOT latency is 2-3 cycles and up to two
// issue per cycle on Cortex-A76/A78, so 16 chains keep both pipes full).
double peak_sdot_loop(long iterations) {
#if defined(__aarch64__)
  long n = iterations;
  __asm__ __volatile__(
      "movi v0.16b, #3\n"
      "movi v1.16b, #5\n"
      "1:\n"
      "sdot v16.4s, v0.16b, v1.16b\n"
      "sdot v17.4s, v0.16b, v1.16b\n"
      "sdot v18.4s, v0.16b, v1.16b\n"
      "sdot v19.4s, v0.16b, v1.16b\n"
      "sdot v20.4s, v0.16b, v1.16b\n"
      "sdot v21.4s, v0.16b, v1.16b\n"
      "sdot v22.4s, v0.16b, v1.16b\n"
      "sdot v23.4s, v0.16b, v1.16b\n"
      "sdot v24.4s, v0.16b, v1.16b\n"
      "sdot v25.4s, v0.16b, v1.16b\n"
      "sdot v26.4s, v0.16b, v1.16b\n"
      "sdot v27.4s, v0.16b, v1.16b\n"
      "sdot v28.4s, v0.16b, v1.16b\n"
      "sdot v29.4s, v0.16b, v1.16b\n"
      "sdot v30.4s, v0.16b, v1.16b\n"
      "sdot v31.4s, v0.16b, v1.16b\n"
      "sdot v16.4s, v0.16b, v1.16b\n"
      "sdot v17.4s, v0.16b, v1.16b\n"
      "sdot v18.4s, v0.16b, v1.16b\n"
      "sdot v19.4s, v0.16b, v1.16b\n"
      "sdot v20.4s, v0.16b, v1.16b\n"
      "sdot v21.4s, v0.16b, v1.16b\n"
      "sdot v22.4s, v0.16b, v1.16b\n"
      "sdot v23.4s, v0.16b, v1.16b\n"
      "sdot v24.4s, v0.16b, v1.16b\n"
      "sdot v25.4s, v0.16b, v1.16b\n"
      "sdot v26.4s, v0.16b, v1.16b\n"
      "sdot v27.4s, v0.16b, v1.16b\n"
      "sdot v28.4s, v0.16b, v1.16b\n"
      "sdot v29.4s, v0.16b, v1.16b\n"
      "sdot v30.4s, v0.16b, v1.16b\n"
      "sdot v31.4s, v0.16b, v1.16b\n"
      "subs %[n], %[n], #1\n"
      "b.ne 1b\n"
      : [n] "+r"(n)
      :
      : "cc", "v0", "v1", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25",
        "v26", "v27", "v28", "v29", "v30", "v31");
  return static_cast<double>(iterations) * 32 * 16;
#else
  (void)iterations;
  return 0.0;
#endif
}

}  // namespace internal
}  // namespace edgeopt
