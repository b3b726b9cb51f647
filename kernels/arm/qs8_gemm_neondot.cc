// int8 GEMM and fused int8 linear for AArch64 with the Armv8.2 dot product (SDOT).
//
// Tile: 4x16c4 (XNNPACK's choice for Cortex-A55/A76/A78, Raspberry Pi 5). SDOT (by element)
// multiplies 4 consecutive int8 k of one A row (a lane of a 16-byte A register) with 4 k of four
// output channels and adds into 4 int32 lanes: 16 MACs per instruction. 4 rows x 16 channels
// = 16 accumulator registers, 4 A registers (16 k each) and 4 weight registers per k group: 24 of
// the 32 vector registers, every weight load feeds 4 SDOTs and every A load 16. SDOT is exact
// for any int8 input, -128 included, so there is a single code path.
//
// Single-row calls (GEMV, bound by weight bandwidth) use 1x16c4 with two accumulator sets
// (even / odd k groups) so 8 independent SDOT chains cover the instruction latency.
//
// Rows are processed in blocks of about 16 KB of A, which stay in L1 while the panels of the
// column range stream past (weights read once per block). The output stage is gemmlowp's exact
// NEON requantization (SQRDMULH + rounding shift with the ties fixup), bit-exact to requant.h.
//
// Packed layout (from the 64-byte aligned base):
//   Header (64 bytes) | row sums int32 [np * 16] | weights: for each panel of 16 output channels,
//   for each group of 4 k: 16 channels x 4 bytes (zero padded in k and in n).
#include <arm_neon.h>

#include <cstring>

#include "arm/qs8_neon_common.h"
#include "common/requant.h"
#include "common/requant_fp32.h"
#include "common/ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNR = 16;  // output channels per packed panel
constexpr int kKR = 4;   // k per SDOT lane
constexpr int kMR = 4;
constexpr size_t kHeaderBytes = 64;

struct Header {
  int32_t n;
  int32_t k;
  int32_t kp;  // k rounded up to kKR
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
         np * kNR * static_cast<size_t>(round_up(k, kKR));
}

void pack(const int8_t* w, int n, int k, const int32_t* row_sums, void* dst) {
  const int np = num_panels(n);
  const int kp = round_up(k, kKR);
  uint8_t* base = static_cast<uint8_t*>(dst);
  const Header h{n, k, kp};
  std::memset(base, 0, kHeaderBytes);
  std::memcpy(base, &h, sizeof(h));
  int32_t* sums = reinterpret_cast<int32_t*>(base + kHeaderBytes);
  for (int j = 0; j < np * kNR; ++j) sums[j] = j < n ? row_sums[j] : 0;
  int8_t* out = reinterpret_cast<int8_t*>(sums + np * kNR);
  for (int p = 0; p < np; ++p) {
    for (int kg = 0; kg < kp; kg += kKR) {
      for (int j = 0; j < kNR; ++j) {
        const int col = p * kNR + j;
        for (int t = 0; t < kKR; ++t) {
          const int kk = kg + t;
          *out++ = (col < n && kk < k) ? w[static_cast<size_t>(col) * k + kk] : 0;
        }
      }
    }
  }
}

// One k group (4 k) of weights, 16 channels, against lane L of each row's A register.
template <int MR, int L>
inline void dot_group(int32x4_t (&acc)[MR][4], const int8x16_t (&va)[MR], const int8_t* w) {
  const int8x16_t b0 = vld1q_s8(w);
  const int8x16_t b1 = vld1q_s8(w + 16);
  const int8x16_t b2 = vld1q_s8(w + 32);
  const int8x16_t b3 = vld1q_s8(w + 48);
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = vdotq_laneq_s32(acc[r][0], b0, va[r], L);
    acc[r][1] = vdotq_laneq_s32(acc[r][1], b1, va[r], L);
    acc[r][2] = vdotq_laneq_s32(acc[r][2], b2, va[r], L);
    acc[r][3] = vdotq_laneq_s32(acc[r][3], b3, va[r], L);
  }
}

