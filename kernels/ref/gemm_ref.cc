// Reference dense GEMM kernels: the oracle every optimized path is compared against.
#include <cmath>

#include "common/requant.h"
#include "ref/ref.h"

namespace edgeopt {
namespace ref {
namespace {
// The int32 accumulator wraps modulo 2^32 (two's complement), as every SIMD path does; the
// oracle computes exactly in int64 and wraps once, so it never relies on signed overflow.
int32_t wrap_s32(int64_t v) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v)));
}
}  // namespace

void gemm_s8s8s32(int m, int n, int k, const int8_t* a, size_t lda, const int8_t* w, size_t ldw,
                  int32_t* c, size_t ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      int64_t acc = 0;
      for (int kk = 0; kk < k; ++kk) {
        acc += static_cast<int32_t>(a[i * lda + kk]) * static_cast<int32_t>(w[j * ldw + kk]);
      }
      c[i * ldc + j] = wrap_s32(acc);
    }
  }
}

void linear_s8(int m, int n, int k, const int8_t* a, size_t lda, const int8_t* w, size_t ldw,
               const QS8Params& p, int8_t* out, size_t ldo) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      int64_t acc = p.bias ? p.bias[j] : 0;
      for (int kk = 0; kk < k; ++kk) {
        acc += (static_cast<int32_t>(a[i * lda + kk]) - p.input_zero_point) *
               static_cast<int32_t>(w[j * ldw + kk]);
      }
      out[i * ldo + j] = requantize_s8(wrap_s32(acc), p.multiplier[j], p.shift[j],
                                       p.output_zero_point, p.qmin, p.qmax);
    }
  }
}

void linear_s8_fp32(int m, int n, int k, const int8_t* a, size_t lda, const int8_t* w, size_t ldw,
                    const QS8Fp32Params& p, int8_t* out, size_t ldo) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      int64_t acc = p.bias ? p.bias[j] : 0;
      for (int kk = 0; kk < k; ++kk) {
        acc += (static_cast<int32_t>(a[i * lda + kk]) - p.input_zero_point) *
               static_cast<int32_t>(w[j * ldw + kk]);
      }
      // Rounded first, then offset and clamped (the optimized paths clamp the float
      // first; both give the same integer).
      // (In double: a huge scale may give an infinite product.)
      const float v = static_cast<float>(wrap_s32(acc)) * p.scale[p.per_channel ? j : 0];
      double o = static_cast<double>(std::nearbyint(v)) + p.output_zero_point;
      o = o < p.qmin ? p.qmin : o;
      o = o > p.qmax ? p.qmax : o;
      out[i * ldo + j] = static_cast<int8_t>(o);
    }
  }
}

void linear_f32(int m, int n, int k, const float* a, size_t lda, const float* w, size_t ldw,
                const F32Params& p, float* out, size_t ldo) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double acc = p.bias ? p.bias[j] : 0.0;
      for (int kk = 0; kk < k; ++kk) {
        acc += static_cast<double>(a[i * lda + kk]) * static_cast<double>(w[j * ldw + kk]);
      }
      float v = static_cast<float>(acc);
      v = v < p.min ? p.min : v;
      v = v > p.max ? p.max : v;
      out[i * ldo + j] = v;
    }
  }
}

}  // namespace ref
}  // namespace edgeopt
