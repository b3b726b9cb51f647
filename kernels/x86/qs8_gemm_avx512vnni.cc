// Dense int8 GEMM and fused int8 linear with AVX-512 VNNI (vpdpbusd), exact int32 accumulation.
//
// Operands. vpdpbusd multiplies unsigned bytes (its register source) by signed bytes. The
// *activations* are the unsigned side: each 4-byte group of a row is broadcast and xor-ed with 0x80
// in one instruction (vpxord m32bcst, a ^ 0x80 = a + 128, no copy of A), and pack() stores the
// weights as raw int8. Then
//   sum_k (a + 128) * w = sum_k a * w + 128 * row_sum(w)[n],
// a per-column constant: every accumulator starts at bias[n] - (input_zero_point + 128) *
// row_sum(w)[n] (gemm_s32: -128 * row_sum(w)[n]), so there is no pass over A per call (the old
// scheme, u8 weights w ^ 0x80 and a -128 * row_sum(a) row term, spent 2-5% of a call on it at
// N = 64). Every product is exact and int32 sums wrap exactly as the reference does, including
// weights equal to -128 (the signed side).
//
// Packed layout: a 64-byte header, row_sum(w) padded to whole panels, then panels of kNR = 64
// output channels x K (raw int8, K padded with zeros to a multiple of 4). Within a panel, group g
// of 4 k's holds 256 contiguous bytes = 4 zmm vectors of 16 channels x 4 k (the VNNI interleave):
// the weights are read strictly linearly, one 64-byte line per vpdpbusd. A last panel of <= 32
// channels is packed 32 or 16 wide (group = 128 or 64 bytes) and runs narrow_tiles (8 x 32 or
// 8 x 16 register tiles): N = 16 / 32 layers then cost half / a quarter of a 64 panel
// (64x288x32: ~180 -> ~330 int8 GOPS on this Xeon).
//
// Tile choice: 6x64 (MR = 6 rows x 4 zmm vectors). 24 accumulators + 4 weight registers + the
// activation broadcasts fit the 32 zmm registers; per group it issues 24 vpdpbusd for 4 weight
// loads + 6 broadcast loads, which keeps Zen 5's two 512-bit VNNI pipes busy (measured peak
// 2 vpdpbusd/cycle) with 24 independent chains, the weights streaming from L1/L2. NR = 64 divides
// the common channel counts (64, 128, 256, 768, 3072) and matches the conv-like shapes with
// N = 64 exactly; 8x48 would waste a third of a tile there and 12x32 needs 50% more broadcasts per
// vpdpbusd. Panels are the outer loop and row tiles the inner one, so a panel (64*K bytes) stays
// in L1/L2 while A (M*K bytes) is re-read per panel from L2. Measured single-thread on Zen 5:
// 95-100% of the vpdpbusd peak for M >= 16 (int32 output), 83% at K = 147.
//
// Small M is bound by the weight stream: MR = 1 and 2 run 4 resp. 2 groups per iteration into
// separate accumulator sets (16 independent chains), so the loads never wait on vpdpbusd latency
// and there is no horizontal reduction anywhere. run() alternates the panel order per call so that
// a weight set about the size of L2 is mostly re-read from L2. Measured (1 thread): 1x1024x1024
// ~6.7-7.1 us (~150 GB/s; a plain read loop visiting 64 KiB chunks in the same order gets 180 GB/s,
// forward only 145), 1x4096x4096 ~159 us (~105 GB/s from L3; plain read loop 102 GB/s).

// GCC 12 warns -Wmaybe-uninitialized inside its own AVX-512 intrinsic headers (GCC PR105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/requant.h"
#include "common/requant_fp32.h"
#include "common/ukernel.h"

