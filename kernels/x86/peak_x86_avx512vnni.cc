// AVX-512 VNNI int8 MAC peak body: independent vpdpbusd zmm chains (inline asm).
#include "x86/peak_x86.h"

namespace edgeopt {
namespace detail {

// 16 independent accumulators cover latency x throughput (5 x 2 on Zen 5, 5 x 1 on Ice Lake).
double peak_macs_avx512vnni(long iters) {
  const double macs = static_cast<double>(iters) * 16 * 64;  // 16 vpdpbusd x 64 MACs
  asm volatile(
      "vpternlogd $0xff, %%zmm31, %%zmm31, %%zmm31\n\t"
      "vpabsb %%zmm31, %%zmm30\n\t"
      "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
      "vmovdqa64 %%zmm0, %%zmm1\n\t"
      "vmovdqa64 %%zmm0, %%zmm2\n\t"
      "vmovdqa64 %%zmm0, %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\t"
      "vmovdqa64 %%zmm0, %%zmm5\n\t"
      "vmovdqa64 %%zmm0, %%zmm6\n\t"
      "vmovdqa64 %%zmm0, %%zmm7\n\t"
      "vmovdqa64 %%zmm0, %%zmm8\n\t"
      "vmovdqa64 %%zmm0, %%zmm9\n\t"
      "vmovdqa64 %%zmm0, %%zmm10\n\t"
      "vmovdqa64 %%zmm0, %%zmm11\n\t"
      "vmovdqa64 %%zmm0, %%zmm12\n\t"
      "vmovdqa64 %%zmm0, %%zmm13\n\t"
      "vmovdqa64 %%zmm0, %%zmm14\n\t"
      "vmovdqa64 %%zmm0, %%zmm15\n\t"
      "1:\n\t"
#define EO_DP(acc) "vpdpbusd %%zmm31, %%zmm30, %%zmm" #acc "\n\t"
      EO_DP(0) EO_DP(1) EO_DP(2) EO_DP(3) EO_DP(4) EO_DP(5) EO_DP(6) EO_DP(7) EO_DP(8) EO_DP(9)
          EO_DP(10) EO_DP(11) EO_DP(12) EO_DP(13) EO_DP(14) EO_DP(15)
#undef EO_DP
              "dec %0\n\t"
              "jnz 1b\n\t"
              "vzeroupper\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm30", "xmm31", "cc");
  return macs;
}

}  // namespace detail
}  // namespace edgeopt
