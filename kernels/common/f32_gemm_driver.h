// Packing and blocking driver shared by the x86 fp32 GEMM kernels (f32_gemm_avx2.cc,
// f32_gemm_avx512.cc): K-major panels of kNr output channels, and the M / K / panel-group loops
// around each file's register tiles. Generic code, no ISA instructions; internal linkage (the
// files are built with different flags).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "common/ukernel.h"

namespace edgeopt {
namespace {

// One register tile: (kc, a, lda, panel, panel stride, out, ldo, col, n1, bias, first K block,
// last K block, min, max, next panel group's slice to prefetch or nullptr).
using F32TileFn = void (*)(int, const float*, size_t, const float*, size_t, float*, size_t, int,
                           int, const float*, bool, bool, float, float, const float*);

// Tiles of MR rows for 1, 2 and 4 panels (entries wider than np stay null).
struct F32RowKernels {
  F32TileFn fn[3];
  int np;  // panels worked on at once
};

template <int kNr>
size_t f32_gemm_packed_size(int n, int k) {
  const size_t panels = (static_cast<size_t>(n) + kNr - 1) / kNr;
  return panels * kNr * static_cast<size_t>(k) * sizeof(float);
}

// dst panel p holds w[p*kNr + j, kk] at dst[(p*k + kk)*kNr + j]; channels past n are zero.
template <int kNr>
void f32_gemm_pack(const float* w, int n, int k, void* dst) {
  float* out = static_cast<float*>(dst);
  const int panels = (n + kNr - 1) / kNr;
  for (int p = 0; p < panels; ++p) {
    float* panel = out + static_cast<size_t>(p) * k * kNr;
    const int cols = std::min(kNr, n - p * kNr);
    if (cols < kNr) std::memset(panel, 0, sizeof(float) * kNr * static_cast<size_t>(k));
    for (int j = 0; j < cols; ++j) {
      const float* row = w + static_cast<size_t>(p * kNr + j) * k;
      for (int kk = 0; kk < k; ++kk) panel[static_cast<size_t>(kk) * kNr + j] = row[kk];
    }
  }
}

// Rows are cut into blocks of at most kMaxMr, evenly; rows[mr] holds the tiles of mr rows. With
// more than one row block the work is tiled over K (kc <= kMaxKc) and over M (kMc rows).
template <int kNr, int kMaxMr, int kMaxKc, int kMc>
void f32_gemm_linear(const F32RowKernels* rows, int m, int k, const float* a, size_t lda,
                     const void* packed, int n0, int n1, const F32Params& p, float* out,
                     size_t ldo) {
  if (m <= 0 || n1 <= n0) return;
  const float* wp = static_cast<const float*>(packed);
  const size_t ps = static_cast<size_t>(k) * kNr;  // floats per panel
  const int p0 = n0 / kNr;
  const int p1 = (n1 + kNr - 1) / kNr;

  // K blocking only pays when a panel slice is reused by several row blocks.
  int kb = 1;
  if (m > kMaxMr) kb = (k + kMaxKc - 1) / kMaxKc;
  if (kb < 1) kb = 1;
  const int kc_base = k / kb, kc_extra = k % kb;

  for (int m0 = 0; m0 < m; m0 += kMc) {
    const int mc = std::min(kMc, m - m0);
    const int nblocks = (mc + kMaxMr - 1) / kMaxMr;
    const int rb_base = mc / nblocks, rb_extra = mc % nblocks;

    // Panels are visited in groups of G (the widest NP of this chunk's row blocks); a group's
    // KC-slice is reused from L1/L2 by every row block before moving on.
    int g = 1;
    for (int b = 0; b < nblocks; ++b) g = std::max(g, rows[rb_base + (b < rb_extra ? 1 : 0)].np);

    int k0 = 0;
    for (int bi = 0; bi < kb; ++bi) {
      const int kc = kc_base + (bi < kc_extra ? 1 : 0);
      const bool first = bi == 0, last = bi == kb - 1;
      for (int g0 = p0; g0 < p1; g0 += g) {
        const int g1 = std::min(p1, g0 + g);
        int r0 = m0;
        for (int b = 0; b < nblocks; ++b) {
          const int mr = rb_base + (b < rb_extra ? 1 : 0);
          const F32RowKernels& rk = rows[mr];
          const float* ab = a + static_cast<size_t>(r0) * lda + k0;
          float* ob = out + static_cast<size_t>(r0) * ldo;
          for (int pp = g0; pp < g1;) {
            int np = rk.np;
            while (pp + np > g1) np /= 2;
            const F32TileFn fn = rk.fn[np == 4 ? 2 : np - 1];
            const int col = pp * kNr;
            const float* wt = wp + pp * ps + static_cast<size_t>(k0) * kNr;
            // The first row block pulls the next panel group's slice into L2 while it computes
            // (only with K blocking: without it the next group lies a whole K * kNr floats away).
            const float* next =
                (b == 0 && kb > 1 && g1 < p1) ? wt + static_cast<size_t>(g1 - pp) * ps : nullptr;
            fn(kc, ab, lda, wt, ps, ob + col, ldo, col, n1, p.bias ? p.bias + col : nullptr, first,
               last, p.min, p.max, next);
            pp += np;
          }
          r0 += mr;
        }
      }
      k0 += kc;
    }
  }
}

}  // namespace
}  // namespace edgeopt
