// Block-sparse (BSR) fused int8 linear for NEON without dot product (AArch64 and ARMv7).
//
// Native block: 8x4 (8 output channels x 4 consecutive k; 4x4 and 16x4 are native too), the same
// packed units as the SDOT kernel. A 4x4 piece of a block is one 16-byte register; the 4
// activations of the block column are one 32-bit load replicated to all lanes, so SMULL (low
// half: channels 0, 1) and SMULL2 (high half: channels 2, 3) give the 16 products and SADALP
// folds them pairwise into int32 lanes (channel, k 0+1 | k 2+3), reduced once per group at the
// end. Two stored units are combined per SADALP with SMLAL (XNNPACK's "c8 mlal" trick: 2 x 16
// products for 4 + 2 instructions): weights in [-127, 127] keep the sum of two products inside
// int16 (|sum| <= 32512). When the pack saw a -128 weight, a (-128) * (-128) pair could reach
// 32768, so the kernel then takes the exact single-product path (SMULL + SADALP per unit). The
// input zero point is folded into the bias as bias - input_zero_point * row_sum(w).
//
// Other block shapes are re-blocked at pack time into units of KR x 4 (KR = 16, 8 or 4 channels,
// the largest that divides R; 4 for R = 1, 2): a unit is stored when any source block touches it,
// with the source values and zeros elsewhere (exact). R and C multiples of 4 cost exactly the
// stored blocks; C = 1, 2 or R = 1, 2 cost at most 4x. Units wholly past K are never stored.
//
// Tiles: MR rows x KR channels with 2 * KR / 4 int32x4 accumulators per row: AArch64 (32
// registers) keeps 16 accumulators (4 rows for KR = 4, 8; 2 rows for KR = 16), ARMv7 (16 quad
// registers) 8 (4, 2, 1 rows). Rows are processed in blocks of about 16 KB of A (kept in L1)
// while the groups of the requested range stream past. The output stage is gemmlowp's exact NEON
// requantization (SQRDMULH + rounding shift with the ties fixup), bit-exact to requant.h.
//
// Packed layout, packer, output stage and row / group driver: qs8_bsr_neon_common.h.
#include <arm_neon.h>

#include <cstring>

#include "arm/qs8_bsr_neon_common.h"

namespace edgeopt {
namespace {

// 16 products of a 4x4 weight piece w and the replicated activations va into the two pair
// accumulators (channels 0, 1 and 2, 3).
EO_INLINE void mac1(int32x4_t& lo, int32x4_t& hi, int8x16_t w, int8x16_t va) {
  lo = vpadalq_s16(lo, vmull_s8(vget_low_s8(w), vget_low_s8(va)));
#if defined(__aarch64__)
  hi = vpadalq_s16(hi, vmull_high_s8(w, va));
#else
  hi = vpadalq_s16(hi, vmull_s8(vget_high_s8(w), vget_high_s8(va)));
#endif
}
// Two units at once, products summed in int16 (exact for weights in [-127, 127]).
EO_INLINE void mac2(int32x4_t& lo, int32x4_t& hi, int8x16_t w0, int8x16_t va0, int8x16_t w1,
                    int8x16_t va1) {
  int16x8_t p0 = vmull_s8(vget_low_s8(w0), vget_low_s8(va0));
  p0 = vmlal_s8(p0, vget_low_s8(w1), vget_low_s8(va1));
#if defined(__aarch64__)
  int16x8_t p1 = vmull_high_s8(w0, va0);
  p1 = vmlal_high_s8(p1, w1, va1);
#else
  int16x8_t p1 = vmull_s8(vget_high_s8(w0), vget_high_s8(va0));
  p1 = vmlal_s8(p1, vget_high_s8(w1), vget_high_s8(va1));
#endif
  lo = vpadalq_s16(lo, p0);
  hi = vpadalq_s16(hi, p1);
}

template <int MR>
EO_INLINE void load_act(int8x16_t (&va)[MR], const int8_t* const (&ar)[MR], int32_t o) {
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    int32_t x;
    std::memcpy(&x, ar[r] + o, 4);
    va[r] = vreinterpretq_s8_s32(vdupq_n_s32(x));
  }
}

// acc[r][2q], acc[r][2q + 1] += unit (KR x 4 at w) . a[r][o .. o + 3] for MR rows.
template <int KR, int MR>
EO_INLINE void unit1(int32x4_t (&acc)[MR][KR / 2], const int8_t* const (&ar)[MR], int32_t o,
                     const int8_t* w) {
  int8x16_t va[MR];
  load_act<MR>(va, ar, o);
  EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) {
    const int8x16_t b = vld1q_s8(w + 16 * q);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) mac1(acc[r][2 * q], acc[r][2 * q + 1], b, va[r]);
  }
}

