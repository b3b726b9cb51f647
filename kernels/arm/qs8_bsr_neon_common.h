// Shared parts of the NEON block-sparse int8 kernels (qs8_bsr_neon.cc, qs8_bsr_neondot.cc): the
// packed layout and packer, the exact output stage and the row / group driver. Only the inner
// tiles (SMULL/SADALP vs SDOT) differ between the two files.
//
// Packed layout (offsets from the 64-byte aligned base): Header (64 bytes) | ptr int32
// [groups + 1] | row sums int32 [groups * KR] (zero padded) | unit offsets int32 [units] (byte
// offset 4 * kgroup into an activation row) | units, KR x 4 int8 row-major each (16-aligned).
//
// Included by files compiled with different -march flags: everything has internal linkage.
#pragma once

#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "common/isa_local.h"
#include "common/bsr_reblock.h"
#include "common/requant.h"
#include "common/sparse_ukernel.h"

#define EO_UNROLL _Pragma("GCC unroll 16")
#define EO_INLINE inline __attribute__((always_inline))

namespace edgeopt {
namespace {

struct Header {
  int32_t n, k, r, kr;
  int32_t groups, kgroups, units, has_min8;
  uint64_t off_ptr, off_sums, off_offs, off_w;
};
static_assert(sizeof(Header) <= 64, "header");
constexpr size_t kHeaderBytes = 64;

inline size_t align16(size_t x) {
  return (x + 15) & ~size_t{15};
}

inline bool supports(int r, int c) {
  return r >= 1 && c >= 1 && r <= 256 && c <= 256 && (r % 4 == 0 || r <= 2) &&
         (c % 4 == 0 || c <= 2);
}

// Header and size of the packed form; ptr / cols (when non-null) get the units of each group:
// the ascending 4-k groups any source block of the group touches.
inline size_t layout(const BsrS8View& w, Header* h, LocalVec<int32_t>* ptr,
                     LocalVec<int32_t>* cols) {
  const int kr = bsr_canon_rows(w.r);
  Header x{};
  x.n = w.n;
  x.k = w.k;
  x.r = w.r;
  x.kr = kr;
  x.groups = (w.n + kr - 1) / kr;
  x.kgroups = (w.k + 3) / 4;
  x.units = static_cast<int32_t>(bsr_reblock_structure_kr<4>(kr, w, ptr, cols));
  x.off_ptr = kHeaderBytes;
  x.off_sums = align16(x.off_ptr + sizeof(int32_t) * (x.groups + 1));
  x.off_offs = align16(x.off_sums + sizeof(int32_t) * x.groups * kr);
  x.off_w = align16(x.off_offs + sizeof(int32_t) * x.units);
  if (h != nullptr) *h = x;
  return x.off_w + static_cast<size_t>(x.units) * kr * 4;
}

inline size_t packed_size(const BsrS8View& w) {
  return layout(w, nullptr, nullptr, nullptr);
}

inline void pack(const BsrS8View& w, void* dst) {
  Header h;
  LocalVec<int32_t> ptr, cols;
  const size_t bytes = layout(w, &h, &ptr, &cols);
  uint8_t* base = static_cast<uint8_t*>(dst);
  std::memset(base, 0, bytes);
  const int kr = h.kr;
  int32_t* sums = reinterpret_cast<int32_t*>(base + h.off_sums);
  int32_t* offs = reinterpret_cast<int32_t*>(base + h.off_offs);
  int8_t* vals = reinterpret_cast<int8_t*>(base + h.off_w);
  std::copy(ptr.begin(), ptr.end(), reinterpret_cast<int32_t*>(base + h.off_ptr));
  for (int j = 0; j < w.n; ++j) sums[j] = w.row_sums[j];
  for (int u = 0; u < h.units; ++u) offs[u] = 4 * cols[u];
  bsr_reblock_values_kr<4>(kr, w, ptr, cols, [&](size_t u, int row, int col, int8_t v) {
    vals[u * kr * 4 + row * 4 + col] = v;
    if (v == -128) h.has_min8 = 1;
  });
  std::memcpy(base, &h, sizeof(h));
}

// gemmlowp's exact vector MultiplyByQuantizedMultiplier, zero point and clamp. `bias` already
// holds bias - input_zero_point * row_sum; rshift is -max(-shift, 0) (a negative SRSHL count).
// Kept in memory (plain int32 lanes) and loaded per use, so that the constants do not compete
// with the accumulators for registers across the tile.
struct Epi {
  int32_t bias[4], mult[4], lshift[4], rshift[4];
};
EO_INLINE int32x4_t requant4(int32x4_t x, const Epi& e, int32x4_t vzp, int32x4_t vmin,
                             int32x4_t vmax) {
  const int32x4_t vr = vld1q_s32(e.rshift);
  int32x4_t v = vaddq_s32(x, vld1q_s32(e.bias));
  v = vshlq_s32(v, vld1q_s32(e.lshift));
  v = vqrdmulhq_s32(v, vld1q_s32(e.mult));
  v = vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, vr), 31));
  v = vrshlq_s32(v, vr);
  v = vqaddq_s32(v, vzp);
  v = vmaxq_s32(v, vmin);
  return vminq_s32(v, vmax);
}