namespace edgeopt {
namespace {

#define EO_INLINE inline __attribute__((always_inline))

constexpr int kNR = 64;        // output channels per packed panel
constexpr int kNV = kNR / 16;  // zmm vectors per panel row
constexpr int kMR = 6;         // rows per register tile
constexpr size_t kHeaderBytes = 64;

struct Header {
  int32_t n;
  int32_t k;
  int32_t groups;  // ceil(k / 4)
  int32_t panels;  // ceil(n / kNR)
  uint32_t magic;
};
constexpr uint32_t kMagic = 0x57533851u;  // "Q8SW" (raw int8 weights)

inline size_t panel_bytes(int groups) {
  return static_cast<size_t>(groups) * kNR * 4;
}

size_t packed_size(int n, int k) {
  const int groups = (k + 3) / 4;
  const int panels = (n + kNR - 1) / kNR;
  return kHeaderBytes + static_cast<size_t>(panels) * kNR * sizeof(int32_t) +
         static_cast<size_t>(panels) * panel_bytes(groups);
}

// Width of panel p in the packed layout: 64, except a last panel of <= 32 columns, packed 32 or 16
// wide (narrow_tiles) so N = 16 / 32 layers and narrow tails do not pay for 64 channels.
inline int panel_width(int n, int p) {
  const int rem = n - p * kNR;
  return rem > 32 ? kNR : rem > 16 ? 32 : 16;
}

void pack(const int8_t* w, int n, int k, const int32_t* row_sums, void* dst) {
  const int groups = (k + 3) / 4;
  const int panels = (n + kNR - 1) / kNR;
  auto* base = static_cast<uint8_t*>(dst);
  Header h{n, k, groups, panels, kMagic};
  std::memset(base, 0, kHeaderBytes);
  std::memcpy(base, &h, sizeof(h));
  auto* wsum = reinterpret_cast<int32_t*>(base + kHeaderBytes);
  for (int j = 0; j < panels * kNR; ++j) wsum[j] = j < n ? row_sums[j] : 0;
  uint8_t* out = base + kHeaderBytes + static_cast<size_t>(panels) * kNR * sizeof(int32_t);
  for (int p = 0; p < panels; ++p) {
    uint8_t* panel = out + static_cast<size_t>(p) * panel_bytes(groups);
    const int width = panel_width(n, p);
    for (int g = 0; g < groups; ++g) {
      for (int j = 0; j < width; ++j) {
        const int row = p * kNR + j;
        for (int kk = 0; kk < 4; ++kk) {
          const int col = g * 4 + kk;
          const int8_t v = (row < n && col < k) ? w[static_cast<size_t>(row) * k + col] : 0;
          panel[static_cast<size_t>(g) * width * 4 + j * 4 + kk] = static_cast<uint8_t>(v);
        }
      }
    }
  }
}

// K loops in inline asm: GCC keeps 24 zmm accumulators held in an array (or in 24 named
// variables) in registers, but then also spills them on every iteration. The asm pins them:
// accumulator (set s, row r, vector v) = zmm(4*(s*MR + r) + v), weights in zmm20-27, activation
// broadcasts (a ^ 0x80) in zmm28, 30, 31, the 0x80 bytes in zmm29. Rows r = 0..5 are addressed as
// a0, a0+lda, a0+2*lda, a3, a3+lda, a3+2*lda. Small MR runs kUnroll[MR] groups per iteration into
// separate accumulator sets, so the vpdpbusd latency never stalls the weight stream; the sets are
// summed after the loop, then `nl` leftover groups run one by one, then the partial last group of K
// (k % 4 bytes, `mask` in k1) with byte-masked activation loads that never touch memory past a
// row's end. Accumulators start at ci[j] (the column terms, see run()) and are stored with row
// stride ldo bytes, straight into C for whole int32 panels. The six templates were generated by
// kernels/x86/gen/gen_qs8_kloop_avx512vnni.py with its defaults (U1=4 U2=2 U3=1 PF=0, i.e. no
// software prefetch, EPI=1; EPI adds kloop6e): edit the generator, not the asm. Measured with the
// alternating panel order of run(), M = 1..3, single thread, Zen 5: prefetcht0 4 KiB ahead on
// every line (the old default) costs 5-10% at 1x1024x1024 and at 1x4096x4096; so do prefetcht1
// 2 KiB / prefetcht2 8-16 KiB ahead and one prefetch per 512 B or 1 KiB (PFSTEP) 2-8 KiB ahead;
// U1 = 2 or 5 and U3 = 2 change nothing measurable. Interleaving two panels' streams was rejected
// on a plain read test (16 MiB from L3: 102 GB/s with one stream, 67-77 GB/s with 2 or 4).

// Groups per asm loop iteration (accumulator sets summed at the end), by MR.
constexpr int kUnroll[7] = {0, 4, 2, 1, 1, 1, 1};
template <int MR>
void kloop(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl, uint32_t mask,
           const int32_t* ci, int32_t* out, size_t ldo);
template <>
EO_INLINE void kloop<1>(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl,
                        uint32_t mask, const int32_t* ci, int32_t* out, size_t ldo) {
  const int8_t* a3 = a0 + (1 * lda);
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 128(%[ci]), %%zmm2\n\t"
      "vmovdqa64 192(%[ci]), %%zmm3\n\t"
      "mov $0x80808080, %k[ci]\n\t"
      "vpbroadcastd %k[ci], %%zmm29\n\t"
      "vpxord %%zmm4, %%zmm4, %%zmm4\n\t"
      "vpxord %%zmm5, %%zmm5, %%zmm5\n\t"
      "vpxord %%zmm6, %%zmm6, %%zmm6\n\t"
      "vpxord %%zmm7, %%zmm7, %%zmm7\n\t"
      "vpxord %%zmm8, %%zmm8, %%zmm8\n\t"
      "vpxord %%zmm9, %%zmm9, %%zmm9\n\t"
      "vpxord %%zmm10, %%zmm10, %%zmm10\n\t"
      "vpxord %%zmm11, %%zmm11, %%zmm11\n\t"
      "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"
      "vpxord %%zmm13, %%zmm13, %%zmm13\n\t"
      "vpxord %%zmm14, %%zmm14, %%zmm14\n\t"
      "vpxord %%zmm15, %%zmm15, %%zmm15\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vmovdqa64 256(%[w]), %%zmm20\n\t"
      "vmovdqa64 320(%[w]), %%zmm21\n\t"
      "vmovdqa64 384(%[w]), %%zmm22\n\t"
      "vmovdqa64 448(%[w]), %%zmm23\n\t"
      "vpxord 4(%[a0])%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm20, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm21, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm22, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm23, %%zmm30, %%zmm7\n\t"
      "vmovdqa64 512(%[w]), %%zmm24\n\t"
      "vmovdqa64 576(%[w]), %%zmm25\n\t"
      "vmovdqa64 640(%[w]), %%zmm26\n\t"
      "vmovdqa64 704(%[w]), %%zmm27\n\t"
      "vpxord 8(%[a0])%{1to16%}, %%zmm29, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "vmovdqa64 768(%[w]), %%zmm20\n\t"
      "vmovdqa64 832(%[w]), %%zmm21\n\t"
      "vmovdqa64 896(%[w]), %%zmm22\n\t"
      "vmovdqa64 960(%[w]), %%zmm23\n\t"
      "vpxord 12(%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm22, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm23, %%zmm28, %%zmm15\n\t"
      "add $1024, %[w]\n\t"
      "add $16, %[a0]\n\t"
      "add $16, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "vpaddd %%zmm4, %%zmm0, %%zmm0\n\t"
      "vpaddd %%zmm5, %%zmm1, %%zmm1\n\t"
      "vpaddd %%zmm6, %%zmm2, %%zmm2\n\t"
      "vpaddd %%zmm7, %%zmm3, %%zmm3\n\t"
      "vpaddd %%zmm8, %%zmm0, %%zmm0\n\t"
      "vpaddd %%zmm9, %%zmm1, %%zmm1\n\t"
      "vpaddd %%zmm10, %%zmm2, %%zmm2\n\t"
      "vpaddd %%zmm11, %%zmm3, %%zmm3\n\t"
      "vpaddd %%zmm12, %%zmm0, %%zmm0\n\t"
      "vpaddd %%zmm13, %%zmm1, %%zmm1\n\t"
      "vpaddd %%zmm14, %%zmm2, %%zmm2\n\t"
      "vpaddd %%zmm15, %%zmm3, %%zmm3\n\t"
      "test %[nl], %[nl]\n\t"
      "jz 4f\n\t"
      "3:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[nl]\n\t"
      "jnz 3b\n\t"
      "4:\n\t"
      "kmovw %k[mask], %%k1\n\t"
      "ktestw %%k1, %%k1\n\t"
      "jz 5f\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "5:\n\t"
      "vmovdqu32 %%zmm0, 0(%[out])\n\t"
      "vmovdqu32 %%zmm1, 64(%[out])\n\t"
      "vmovdqu32 %%zmm2, 128(%[out])\n\t"
      "vmovdqu32 %%zmm3, 192(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci), [nl] "+r"(nl)
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [mask] "r"(mask)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
        "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "k1", "memory", "cc");
}

template <>
EO_INLINE void kloop<2>(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl,
                        uint32_t mask, const int32_t* ci, int32_t* out, size_t ldo) {
  const int8_t* a3 = a0 + (2 * lda);
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 128(%[ci]), %%zmm2\n\t"
      "vmovdqa64 192(%[ci]), %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\t"
      "vmovdqa64 %%zmm1, %%zmm5\n\t"
      "vmovdqa64 %%zmm2, %%zmm6\n\t"
      "vmovdqa64 %%zmm3, %%zmm7\n\t"
      "mov $0x80808080, %k[ci]\n\t"
      "vpbroadcastd %k[ci], %%zmm29\n\t"
      "vpxord %%zmm8, %%zmm8, %%zmm8\n\t"
      "vpxord %%zmm9, %%zmm9, %%zmm9\n\t"
      "vpxord %%zmm10, %%zmm10, %%zmm10\n\t"
      "vpxord %%zmm11, %%zmm11, %%zmm11\n\t"
      "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"
      "vpxord %%zmm13, %%zmm13, %%zmm13\n\t"
      "vpxord %%zmm14, %%zmm14, %%zmm14\n\t"
      "vpxord %%zmm15, %%zmm15, %%zmm15\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vmovdqa64 256(%[w]), %%zmm20\n\t"
      "vmovdqa64 320(%[w]), %%zmm21\n\t"
      "vmovdqa64 384(%[w]), %%zmm22\n\t"
      "vmovdqa64 448(%[w]), %%zmm23\n\t"
      "vpxord 4(%[a0])%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm20, %%zmm30, %%zmm8\n\t"
      "vpdpbusd %%zmm21, %%zmm30, %%zmm9\n\t"
      "vpdpbusd %%zmm22, %%zmm30, %%zmm10\n\t"
      "vpdpbusd %%zmm23, %%zmm30, %%zmm11\n\t"
      "vpxord 4(%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm31\n\t"
      "vpdpbusd %%zmm20, %%zmm31, %%zmm12\n\t"
      "vpdpbusd %%zmm21, %%zmm31, %%zmm13\n\t"
      "vpdpbusd %%zmm22, %%zmm31, %%zmm14\n\t"
      "vpdpbusd %%zmm23, %%zmm31, %%zmm15\n\t"
      "add $512, %[w]\n\t"
      "add $8, %[a0]\n\t"
      "add $8, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "vpaddd %%zmm8, %%zmm0, %%zmm0\n\t"
      "vpaddd %%zmm9, %%zmm1, %%zmm1\n\t"
      "vpaddd %%zmm10, %%zmm2, %%zmm2\n\t"
      "vpaddd %%zmm11, %%zmm3, %%zmm3\n\t"
      "vpaddd %%zmm12, %%zmm4, %%zmm4\n\t"
      "vpaddd %%zmm13, %%zmm5, %%zmm5\n\t"
      "vpaddd %%zmm14, %%zmm6, %%zmm6\n\t"
      "vpaddd %%zmm15, %%zmm7, %%zmm7\n\t"
      "test %[nl], %[nl]\n\t"
      "jz 4f\n\t"
      "3:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[nl]\n\t"
      "jnz 3b\n\t"
      "4:\n\t"
      "kmovw %k[mask], %%k1\n\t"
      "ktestw %%k1, %%k1\n\t"
      "jz 5f\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm30%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm30, %%zmm30\n\t"
      "vpxord %%zmm29, %%zmm30, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "5:\n\t"
      "vmovdqu32 %%zmm0, 0(%[out])\n\t"
      "vmovdqu32 %%zmm1, 64(%[out])\n\t"
      "vmovdqu32 %%zmm2, 128(%[out])\n\t"
      "vmovdqu32 %%zmm3, 192(%[out])\n\t"
      "vmovdqu32 %%zmm4, 0(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm5, 64(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm6, 128(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm7, 192(%[out],%[ldo],1)\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci), [nl] "+r"(nl)
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [mask] "r"(mask)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
        "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "k1", "memory", "cc");
}

template <>
EO_INLINE void kloop<3>(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl,
                        uint32_t mask, const int32_t* ci, int32_t* out, size_t ldo) {
  const int8_t* a3 = a0 + (3 * lda);
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 128(%[ci]), %%zmm2\n\t"
      "vmovdqa64 192(%[ci]), %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\t"
      "vmovdqa64 %%zmm1, %%zmm5\n\t"
      "vmovdqa64 %%zmm2, %%zmm6\n\t"
      "vmovdqa64 %%zmm3, %%zmm7\n\t"
      "vmovdqa64 %%zmm0, %%zmm8\n\t"
      "vmovdqa64 %%zmm1, %%zmm9\n\t"
      "vmovdqa64 %%zmm2, %%zmm10\n\t"
      "vmovdqa64 %%zmm3, %%zmm11\n\t"
      "mov $0x80808080, %k[ci]\n\t"
      "vpbroadcastd %k[ci], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "kmovw %k[mask], %%k1\n\t"
      "ktestw %%k1, %%k1\n\t"
      "jz 5f\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm30%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm30, %%zmm30\n\t"
      "vpxord %%zmm29, %%zmm30, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm31%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm31, %%zmm31\n\t"
      "vpxord %%zmm29, %%zmm31, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "5:\n\t"
      "vmovdqu32 %%zmm0, 0(%[out])\n\t"
      "vmovdqu32 %%zmm1, 64(%[out])\n\t"
      "vmovdqu32 %%zmm2, 128(%[out])\n\t"
      "vmovdqu32 %%zmm3, 192(%[out])\n\t"
      "vmovdqu32 %%zmm4, 0(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm5, 64(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm6, 128(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm7, 192(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm8, 0(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm9, 64(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm10, 128(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm11, 192(%[out],%[ldo],2)\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci)
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [mask] "r"(mask), [nl] "r"(nl)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
        "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "k1", "memory", "cc");
}

template <>
EO_INLINE void kloop<4>(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl,
                        uint32_t mask, const int32_t* ci, int32_t* out, size_t ldo) {
  const int8_t* a3 = a0 + (3 * lda);
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 128(%[ci]), %%zmm2\n\t"
      "vmovdqa64 192(%[ci]), %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\t"
      "vmovdqa64 %%zmm1, %%zmm5\n\t"
      "vmovdqa64 %%zmm2, %%zmm6\n\t"
      "vmovdqa64 %%zmm3, %%zmm7\n\t"
      "vmovdqa64 %%zmm0, %%zmm8\n\t"
      "vmovdqa64 %%zmm1, %%zmm9\n\t"
      "vmovdqa64 %%zmm2, %%zmm10\n\t"
      "vmovdqa64 %%zmm3, %%zmm11\n\t"
      "vmovdqa64 %%zmm0, %%zmm12\n\t"
      "vmovdqa64 %%zmm1, %%zmm13\n\t"
      "vmovdqa64 %%zmm2, %%zmm14\n\t"
      "vmovdqa64 %%zmm3, %%zmm15\n\t"
      "mov $0x80808080, %k[ci]\n\t"
      "vpbroadcastd %k[ci], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "kmovw %k[mask], %%k1\n\t"
      "ktestw %%k1, %%k1\n\t"
      "jz 5f\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm30%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm30, %%zmm30\n\t"
      "vpxord %%zmm29, %%zmm30, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm31%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm31, %%zmm31\n\t"
      "vpxord %%zmm29, %%zmm31, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "5:\n\t"
      "lea (%[out],%[ldo],2), %[ci]\n\t"
      "add %[ldo], %[ci]\n\t"
      "vmovdqu32 %%zmm0, 0(%[out])\n\t"
      "vmovdqu32 %%zmm1, 64(%[out])\n\t"
      "vmovdqu32 %%zmm2, 128(%[out])\n\t"
      "vmovdqu32 %%zmm3, 192(%[out])\n\t"
      "vmovdqu32 %%zmm4, 0(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm5, 64(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm6, 128(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm7, 192(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm8, 0(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm9, 64(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm10, 128(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm11, 192(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm12, 0(%[ci])\n\t"
      "vmovdqu32 %%zmm13, 64(%[ci])\n\t"
      "vmovdqu32 %%zmm14, 128(%[ci])\n\t"
      "vmovdqu32 %%zmm15, 192(%[ci])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci)
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [mask] "r"(mask), [nl] "r"(nl)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
        "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "k1", "memory", "cc");
}

template <>
EO_INLINE void kloop<5>(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl,
                        uint32_t mask, const int32_t* ci, int32_t* out, size_t ldo) {
  const int8_t* a3 = a0 + (3 * lda);
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 128(%[ci]), %%zmm2\n\t"
      "vmovdqa64 192(%[ci]), %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\t"
      "vmovdqa64 %%zmm1, %%zmm5\n\t"
      "vmovdqa64 %%zmm2, %%zmm6\n\t"
      "vmovdqa64 %%zmm3, %%zmm7\n\t"
      "vmovdqa64 %%zmm0, %%zmm8\n\t"
      "vmovdqa64 %%zmm1, %%zmm9\n\t"
      "vmovdqa64 %%zmm2, %%zmm10\n\t"
      "vmovdqa64 %%zmm3, %%zmm11\n\t"
      "vmovdqa64 %%zmm0, %%zmm12\n\t"
      "vmovdqa64 %%zmm1, %%zmm13\n\t"
      "vmovdqa64 %%zmm2, %%zmm14\n\t"
      "vmovdqa64 %%zmm3, %%zmm15\n\t"
      "vmovdqa64 %%zmm0, %%zmm16\n\t"
      "vmovdqa64 %%zmm1, %%zmm17\n\t"
      "vmovdqa64 %%zmm2, %%zmm18\n\t"
      "vmovdqa64 %%zmm3, %%zmm19\n\t"
      "mov $0x80808080, %k[ci]\n\t"
      "vpbroadcastd %k[ci], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "vpxord (%[a3],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm16\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm17\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm18\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm19\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "kmovw %k[mask], %%k1\n\t"
      "ktestw %%k1, %%k1\n\t"
      "jz 5f\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm30%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm30, %%zmm30\n\t"
      "vpxord %%zmm29, %%zmm30, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm31%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm31, %%zmm31\n\t"
      "vpxord %%zmm29, %%zmm31, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "vmovdqu8 (%[a3],%[lda],1), %%xmm30%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm30, %%zmm30\n\t"
      "vpxord %%zmm29, %%zmm30, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm16\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm17\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm18\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm19\n\t"
      "5:\n\t"
      "lea (%[out],%[ldo],2), %[ci]\n\t"
      "add %[ldo], %[ci]\n\t"
      "vmovdqu32 %%zmm0, 0(%[out])\n\t"
      "vmovdqu32 %%zmm1, 64(%[out])\n\t"
      "vmovdqu32 %%zmm2, 128(%[out])\n\t"
      "vmovdqu32 %%zmm3, 192(%[out])\n\t"
      "vmovdqu32 %%zmm4, 0(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm5, 64(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm6, 128(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm7, 192(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm8, 0(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm9, 64(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm10, 128(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm11, 192(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm12, 0(%[ci])\n\t"
      "vmovdqu32 %%zmm13, 64(%[ci])\n\t"
      "vmovdqu32 %%zmm14, 128(%[ci])\n\t"
      "vmovdqu32 %%zmm15, 192(%[ci])\n\t"
      "vmovdqu32 %%zmm16, 0(%[ci],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm17, 64(%[ci],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm18, 128(%[ci],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm19, 192(%[ci],%[ldo],1)\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci)
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [mask] "r"(mask), [nl] "r"(nl)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
        "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "k1", "memory", "cc");
}

template <>
EO_INLINE void kloop<6>(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl,
                        uint32_t mask, const int32_t* ci, int32_t* out, size_t ldo) {
  const int8_t* a3 = a0 + (3 * lda);
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 128(%[ci]), %%zmm2\n\t"
      "vmovdqa64 192(%[ci]), %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\t"
      "vmovdqa64 %%zmm1, %%zmm5\n\t"
      "vmovdqa64 %%zmm2, %%zmm6\n\t"
      "vmovdqa64 %%zmm3, %%zmm7\n\t"
      "vmovdqa64 %%zmm0, %%zmm8\n\t"
      "vmovdqa64 %%zmm1, %%zmm9\n\t"
      "vmovdqa64 %%zmm2, %%zmm10\n\t"
      "vmovdqa64 %%zmm3, %%zmm11\n\t"
      "vmovdqa64 %%zmm0, %%zmm12\n\t"
      "vmovdqa64 %%zmm1, %%zmm13\n\t"
      "vmovdqa64 %%zmm2, %%zmm14\n\t"
      "vmovdqa64 %%zmm3, %%zmm15\n\t"
      "vmovdqa64 %%zmm0, %%zmm16\n\t"
      "vmovdqa64 %%zmm1, %%zmm17\n\t"
      "vmovdqa64 %%zmm2, %%zmm18\n\t"
      "vmovdqa64 %%zmm3, %%zmm19\n\t"
      "vmovdqa64 %%zmm0, %%zmm20\n\t"
      "vmovdqa64 %%zmm1, %%zmm21\n\t"
      "vmovdqa64 %%zmm2, %%zmm22\n\t"
      "vmovdqa64 %%zmm3, %%zmm23\n\t"
      "mov $0x80808080, %k[ci]\n\t"
      "vpbroadcastd %k[ci], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "vpxord (%[a3],%[lda],1)%{1to16%}, %%zmm29, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm16\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm17\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm18\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm19\n\t"
      "vpxord (%[a3],%[lda],2)%{1to16%}, %%zmm29, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm20\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm21\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm22\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm23\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "kmovw %k[mask], %%k1\n\t"
      "ktestw %%k1, %%k1\n\t"
      "jz 5f\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm30%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm30, %%zmm30\n\t"
      "vpxord %%zmm29, %%zmm30, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm7\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm31%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm31, %%zmm31\n\t"
      "vpxord %%zmm29, %%zmm31, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm11\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "vmovdqu8 (%[a3],%[lda],1), %%xmm30%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm30, %%zmm30\n\t"
      "vpxord %%zmm29, %%zmm30, %%zmm30\n\t"
      "vpdpbusd %%zmm24, %%zmm30, %%zmm16\n\t"
      "vpdpbusd %%zmm25, %%zmm30, %%zmm17\n\t"
      "vpdpbusd %%zmm26, %%zmm30, %%zmm18\n\t"
      "vpdpbusd %%zmm27, %%zmm30, %%zmm19\n\t"
      "vmovdqu8 (%[a3],%[lda],2), %%xmm31%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm31, %%zmm31\n\t"
      "vpxord %%zmm29, %%zmm31, %%zmm31\n\t"
      "vpdpbusd %%zmm24, %%zmm31, %%zmm20\n\t"
      "vpdpbusd %%zmm25, %%zmm31, %%zmm21\n\t"
      "vpdpbusd %%zmm26, %%zmm31, %%zmm22\n\t"
      "vpdpbusd %%zmm27, %%zmm31, %%zmm23\n\t"
      "5:\n\t"
      "lea (%[out],%[ldo],2), %[ci]\n\t"
      "add %[ldo], %[ci]\n\t"
      "vmovdqu32 %%zmm0, 0(%[out])\n\t"
      "vmovdqu32 %%zmm1, 64(%[out])\n\t"
      "vmovdqu32 %%zmm2, 128(%[out])\n\t"
      "vmovdqu32 %%zmm3, 192(%[out])\n\t"
      "vmovdqu32 %%zmm4, 0(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm5, 64(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm6, 128(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm7, 192(%[out],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm8, 0(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm9, 64(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm10, 128(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm11, 192(%[out],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm12, 0(%[ci])\n\t"
      "vmovdqu32 %%zmm13, 64(%[ci])\n\t"
      "vmovdqu32 %%zmm14, 128(%[ci])\n\t"
      "vmovdqu32 %%zmm15, 192(%[ci])\n\t"
      "vmovdqu32 %%zmm16, 0(%[ci],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm17, 64(%[ci],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm18, 128(%[ci],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm19, 192(%[ci],%[ldo],1)\n\t"
      "vmovdqu32 %%zmm20, 0(%[ci],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm21, 64(%[ci],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm22, 128(%[ci],%[ldo],2)\n\t"
      "vmovdqu32 %%zmm23, 192(%[ci],%[ldo],2)\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci)
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [mask] "r"(mask), [nl] "r"(nl)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
        "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "k1", "memory", "cc");
}

struct Epi;
struct KArgs;
// ka: {ci, mask (u32) at 8, ldo at 16, 2^31 (i64) at 24, qmin and qmax (i32) at 32, 36, this
// tile's accumulator buffer at 40}.
EO_INLINE void kloop6e(const int8_t* a0, size_t lda, const uint8_t* w, long n, const KArgs* ka,
                       const int32_t* accp, const Epi* epi, int8_t* outp, long ne) {
  const int8_t* a3 = a0 + 3 * lda;
  long vi, tmp;
  asm volatile(
      "mov 0(%[ka]), %[tmp]\n\t"
      "vmovdqa64 0(%[tmp]), %%zmm0\n\t"
      "vmovdqa64 64(%[tmp]), %%zmm1\n\t"
      "vmovdqa64 128(%[tmp]), %%zmm2\n\t"
      "vmovdqa64 192(%[tmp]), %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\t"
      "vmovdqa64 %%zmm1, %%zmm5\n\t"
      "vmovdqa64 %%zmm2, %%zmm6\n\t"
      "vmovdqa64 %%zmm3, %%zmm7\n\t"
      "vmovdqa64 %%zmm0, %%zmm8\n\t"
      "vmovdqa64 %%zmm1, %%zmm9\n\t"
      "vmovdqa64 %%zmm2, %%zmm10\n\t"
      "vmovdqa64 %%zmm3, %%zmm11\n\t"
      "vmovdqa64 %%zmm0, %%zmm12\n\t"
      "vmovdqa64 %%zmm1, %%zmm13\n\t"
      "vmovdqa64 %%zmm2, %%zmm14\n\t"
      "vmovdqa64 %%zmm3, %%zmm15\n\t"
      "vmovdqa64 %%zmm0, %%zmm16\n\t"
      "vmovdqa64 %%zmm1, %%zmm17\n\t"
      "vmovdqa64 %%zmm2, %%zmm18\n\t"
      "vmovdqa64 %%zmm3, %%zmm19\n\t"
      "vmovdqa64 %%zmm0, %%zmm20\n\t"
      "vmovdqa64 %%zmm1, %%zmm21\n\t"
      "vmovdqa64 %%zmm2, %%zmm22\n\t"
      "vmovdqa64 %%zmm3, %%zmm23\n\t"
      "mov $0x80808080, %k[tmp]\n\t"
      "vpbroadcastd %k[tmp], %%zmm29\n\t"
      "mov $0xAAAA, %k[tmp]\n\t"
      "kmovw %k[tmp], %%k4\n\t"
      "xor %k[vi], %k[vi]\n\t"
      "test %[n], %[n]\n\t"
      "jz 7f\n\t"
      "test %[ne], %[ne]\n\t"
      "jz 1f\n\t"
      ".p2align 5\n\t"
      "8:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm7\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm11\n\t"
      "vmovdqa64 (%[accp]), %%zmm30\n\t"
      "vpsrlq $32, (%[accp]), %%zmm31\n\t"
      "vpmuldq 0(%[epi],%[vi],4), %%zmm30, %%zmm30\n\t"
      "vpmuldq 256(%[epi],%[vi],4), %%zmm31, %%zmm31\n\t"
      "vpmovq2m %%zmm30, %%k2\n\t"
      "vpmovq2m %%zmm31, %%k3\n\t"
      "vpaddq 512(%[epi],%[vi],4), %%zmm30, %%zmm30\n\t"
      "vpaddq 768(%[epi],%[vi],4), %%zmm31, %%zmm31\n\t"
      "vpsubq 24(%[ka])%{1to8%}, %%zmm30, %%zmm30%{%%k2%}\n\t"
      "vpsubq 24(%[ka])%{1to8%}, %%zmm31, %%zmm31%{%%k3%}\n\t"
      "vpsravq 1024(%[epi],%[vi],4), %%zmm30, %%zmm30\n\t"
      "vpsravq 1280(%[epi],%[vi],4), %%zmm31, %%zmm31\n\t"
      "vmovdqa32 %%zmm31, %%zmm30%{%%k4%}\n\t"
      "vpmaxsd 32(%[ka])%{1to16%}, %%zmm30, %%zmm30\n\t"
      "vpminsd 36(%[ka])%{1to16%}, %%zmm30, %%zmm30\n\t"
      "vpmovdb %%zmm30, (%[outp],%[vi],1)\n\t"
      "add $64, %[accp]\n\t"
      "add $16, %[vi]\n\t"
      "cmp $64, %[vi]\n\t"
      "jne 11f\n\t"
      "xor %k[vi], %k[vi]\n\t"
      "add 16(%[ka]), %[outp]\n\t"
      "11:\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "vpxord (%[a3],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm16\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm17\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm18\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm19\n\t"
      "vpxord (%[a3],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm20\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm21\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm22\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm23\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[ne]\n\t"
      "jz 9f\n\t"
      "dec %[n]\n\t"
      "jnz 8b\n\t"
      "jmp 7f\n\t"
      "9:\n\t"
      "dec %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm7\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm11\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "vpxord (%[a3],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm16\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm17\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm18\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm19\n\t"
      "vpxord (%[a3],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm20\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm21\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm22\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm23\n\t"
      "add $256, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "jmp 2f\n\t"
      "7:\n\t"
      "test %[ne], %[ne]\n\t"
      "jz 2f\n\t"
      "10:\n\t"
      "vmovdqa64 (%[accp]), %%zmm30\n\t"
      "vpsrlq $32, (%[accp]), %%zmm31\n\t"
      "vpmuldq 0(%[epi],%[vi],4), %%zmm30, %%zmm30\n\t"
      "vpmuldq 256(%[epi],%[vi],4), %%zmm31, %%zmm31\n\t"
      "vpmovq2m %%zmm30, %%k2\n\t"
      "vpmovq2m %%zmm31, %%k3\n\t"
      "vpaddq 512(%[epi],%[vi],4), %%zmm30, %%zmm30\n\t"
      "vpaddq 768(%[epi],%[vi],4), %%zmm31, %%zmm31\n\t"
      "vpsubq 24(%[ka])%{1to8%}, %%zmm30, %%zmm30%{%%k2%}\n\t"
      "vpsubq 24(%[ka])%{1to8%}, %%zmm31, %%zmm31%{%%k3%}\n\t"
      "vpsravq 1024(%[epi],%[vi],4), %%zmm30, %%zmm30\n\t"
      "vpsravq 1280(%[epi],%[vi],4), %%zmm31, %%zmm31\n\t"
      "vmovdqa32 %%zmm31, %%zmm30%{%%k4%}\n\t"
      "vpmaxsd 32(%[ka])%{1to16%}, %%zmm30, %%zmm30\n\t"
      "vpminsd 36(%[ka])%{1to16%}, %%zmm30, %%zmm30\n\t"
      "vpmovdb %%zmm30, (%[outp],%[vi],1)\n\t"
      "add $64, %[accp]\n\t"
      "add $16, %[vi]\n\t"
      "cmp $64, %[vi]\n\t"
      "jne 12f\n\t"
      "xor %k[vi], %k[vi]\n\t"
      "add 16(%[ka]), %[outp]\n\t"
      "12:\n\t"
      "dec %[ne]\n\t"
      "jnz 10b\n\t"
      "2:\n\t"
      "kmovw 8(%[ka]), %%k1\n\t"
      "ktestw %%k1, %%k1\n\t"
      "jz 5f\n\t"
      "vmovdqa64 0(%[w]), %%zmm24\n\t"
      "vmovdqa64 64(%[w]), %%zmm25\n\t"
      "vmovdqa64 128(%[w]), %%zmm26\n\t"
      "vmovdqa64 192(%[w]), %%zmm27\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm1\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm4\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm5\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm6\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm7\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm8\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm9\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm10\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm11\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm13\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm15\n\t"
      "vmovdqu8 (%[a3],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm16\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm17\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm18\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm19\n\t"
      "vmovdqu8 (%[a3],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm24, %%zmm28, %%zmm20\n\t"
      "vpdpbusd %%zmm25, %%zmm28, %%zmm21\n\t"
      "vpdpbusd %%zmm26, %%zmm28, %%zmm22\n\t"
      "vpdpbusd %%zmm27, %%zmm28, %%zmm23\n\t"
      "5:\n\t"
      "mov 40(%[ka]), %[tmp]\n\t"
      "vmovdqa32 %%zmm0, 0(%[tmp])\n\t"
      "vmovdqa32 %%zmm1, 64(%[tmp])\n\t"
      "vmovdqa32 %%zmm2, 128(%[tmp])\n\t"
      "vmovdqa32 %%zmm3, 192(%[tmp])\n\t"
      "vmovdqa32 %%zmm4, 256(%[tmp])\n\t"
      "vmovdqa32 %%zmm5, 320(%[tmp])\n\t"
      "vmovdqa32 %%zmm6, 384(%[tmp])\n\t"
      "vmovdqa32 %%zmm7, 448(%[tmp])\n\t"
      "vmovdqa32 %%zmm8, 512(%[tmp])\n\t"
      "vmovdqa32 %%zmm9, 576(%[tmp])\n\t"
      "vmovdqa32 %%zmm10, 640(%[tmp])\n\t"
      "vmovdqa32 %%zmm11, 704(%[tmp])\n\t"
      "vmovdqa32 %%zmm12, 768(%[tmp])\n\t"
      "vmovdqa32 %%zmm13, 832(%[tmp])\n\t"
      "vmovdqa32 %%zmm14, 896(%[tmp])\n\t"
      "vmovdqa32 %%zmm15, 960(%[tmp])\n\t"
      "vmovdqa32 %%zmm16, 1024(%[tmp])\n\t"
      "vmovdqa32 %%zmm17, 1088(%[tmp])\n\t"
      "vmovdqa32 %%zmm18, 1152(%[tmp])\n\t"
      "vmovdqa32 %%zmm19, 1216(%[tmp])\n\t"
      "vmovdqa32 %%zmm20, 1280(%[tmp])\n\t"
      "vmovdqa32 %%zmm21, 1344(%[tmp])\n\t"
      "vmovdqa32 %%zmm22, 1408(%[tmp])\n\t"
      "vmovdqa32 %%zmm23, 1472(%[tmp])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [accp] "+r"(accp),
        [outp] "+r"(outp), [ne] "+r"(ne), [vi] "=&r"(vi), [tmp] "=&r"(tmp)
      : [lda] "r"(lda), [ka] "r"(ka), [epi] "r"(epi)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
        "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
        "xmm31", "k1", "k2", "k3", "k4", "memory", "cc");
}

// Rows [0, MR) of one 64-channel panel over all K: out[r][j] = sum + ci[j], stored with
// row stride ldo bytes.
template <int MR>
EO_INLINE void accumulate(int k, const int8_t* a, size_t lda, const uint8_t* w, const int32_t* ci,
                          int32_t* out, size_t ldo) {
  const int full = k / 4;
  const int iters = full / kUnroll[MR];
  const uint32_t tail_mask = (1u << (k % 4)) - 1;
  kloop<MR>(a, lda, w, iters, full - iters * kUnroll[MR], tail_mask, ci, out, ldo);
}

inline __mmask16 col_mask(int cols) {  // cols may be <= 0 or >= 16
  if (cols <= 0) return 0;
  if (cols >= 16) return 0xFFFF;
  return static_cast<__mmask16>((1u << cols) - 1);
}

// Bit-exact vector form of multiply_by_quantized_multiplier (see common/requant.h).
// srdhm(x, m) == (x*m + 2^30) >> 31 (floor) for every pair except INT32_MIN*INT32_MIN, whose
// result 2^31 is the only one that wraps to INT32_MIN: that lane is replaced by INT32_MAX.
// kGeneral = false is the common case (no left shift, no INT32_MIN multiplier in the vector),
// where the left shift and the saturation fix are no-ops and are skipped.
template <bool kGeneral>
EO_INLINE __m512i mbqm(__m512i x, __m512i mult, __m512i left, __m512i right) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i half = _mm512_set1_epi64(int64_t{1} << 30);
  if (kGeneral) x = _mm512_sllv_epi32(x, left);
  __m512i pe = _mm512_mul_epi32(x, mult);
  __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(mult, 32));
  pe = _mm512_srli_epi64(_mm512_add_epi64(pe, half), 31);
  po = _mm512_slli_epi64(_mm512_add_epi64(po, half), 1);
  __m512i q = _mm512_mask_mov_epi32(pe, 0xAAAA, po);
  if (kGeneral) {
    const __m512i int_min = _mm512_set1_epi32(INT32_MIN);
    q = _mm512_mask_mov_epi32(q, _mm512_cmpeq_epi32_mask(q, int_min), _mm512_set1_epi32(INT32_MAX));
  }
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
  const __m512i rem = _mm512_and_si512(q, mask);
  __m512i thr = _mm512_srli_epi32(mask, 1);
  thr = _mm512_mask_add_epi32(thr, _mm512_movepi32_mask(q), thr, one);
  __m512i res = _mm512_srav_epi32(q, right);
  return _mm512_mask_add_epi32(res, _mm512_cmpgt_epi32_mask(rem, thr), res, one);
}

// Fast exact output stage for the usual parameters: shift = -r with r in [1, 23], multiplier !=
// INT32_MIN, |output_zero_point| <= 128. With ab = x * m (|ab| < 2^62), srdhm(x, m) is
// q = floor((ab + 2^30) / 2^31) and rounding_divide_by_pot(q, r) = floor((q + 2^(r-1) - [q < 0])
// / 2^r); nesting the two floor divisions gives ONE 64-bit rounding:
//   v + zp = floor((ab + 2^30 + 2^(30+r) + zp * 2^(31+r) - 2^31 * [q < 0]) / 2^(31+r)).
// [q < 0] is [ab < -2^30]; using [ab < 0] instead changes nothing, because for -2^30 <= ab < 0
// both forms give 0 (q = 0). No int64 overflow: |ab| < 2^62, the constants stay below 2^61 + 2^54.
// Per 16 outputs: 2 vpmuldq, 2 adds, 2 vpmovq2m + 2 masked subs (the [ab < 0] term), 2 vpsravq,
// 1 blend; the zero point rides in the constant. Checked exhaustively on edge values and on 9e7
// random/tie cases against requantize_s8 (tie-heavy power-of-two multipliers included).
struct alignas(64) Epi {
  __m512i me[kNV], mo[kNV];  // multipliers of the even / odd int32 lanes, in the low dwords
  __m512i ke[kNV], ko[kNV];  // 2^30 + 2^(30+r) + zp * 2^(31+r), per 64-bit lane
  __m512i se[kNV], so[kNV];  // 31 + r (even lanes); r - 1 (odd lanes land in the high dword)
  bool fast[kNV];            // all lanes of vector v meet the fast-path conditions
};

struct Panel {
  const uint8_t* w;
  const int32_t* ci;  // column start values [kNR]: 0 (gemm) or bias - za * row_sum(w) (linear)
  int col0;           // first output column of the panel
  int cols;           // valid columns in this panel within [n0, n1)
  const Epi* epi;     // linear only
};

// Output-stage constants shared by all tiles of one call.
struct Stage {
  const QS8Params* p;
  bool vector_ok;   // zero point and clamp bounds small enough for the int32 clamp below
  bool fast_ok;     // |zero point| <= 128 (the fast stage folds it into the rounding constant)
  bool full_range;  // qmin == -128 && qmax == 127: the clamp is vpmovsdb's saturation
  __m512i lo, hi, zp;
  __m512i qlo, qhi;  // qmin, qmax
};

// Fills e for the panel's columns [col0, col0 + cols).
inline void make_epi(const QS8Params& p, const Stage& st, int col0, int cols, Epi* e) {
  const __m512i one = _mm512_set1_epi64(1);
  for (int v = 0; v < kNV; ++v) {
    const __mmask16 cm = col_mask(cols - v * 16);
    e->fast[v] = false;
    if (!cm || !st.fast_ok) continue;
    // Lanes past the columns get shift -1, multiplier 0: harmless and fast-path valid.
    const __m512i mult = _mm512_maskz_loadu_epi32(cm, p.multiplier + col0 + v * 16);
    const __m512i shift =
        _mm512_mask_loadu_epi32(_mm512_set1_epi32(-1), cm, p.shift + col0 + v * 16);
    const __m512i r = _mm512_sub_epi32(_mm512_setzero_si512(), shift);
    const __mmask16 bad = _mm512_cmplt_epi32_mask(r, _mm512_set1_epi32(1)) |
                          _mm512_cmpgt_epi32_mask(r, _mm512_set1_epi32(23)) |
                          _mm512_cmpeq_epi32_mask(mult, _mm512_set1_epi32(INT32_MIN));
    if (bad) continue;
    e->fast[v] = true;
    const __m512i re = _mm512_srai_epi64(_mm512_slli_epi64(r, 32), 32);
    const __m512i ro = _mm512_srai_epi64(r, 32);
    const __m512i zp = _mm512_set1_epi64(p.output_zero_point);
    auto k = [&](__m512i rr) {
      const __m512i half = _mm512_sllv_epi64(one, _mm512_add_epi64(rr, _mm512_set1_epi64(30)));
      const __m512i z = _mm512_mul_epi32(zp, _mm512_sllv_epi64(one, rr));  // zp * 2^r
      return _mm512_add_epi64(_mm512_add_epi64(_mm512_set1_epi64(int64_t{1} << 30), half),
                              _mm512_slli_epi64(z, 31));
    };
    e->me[v] = mult;
    e->mo[v] = _mm512_srli_epi64(mult, 32);
    e->ke[v] = k(re);
    e->ko[v] = k(ro);
    e->se[v] = _mm512_add_epi64(re, _mm512_set1_epi64(31));
    e->so[v] = _mm512_sub_epi64(ro, one);
  }
}

EO_INLINE __m512i fast_rq(__m512i x, const Epi& e, int v, __m512i c31) {
  const __m512i pe = _mm512_mul_epi32(x, e.me[v]);
  const __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), e.mo[v]);
  __m512i te = _mm512_add_epi64(pe, e.ke[v]);
  __m512i to = _mm512_add_epi64(po, e.ko[v]);
  te = _mm512_mask_sub_epi64(te, _mm512_movepi64_mask(pe), te, c31);
  to = _mm512_mask_sub_epi64(to, _mm512_movepi64_mask(po), to, c31);
  te = _mm512_srav_epi64(te, e.se[v]);
  to = _mm512_srav_epi64(to, e.so[v]);
  return _mm512_mask_mov_epi32(te, 0xAAAA, to);  // v + zp, exact in int32
}

// acc[MR][kNR] holds the finished int32 linear accumulators (row and column terms included).
template <int MR>
EO_INLINE void store_s8(const int32_t* acc, const Panel& pn, const Stage& st, int8_t* out,
                        size_t ldo) {
  const QS8Params& p = *st.p;
  if (!st.vector_ok) {  // absurd zero point / bounds: exact scalar stage
    for (int r = 0; r < MR; ++r) {
      for (int j = 0; j < pn.cols; ++j) {
        const int col = pn.col0 + j;
        out[r * ldo + col] = requantize_s8(acc[r * kNR + j], p.multiplier[col], p.shift[col],
                                           p.output_zero_point, p.qmin, p.qmax);
      }
    }
    return;
  }
  const __m512i zero = _mm512_setzero_si512();
  for (int v = 0; v < kNV; ++v) {
    const int cols = pn.cols - v * 16;
    if (cols <= 0) break;
    const __mmask16 cm = col_mask(cols);
    const int col = pn.col0 + v * 16;
    if (pn.epi->fast[v]) {
      const __m512i c31 = _mm512_set1_epi64(int64_t{1} << 31);
      if (st.full_range) {
        for (int r = 0; r < MR; ++r) {
          const __m512i x = fast_rq(_mm512_load_si512(acc + r * kNR + v * 16), *pn.epi, v, c31);
          _mm_mask_storeu_epi8(out + r * ldo + col, cm, _mm512_cvtsepi32_epi8(x));
        }
      } else {
        for (int r = 0; r < MR; ++r) {
          __m512i x = fast_rq(_mm512_load_si512(acc + r * kNR + v * 16), *pn.epi, v, c31);
          x = _mm512_min_epi32(_mm512_max_epi32(x, st.qlo), st.qhi);
          _mm_mask_storeu_epi8(out + r * ldo + col, cm, _mm512_cvtepi32_epi8(x));
        }
      }
      continue;
    }
    const __m512i mult = _mm512_maskz_loadu_epi32(cm, p.multiplier + col);
    const __m512i shift = _mm512_maskz_loadu_epi32(cm, p.shift + col);
    const __m512i left = _mm512_max_epi32(shift, zero);
    const __m512i right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
    const bool general = _mm512_test_epi32_mask(left, left) != 0 ||
                         _mm512_cmpeq_epi32_mask(mult, _mm512_set1_epi32(INT32_MIN)) != 0;
    auto rows = [&](auto general_tag) {
      for (int r = 0; r < MR; ++r) {
        __m512i x = _mm512_load_si512(acc + r * kNR + v * 16);
        x = mbqm<decltype(general_tag)::value>(x, mult, left, right);
        x = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(x, st.lo), st.hi), st.zp);
        _mm_mask_storeu_epi8(out + r * ldo + col, cm, _mm512_cvtepi32_epi8(x));
      }
    };
    if (general) {
      rows(std::true_type());
    } else {
      rows(std::false_type());
    }
  }
}

