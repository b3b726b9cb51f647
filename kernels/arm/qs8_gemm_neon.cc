// int8 GEMM and fused int8 linear for NEON without dot product (AArch64 Advanced SIMD and ARMv7).
//
// Tile: c8 layout with the SMULL + SMLAL + SADALP chain (XNNPACK's "c8 mlal" kernels). For each
// (row, column) pair one int32x4 accumulator collects 16 products per step: SMULL multiplies 8
// int8 pairs into int16, SMLAL adds the next 8 products on top, SADALP folds the 8 int16 sums
// pairwise into the 4 int32 lanes. That is 16 MACs for 3 instructions, the best ratio NEON has
// without SDOT, and weights in [-127, 127] keep the two-product int16 sums exact (|sum| <= 32512).
// When the pack saw a -128 weight, a (-128) * (-128) pair could reach 32768, so the kernel then
// takes the exact single-product path (SMULL + SADALP per 8 bytes).
//
// Accumulators are MR x NC int32x4 registers. AArch64 has 32 vector registers: 2x8 uses 16 for
// accumulators, 2 for the A rows and the rest for weights and products (XNNPACK's 2x8c8 choice
// for cores without SDOT such as Cortex-A72, Raspberry Pi 4). ARMv7 has 16 quad registers, so it
// runs 2x4 twice over each 8-column panel (A rows come back from L1). Single-row calls (GEMV)
// use 1x8: eight independent accumulator chains, weights streamed once.
//
// Rows are processed in blocks of about 16 KB of A so that block stays in L1 while the panels of
// the column range stream past it (weights read once per block). The output stage is gemmlowp's
// exact NEON requantization (SQRDMULH + rounding shift with the ties fixup).
//
// Packed layout (all offsets from the 64-byte aligned base):
//   Header (64 bytes) | row sums int32 [np * 8] | weights: for each panel of 8 output channels,
//   for each block of 16 k: 8 channels x 16 bytes (zero padded in k and in n).
#include <arm_neon.h>

#include <cstring>

#include "arm/qs8_neon_common.h"
#include "common/requant.h"
#include "common/requant_fp32.h"
#include "common/ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNR = 8;   // output channels per packed panel
constexpr int kKB = 16;  // k per step (SMULL on 8, SMLAL on the next 8)
constexpr size_t kHeaderBytes = 64;

struct Header {
  int32_t n;
  int32_t k;
  int32_t kp;        // k rounded up to kKB
  int32_t has_min8;  // some weight == -128: use the single-product path
};

inline int round_up(int x, int m) {
  return (x + m - 1) / m * m;
}
inline int num_panels(int n) {
  return (n + kNR - 1) / kNR;
}

size_t packed_size(int n, int k) {
  const size_t np = static_cast<size_t>(num_panels(n));
  return kHeaderBytes + np * kNR * sizeof(int32_t) +
         np * kNR * static_cast<size_t>(round_up(k, kKB));
}

void pack(const int8_t* w, int n, int k, const int32_t* row_sums, void* dst) {
  const int np = num_panels(n);
  const int kp = round_up(k, kKB);
  uint8_t* base = static_cast<uint8_t*>(dst);
  Header h{n, k, kp, 0};
  for (size_t i = 0; i < static_cast<size_t>(n) * k; ++i) {
    if (w[i] == -128) {
      h.has_min8 = 1;
      break;
    }
  }
  std::memset(base, 0, kHeaderBytes);
  std::memcpy(base, &h, sizeof(h));
  int32_t* sums = reinterpret_cast<int32_t*>(base + kHeaderBytes);
  for (int j = 0; j < np * kNR; ++j) sums[j] = j < n ? row_sums[j] : 0;
  int8_t* out = reinterpret_cast<int8_t*>(sums + np * kNR);
  for (int p = 0; p < np; ++p) {
    for (int kb = 0; kb < kp; kb += kKB) {
      for (int j = 0; j < kNR; ++j) {
        const int col = p * kNR + j;
        for (int t = 0; t < kKB; ++t) {
          const int kk = kb + t;
          *out++ = (col < n && kk < k) ? w[static_cast<size_t>(col) * k + kk] : 0;
        }
      }
    }
  }
}

