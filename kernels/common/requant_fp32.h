// XNNPACK's fp32 int8 output stage (format 1.4 FP32 stages): scalar and per-ISA rows.
//
//   out = clamp(rint(float(acc) * scale) + output_zero_point, qmin, qmax)
//
// float(acc) and the product are float32 operations (one IEEE rounding each); rint rounds half to
// even. Clamping the float to [qmin - zp, qmax - zp] before rounding gives the same integer
// (rounding is monotone and the bounds are integers) and keeps every conversion in range. No
// addition follows the multiply before the clamp, so no compiler can contract it into an FMA;
// optimizer/quantize/arithmetic.requantize_fp32 is the oracle, bit for bit on every path.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#include <arm_neon.h>
#endif

namespace edgeopt {
// Internal linkage, as common/requant.h: each ISA file instantiates its own copy.
namespace {

inline int8_t requant_fp32_one(int32_t acc, float scale, int32_t output_zero_point, int32_t qmin,
                               int32_t qmax) {
  const float lo = static_cast<float>(qmin - output_zero_point);
  const float hi = static_cast<float>(qmax - output_zero_point);
  float v = static_cast<float>(acc) * scale;
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  // Default rounding mode (to nearest, ties to even), as rint and XNNPACK's conversions.
  return static_cast<int8_t>(static_cast<int32_t>(std::nearbyint(v)) + output_zero_point);
}

// acc[c] + offset[c] (int32, wrapping; offset may be null) -> int8 for n values; scale[c] per
// channel, or scale[0] for all (`per_channel` false).
inline void requant_fp32_row_scalar(int n, const int32_t* acc, const int32_t* offset,
                                    const float* scale, bool per_channel, int32_t zp, int32_t qmin,
                                    int32_t qmax, int8_t* out) {
  for (int c = 0; c < n; ++c) {
    const uint32_t v =
        static_cast<uint32_t>(acc[c]) + (offset ? static_cast<uint32_t>(offset[c]) : 0u);
    out[c] = requant_fp32_one(static_cast<int32_t>(v), scale[per_channel ? c : 0], zp, qmin, qmax);
  }
}

#if defined(__AVX2__)
// cvtdq2ps / mulps / cvtps2dq under the default MXCSR rounding (nearest even), 8 per step.
inline void requant_fp32_row_avx2(int n, const int32_t* acc, const int32_t* offset,
                                  const float* scale, bool per_channel, int32_t zp, int32_t qmin,
                                  int32_t qmax, int8_t* out) {
  const __m256 vlo = _mm256_set1_ps(static_cast<float>(qmin - zp));
  const __m256 vhi = _mm256_set1_ps(static_cast<float>(qmax - zp));
  const __m256i vzp = _mm256_set1_epi32(zp);
  const __m256 vs0 = _mm256_set1_ps(scale[0]);
  int c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 s = per_channel ? _mm256_loadu_ps(scale + c) : vs0;
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + c));
    if (offset)
      a = _mm256_add_epi32(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(offset + c)));
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), s);
    v = _mm256_min_ps(_mm256_max_ps(v, vlo), vhi);
    const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), vzp);
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + c), _mm_packs_epi16(w16, w16));
  }
  requant_fp32_row_scalar(n - c, acc + c, offset ? offset + c : nullptr,
                          per_channel ? scale + c : scale, per_channel, zp, qmin, qmax, out + c);
}
#endif

#if defined(__ARM_NEON) || defined(__ARM_NEON__)
// 8 per step. AArch64 rounds with vcvtnq (nearest even); ARMv7 NEON has no such conversion and
// adds 1.5 * 2^23 instead (exact for the clamped |v| <= 255: the float's low mantissa bits are
// then round-half-even(v)). ARMv7 NEON flushes denormals: a denormal product rounds to 0 either
// way, so the result is the same.
inline int32x4_t round_fp32_neon(float32x4_t v) {
#if defined(__aarch64__)
  return vcvtnq_s32_f32(v);
#else
  const float32x4_t magic = vdupq_n_f32(12582912.0f);
  return vsubq_s32(vreinterpretq_s32_f32(vaddq_f32(v, magic)), vdupq_n_s32(0x4B400000));
#endif
}

inline void requant_fp32_row_neon(int n, const int32_t* acc, const int32_t* offset,
                                  const float* scale, bool per_channel, int32_t zp, int32_t qmin,
                                  int32_t qmax, int8_t* out) {
  const float32x4_t vlo = vdupq_n_f32(static_cast<float>(qmin - zp));
  const float32x4_t vhi = vdupq_n_f32(static_cast<float>(qmax - zp));
  const int32x4_t vzp = vdupq_n_s32(zp);
  const float32x4_t vs0 = vdupq_n_f32(scale[0]);
  int c = 0;
  for (; c + 8 <= n; c += 8) {
    const float32x4_t s0 = per_channel ? vld1q_f32(scale + c) : vs0;
    const float32x4_t s1 = per_channel ? vld1q_f32(scale + c + 4) : vs0;
    int32x4_t a0 = vld1q_s32(acc + c), a1 = vld1q_s32(acc + c + 4);
    if (offset) {
      a0 = vaddq_s32(a0, vld1q_s32(offset + c));
      a1 = vaddq_s32(a1, vld1q_s32(offset + c + 4));
    }
    float32x4_t v0 = vmulq_f32(vcvtq_f32_s32(a0), s0);
    float32x4_t v1 = vmulq_f32(vcvtq_f32_s32(a1), s1);
    v0 = vminq_f32(vmaxq_f32(v0, vlo), vhi);
    v1 = vminq_f32(vmaxq_f32(v1, vlo), vhi);
    const int32x4_t q0 = vaddq_s32(round_fp32_neon(v0), vzp);
    const int32x4_t q1 = vaddq_s32(round_fp32_neon(v1), vzp);
    const int16x8_t w16 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
    vst1_s8(out + c, vqmovn_s16(w16));
  }
  requant_fp32_row_scalar(n - c, acc + c, offset ? offset + c : nullptr,
                          per_channel ? scale + c : scale, per_channel, zp, qmin, qmax, out + c);
}
#endif

// `rows` rows of n (accumulators ldacc apart, outputs ldo apart) through one row function: the
// entry of the kernel tables (one indirect call per block, the row loop inlined).
template <void (*Row)(int, const int32_t*, const int32_t*, const float*, bool, int32_t, int32_t,
                      int32_t, int8_t*)>
void requant_fp32_rows(int rows, int n, const int32_t* acc, size_t ldacc, const int32_t* offset,
                       const float* scale, bool per_channel, int32_t zp, int32_t qmin, int32_t qmax,
                       int8_t* out, size_t ldo) {
  for (int i = 0; i < rows; ++i)
    Row(n, acc + i * ldacc, offset, scale, per_channel, zp, qmin, qmax, out + i * ldo);
}

}  // namespace
}  // namespace edgeopt
