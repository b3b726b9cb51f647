// Shared parts of the NEON int8 panel kernels (qs8_gemm_neon*.cc, qs8_codebook_neon*.cc): the
// exact per-panel output stage (gemmlowp's vector requantization, bit-exact to requant.h), the
// SMULL/SADALP multiply-accumulate of the kernels without dot product, and small helpers.
//
// Included by files compiled with different -march flags: everything has internal linkage.
#pragma once

#include <arm_neon.h>

#include <cstdint>

#include "edgeopt/gemm.h"

// Small constant loops over registers must be unrolled so accumulator arrays live in registers.
#ifndef EO_UNROLL
#define EO_UNROLL _Pragma("GCC unroll 16")
#endif
#ifndef EO_INLINE
#define EO_INLINE inline __attribute__((always_inline))
#endif

namespace edgeopt {
namespace {

// Copies the first n (< N) elements with plain loads and stores: a library call here would
// force the live accumulator registers to be spilled around it.
template <int N, typename T>
EO_INLINE void copy_prefix(T* dst, const T* src, int n) {
  for (int j = 0; j < N; ++j) {
    if (j < n) dst[j] = src[j];
  }
}

// acc += the 16 products of a and b, pairwise in int32 lanes. kExact2: the int16 sum of two
// products cannot overflow (no -128 * -128), so SMLAL adds the second half before one SADALP.
template <bool kExact2>
EO_INLINE int32x4_t mac16(int32x4_t acc, int8x16_t a, int8x16_t b) {
  if (kExact2) {
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
#if defined(__aarch64__)
    p = vmlal_high_s8(p, a, b);
#else
    p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b));
#endif
    return vpadalq_s16(acc, p);
  } else {
    const int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
#if defined(__aarch64__)
    const int16x8_t p1 = vmull_high_s8(a, b);
#else
    const int16x8_t p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
#endif
    acc = vpadalq_s16(acc, p0);
    return vpadalq_s16(acc, p1);
  }
}

// Horizontal sums of four accumulators -> one vector {sum(x0), sum(x1), sum(x2), sum(x3)}.
EO_INLINE int32x4_t reduce4(int32x4_t x0, int32x4_t x1, int32x4_t x2, int32x4_t x3) {
#if defined(__aarch64__)
  return vpaddq_s32(vpaddq_s32(x0, x1), vpaddq_s32(x2, x3));
#else
  const int32x2_t s0 = vadd_s32(vget_low_s32(x0), vget_high_s32(x0));
  const int32x2_t s1 = vadd_s32(vget_low_s32(x1), vget_high_s32(x1));
  const int32x2_t s2 = vadd_s32(vget_low_s32(x2), vget_high_s32(x2));
  const int32x2_t s3 = vadd_s32(vget_low_s32(x3), vget_high_s32(x3));
  return vcombine_s32(vpadd_s32(s0, s1), vpadd_s32(s2, s3));
#endif
}

// Per-panel output-stage constants of kNR channels, laid out for vector loads.
template <int kNR>
struct PanelEpilogue {
  int32_t bias[kNR];  // bias - input_zero_point * row_sum (mod 2^32)
  int32_t mult[kNR];
  int32_t lshift[kNR];  // max(shift, 0)
  int32_t rshift[kNR];  // -max(-shift, 0): a negative count for SRSHL
};

// Constants of channels [j0, j0 + nc) (zero past nc); sums = row_sum(w).
template <int kNR>
EO_INLINE void make_panel_epilogue(PanelEpilogue<kNR>& e, int j0, int nc, const int32_t* sums,
                                   const QS8Params& p) {
  const uint32_t za = static_cast<uint32_t>(p.input_zero_point);
  for (int j = 0; j < kNR; ++j) {
    if (j < nc) {
      const int col = j0 + j;
      const uint32_t b = p.bias ? static_cast<uint32_t>(p.bias[col]) : 0u;
      e.bias[j] = static_cast<int32_t>(b - za * static_cast<uint32_t>(sums[col]));
      e.mult[j] = p.multiplier[col];
      e.lshift[j] = p.shift[col] > 0 ? p.shift[col] : 0;
      e.rshift[j] = p.shift[col] > 0 ? 0 : p.shift[col];
    } else {
      e.bias[j] = e.mult[j] = e.lshift[j] = e.rshift[j] = 0;
    }
  }
}

// gemmlowp's exact vector MultiplyByQuantizedMultiplier (SQRDMULH = SaturatingRoundingDoubling-
// HighMul; AND/SSHR/SQADD + SRSHL = RoundingDivideByPOT with ties away from zero), then zero
// point and clamp, for channels 4q..4q+3 of the panel.
template <int kNR>
EO_INLINE int32x4_t requant4(int32x4_t x, const PanelEpilogue<kNR>& e, int q, int32x4_t vzp,
                             int32x4_t vmin, int32x4_t vmax) {
  const int32x4_t vr = vld1q_s32(e.rshift + 4 * q);
  int32x4_t v = vaddq_s32(x, vld1q_s32(e.bias + 4 * q));
  v = vshlq_s32(v, vld1q_s32(e.lshift + 4 * q));
  v = vqrdmulhq_s32(v, vld1q_s32(e.mult + 4 * q));
  v = vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, vr), 31));
  v = vrshlq_s32(v, vr);
  v = vqaddq_s32(v, vzp);
  v = vmaxq_s32(v, vmin);
  return vminq_s32(v, vmax);
}

// Requantizes one output row of an 8-channel panel and stores its first nc channels.
EO_INLINE void store_panel_row(const int32x4_t (&acc)[2], const PanelEpilogue<8>& e, int32x4_t vzp,
                               int32x4_t vmin, int32x4_t vmax, int nc, int8_t* dst) {
  const int32x4_t v0 = requant4(acc[0], e, 0, vzp, vmin, vmax);
  const int32x4_t v1 = requant4(acc[1], e, 1, vzp, vmin, vmax);
  // Truncating narrows: the values are clamped, so this equals the scalar static_cast.
  const int8x8_t b = vmovn_s16(vcombine_s16(vmovn_s32(v0), vmovn_s32(v1)));
  if (nc == 8) {
    vst1_s8(dst, b);
  } else {
    int8_t tmp[8];
    vst1_s8(tmp, b);
    copy_prefix<8>(dst, tmp, nc);
  }
}

#if defined(__aarch64__)
// Requantizes one output row of a 16-channel panel and stores its first nc channels.
EO_INLINE void store_panel_row(const int32x4_t (&acc)[4], const PanelEpilogue<16>& e, int32x4_t vzp,
                               int32x4_t vmin, int32x4_t vmax, int nc, int8_t* dst) {
  const int32x4_t v0 = requant4(acc[0], e, 0, vzp, vmin, vmax);
  const int32x4_t v1 = requant4(acc[1], e, 1, vzp, vmin, vmax);
  const int32x4_t v2 = requant4(acc[2], e, 2, vzp, vmin, vmax);
  const int32x4_t v3 = requant4(acc[3], e, 3, vzp, vmin, vmax);
  // Truncating narrows: the values are clamped, so this equals the scalar static_cast.
  const int16x8_t lo = vmovn_high_s32(vmovn_s32(v0), v1);
  const int16x8_t hi = vmovn_high_s32(vmovn_s32(v2), v3);
  const int8x16_t b = vmovn_high_s16(vmovn_s16(lo), hi);
  if (nc == 16) {
    vst1q_s8(dst, b);
  } else {
    int8_t tmp[16];
    vst1q_s8(tmp, b);
    copy_prefix<16>(dst, tmp, nc);
  }
}
#endif

}  // namespace
}  // namespace edgeopt