template <int KR, int MR>
EO_INLINE void unit2(int32x4_t (&acc)[MR][KR / 2], const int8_t* const (&ar)[MR], int32_t o0,
                     int32_t o1, const int8_t* w) {
  int8x16_t va0[MR], va1[MR];
  load_act<MR>(va0, ar, o0);
  load_act<MR>(va1, ar, o1);
  EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) {
    const int8x16_t b0 = vld1q_s8(w + 16 * q);
    const int8x16_t b1 = vld1q_s8(w + KR * 4 + 16 * q);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) mac2(acc[r][2 * q], acc[r][2 * q + 1], b0, va0[r], b1, va1[r]);
  }
}

inline int32x4_t pair_sum(int32x4_t x, int32x4_t y) {
#if defined(__aarch64__)
  return vpaddq_s32(x, y);
#else
  return vcombine_s32(vpadd_s32(vget_low_s32(x), vget_high_s32(x)),
                      vpadd_s32(vget_low_s32(y), vget_high_s32(y)));
#endif
}

// out[r][q] = channels 4q..4q+3 of the group for MR rows (raw sums, no zero point).
template <int KR, int MR, bool kPair>
EO_INLINE void tile(const int8_t* a, size_t lda, int k, const int32_t* offs, const int8_t* w,
                    int nu, int32x4_t (&out)[MR][KR / 4]) {
  constexpr int kUnit = KR * 4;
  int32x4_t acc[MR][KR / 2];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < KR / 2; ++q) acc[r][q] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  // The last unit may run past K (k % 4 != 0): its activations are copied, never over-read.
  const bool tail = nu > 0 && offs[nu - 1] + 4 > k;
  const int full = nu - (tail ? 1 : 0);
  int u = 0;
  if (kPair) {
    for (; u + 2 <= full; u += 2) {
      unit2<KR, MR>(acc, ar, offs[u], offs[u + 1], w);
      w += 2 * kUnit;
    }
  }
  for (; u < full; ++u) {
    unit1<KR, MR>(acc, ar, offs[u], w);
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
    unit1<KR, MR>(acc, br, 0, w);
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) out[r][q] = pair_sum(acc[r][2 * q], acc[r][2 * q + 1]);
}

#if defined(__aarch64__)
constexpr int kMaxAcc = 16;
#else
constexpr int kMaxAcc = 8;
#endif

template <int KR, bool kPair>
struct Tile {
  template <int R>
  static EO_INLINE void apply(const int8_t* a, size_t lda, int k, const int32_t* offs,
                              const int8_t* w, int nu, int32x4_t (&out)[R][KR / 4]) {
    tile<KR, R, kPair>(a, lda, k, offs, w, nu, out);
  }
};

template <int KR, bool kPair>
void run(int m, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int br0, int br1,
         const QS8Params& p, int8_t* out, size_t ldo) {
  constexpr int MR = kMaxAcc / (KR / 2) < 4 ? kMaxAcc / (KR / 2) : 4;
  run_groups<KR, MR, Tile<KR, kPair>>(m, a, lda, base, h, br0, br1, p, out, ldo);
}

void linear_s8(int m, const int8_t* a, size_t lda, const void* packed, int br0, int br1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  const bool pair = !h.has_min8;
  switch (h.kr) {
    case 16:
      pair ? run<16, true>(m, a, lda, base, h, br0, br1, p, out, ldo)
           : run<16, false>(m, a, lda, base, h, br0, br1, p, out, ldo);
      break;
    case 8:
      pair ? run<8, true>(m, a, lda, base, h, br0, br1, p, out, ldo)
           : run<8, false>(m, a, lda, base, h, br0, br1, p, out, ldo);
      break;
    default:
      pair ? run<4, true>(m, a, lda, base, h, br0, br1, p, out, ldo)
           : run<4, false>(m, a, lda, base, h, br0, br1, p, out, ldo);
      break;
  }
}

constexpr QS8BsrUKernel kTable = {
    kNeon, "eo_qs8_bsrgemm_minmax_ukernel_4x8_b8x4__neon", supports, packed_size, pack, linear_s8};

}  // namespace

const QS8BsrUKernel* qs8_bsr_ukernel__neon() {
  return &kTable;
}

}  // namespace edgeopt
