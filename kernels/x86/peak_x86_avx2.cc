// AVX2 int8 MAC peak body: independent vpmaddubsw + vpmaddwd + vpaddd chains (inline asm).
#include "x86/peak_x86.h"

namespace edgeopt {
namespace detail {

// Inline asm keeps the compiler from hoisting the loop-invariant multiplies out of the loop.
// 6 accumulators and 7 rotating product registers: no chain longer than one vpaddd per triple.
double peak_macs_avx2(long iters) {
  const double macs = static_cast<double>(iters) * 12 * 32;  // 12 triples x 32 MACs
  asm volatile(
      "vpcmpeqb %%ymm15, %%ymm15, %%ymm15\n\t"
      "vpabsb %%ymm15, %%ymm14\n\t"       // u8 ones
      "vpsrlw $15, %%ymm15, %%ymm13\n\t"  // s16 ones
      "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"
      "vpxor %%ymm1, %%ymm1, %%ymm1\n\t"
      "vpxor %%ymm2, %%ymm2, %%ymm2\n\t"
      "vpxor %%ymm3, %%ymm3, %%ymm3\n\t"
      "vpxor %%ymm4, %%ymm4, %%ymm4\n\t"
      "vpxor %%ymm5, %%ymm5, %%ymm5\n\t"
      "1:\n\t"
// clang-format off
#define EO_TRIPLE(acc, t)                            \
  "vpmaddubsw %%ymm14, %%ymm14, %%ymm" #t "\n\t"       \
  "vpmaddwd %%ymm13, %%ymm" #t ", %%ymm" #t "\n\t"     \
  "vpaddd %%ymm" #t ", %%ymm" #acc ", %%ymm" #acc "\n\t"
      EO_TRIPLE(0, 6) EO_TRIPLE(1, 7) EO_TRIPLE(2, 8) EO_TRIPLE(3, 9) EO_TRIPLE(4, 10)
      EO_TRIPLE(5, 11) EO_TRIPLE(0, 12) EO_TRIPLE(1, 6) EO_TRIPLE(2, 7) EO_TRIPLE(3, 8)
      EO_TRIPLE(4, 9) EO_TRIPLE(5, 10)
#undef EO_TRIPLE
      // clang-format on
      "dec %0\n\t"
      "jnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc");
  return macs;
}

}  // namespace detail
}  // namespace edgeopt
