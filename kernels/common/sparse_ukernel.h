// Internal contract for the block-sparse (BSR) and codebook kernel families (see ukernel.h for
// the dense ones; the same rules hold: the dispatcher owns threads and calls a table's functions
// on disjoint output ranges; kernels never allocate except thread-local scratch).
#pragma once

#include <cstddef>
#include <cstdint>

#include "edgeopt/gemm.h"
#include "edgeopt/path.h"

namespace edgeopt {

// Block-sparse weights, path-independent form built by the dispatcher from a dense W[N, K]:
// W is cut into R x C blocks (R output channels x C consecutive k); a block is stored when any of
// its values is non-zero. Block row br covers output channels [br*R, min(N, br*R + R)); its
// blocks are col_idx[row_ptr[br] .. row_ptr[br+1]) (ascending), block j covering
// k in [col_idx[j]*C, min(K, col_idx[j]*C + C)). Values are row-major R x C per block,
// zero-padded where the block passes N or K.
struct BsrS8View {
  int n, k, r, c;
  int block_rows;           // ceil(n / r)
  int block_cols;           // ceil(k / c)
  const int32_t* row_ptr;   // [block_rows + 1]
  const int32_t* col_idx;   // [nnz_blocks]
  const int8_t* values;     // [nnz_blocks * r * c]
  const int32_t* row_sums;  // [n], sum_k W[n, k]
};

struct BsrF32View {
  int n, k, r, c;
  int block_rows, block_cols;
  const int32_t* row_ptr;
  const int32_t* col_idx;
  const float* values;
};

// One table per path. A path may serve only some block shapes: `supports(r, c)`.
struct QS8BsrUKernel {
  Path path;
  const char*
      name;  // e.g. eo_qs8_bsrgemm_minmax_ukernel_6x16_b16x4__avx512vnni ("b<R>x<C>" varies)
  bool (*supports)(int r, int c);
  size_t (*packed_size)(const BsrS8View& w);
  void (*pack)(const BsrS8View& w, void* dst);
  // Rows [0, m) of a (lda bytes apart); output channels of block rows [br0, br1); out points at
  // element (0, 0) of the full [M, N] output (ldo bytes apart). Same output stage as linear_s8.
  void (*linear_s8)(int m, const int8_t* a, size_t lda, const void* packed, int br0, int br1,
                    const QS8Params& p, int8_t* out, size_t ldo);
};

struct F32BsrUKernel {
  Path path;
  const char* name;  // eo_f32_bsrgemm_minmax_ukernel_..._b<R>x<C>__<isa>
  bool (*supports)(int r, int c);
  size_t (*packed_size)(const BsrF32View& w);
  void (*pack)(const BsrF32View& w, void* dst);
  void (*linear_f32)(int m, const float* a, size_t lda, const void* packed, int br0, int br1,
                     const F32Params& p, float* out, size_t ldo);
};

// Codebook weights: W[n, k] = table[t(n)][idx[n, k]] with idx in [0, 2^bits), bits in {2, 4},
// t(n) = 0 for one table per layer, n for one table per output channel. int8 tables hold values
// in [-128, 127] (the int8 weights after sharing); row_sums[n] = sum_k W[n, k].
struct CodebookS8View {
  int n, k, bits;
  bool per_channel;
  const uint8_t* idx;       // [N, K], one index per byte (unpacked)
  const int8_t* table;      // [per_channel ? N : 1][1 << bits]
  const int32_t* row_sums;  // [n]
};

struct CodebookF32View {
  int n, k, bits;
  bool per_channel;
  const uint8_t* idx;
  const float* table;  // [per_channel ? N : 1][1 << bits]
};

struct QS8CodebookUKernel {
  Path path;
  const char* name;  // eo_qs8_cbgemm_minmax_ukernel_<MR>x<NR>c<KR>_i<bits>__<isa>
  int nr;            // output-channel granularity of the packed layout
  bool (*supports)(int bits, bool per_channel);
  size_t (*packed_size)(const CodebookS8View& w);
  void (*pack)(const CodebookS8View& w, void* dst);
  // Output channels [n0, n1) (n0 multiple of nr); otherwise as QS8GemmUKernel::linear_s8.
  void (*linear_s8)(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0,
                    int n1, const QS8Params& p, int8_t* out, size_t ldo);
};

struct F32CodebookUKernel {
  Path path;
  const char* name;
  int nr;
  bool (*supports)(int bits, bool per_channel);
  size_t (*packed_size)(const CodebookF32View& w);
  void (*pack)(const CodebookF32View& w, void* dst);
  void (*linear_f32)(int m, int k, const float* a, size_t lda, const void* packed, int n, int n0,
                     int n1, const F32Params& p, float* out, size_t ldo);
};

// Per-ISA getters (nullptr-free: each defined in that ISA's file; see ukernel.h for the rules).
const QS8BsrUKernel* qs8_bsr_ukernel__scalar();
const QS8BsrUKernel* qs8_bsr_ukernel__avx2();
const QS8BsrUKernel* qs8_bsr_ukernel__avx512vnni();
const QS8BsrUKernel* qs8_bsr_ukernel__neon();
const QS8BsrUKernel* qs8_bsr_ukernel__neondot();
const F32BsrUKernel* f32_bsr_ukernel__scalar();
const F32BsrUKernel* f32_bsr_ukernel__avx2();
const F32BsrUKernel* f32_bsr_ukernel__avx512();  // served under kAvx512Vnni
const F32BsrUKernel* f32_bsr_ukernel__neon();
const QS8CodebookUKernel* qs8_codebook_ukernel__scalar();
const QS8CodebookUKernel* qs8_codebook_ukernel__avx2();
const QS8CodebookUKernel* qs8_codebook_ukernel__avx512vnni();
const QS8CodebookUKernel* qs8_codebook_ukernel__neon();
const QS8CodebookUKernel* qs8_codebook_ukernel__neondot();
const F32CodebookUKernel* f32_codebook_ukernel__scalar();
const F32CodebookUKernel* f32_codebook_ukernel__avx2();
const F32CodebookUKernel* f32_codebook_ukernel__avx512();
const F32CodebookUKernel* f32_codebook_ukernel__neon();

// Registry lookups: nullptr where the path's file was not compiled.
const QS8BsrUKernel* qs8_bsr_ukernel(Path p);
const F32BsrUKernel* f32_bsr_ukernel(Path p);
const QS8CodebookUKernel* qs8_codebook_ukernel(Path p);
const F32CodebookUKernel* f32_codebook_ukernel(Path p);

}  // namespace edgeopt
