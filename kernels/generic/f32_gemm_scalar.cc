// Portable scalar fp32 linear path: the fallback on CPUs without SIMD paths.
#include <cstring>

#include "common/ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNr = 4;

size_t packed_size(int n, int k) {
  return sizeof(float) * static_cast<size_t>(n) * k;
}

void pack(const float* w, int n, int k, void* dst) {
  std::memcpy(dst, w, sizeof(float) * static_cast<size_t>(n) * k);
}

inline float clampf(float v, float lo, float hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

void linear_f32(int m, int k, const float* a, size_t lda, const void* packed, int /*n*/, int n0,
                int n1, const F32Params& p, float* out, size_t ldo) {
  const float* w = static_cast<const float*>(packed);
  for (int i = 0; i < m; ++i) {
    const float* ar = a + i * lda;
    for (int j = n0; j < n1; ++j) {
      const float* wr = w + static_cast<size_t>(j) * k;
      // Four partial sums: breaks the add dependency chain; the order is fixed, so results do
      // not depend on how the caller splits rows or columns.
      float s[4] = {0.f, 0.f, 0.f, 0.f};
      int kk = 0;
      for (; kk + 4 <= k; kk += 4) {
        for (int t = 0; t < 4; ++t) s[t] += ar[kk + t] * wr[kk + t];
      }
      for (; kk < k; ++kk) s[0] += ar[kk] * wr[kk];
      float v = (s[0] + s[1]) + (s[2] + s[3]);
      if (p.bias) v += p.bias[j];
      out[i * ldo + j] = clampf(v, p.min, p.max);
    }
  }
}

constexpr F32GemmUKernel kTable = {
    kScalar, "eo_f32_gemm_minmax_ukernel_1x1__scalar", kNr, packed_size, pack, linear_f32};

}  // namespace

const F32GemmUKernel* f32_gemm_ukernel__scalar() {
  return &kTable;
}

}  // namespace edgeopt
