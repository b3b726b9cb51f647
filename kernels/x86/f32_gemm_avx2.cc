// fp32 linear (out = clamp(a . w^T + bias)) for x86 AVX2 + FMA: packed K-major panels, 6x16 tiles.
//
// Tile choice. Weights are packed once into panels of NR = 16 output channels, K-major
// (panel[k][0..16)), so one k step of a panel is two aligned ymm loads. MR = 6 rows x 2 vectors =
// 12 accumulators, plus the two weight vectors and one broadcast register, fills 15 of the 16 ymm
// registers; per k it issues 12 FMAs against 2 loads + 6 broadcast loads, so the FMA pipes bound it
// (the classic 6x16 AVX2 SGEMM tile).
//
// Rows are cut into blocks of at most 6, evenly (M = 16 -> 6 + 5 + 5), so no block is a thin,
// latency-bound tail. A block of MR < 4 rows works on NP = 2 or 4 panels at once so that at least
// 8 independent FMA chains cover the FMA latency; m = 1..3 thus stream the packed weights once at
// memory bandwidth. When there is more than one row block the work is tiled over K (KC <= 512: a
// KC x 16 panel slice is 32 KB and stays in L1 while every row block of the chunk reuses it) and
// over M (MC rows of a stay in L2).
//
// Every output is computed in the same order whatever the shape of the call: acc = bias, then one
// FMA per k in increasing k; a K-block boundary stores and reloads the fp32 partial sum, which is
// exact. Results are therefore bit-identical for any row or column split of the dispatcher.
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/f32_gemm_driver.h"
#include "common/ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNr = 16;      // output channels per packed panel
constexpr int kMaxMr = 6;    // rows per register tile
constexpr int kMaxKc = 512;  // K block (only used when M spans several row blocks)
constexpr int kMc = 144;     // rows of a kept hot in L2 per K block (24 blocks of 6)
// Software prefetch distance along a panel (32 k steps): the hardware prefetchers stop at 4 KB
// page boundaries, and a panel stream crosses one every 64 k steps.
constexpr int kPrefetchBytes = 2048;

// Lane mask (all-ones lanes are loaded/stored) for the 8 columns starting at `col` when the call
// stops at `n1`.
inline __m256i ColMask(int col, int n1) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n1 - col), iota);
}

// One register tile: rows [0, MR) of `a`, NP panels starting at `w` (panel stride `ps` floats),
// k in [0, kc). `first`: start from the bias; else reload the partial sum from `out`.
// `last`: clamp. `col`/`n1` give the store masks; `bias` points at column `col` (or nullptr).
template <int MR, int NP>
void Tile(int kc, const float* a, size_t lda, const float* w, size_t ps, float* out, size_t ldo,
          int col, int n1, const float* bias, bool first, bool last, float vmin, float vmax,
          const float* next) {
  constexpr int NV = 2 * NP;
  // Only the last panel of the call can be partial; full tiles use plain loads and stores.
  const bool partial = n1 - col < NV * 8;

  __m256 acc[MR][NV];
  if (first) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      __m256 b = _mm256_setzero_ps();
      if (bias) {
        b = partial ? _mm256_maskload_ps(bias + 8 * j, ColMask(col + 8 * j, n1))
                    : _mm256_loadu_ps(bias + 8 * j);
      }
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) acc[i][j] = b;
    }
  } else {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        acc[i][j] = partial ? _mm256_maskload_ps(out + i * ldo + 8 * j, ColMask(col + 8 * j, n1))
                            : _mm256_loadu_ps(out + i * ldo + 8 * j);
      }
    }
  }

  const float* ar[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) ar[i] = a + i * lda;

  for (int k = 0; k < kc; ++k) {
    // One 64-byte line per panel per k step.
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) {
      _mm_prefetch(
          reinterpret_cast<const char*>(w + j * ps + static_cast<size_t>(k) * kNr) + kPrefetchBytes,
          _MM_HINT_T0);
    }
    if (next) {
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(next + j * ps + static_cast<size_t>(k) * kNr),
                     _MM_HINT_T1);
      }
    }
    __m256 wv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      wv[j] = _mm256_load_ps(w + (j / 2) * ps + static_cast<size_t>(k) * kNr + 8 * (j % 2));
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(ar[i] + k);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_fmadd_ps(av, wv[j], acc[i][j]);
    }
  }

  if (last) {
    const __m256 lo = _mm256_set1_ps(vmin);
    const __m256 hi = _mm256_set1_ps(vmax);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        // max(lo, x) / min(hi, x) return x when x is NaN, like the reference's compares.
        acc[i][j] = _mm256_min_ps(hi, _mm256_max_ps(lo, acc[i][j]));
      }
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      if (partial) {
        // Masks are rebuilt here rather than kept live across the k loop: with MR = 5 GCC would
        // otherwise spill a weight vector to make room for them.
        _mm256_maskstore_ps(out + i * ldo + 8 * j, ColMask(col + 8 * j, n1), acc[i][j]);
      } else {
        _mm256_storeu_ps(out + i * ldo + 8 * j, acc[i][j]);
      }
    }
  }
}

// Panels worked on at once for a block of MR rows: keeps >= 8 FMA chains and <= 12 accumulators.
constexpr int PanelsFor(int mr) {
  return mr <= 1 ? 4 : (mr <= 3 ? 2 : 1);
}

template <int MR>
constexpr F32RowKernels MakeRow() {
  constexpr int np = PanelsFor(MR);
  constexpr int np2 = np >= 2 ? 2 : 1, np4 = np >= 4 ? 4 : 1;  // valid template arguments
  return {{&Tile<MR, 1>, np >= 2 ? &Tile<MR, np2> : nullptr, np >= 4 ? &Tile<MR, np4> : nullptr},
          np};
}

constexpr F32RowKernels kRows[kMaxMr + 1] = {
    {{nullptr, nullptr, nullptr}, 0},
    MakeRow<1>(),
    MakeRow<2>(),
    MakeRow<3>(),
    MakeRow<4>(),
    MakeRow<5>(),
    MakeRow<6>(),
};

void LinearF32(int m, int k, const float* a, size_t lda, const void* packed, int /*n*/, int n0,
               int n1, const F32Params& p, float* out, size_t ldo) {
  f32_gemm_linear<kNr, kMaxMr, kMaxKc, kMc>(kRows, m, k, a, lda, packed, n0, n1, p, out, ldo);
}

constexpr F32GemmUKernel kTable = {
    kAvx2,
    "eo_f32_gemm_minmax_ukernel_6x16__avx2",
    kNr,
    &f32_gemm_packed_size<kNr>,
    &f32_gemm_pack<kNr>,
    &LinearF32,
};

}  // namespace

const F32GemmUKernel* f32_gemm_ukernel__avx2() {
  return &kTable;
}

}  // namespace edgeopt