// acc += 16 products of a and b; kExact2 = the int16 sum of two products cannot overflow.
// Computes out[r][c] (c in [0, NC), NC a multiple of 4) for MR rows of A against NC consecutive
// channels of one packed panel; w points at the panel's first block plus the column offset.
template <int MR, int NC, bool kExact2>
inline void tile(int k, const int8_t* a, size_t lda, const int8_t* w, int32x4_t out[MR][NC / 4]) {
  int32x4_t acc[MR][NC];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int c = 0; c < NC; ++c) acc[r][c] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  constexpr size_t kStep = static_cast<size_t>(kNR) * kKB;
  int kk = 0;
  for (; kk + kKB <= k; kk += kKB) {
    int8x16_t va[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      va[r] = vld1q_s8(ar[r]);
      ar[r] += kKB;
    }
    EO_UNROLL
    for (int c = 0; c < NC; ++c) {
      const int8x16_t vb = vld1q_s8(w + c * kKB);
      EO_UNROLL
      for (int r = 0; r < MR; ++r) acc[r][c] = mac16<kExact2>(acc[r][c], va[r], vb);
      // Keeps the scheduler from starting every column's products at once (that spills the
      // accumulators); two columns in flight are enough for out-of-order cores.
      if (c % 2 == 1) __asm__ __volatile__("" ::: "memory");
    }
    w += kStep;
  }
  if (kk < k) {
    // K tail: copy the rest of each row into a zeroed block (never read past the row); the
    // packed weights are zero there as well.
    const int rem = k - kk;
    int8x16_t va[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      int8_t buf[kKB] = {0};
      copy_prefix<kKB>(buf, ar[r], rem);
      va[r] = vld1q_s8(buf);
    }
    EO_UNROLL
    for (int c = 0; c < NC; ++c) {
      const int8x16_t vb = vld1q_s8(w + c * kKB);
      EO_UNROLL
      for (int r = 0; r < MR; ++r) acc[r][c] = mac16<kExact2>(acc[r][c], va[r], vb);
    }
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < NC / 4; ++q)
    out[r][q] = reduce4(acc[r][4 * q], acc[r][4 * q + 1], acc[r][4 * q + 2], acc[r][4 * q + 3]);
}

// MR rows x the full 8-column panel.
template <int MR, bool kExact2>
inline void panel_tile(int k, const int8_t* a, size_t lda, const int8_t* w, int32x4_t out[MR][2]) {
#if defined(__aarch64__)
  tile<MR, 8, kExact2>(k, a, lda, w, out);
#else
  if (MR == 1) {
    tile<MR, 8, kExact2>(k, a, lda, w, out);
  } else {
    int32x4_t lo[MR][1], hi[MR][1];
    tile<MR, 4, kExact2>(k, a, lda, w, lo);
    tile<MR, 4, kExact2>(k, a, lda, w + 4 * kKB, hi);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      out[r][0] = lo[r][0];
      out[r][1] = hi[r][0];
    }
  }
#endif
}

constexpr int kMR = 2;

// Rows per block: the A rows of one block (about 16 KB) stay in L1 while every panel of the
// column range streams past them, so the weights are read once per block, not once per tile.
inline int row_block(int k) {
  const int rows = (16 * 1024 / (k + 16)) / kMR * kMR;
  return rows < kMR ? kMR : rows;
}

// Calls f(rows, row_offset, acc) for rows [i0, m) of the panel; acc[rows][2]) for every row tile of
// the panel.
template <bool kExact2, typename F>
inline void for_each_tile(int i0, int m, int k, const int8_t* a, size_t lda, const int8_t* w,
                          F&& f) {
  int i = i0;
  for (; i + kMR <= m; i += kMR) {
    int32x4_t acc[kMR][2];
    panel_tile<kMR, kExact2>(k, a + i * lda, lda, w, acc);
    f(kMR, i, acc);
  }
  for (; i < m; ++i) {
    int32x4_t acc[1][2];
    panel_tile<1, kExact2>(k, a + i * lda, lda, w, acc);
    f(1, i, acc);
  }
}