template <int MR, bool kLinear>
__attribute__((noinline)) void tile(int k, const int8_t* a, size_t lda, const Panel& pn,
                                    const Stage* st, void* out, size_t ldo) {
  if (!kLinear && pn.cols == kNR) {  // whole panel of int32 output: stored straight from registers
    accumulate<MR>(k, a, lda, pn.w, pn.ci, static_cast<int32_t*>(out) + pn.col0, ldo * 4);
    return;
  }
  alignas(64) int32_t acc[MR * kNR];
  accumulate<MR>(k, a, lda, pn.w, pn.ci, acc, kNR * 4);
  if (kLinear) {
    store_s8<MR>(acc, pn, *st, static_cast<int8_t*>(out), ldo);
  } else {
    auto* c = static_cast<int32_t*>(out);
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v * 16 < pn.cols; ++v) {
        _mm512_mask_storeu_epi32(c + r * ldo + pn.col0 + v * 16, col_mask(pn.cols - v * 16),
                                 _mm512_load_si512(acc + r * kNR + v * 16));
      }
    }
  }
}

// Narrow panel (NV = 1 or 2 vectors of 16 columns, group stride NV * 64 bytes): rows [0, MR) over
// all K into acc (row stride kNR), accumulators in registers (MR * NV <= 16 plus NV weights).
// Same arithmetic as kloop: (a ^ 0x80) . w from column start values ci; the partial last group
// reads only the row's k % 4 bytes (zero bytes meet zero-padded weights).
// Narrow panel (NV = 1 or 2 vectors of 16 columns, group stride NV * 64 bytes): rows [0, MR) over
// all K into out (row stride kNR), from column start values ci. Same arithmetic as kloop:
// (a ^ 0x80) . w. Generated by kernels/x86/gen/gen_qs8_narrow_avx512vnni.py (with intrinsics GCC
// copies or spills the accumulators on every iteration): edit the generator, not the asm.
template <int MR, int NV>
void narrow_kloop(const int8_t* a0, size_t lda, const uint8_t* w, long n, uint32_t mask,
                  const int32_t* ci, int32_t* out);