// out[r][q] = columns 4q..4q+3 of the panel for MR rows. w points at the panel's first group.
template <int MR>
inline void tile(int k, const int8_t* a, size_t lda, const int8_t* w, int32x4_t (&out)[MR][4]) {
  // MR == 1 alternates two accumulator sets (8 chains); otherwise 4 * MR chains suffice.
  constexpr int kSets = MR == 1 ? 2 : 1;
  int32x4_t acc[kSets][MR][4];
  EO_UNROLL
  for (int s = 0; s < kSets; ++s) EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < 4; ++q) acc[s][r][q] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  constexpr int kGroup = kNR * kKR;  // 64 bytes of weights per k group
  int kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    int8x16_t va[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      va[r] = vld1q_s8(ar[r]);
      ar[r] += 16;
    }
    // The empty asm statements keep the compiler from hoisting all 16 weight loads above the
    // SDOTs (16 accumulators + 16 weights + A would spill); each group then needs 4 registers.
    dot_group<MR, 0>(acc[0], va, w);
    __asm__ __volatile__("" ::: "memory");
    dot_group<MR, 1>(acc[kSets - 1], va, w + kGroup);
    __asm__ __volatile__("" ::: "memory");
    dot_group<MR, 2>(acc[0], va, w + 2 * kGroup);
    __asm__ __volatile__("" ::: "memory");
    dot_group<MR, 3>(acc[kSets - 1], va, w + 3 * kGroup);
    w += 4 * kGroup;
  }
  if (kk < k) {
    // K tail (1..15): copy the rest of each row into a zeroed block so nothing past the row is
    // read; only the groups that exist in the packed weights are visited.
    const int rem = k - kk;
    int8x16_t va[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      int8_t buf[16] = {0};
      copy_prefix<16>(buf, ar[r], rem);
      va[r] = vld1q_s8(buf);
    }
    dot_group<MR, 0>(acc[0], va, w);
    if (rem > 4) dot_group<MR, 1>(acc[0], va, w + kGroup);
    if (rem > 8) dot_group<MR, 2>(acc[0], va, w + 2 * kGroup);
    if (rem > 12) dot_group<MR, 3>(acc[0], va, w + 3 * kGroup);
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < 4; ++q)
    out[r][q] = kSets == 2 ? vaddq_s32(acc[0][r][q], acc[kSets - 1][r][q]) : acc[0][r][q];
}

// Rows per block: the A rows of one block (about 16 KB) stay in L1 while every panel of the
// column range streams past them, so the weights are read once per block, not once per tile.
inline int row_block(int k) {
  const int rows = (16 * 1024 / (k + 16)) / kMR * kMR;
  return rows < kMR ? kMR : rows;
}

// Calls f(rows, row_offset, acc) for rows [i0, m) of the panel; acc) for every row tile of the
// panel (acc is int32x4_t[rows][4]).
template <typename F>
inline void for_each_tile(int i0, int m, int k, const int8_t* a, size_t lda, const int8_t* w,
                          F&& f) {
  int i = i0;
  for (; i + kMR <= m; i += kMR) {
    int32x4_t acc[kMR][4];
    tile<kMR>(k, a + i * lda, lda, w, acc);
    f(kMR, i, acc);
  }
  const int rem = m - i;
  if (rem == 3) {
    int32x4_t acc[3][4];
    tile<3>(k, a + i * lda, lda, w, acc);
    f(3, i, acc);
  } else if (rem == 2) {
    int32x4_t acc[2][4];
    tile<2>(k, a + i * lda, lda, w, acc);
    f(2, i, acc);
  } else if (rem == 1) {
    int32x4_t acc[1][4];
    tile<1>(k, a + i * lda, lda, w, acc);
    f(1, i, acc);
  }
}

void gemm_s32(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0, int n1,
              int32_t* c, size_t ldc) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
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
      for_each_tile(i0, i1, k, a, lda, w, [&](int rows, int i, int32x4_t(*acc)[4]) {
        for (int r = 0; r < rows; ++r) {
          int32_t* cr = c + static_cast<size_t>(i + r) * ldc + j0;
          if (nc == kNR) {
            EO_UNROLL
            for (int q = 0; q < 4; ++q) vst1q_s32(cr + 4 * q, acc[r][q]);
          } else {
            int32_t tmp[kNR];
            EO_UNROLL
            for (int q = 0; q < 4; ++q) vst1q_s32(tmp + 4 * q, acc[r][q]);
            copy_prefix<kNR>(cr, tmp, nc);
          }
        }
      });
    }
  }
}

using Epilogue = PanelEpilogue<kNR>;

void linear_s8(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0, int n1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
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
      for_each_tile(i0, i1, k, a, lda, w, [&](int rows, int i, int32x4_t(*acc)[4]) {
        for (int r = 0; r < rows; ++r)
          store_panel_row(acc[r], e, vzp, vmin, vmax, nc,
                          out + static_cast<size_t>(i + r) * ldo + j0);
      });
    }
  }
}

constexpr QS8GemmUKernel kTable = {
    kNeonDot,  "eo_qs8_gemm_minmax_ukernel_4x16c4__neondot", kNR, packed_size, pack, gemm_s32,
    linear_s8, requant_fp32_rows<requant_fp32_row_neon>};

}  // namespace

const QS8GemmUKernel* qs8_gemm_ukernel__neondot() {
  return &kTable;
}

}  // namespace edgeopt