// Output-stage constants of channels [c, c + 4 * Q), zero past N.
template <int Q>
void make_epi(int c, int n, const int32_t* sums, const QS8Params& p, Epi (&e)[Q]) {
  const int32x4_t vza = vdupq_n_s32(p.input_zero_point);
  const int32x4_t zero = vdupq_n_s32(0);
  for (int q = 0; q < Q; ++q) {
    const int c0 = c + 4 * q;
    int32x4_t bias, mult, shift;
    if (c0 + 4 <= n) {
      bias = p.bias ? vld1q_s32(p.bias + c0) : zero;
      mult = vld1q_s32(p.multiplier + c0);
      shift = vld1q_s32(p.shift + c0);
    } else {
      int32_t b[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0}, s[4] = {0, 0, 0, 0};
      for (int t = 0; t < 4 && c0 + t < n; ++t) {
        b[t] = p.bias ? p.bias[c0 + t] : 0;
        m[t] = p.multiplier[c0 + t];
        s[t] = p.shift[c0 + t];
      }
      bias = vld1q_s32(b);
      mult = vld1q_s32(m);
      shift = vld1q_s32(s);
    }
    vst1q_s32(e[q].bias, vmlsq_s32(bias, vld1q_s32(sums + c0), vza));  // wraps mod 2^32
    vst1q_s32(e[q].mult, mult);
    vst1q_s32(e[q].lshift, vmaxq_s32(shift, zero));
    vst1q_s32(e[q].rshift, vminq_s32(shift, zero));
  }
}

// Requantizes one row of a group and stores channels [lo, hi) of it.
template <int Q>
EO_INLINE void store_row(const int32x4_t (&acc)[Q], const Epi (&e)[Q], int32x4_t vzp,
                         int32x4_t vmin, int32x4_t vmax, int lo, int hi, int8_t* dst) {
  int16x4_t h[4] = {vdup_n_s16(0), vdup_n_s16(0), vdup_n_s16(0), vdup_n_s16(0)};
  EO_UNROLL
  for (int q = 0; q < Q; ++q) h[q] = vmovn_s32(requant4(acc[q], e[q], vzp, vmin, vmax));
  const int8x16_t b =
      vcombine_s8(vmovn_s16(vcombine_s16(h[0], h[1])), vmovn_s16(vcombine_s16(h[2], h[3])));
  constexpr int kr = 4 * Q;
  if (lo == 0 && hi == kr) {
    if (kr == 16) {
      vst1q_s8(dst, b);
    } else if (kr == 8) {
      vst1_s8(dst, vget_low_s8(b));
    } else {
      const int32_t x = vgetq_lane_s32(vreinterpretq_s32_s8(b), 0);
      std::memcpy(dst, &x, 4);
    }
  } else {
    int8_t tmp[16];
    vst1q_s8(tmp, b);
    for (int j = lo; j < hi; ++j) dst[j] = tmp[j];
  }
}

// Block rows [br0, br1) for rows [0, m): rows in blocks of about 16 KB of A (kept in L1), the
// groups of the range streaming past, row tiles of MR rows then one tile of the remaining rows.
// Tile::template apply<R>(a, lda, k, offs, w, nu, acc) computes one tile of R <= MR rows.
template <int KR, int MR, typename Tile>
void run_groups(int m, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int br0,
                int br1, const QS8Params& p, int8_t* out, size_t ldo) {
  constexpr int Q = KR / 4;
  const int32_t* ptr = reinterpret_cast<const int32_t*>(base + h.off_ptr);
  const int32_t* sums = reinterpret_cast<const int32_t*>(base + h.off_sums);
  const int32_t* offs = reinterpret_cast<const int32_t*>(base + h.off_offs);
  const int8_t* vals = reinterpret_cast<const int8_t*>(base + h.off_w);
  const int c0 = br0 * h.r, c1 = std::min(h.n, br1 * h.r);
  if (c0 >= c1) return;
  const int g0 = c0 / KR, g1 = (c1 + KR - 1) / KR;
  const int32x4_t vzp = vdupq_n_s32(p.output_zero_point);
  const int32x4_t vmin = vdupq_n_s32(p.qmin);
  const int32x4_t vmax = vdupq_n_s32(p.qmax);
  int mb = (16 * 1024 / (h.k + 16)) / MR * MR;
  if (mb < MR) mb = MR;
  for (int i0 = 0; i0 < m; i0 += mb) {
    const int i1 = std::min(m, i0 + mb);
    for (int g = g0; g < g1; ++g) {
      Epi e[Q];
      make_epi<Q>(g * KR, h.n, sums, p, e);
      const int lo = std::max(c0, g * KR) - g * KR, hi = std::min(c1, g * KR + KR) - g * KR;
      const int nu = ptr[g + 1] - ptr[g];
      const int32_t* go = offs + ptr[g];
      const int8_t* gw = vals + static_cast<size_t>(ptr[g]) * KR * 4;
      int8_t* og = out + g * KR;
      int i = i0;
      for (; i + MR <= i1; i += MR) {
        int32x4_t acc[MR][Q];
        Tile::template apply<MR>(a + i * lda, lda, h.k, go, gw, nu, acc);
        EO_UNROLL
        for (int r = 0; r < MR; ++r)
          store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
      }
      // Remainder rows (fewer than MR) one tile shape each.
      const int rem = i1 - i;
      if constexpr (MR > 3) {
        if (rem == 3) {
          int32x4_t acc[3][Q];
          Tile::template apply<3>(a + i * lda, lda, h.k, go, gw, nu, acc);
          for (int r = 0; r < 3; ++r)
            store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
        }
      }
      if constexpr (MR > 2) {
        if (rem == 2) {
          int32x4_t acc[2][Q];
          Tile::template apply<2>(a + i * lda, lda, h.k, go, gw, nu, acc);
          for (int r = 0; r < 2; ++r)
            store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
        }
      }
      if constexpr (MR > 1) {
        if (rem == 1) {
          int32x4_t acc[1][Q];
          Tile::template apply<1>(a + i * lda, lda, h.k, go, gw, nu, acc);
          store_row<Q>(acc[0], e, vzp, vmin, vmax, lo, hi, og + i * ldo);
        }
      }
    }
  }
}

}  // namespace
}  // namespace edgeopt