// BEGIN GENERATED NARROW
template <>
EO_INLINE void narrow_kloop<8, 1>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 0(%[ci]), %%zmm1\n\t"
      "vmovdqa64 0(%[ci]), %%zmm2\n\t"
      "vmovdqa64 0(%[ci]), %%zmm3\n\t"
      "vmovdqa64 0(%[ci]), %%zmm4\n\t"
      "vmovdqa64 0(%[ci]), %%zmm5\n\t"
      "vmovdqa64 0(%[ci]), %%zmm6\n\t"
      "vmovdqa64 0(%[ci]), %%zmm7\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm1\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a3],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm4\n\t"
      "vpxord (%[a3],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm5\n\t"
      "vpxord (%[a6])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm6\n\t"
      "vpxord (%[a6],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm7\n\t"
      "add $64, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "add $4, %[a6]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm1\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a3],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm4\n\t"
      "vmovdqu8 (%[a3],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm5\n\t"
      "vmovdqu8 (%[a6]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm6\n\t"
      "vmovdqu8 (%[a6],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm7\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      "vmovdqa64 %%zmm1, 256(%[out])\n\t"
      "vmovdqa64 %%zmm2, 512(%[out])\n\t"
      "vmovdqa64 %%zmm3, 768(%[out])\n\t"
      "vmovdqa64 %%zmm4, 1024(%[out])\n\t"
      "vmovdqa64 %%zmm5, 1280(%[out])\n\t"
      "vmovdqa64 %%zmm6, 1536(%[out])\n\t"
      "vmovdqa64 %%zmm7, 1792(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm20", "xmm28", "xmm29",
        "k1", "memory", "cc");
}

