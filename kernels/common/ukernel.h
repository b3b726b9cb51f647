// Internal contract between the dispatcher (kernels/dispatch) and each ISA's kernel files.
//
// Every path provides one table per kernel family. The dispatcher owns threading: it splits the
// output into [n0, n1) column ranges (multiples of `nr`) or row ranges, and calls the table's
// functions once per task; kernels never spawn threads and never allocate except thread-local
// scratch. Tables are built in dispatch/registry.cc (compiled without ISA flags) from functions
// defined in the ISA files, so looking a table up never executes an instruction the CPU lacks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgeopt/gemm.h"
#include "edgeopt/path.h"

namespace edgeopt {

struct QS8GemmUKernel {
  Path path;
  const char* name;  // XNNPACK-style: eo_qs8_gemm_minmax_ukernel_<MR>x<NR>c<KR>__<isa>
  int nr;            // column granularity of the packed layout; thread splits use multiples
  // Bytes needed for the packed form of w[N,K] (int8 row-major), 64-byte aligned by the caller.
  size_t (*packed_size)(int n, int k);
  // Packs w[N,K]. row_sums[n] = sum_k w[n,k] (precomputed by the caller).
  void (*pack)(const int8_t* w, int n, int k, const int32_t* row_sums, void* dst);
  // c[i, j] = sum_k a[i,k] * w[j,k] for i in [0,m), j in [n0,n1); c points at element (0,0).
  void (*gemm_s32)(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0,
                   int n1, int32_t* c, size_t ldc);
  // Fused int8 linear on the same ranges; `out` points at element (0,0).
  void (*linear_s8)(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0,
                    int n1, const QS8Params& p, int8_t* out, size_t ldo);
  // XNNPACK's fp32 output stage on rows x n accumulators acc[i, c] + offset[c] (rows ldacc
  // apart; offset may be null; common/requant_fp32.h): scale[c] per channel, or scale[0] for all
  // when !per_channel; outputs ldo apart. linear_s8_fp32 runs gemm_s32 then this, the bias and
  // zero-point terms as the offset.
  void (*requant_fp32)(int rows, int n, const int32_t* acc, size_t ldacc, const int32_t* offset,
                       const float* scale, bool per_channel, int32_t zp, int32_t qmin, int32_t qmax,
                       int8_t* out, size_t ldo);
};

struct F32GemmUKernel {
  Path path;
  const char* name;  // eo_f32_gemm_minmax_ukernel_<MR>x<NR>__<isa>
  int nr;
  size_t (*packed_size)(int n, int k);
  void (*pack)(const float* w, int n, int k, void* dst);
  void (*linear_f32)(int m, int k, const float* a, size_t lda, const void* packed, int n, int n0,
                     int n1, const F32Params& p, float* out, size_t ldo);
};

// Per-ISA getters, each defined in that ISA's file (kernels/x86, kernels/arm, kernels/dispatch for
// scalar). A getter only returns the address of a constant-initialized table, so calling it runs
// no ISA-specific instruction; the registry calls only getters whose path was compiled in
// (EDGEOPT_HAVE_<ISA> macros set by CMake) and hands them out only when the CPU has the path.
const QS8GemmUKernel* qs8_gemm_ukernel__scalar();
const QS8GemmUKernel* qs8_gemm_ukernel__avx2();
const QS8GemmUKernel* qs8_gemm_ukernel__avx512vnni();
const QS8GemmUKernel* qs8_gemm_ukernel__amx();
const QS8GemmUKernel* qs8_gemm_ukernel__neon();
const QS8GemmUKernel* qs8_gemm_ukernel__neondot();
const F32GemmUKernel* f32_gemm_ukernel__scalar();
const F32GemmUKernel* f32_gemm_ukernel__avx2();    // AVX2 + FMA
const F32GemmUKernel* f32_gemm_ukernel__avx512();  // AVX-512F; served under the kAvx512Vnni path
const F32GemmUKernel* f32_gemm_ukernel__neon();

// Tables, or nullptr where the path was not compiled in (see dispatch/registry.cc).
const QS8GemmUKernel* qs8_gemm_ukernel(Path p);
const F32GemmUKernel* f32_gemm_ukernel(Path p);

}  // namespace edgeopt
