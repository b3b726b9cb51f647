// Portable scalar int8 GEMM path: the fallback on CPUs without SIMD paths (and a second oracle).
//
// Weights are kept row-major (one output channel's K values contiguous) and four output channels
// are accumulated together, which is all a scalar core can use; no ISA-specific code.
#include <cstring>

#include "common/requant.h"
#include "common/requant_fp32.h"
#include "common/ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNr = 4;

size_t packed_size(int n, int k) {
  return static_cast<size_t>(n) * k + sizeof(int32_t) * n;
}

// Layout: w[N,K] row-major, then row sums int32[N].
void pack(const int8_t* w, int n, int k, const int32_t* row_sums, void* dst) {
  std::memcpy(dst, w, static_cast<size_t>(n) * k);
  std::memcpy(static_cast<uint8_t*>(dst) + static_cast<size_t>(n) * k, row_sums,
              sizeof(int32_t) * n);
}

inline uint32_t dot(const int8_t* a, const int8_t* w, int k) {
  uint32_t acc = 0;
  for (int kk = 0; kk < k; ++kk) acc += static_cast<uint32_t>(static_cast<int32_t>(a[kk]) * w[kk]);
  return acc;
}

// Accumulates four channels at once; int32 math is exact here because |a*w| <= 2^14 and the
// sum over K of such products is reduced modulo 2^32 through uint32 (wrapping, like the SIMD
// paths).
inline void dot4(const int8_t* a, const int8_t* w, size_t ldw, int k, uint32_t acc[4]) {
  uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int kk = 0; kk < k; ++kk) {
    const int32_t av = a[kk];
    s0 += static_cast<uint32_t>(av * w[kk]);
    s1 += static_cast<uint32_t>(av * w[ldw + kk]);
    s2 += static_cast<uint32_t>(av * w[2 * ldw + kk]);
    s3 += static_cast<uint32_t>(av * w[3 * ldw + kk]);
  }
  acc[0] = s0;
  acc[1] = s1;
  acc[2] = s2;
  acc[3] = s3;
}

template <typename Store>
void gemm_loop(int m, int k, const int8_t* a, size_t lda, const int8_t* w, int n0, int n1,
               Store store) {
  for (int i = 0; i < m; ++i) {
    const int8_t* ar = a + i * lda;
    int j = n0;
    for (; j + kNr <= n1; j += kNr) {
      uint32_t acc[4];
      dot4(ar, w + static_cast<size_t>(j) * k, k, k, acc);
      for (int t = 0; t < 4; ++t) store(i, j + t, acc[t]);
    }
    for (; j < n1; ++j) store(i, j, dot(ar, w + static_cast<size_t>(j) * k, k));
  }
}

void gemm_s32(int m, int k, const int8_t* a, size_t lda, const void* packed, int /*n*/, int n0,
              int n1, int32_t* c, size_t ldc) {
  const int8_t* w = static_cast<const int8_t*>(packed);
  gemm_loop(m, k, a, lda, w, n0, n1,
            [&](int i, int j, uint32_t acc) { c[i * ldc + j] = static_cast<int32_t>(acc); });
}

void linear_s8(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0, int n1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const int8_t* w = static_cast<const int8_t*>(packed);
  const int32_t* row_sums = reinterpret_cast<const int32_t*>(static_cast<const uint8_t*>(packed) +
                                                             static_cast<size_t>(n) * k);
  gemm_loop(m, k, a, lda, w, n0, n1, [&](int i, int j, uint32_t acc) {
    // sum((a - za) * w) + bias = sum(a * w) - za * row_sum + bias, modulo 2^32.
    uint32_t v =
        acc - static_cast<uint32_t>(p.input_zero_point) * static_cast<uint32_t>(row_sums[j]);
    if (p.bias) v += static_cast<uint32_t>(p.bias[j]);
    out[i * ldo + j] = requantize_s8(static_cast<int32_t>(v), p.multiplier[j], p.shift[j],
                                     p.output_zero_point, p.qmin, p.qmax);
  });
}

constexpr QS8GemmUKernel kTable = {
    kScalar,   "eo_qs8_gemm_minmax_ukernel_1x4__scalar",  kNr, packed_size, pack, gemm_s32,
    linear_s8, requant_fp32_rows<requant_fp32_row_scalar>};

}  // namespace

const QS8GemmUKernel* qs8_gemm_ukernel__scalar() {
  return &kTable;
}

}  // namespace edgeopt