template <>
EO_INLINE void narrow_kloop<4, 1>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 0(%[ci]), %%zmm1\n\t"
      "vmovdqa64 0(%[ci]), %%zmm2\n\t"
      "vmovdqa64 0(%[ci]), %%zmm3\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm1\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm3\n\t"
      "add $64, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm1\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm3\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      "vmovdqa64 %%zmm1, 256(%[out])\n\t"
      "vmovdqa64 %%zmm2, 512(%[out])\n\t"
      "vmovdqa64 %%zmm3, 768(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm20", "xmm28", "xmm29", "k1", "memory", "cc");
}

template <>
EO_INLINE void narrow_kloop<2, 1>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 0(%[ci]), %%zmm1\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm1\n\t"
      "add $64, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm1\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      "vmovdqa64 %%zmm1, 256(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm1", "xmm20", "xmm28", "xmm29", "k1", "memory", "cc");
}

template <>
EO_INLINE void narrow_kloop<1, 1>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "add $64, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm20", "xmm28", "xmm29", "k1", "memory", "cc");
}

template <>
EO_INLINE void narrow_kloop<8, 2>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 0(%[ci]), %%zmm2\n\t"
      "vmovdqa64 64(%[ci]), %%zmm3\n\t"
      "vmovdqa64 0(%[ci]), %%zmm4\n\t"
      "vmovdqa64 64(%[ci]), %%zmm5\n\t"
      "vmovdqa64 0(%[ci]), %%zmm6\n\t"
      "vmovdqa64 64(%[ci]), %%zmm7\n\t"
      "vmovdqa64 0(%[ci]), %%zmm8\n\t"
      "vmovdqa64 64(%[ci]), %%zmm9\n\t"
      "vmovdqa64 0(%[ci]), %%zmm10\n\t"
      "vmovdqa64 64(%[ci]), %%zmm11\n\t"
      "vmovdqa64 0(%[ci]), %%zmm12\n\t"
      "vmovdqa64 64(%[ci]), %%zmm13\n\t"
      "vmovdqa64 0(%[ci]), %%zmm14\n\t"
      "vmovdqa64 64(%[ci]), %%zmm15\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm4\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm5\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm6\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm7\n\t"
      "vpxord (%[a3],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm8\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm9\n\t"
      "vpxord (%[a3],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm10\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm11\n\t"
      "vpxord (%[a6])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm13\n\t"
      "vpxord (%[a6],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm15\n\t"
      "add $128, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "add $4, %[a6]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm4\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm5\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm6\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm7\n\t"
      "vmovdqu8 (%[a3],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm8\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm9\n\t"
      "vmovdqu8 (%[a3],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm10\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm11\n\t"
      "vmovdqu8 (%[a6]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm12\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm13\n\t"
      "vmovdqu8 (%[a6],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm14\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm15\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      "vmovdqa64 %%zmm1, 64(%[out])\n\t"
      "vmovdqa64 %%zmm2, 256(%[out])\n\t"
      "vmovdqa64 %%zmm3, 320(%[out])\n\t"
      "vmovdqa64 %%zmm4, 512(%[out])\n\t"
      "vmovdqa64 %%zmm5, 576(%[out])\n\t"
      "vmovdqa64 %%zmm6, 768(%[out])\n\t"
      "vmovdqa64 %%zmm7, 832(%[out])\n\t"
      "vmovdqa64 %%zmm8, 1024(%[out])\n\t"
      "vmovdqa64 %%zmm9, 1088(%[out])\n\t"
      "vmovdqa64 %%zmm10, 1280(%[out])\n\t"
      "vmovdqa64 %%zmm11, 1344(%[out])\n\t"
      "vmovdqa64 %%zmm12, 1536(%[out])\n\t"
      "vmovdqa64 %%zmm13, 1600(%[out])\n\t"
      "vmovdqa64 %%zmm14, 1792(%[out])\n\t"
      "vmovdqa64 %%zmm15, 1856(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm20", "xmm21", "xmm28", "xmm29", "k1",
        "memory", "cc");
}

