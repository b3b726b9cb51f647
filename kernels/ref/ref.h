// The oracle: the plainest loops for every kernel family. No tiling, no ISA flags (ruy
// reference_mul).
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgeopt/gemm.h"

namespace edgeopt {
namespace ref {

// c[i,j] = sum_k a[i,k] * w[j,k]
void gemm_s8s8s32(int m, int n, int k, const int8_t* a, size_t lda, const int8_t* w, size_t ldw,
                  int32_t* c, size_t ldc);
// out[i,j] = requantize(sum_k (a[i,k] - za) * w[j,k] + bias[j])
void linear_s8(int m, int n, int k, const int8_t* a, size_t lda, const int8_t* w, size_t ldw,
               const QS8Params& p, int8_t* out, size_t ldo);
// out[i,j] = clamp(rint(float(acc) * scale[j]) + zo, qmin, qmax), acc as linear_s8's (XNNPACK's
// fp32 output stage; float32 product, rint half to even).
void linear_s8_fp32(int m, int n, int k, const int8_t* a, size_t lda, const int8_t* w, size_t ldw,
                    const QS8Fp32Params& p, int8_t* out, size_t ldo);
// out[i,j] = clamp(sum_k a[i,k] * w[j,k] + bias[j], min, max), accumulated in double.
void linear_f32(int m, int n, int k, const float* a, size_t lda, const float* w, size_t ldw,
                const F32Params& p, float* out, size_t ldo);

}  // namespace ref
}  // namespace edgeopt

namespace edgeopt {
struct BsrS8View;
struct CodebookS8View;
namespace ref {

// Block-sparse and codebook twins: the same output stage as linear_s8, looping over the stored
// blocks (resp. decoding each index) in the plainest way.
void linear_s8_bsr(int m, const int8_t* a, size_t lda, const BsrS8View& w, const QS8Params& p,
                   int8_t* out, size_t ldo);
void linear_s8_codebook(int m, const int8_t* a, size_t lda, const CodebookS8View& w,
                        const QS8Params& p, int8_t* out, size_t ldo);

}  // namespace ref
}  // namespace edgeopt
