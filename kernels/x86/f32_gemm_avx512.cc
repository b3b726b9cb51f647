// fp32 linear (out = clamp(a . w^T + bias)) for x86 AVX-512F: packed K-major panels, 12x32 tiles.
//
// Tile choice. Weights are packed once into panels of NR = 32 output channels, K-major
// (panel[k][0..32)), so one k step of a panel is two aligned zmm loads and every a[m,k] is an
// embedded-broadcast operand of the FMA. MR = 12 rows x 2 vectors = 24 accumulators, plus the two
// weight vectors, fits the 32 zmm registers; per k it issues 24 FMAs against 2 + 12 loads, so the
// two FMA pipes (not the load ports) bound it. NR = 32 (not 48) divides every usual channel count
// (64, 768, 1024, ...) so there is no column tail on common layers.
//
// Rows are cut into blocks of at most 12, evenly (M = 16 -> 8 + 8, M = 64 -> 6 blocks of 10 or 11)
// so no block is a thin, latency-bound tail. A block of MR < 7 rows works on NP = 2 or 4 panels at
// once so that at least 8 independent FMA chains cover the 4-cycle FMA latency; m = 1..4 thus
// stream the packed weights once at memory bandwidth. When there is more than one row block the
// work is tiled over K (KC <= 512: a KC x 32 panel slice is 64 KB and stays in L1/L2 while every
// row block of the chunk reuses it) and over M (MC rows of a stay in L2).
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

constexpr int kNr = 32;      // output channels per packed panel
constexpr int kMaxMr = 12;   // rows per register tile
constexpr int kMaxKc = 512;  // K block (only used when M spans several row blocks)
constexpr int kMc = 144;     // rows of a kept hot in L2 per K block (12 blocks of 12)
// Software prefetch distance along a panel (16 k steps): the hardware prefetchers stop at 4 KB
// page boundaries, and a panel stream crosses one every 32 k steps.
constexpr int kPrefetchBytes = 2048;

// Column masks of the 2*NP vectors starting at column `col` when the call stops at `n1`.
inline __mmask16 ColMask(int col, int n1) {
  const int valid = n1 - col;
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

// One register tile: rows [0, MR) of `a`, NP panels starting at `w` (panel stride `ps` floats),
// k in [0, kc). `first`: start from the bias; else reload the partial sum from `out`.
// `last`: clamp. `col`/`n1` give the store masks; `bias` points at column `col` (or nullptr).
template <int MR, int NP>
void Tile(int kc, const float* a, size_t lda, const float* w, size_t ps, float* out, size_t ldo,
          int col, int n1, const float* bias, bool first, bool last, float vmin, float vmax,
          const float* next) {
  constexpr int NV = 2 * NP;
  __mmask16 mask[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) mask[j] = ColMask(col + 16 * j, n1);

  __m512 acc[MR][NV];
  if (first) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      const __m512 b = bias ? _mm512_maskz_loadu_ps(mask[j], bias + 16 * j) : _mm512_setzero_ps();
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) acc[i][j] = b;
    }
  } else {
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        acc[i][j] = _mm512_maskz_loadu_ps(mask[j], out + i * ldo + 16 * j);
      }
    }
  }

  const float* ar[MR];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) ar[i] = a + i * lda;

  for (int k = 0; k < kc; ++k) {
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
      const char* pf =
          reinterpret_cast<const char*>(w + j * ps + static_cast<size_t>(k) * kNr) + kPrefetchBytes;
      _mm_prefetch(pf, _MM_HINT_T0);
      _mm_prefetch(pf + 64, _MM_HINT_T0);
    }
    if (next) {
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j) {
        const char* pf =
            reinterpret_cast<const char*>(next + j * ps + static_cast<size_t>(k) * kNr);
        _mm_prefetch(pf, _MM_HINT_T1);
        _mm_prefetch(pf + 64, _MM_HINT_T1);
      }
    }
    __m512 wv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      wv[j] = _mm512_load_ps(w + (j / 2) * ps + static_cast<size_t>(k) * kNr + 16 * (j % 2));
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(ar[i][k]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(av, wv[j], acc[i][j]);
    }
  }

  if (last) {
    const __m512 lo = _mm512_set1_ps(vmin);
    const __m512 hi = _mm512_set1_ps(vmax);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        // max(lo, x) / min(hi, x) return x when x is NaN, like the reference's compares. (The
        // maskz forms with a full mask avoid GCC 12's false -Wmaybe-uninitialized on the plain
        // intrinsics, whose pass-through operand is _mm512_undefined_ps().)
        acc[i][j] = _mm512_maskz_min_ps(0xFFFF, hi, _mm512_maskz_max_ps(0xFFFF, lo, acc[i][j]));
      }
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) _mm512_mask_storeu_ps(out + i * ldo + 16 * j, mask[j], acc[i][j]);
  }
}

// Panels worked on at once for a block of MR rows: keeps >= 8 FMA chains and <= 24 accumulators.
constexpr int PanelsFor(int mr) {
  return mr <= 3 ? 4 : (mr <= 6 ? 2 : 1);
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
    MakeRow<7>(),
    MakeRow<8>(),
    MakeRow<9>(),
    MakeRow<10>(),
    MakeRow<11>(),
    MakeRow<12>(),
};

void LinearF32(int m, int k, const float* a, size_t lda, const void* packed, int /*n*/, int n0,
               int n1, const F32Params& p, float* out, size_t ldo) {
  f32_gemm_linear<kNr, kMaxMr, kMaxKc, kMc>(kRows, m, k, a, lda, packed, n0, n1, p, out, ldo);
}

constexpr F32GemmUKernel kTable = {
    kAvx512Vnni,
    "eo_f32_gemm_minmax_ukernel_12x32__avx512",
    kNr,
    &f32_gemm_packed_size<kNr>,
    &f32_gemm_pack<kNr>,
    &LinearF32,
};

}  // namespace

const F32GemmUKernel* f32_gemm_ukernel__avx512() {
  return &kTable;
}

}  // namespace edgeopt