template <>
EO_INLINE void narrow_kloop<4, 2>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 0(%[ci]), %%zmm2\n\t"
      "vmovdqa64 64(%[ci]), %%zmm3\n\t"
      "vmovdqa64 0(%[ci]), %%zmm4\n\t"
      "vmovdqa64 64(%[ci]), %%zmm5\n\t"
      "vmovdqa64 0(%[ci]), %%zmm6\n\t"
      "vmovdqa64 64(%[ci]), %%zmm7\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm3\n\t"
      "vpxord (%[a0],%[lda],2)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm4\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm5\n\t"
      "vpxord (%[a3])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm6\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm7\n\t"
      "add $128, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "add $4, %[a3]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm3\n\t"
      "vmovdqu8 (%[a0],%[lda],2), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm4\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm5\n\t"
      "vmovdqu8 (%[a3]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm6\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm7\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      "vmovdqa64 %%zmm1, 64(%[out])\n\t"
      "vmovdqa64 %%zmm2, 256(%[out])\n\t"
      "vmovdqa64 %%zmm3, 320(%[out])\n\t"
      "vmovdqa64 %%zmm4, 512(%[out])\n\t"
      "vmovdqa64 %%zmm5, 576(%[out])\n\t"
      "vmovdqa64 %%zmm6, 768(%[out])\n\t"
      "vmovdqa64 %%zmm7, 832(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm20", "xmm21", "xmm28",
        "xmm29", "k1", "memory", "cc");
}