template <bool kExact2>
void gemm_s32_impl(int m, int k, const int8_t* a, size_t lda, const uint8_t* base, int n, int n0,
                   int n1, int32_t* c, size_t ldc) {
  const Header& h = *reinterpret_cast<const Header*>(base);
  const int np = num_panels(n);
  const int8_t* wbase = reinterpret_cast<const int8_t*>(base + kHeaderBytes + np * kNR * 4);
  const size_t panel_bytes = static_cast<size_t>(kNR) * h.kp;
  const int mb = row_block(k);
  for (int i0 = 0; i0 < m; i0 += mb) {
    const int i1 = m - i0 < mb ? m : i0 + mb;
    for (int j0 = n0; j0 < n1; j0 += kNR) {
      const int nc = n1 - j0 < kNR ? n1 - j0 : kNR;
      const int8_t* w = wbase + (j0 / kNR) * panel_bytes;
      for_each_tile<kExact2>(i0, i1, k, a, lda, w, [&](int rows, int i, int32x4_t(*acc)[2]) {
        for (int r = 0; r < rows; ++r) {
          int32_t* cr = c + static_cast<size_t>(i + r) * ldc + j0;
          if (nc == kNR) {
            vst1q_s32(cr, acc[r][0]);
            vst1q_s32(cr + 4, acc[r][1]);
          } else {
            int32_t tmp[kNR];
            vst1q_s32(tmp, acc[r][0]);
            vst1q_s32(tmp + 4, acc[r][1]);
            copy_prefix<kNR>(cr, tmp, nc);
          }
        }
      });
    }
  }
}

void gemm_s32(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0, int n1,
              int32_t* c, size_t ldc) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  if (reinterpret_cast<const Header*>(base)->has_min8) {
    gemm_s32_impl<false>(m, k, a, lda, base, n, n0, n1, c, ldc);
  } else {
    gemm_s32_impl<true>(m, k, a, lda, base, n, n0, n1, c, ldc);
  }
}

using Epilogue = PanelEpilogue<kNR>;

template <bool kExact2>
void linear_s8_impl(int m, int k, const int8_t* a, size_t lda, const uint8_t* base, int n, int n0,
                    int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  const Header& h = *reinterpret_cast<const Header*>(base);
  const int np = num_panels(n);
  const int32_t* sums = reinterpret_cast<const int32_t*>(base + kHeaderBytes);
  const int8_t* wbase = reinterpret_cast<const int8_t*>(base + kHeaderBytes + np * kNR * 4);
  const size_t panel_bytes = static_cast<size_t>(kNR) * h.kp;
  const int32x4_t vzp = vdupq_n_s32(p.output_zero_point);
  const int32x4_t vmin = vdupq_n_s32(p.qmin);
  const int32x4_t vmax = vdupq_n_s32(p.qmax);
  const int mb = row_block(k);
  for (int i0 = 0; i0 < m; i0 += mb) {
    const int i1 = m - i0 < mb ? m : i0 + mb;
    for (int j0 = n0; j0 < n1; j0 += kNR) {
      const int nc = n1 - j0 < kNR ? n1 - j0 : kNR;
      Epilogue e;
      make_panel_epilogue<kNR>(e, j0, nc, sums, p);
      const int8_t* w = wbase + (j0 / kNR) * panel_bytes;
      for_each_tile<kExact2>(i0, i1, k, a, lda, w, [&](int rows, int i, int32x4_t(*acc)[2]) {
        for (int r = 0; r < rows; ++r)
          store_panel_row(acc[r], e, vzp, vmin, vmax, nc,
                          out + static_cast<size_t>(i + r) * ldo + j0);
      });
    }
  }
}

void linear_s8(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0, int n1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  if (reinterpret_cast<const Header*>(base)->has_min8) {
    linear_s8_impl<false>(m, k, a, lda, base, n, n0, n1, p, out, ldo);
  } else {
    linear_s8_impl<true>(m, k, a, lda, base, n, n0, n1, p, out, ldo);
  }
}

#if defined(__aarch64__)
constexpr QS8GemmUKernel kTable = {
    kNeon,     "eo_qs8_gemm_minmax_ukernel_2x8c8__neon", kNR, packed_size, pack, gemm_s32,
    linear_s8, requant_fp32_rows<requant_fp32_row_neon>};
#else
constexpr QS8GemmUKernel kTable = {
    kNeon,     "eo_qs8_gemm_minmax_ukernel_2x4c8__neon", kNR, packed_size, pack, gemm_s32,
    linear_s8, requant_fp32_rows<requant_fp32_row_neon>};
#endif

}  // namespace

const QS8GemmUKernel* qs8_gemm_ukernel__neon() {
  return &kTable;
}

}  // namespace edgeopt
