// Block-sparse (BSR) fused int8 linear for AArch64 with the Armv8.2 dot product (SDOT).
//
// Native block: 8x4 (8 output channels x 4 consecutive k; 4x4 and 16x4 are native too). A
// row-major 4x4 int8 piece of a block is one SDOT operand (lane j = channel j's 4 weights), and
// the 4 activations of that block column are one 32-bit load replicated to all lanes (LD1R), so a
// stored 8x4 block costs two 16-byte weight loads and, per activation row, one LD1R and two SDOT:
// the work is proportional to the stored blocks. SDOT is exact for any int8 input (-128
// included), so there is a single code path; the input zero point is folded into the bias as
// bias - input_zero_point * row_sum(w), int32 wrapping like the reference.
//
// Other block shapes are re-blocked at pack time into units of KR x 4 (KR = 16, 8 or 4 channels,
// the largest that divides R; 4 for R = 1, 2): a unit is stored when any source block touches it,
// with the source values and zeros elsewhere (exact). R x C with C a multiple of 4 and R a
// multiple of 4 costs exactly the stored blocks; C = 1, 2 or R = 1, 2 cost at most 4x (the union
// of the source patterns inside a unit). Units wholly past K are never stored.
//
// Tiles: 4 activation rows x KR channels (KR / 4 accumulators per row, at most 16 in all); a
// single row alternates two accumulator sets over even / odd units so 2 * KR / 4 SDOT chains hide
// the latency. Rows are processed in blocks of about 16 KB of A (kept in L1) while the groups of
// the requested range stream past; a group's units stay in L1 for all the row tiles of a block.
// The output stage is gemmlowp's exact NEON requantization (SQRDMULH + rounding shift with the
// ties fixup), bit-exact to requant.h.
//
// Packed layout, packer, output stage and row / group driver: qs8_bsr_neon_common.h.
#include <arm_neon.h>

#include <cstring>

#include "arm/qs8_bsr_neon_common.h"

namespace edgeopt {
namespace {

// acc[r][q] += unit (KR x 4 at w) . a[r][o .. o + 3] for MR rows.
template <int KR, int MR>
EO_INLINE void unit(int32x4_t (&acc)[MR][KR / 4], const int8_t* const (&ar)[MR], int32_t o,
                    const int8_t* w) {
  int8x16_t va[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    int32_t x;
    std::memcpy(&x, ar[r] + o, 4);
    va[r] = vreinterpretq_s8_s32(vdupq_n_s32(x));
  }
  EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) {
    const int8x16_t b = vld1q_s8(w + 16 * q);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) acc[r][q] = vdotq_s32(acc[r][q], b, va[r]);
  }
}

// out[r][q] = channels 4q..4q+3 of the group for MR rows (raw sums, no zero point).
template <int KR, int MR>
EO_INLINE void tile(const int8_t* a, size_t lda, int k, const int32_t* offs, const int8_t* w,
                    int nu, int32x4_t (&out)[MR][KR / 4]) {
  constexpr int Q = KR / 4;
  constexpr int S = MR == 1 ? 2 : 1;
  constexpr int kUnit = KR * 4;
  int32x4_t acc[S][MR][Q];
  EO_UNROLL
  for (int s = 0; s < S; ++s) EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < Q; ++q) acc[s][r][q] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  // The last unit may run past K (k % 4 != 0): its activations are copied, never over-read.
  const bool tail = nu > 0 && offs[nu - 1] + 4 > k;
  const int full = nu - (tail ? 1 : 0);
  int u = 0;
  if (S == 2) {
    for (; u + 2 <= full; u += 2) {
      unit<KR, MR>(acc[0], ar, offs[u], w);
      unit<KR, MR>(acc[S - 1], ar, offs[u + 1], w + kUnit);
      w += 2 * kUnit;
    }
  }
  for (; u < full; ++u) {
    unit<KR, MR>(acc[0], ar, offs[u], w);
    w += kUnit;
  }
  if (tail) {
    const int o = offs[full], rem = k - o;
    int8_t buf[MR][4];
    const int8_t* br[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      for (int t = 0; t < 4; ++t) buf[r][t] = t < rem ? ar[r][o + t] : 0;
      br[r] = buf[r];
    }
    unit<KR, MR>(acc[0], br, 0, w);
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < Q; ++q)
    out[r][q] = S == 2 ? vaddq_s32(acc[0][r][q], acc[S - 1][r][q]) : acc[0][r][q];
}

template <int KR>
struct Tile {
  template <int R>
  static EO_INLINE void apply(const int8_t* a, size_t lda, int k, const int32_t* offs,
                              const int8_t* w, int nu, int32x4_t (&out)[R][KR / 4]) {
    tile<KR, R>(a, lda, k, offs, w, nu, out);
  }
};

template <int KR>
void run(int m, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int br0, int br1,
         const QS8Params& p, int8_t* out, size_t ldo) {
  run_groups<KR, 4, Tile<KR>>(m, a, lda, base, h, br0, br1, p, out, ldo);
}

void linear_s8(int m, const int8_t* a, size_t lda, const void* packed, int br0, int br1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  switch (h.kr) {
    case 16: run<16>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
    case 8: run<8>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
    default: run<4>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
  }
}

constexpr QS8BsrUKernel kTable = {kNeonDot, "eo_qs8_bsrgemm_minmax_ukernel_4x8_b8x4__neondot",
                                  supports, packed_size,
                                  pack,     linear_s8};

}  // namespace

const QS8BsrUKernel* qs8_bsr_ukernel__neondot() {
  return &kTable;
}

}  // namespace edgeopt