template <>
EO_INLINE void narrow_kloop<2, 2>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "vmovdqa64 0(%[ci]), %%zmm2\n\t"
      "vmovdqa64 64(%[ci]), %%zmm3\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "vpxord (%[a0],%[lda],1)%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm3\n\t"
      "add $128, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "vmovdqu8 (%[a0],%[lda],1), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm2\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm3\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      "vmovdqa64 %%zmm1, 64(%[out])\n\t"
      "vmovdqa64 %%zmm2, 256(%[out])\n\t"
      "vmovdqa64 %%zmm3, 320(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm20", "xmm21", "xmm28", "xmm29", "k1", "memory", "cc");
}

template <>
EO_INLINE void narrow_kloop<1, 2>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                  uint32_t mask, const int32_t* ci, int32_t* out) {
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
      "vmovdqa64 0(%[ci]), %%zmm0\n\t"
      "vmovdqa64 64(%[ci]), %%zmm1\n\t"
      "mov $0x80808080, %k[t]\n\t"
      "vpbroadcastd %k[t], %%zmm29\n\t"
      "test %[n], %[n]\n\t"
      "jz 2f\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vpxord (%[a0])%{1to16%}, %%zmm29, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "add $128, %[w]\n\t"
      "add $4, %[a0]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %k[mask], %k[mask]\n\t"
      "jz 3f\n\t"
      "kmovd %k[mask], %%k1\n\t"
      "vmovdqa64 0(%[w]), %%zmm20\n\t"
      "vmovdqa64 64(%[w]), %%zmm21\n\t"
      "vmovdqu8 (%[a0]), %%xmm28%{%%k1%}%{z%}\n\t"
      "vpbroadcastd %%xmm28, %%zmm28\n\t"
      "vpxord %%zmm29, %%zmm28, %%zmm28\n\t"
      "vpdpbusd %%zmm20, %%zmm28, %%zmm0\n\t"
      "vpdpbusd %%zmm21, %%zmm28, %%zmm1\n\t"
      "3:\n\t"
      "vmovdqa64 %%zmm0, 0(%[out])\n\t"
      "vmovdqa64 %%zmm1, 64(%[out])\n\t"
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : "xmm0", "xmm1", "xmm20", "xmm21", "xmm28", "xmm29", "k1", "memory", "cc");
}
// END GENERATED NARROW

template <int MR, int NV>
EO_INLINE void narrow_acc(int k, const int8_t* a, size_t lda, const uint8_t* w, const int32_t* ci,
                          int32_t* acc) {
  narrow_kloop<MR, NV>(a, lda, w, k / 4, (1u << (k % 4)) - 1, ci, acc);
}

template <int MR, int NV, bool kLinear>
__attribute__((noinline)) void narrow_tile(int k, const int8_t* a, size_t lda, const Panel& pn,
                                           const Stage* st, void* out, size_t ldo) {
  alignas(64) int32_t acc[MR * kNR];
  narrow_acc<MR, NV>(k, a, lda, pn.w, pn.ci, acc);
  if (kLinear) {
    store_s8<MR>(acc, pn, *st, static_cast<int8_t*>(out), ldo);
  } else {
    auto* c = static_cast<int32_t*>(out);
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v * 16 < pn.cols; ++v) {
        _mm512_mask_storeu_epi32(c + r * ldo + pn.col0 + v * 16, col_mask(pn.cols - v * 16),
                                 _mm512_load_si512(acc + r * kNR + v * 16));
      }
    }
  }
}

// All rows of a narrow panel: tiles of 8 rows, then 4, 2, 1.
template <int NV, bool kLinear>
void narrow_tiles(int m, int k, const int8_t* a, size_t lda, const Panel& pn, const Stage* st,
                  uint8_t* o, size_t ldo, size_t esize) {
  int i = 0;
  for (; i + 8 <= m; i += 8)
    narrow_tile<8, NV, kLinear>(k, a + i * lda, lda, pn, st, o + i * ldo * esize, ldo);
  if (m - i >= 4) {
    narrow_tile<4, NV, kLinear>(k, a + i * lda, lda, pn, st, o + i * ldo * esize, ldo);
    i += 4;
  }
  if (m - i >= 2) {
    narrow_tile<2, NV, kLinear>(k, a + i * lda, lda, pn, st, o + i * ldo * esize, ldo);
    i += 2;
  }
  if (m - i >= 1)
    narrow_tile<1, NV, kLinear>(k, a + i * lda, lda, pn, st, o + i * ldo * esize, ldo);
}

// Fixed arguments of kloop6e (offsets are used by its asm).
struct KArgs {
  const int32_t* ci;  // column start values
  uint32_t mask;      // bytes of the partial last k group
  uint32_t pad;
  int64_t ldo;   // int8 output row stride
  int64_t c31;   // 2^31
  int32_t qmin;  // clamp bounds
  int32_t qmax;
  int32_t* acc;  // this tile's int32 accumulator buffer (row stride kNR)
};
static_assert(offsetof(KArgs, mask) == 8 && offsetof(KArgs, ldo) == 16 &&
                  offsetof(KArgs, c31) == 24 && offsetof(KArgs, qmin) == 32 &&
                  offsetof(KArgs, qmax) == 36 && offsetof(KArgs, acc) == 40,
              "KArgs layout is hard-coded in kloop6e");
static_assert(offsetof(Epi, mo) == 256 && offsetof(Epi, ke) == 512 && offsetof(Epi, ko) == 768 &&
                  offsetof(Epi, se) == 1024 && offsetof(Epi, so) == 1280,
              "Epi layout is hard-coded in kloop6e");

// All whole 6-row tiles of one panel for linear_s8, software-pipelined: the output stage of tile
// t - 1 runs inside the K loop of tile t (kloop6e, one 16-output vector per k group) when the panel
// is whole and every vector takes the fast stage; otherwise after that K loop, where its
// instructions only overlap the K loop's tail in the out-of-order window (measured: the stage then
// costs ~5 cycles per vector, 15% at 256x256x256).
__attribute__((noinline)) void linear_tiles(int tiles, int k, const int8_t* a, size_t lda,
                                            const Panel& pn, const Stage& st, int8_t* out,
                                            size_t ldo) {
  alignas(64) int32_t acc[2][kMR * kNR];
  bool fused = pn.cols == kNR && st.vector_ok;
  for (int v = 0; v < kNV; ++v) fused = fused && pn.epi->fast[v];
  KArgs ka{pn.ci,      (1u << (k % 4)) - 1, 0,      static_cast<int64_t>(ldo), int64_t{1} << 31,
           st.p->qmin, st.p->qmax,          nullptr};
  for (int t = 0; t < tiles; ++t) {
    ka.acc = acc[t & 1];
    int8_t* prev = out + static_cast<size_t>(t - 1) * kMR * ldo + pn.col0;
    kloop6e(a + t * kMR * lda, lda, pn.w, k / 4, &ka, acc[(t - 1) & 1], pn.epi, prev,
            (t > 0 && fused) ? kMR * kNV : 0);
    if (t > 0 && !fused) store_s8<kMR>(acc[(t - 1) & 1], pn, st, out + (t - 1) * kMR * ldo, ldo);
  }
  if (tiles > 0) store_s8<kMR>(acc[(tiles - 1) & 1], pn, st, out + (tiles - 1) * kMR * ldo, ldo);
}

template <bool kLinear>
void run(int m, int k, const int8_t* a, size_t lda, const void* packed, int n0, int n1,
         const QS8Params* p, void* out, size_t ldo) {
  if (m <= 0 || n1 <= n0) return;
  const auto* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  const auto* wsum = reinterpret_cast<const int32_t*>(base + kHeaderBytes);
  const uint8_t* panels =
      base + kHeaderBytes + static_cast<size_t>(h.panels) * kNR * sizeof(int32_t);
  const size_t esize = kLinear ? 1 : 4;
  auto* o = static_cast<uint8_t*>(out);

  Stage st;  // filled below for linear (no zeroing: a rep stos per call showed in profiles)
  st.p = nullptr;
  if (kLinear) {
    st.p = p;
    const int64_t lim = int64_t{1} << 30;
    st.vector_ok = std::abs(int64_t{p->output_zero_point}) <= lim &&
                   std::abs(int64_t{p->qmin}) <= lim && std::abs(int64_t{p->qmax}) <= lim;
    st.lo = _mm512_set1_epi32(p->qmin - p->output_zero_point);
    st.hi = _mm512_set1_epi32(p->qmax - p->output_zero_point);
    st.zp = _mm512_set1_epi32(p->output_zero_point);
    st.fast_ok = st.vector_ok && std::abs(p->output_zero_point) <= 128;
    st.full_range = p->qmin == -128 && p->qmax == 127;
    st.qlo = _mm512_set1_epi32(p->qmin);
    st.qhi = _mm512_set1_epi32(p->qmax);
  }
  alignas(64) int32_t cterm[kNR];
  Epi epi;
  // Panels are visited forward and backward on alternate calls (per thread): with LRU-like
  // replacement a weight set slightly larger than L2 (1024x1024 int8 = 1 MiB on Zen 5's 1 MiB L2)
  // misses on every line when it cycles in the same order, while reversing starts each call on the
  // lines the previous one left in L2. Measured 1x1024x1024: 8.8 -> 7.2 us (6.7 with the prefetch
  // off, see kloop); 1x4096x4096 (L3-bound): -3..5%. Outputs do not depend on the order.
  const int p_first = n0 / kNR, p_end = (n1 + kNR - 1) / kNR;
  static thread_local unsigned call_parity = 0;
  const bool backward = (++call_parity & 1) != 0;
  for (int idx = 0; idx < p_end - p_first; ++idx) {
    const int pi = backward ? p_end - 1 - idx : p_first + idx;
    Panel pn{panels + static_cast<size_t>(pi) * panel_bytes(h.groups), cterm, pi * kNR,
             std::min(kNR, n1 - pi * kNR), &epi};
    // Column start values: bias[n] - (input_zero_point + 128) * row_sum(w)[n] (gemm: zero point
    // and bias 0), wrapping like the reference.
    const __m512i za = _mm512_set1_epi32(kLinear ? p->input_zero_point + 128 : 128);
    for (int v = 0; v < kNV; ++v) {
      const __mmask16 cm = col_mask(pn.cols - v * 16);
      const __m512i ws = _mm512_load_si512(wsum + pi * kNR + v * 16);
      __m512i c = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_mullo_epi32(ws, za));
      if (kLinear && p->bias)
        c = _mm512_add_epi32(c, _mm512_maskz_loadu_epi32(cm, p->bias + pn.col0 + v * 16));
      _mm512_store_si512(cterm + v * 16, c);
    }
    if (kLinear) make_epi(*p, st, pn.col0, pn.cols, &epi);
    const int width = panel_width(h.n, pi);
    if (width == 16) {
      narrow_tiles<1, kLinear>(m, k, a, lda, pn, &st, o, ldo, esize);
      continue;
    }
    if (width == 32) {
      narrow_tiles<2, kLinear>(m, k, a, lda, pn, &st, o, ldo, esize);
      continue;
    }
    int i = 0;
    if (kLinear) {
      const int tiles = m / kMR;
      linear_tiles(tiles, k, a, lda, pn, st, static_cast<int8_t*>(out), ldo);
      i = tiles * kMR;
    }
    for (; i + kMR <= m; i += kMR) {
      tile<kMR, kLinear>(k, a + i * lda, lda, pn, &st, o + i * ldo * esize, ldo);
    }
    const int8_t* ai = a + i * lda;
    uint8_t* oi = o + i * ldo * esize;
    switch (m - i) {
      case 1: tile<1, kLinear>(k, ai, lda, pn, &st, oi, ldo); break;
      case 2: tile<2, kLinear>(k, ai, lda, pn, &st, oi, ldo); break;
      case 3: tile<3, kLinear>(k, ai, lda, pn, &st, oi, ldo); break;
      case 4: tile<4, kLinear>(k, ai, lda, pn, &st, oi, ldo); break;
      case 5: tile<5, kLinear>(k, ai, lda, pn, &st, oi, ldo); break;
      default: break;
    }
  }
}

void gemm_s32(int m, int k, const int8_t* a, size_t lda, const void* packed, int /*n*/, int n0,
              int n1, int32_t* c, size_t ldc) {
  run<false>(m, k, a, lda, packed, n0, n1, nullptr, c, ldc);
}

void linear_s8(int m, int k, const int8_t* a, size_t lda, const void* packed, int /*n*/, int n0,
               int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  run<true>(m, k, a, lda, packed, n0, n1, &p, out, ldo);
}

constexpr QS8GemmUKernel kTable = {
    kAvx512Vnni, "eo_qs8_gemm_minmax_ukernel_6x64c4__avx512vnni", kNR, packed_size, pack, gemm_s32,
    linear_s8,   requant_fp32_rows<requant_fp32_row_avx2>,
};

}  // namespace

const QS8GemmUKernel* qs8_gemm_ukernel__avx512vnni() {
  return &kTable;
}

}  // namespace edgeopt
