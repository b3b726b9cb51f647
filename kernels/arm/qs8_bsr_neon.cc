// Block-sparse (BSR) fused int8 linear for NEON without dot product (AArch64 and ARMv7).
//
// Native block: 8x4 (8 output channels x 4 consecutive k; 4x4 and 16x4 are native too), the same
// packed units as the SDOT kernel. A 4x4 piece of a block is one 16-byte register; the 4
// activations of the block column are one 32-bit load replicated to all lanes, so SMULL (low
// half: channels 0, 1) and SMULL2 (high half: channels 2, 3) give the 16 products and SADALP
// folds them pairwise into int32 lanes (channel, k 0+1 | k 2+3), reduced once per group at the
// end. Two stored units are combined per SADALP with SMLAL (XNNPACK's "c8 mlal" trick: 2 x 16
// products for 4 + 2 instructions): weights in [-127, 127] keep the sum of two products inside
// int16 (|sum| <= 32512). When the pack saw a -128 weight, a (-128) * (-128) pair could reach
// 32768, so the kernel then takes the exact single-product path (SMULL + SADALP per unit). The
// input zero point is folded into the bias as bias - input_zero_point * row_sum(w).
//
// Other block shapes are re-blocked at pack time into units of KR x 4 (KR = 16, 8 or 4 channels,
// the largest that divides R; 4 for R = 1, 2): a unit is stored when any source block touches it,
// with the source values and zeros elsewhere (exact). R and C multiples of 4 cost exactly the
// stored blocks; C = 1, 2 or R = 1, 2 cost at most 4x. Units wholly past K are never stored.
//
// Tiles: MR rows x KR channels with 2 * KR / 4 int32x4 accumulators per row: AArch64 (32
// registers) keeps 16 accumulators (4 rows for KR = 4, 8; 2 rows for KR = 16), ARMv7 (16 quad
// registers) 8 (4, 2, 1 rows). Rows are processed in blocks of about 16 KB of A (kept in L1)
// while the groups of the requested range stream past. The output stage is gemmlowp's exact NEON
// requantization (SQRDMULH + rounding shift with the ties fixup), bit-exact to requant.h.
//
// Packed layout (offsets from the 64-byte aligned base): Header (64 bytes) | ptr int32
// [groups + 1] | row sums int32 [groups * KR] (zero padded) | unit offsets int32 [units] (byte
// offset 4 * kgroup into an activation row) | units, KR x 4 int8 row-major each (16-aligned).
#include <arm_neon.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/requant.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

#define EO_UNROLL _Pragma("GCC unroll 16")
#define EO_INLINE inline __attribute__((always_inline))

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

bool supports(int r, int c) {
  return r >= 1 && c >= 1 && r <= 256 && c <= 256 && (r % 4 == 0 || r <= 2) &&
         (c % 4 == 0 || c <= 2);
}

// Channels per unit for source blocks of R rows.
inline int canon_rows(int r) {
  return r % 16 == 0 ? 16 : r % 8 == 0 ? 8 : 4;
}

// Units of each group (ascending k group): the 4-k groups any source block of the group touches.
void structure(const BsrS8View& w, int kr, std::vector<int32_t>& ptr, std::vector<int32_t>& cols) {
  const int groups = (w.n + kr - 1) / kr, kgroups = (w.k + 3) / 4;
  std::vector<int32_t> stamp(kgroups, -1);
  ptr.assign(1, 0);
  cols.clear();
  for (int g = 0; g < groups; ++g) {
    const size_t first = cols.size();
    const int br_lo = g * kr / w.r, br_hi = std::min(w.block_rows - 1, (g * kr + kr - 1) / w.r);
    for (int br = br_lo; br <= br_hi; ++br) {
      for (int b = w.row_ptr[br]; b < w.row_ptr[br + 1]; ++b) {
        const int lo = w.col_idx[b] * w.c, hi = std::min(w.k, lo + w.c);
        for (int kg = lo / 4; kg <= (hi - 1) / 4; ++kg) {
          if (stamp[kg] != g) {
            stamp[kg] = g;
            cols.push_back(kg);
          }
        }
      }
    }
    std::sort(cols.begin() + first, cols.end());
    ptr.push_back(static_cast<int32_t>(cols.size()));
  }
}

size_t layout(const BsrS8View& w, Header* h, std::vector<int32_t>* ptr,
              std::vector<int32_t>* cols) {
  std::vector<int32_t> p, c;
  if (ptr == nullptr) ptr = &p;
  if (cols == nullptr) cols = &c;
  const int kr = canon_rows(w.r);
  structure(w, kr, *ptr, *cols);
  Header x{};
  x.n = w.n;
  x.k = w.k;
  x.r = w.r;
  x.kr = kr;
  x.groups = (w.n + kr - 1) / kr;
  x.kgroups = (w.k + 3) / 4;
  x.units = static_cast<int32_t>(cols->size());
  x.off_ptr = kHeaderBytes;
  x.off_sums = align16(x.off_ptr + sizeof(int32_t) * (x.groups + 1));
  x.off_offs = align16(x.off_sums + sizeof(int32_t) * x.groups * kr);
  x.off_w = align16(x.off_offs + sizeof(int32_t) * x.units);
  if (h != nullptr) *h = x;
  return x.off_w + static_cast<size_t>(x.units) * kr * 4;
}

size_t packed_size(const BsrS8View& w) {
  return layout(w, nullptr, nullptr, nullptr);
}

void pack(const BsrS8View& w, void* dst) {
  Header h;
  std::vector<int32_t> ptr, cols;
  const size_t bytes = layout(w, &h, &ptr, &cols);
  uint8_t* base = static_cast<uint8_t*>(dst);
  std::memset(base, 0, bytes);
  const int kr = h.kr;
  int32_t* pp = reinterpret_cast<int32_t*>(base + h.off_ptr);
  int32_t* sums = reinterpret_cast<int32_t*>(base + h.off_sums);
  int32_t* offs = reinterpret_cast<int32_t*>(base + h.off_offs);
  int8_t* vals = reinterpret_cast<int8_t*>(base + h.off_w);
  std::copy(ptr.begin(), ptr.end(), pp);
  for (int j = 0; j < w.n; ++j) sums[j] = w.row_sums[j];
  for (int u = 0; u < h.units; ++u) offs[u] = 4 * cols[u];
  std::vector<int32_t> slot(h.kgroups, 0);
  for (int g = 0; g < h.groups; ++g) {
    for (int u = ptr[g]; u < ptr[g + 1]; ++u) slot[cols[u]] = u;
    const int br_lo = g * kr / w.r, br_hi = std::min(w.block_rows - 1, (g * kr + kr - 1) / w.r);
    for (int br = br_lo; br <= br_hi; ++br) {
      for (int b = w.row_ptr[br]; b < w.row_ptr[br + 1]; ++b) {
        const int8_t* blk = w.values + static_cast<size_t>(b) * w.r * w.c;
        for (int rr = 0; rr < w.r; ++rr) {
          const int ch = br * w.r + rr;
          if (ch < g * kr || ch >= g * kr + kr || ch >= w.n) continue;
          for (int cc = 0; cc < w.c; ++cc) {
            const int kk = w.col_idx[b] * w.c + cc;
            if (kk >= w.k) break;
            const int8_t v = blk[rr * w.c + cc];
            vals[static_cast<size_t>(slot[kk / 4]) * kr * 4 + (ch - g * kr) * 4 + kk % 4] = v;
            if (v == -128) h.has_min8 = 1;
          }
        }
      }
    }
  }
  std::memcpy(base, &h, sizeof(h));
}

// 16 products of a 4x4 weight piece w and the replicated activations va into the two pair
// accumulators (channels 0, 1 and 2, 3).
EO_INLINE void mac1(int32x4_t& lo, int32x4_t& hi, int8x16_t w, int8x16_t va) {
  lo = vpadalq_s16(lo, vmull_s8(vget_low_s8(w), vget_low_s8(va)));
#if defined(__aarch64__)
  hi = vpadalq_s16(hi, vmull_high_s8(w, va));
#else
  hi = vpadalq_s16(hi, vmull_s8(vget_high_s8(w), vget_high_s8(va)));
#endif
}
// Two units at once, products summed in int16 (exact for weights in [-127, 127]).
EO_INLINE void mac2(int32x4_t& lo, int32x4_t& hi, int8x16_t w0, int8x16_t va0, int8x16_t w1,
                    int8x16_t va1) {
  int16x8_t p0 = vmull_s8(vget_low_s8(w0), vget_low_s8(va0));
  p0 = vmlal_s8(p0, vget_low_s8(w1), vget_low_s8(va1));
#if defined(__aarch64__)
  int16x8_t p1 = vmull_high_s8(w0, va0);
  p1 = vmlal_high_s8(p1, w1, va1);
#else
  int16x8_t p1 = vmull_s8(vget_high_s8(w0), vget_high_s8(va0));
  p1 = vmlal_s8(p1, vget_high_s8(w1), vget_high_s8(va1));
#endif
  lo = vpadalq_s16(lo, p0);
  hi = vpadalq_s16(hi, p1);
}

template <int MR>
EO_INLINE void load_act(int8x16_t (&va)[MR], const int8_t* const (&ar)[MR], int32_t o) {
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    int32_t x;
    std::memcpy(&x, ar[r] + o, 4);
    va[r] = vreinterpretq_s8_s32(vdupq_n_s32(x));
  }
}

// acc[r][2q], acc[r][2q + 1] += unit (KR x 4 at w) . a[r][o .. o + 3] for MR rows.
template <int KR, int MR>
EO_INLINE void unit1(int32x4_t (&acc)[MR][KR / 2], const int8_t* const (&ar)[MR], int32_t o,
                     const int8_t* w) {
  int8x16_t va[MR];
  load_act<MR>(va, ar, o);
  EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) {
    const int8x16_t b = vld1q_s8(w + 16 * q);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) mac1(acc[r][2 * q], acc[r][2 * q + 1], b, va[r]);
  }
}

template <int KR, int MR>
EO_INLINE void unit2(int32x4_t (&acc)[MR][KR / 2], const int8_t* const (&ar)[MR], int32_t o0,
                     int32_t o1, const int8_t* w) {
  int8x16_t va0[MR], va1[MR];
  load_act<MR>(va0, ar, o0);
  load_act<MR>(va1, ar, o1);
  EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) {
    const int8x16_t b0 = vld1q_s8(w + 16 * q);
    const int8x16_t b1 = vld1q_s8(w + KR * 4 + 16 * q);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) mac2(acc[r][2 * q], acc[r][2 * q + 1], b0, va0[r], b1, va1[r]);
  }
}

inline int32x4_t pair_sum(int32x4_t x, int32x4_t y) {
#if defined(__aarch64__)
  return vpaddq_s32(x, y);
#else
  return vcombine_s32(vpadd_s32(vget_low_s32(x), vget_high_s32(x)),
                      vpadd_s32(vget_low_s32(y), vget_high_s32(y)));
#endif
}

// out[r][q] = channels 4q..4q+3 of the group for MR rows (raw sums, no zero point).
template <int KR, int MR, bool kPair>
EO_INLINE void tile(const int8_t* a, size_t lda, int k, const int32_t* offs, const int8_t* w,
                    int nu, int32x4_t (&out)[MR][KR / 4]) {
  constexpr int kUnit = KR * 4;
  int32x4_t acc[MR][KR / 2];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < KR / 2; ++q) acc[r][q] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  // The last unit may run past K (k % 4 != 0): its activations are copied, never over-read.
  const bool tail = nu > 0 && offs[nu - 1] + 4 > k;
  const int full = nu - (tail ? 1 : 0);
  int u = 0;
  if (kPair) {
    for (; u + 2 <= full; u += 2) {
      unit2<KR, MR>(acc, ar, offs[u], offs[u + 1], w);
      w += 2 * kUnit;
    }
  }
  for (; u < full; ++u) {
    unit1<KR, MR>(acc, ar, offs[u], w);
    w += kUnit;
  }
  if (tail) {
    const int o = offs[full], rem = k - o;
    int8_t buf[MR][4];
    const int8_t* br[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      for (int t = 0; t < 4; ++t) buf[r][t] = t < rem ? ar[r][o + t] : 0;
      br[r] = buf[r];
    }
    unit1<KR, MR>(acc, br, 0, w);
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) out[r][q] = pair_sum(acc[r][2 * q], acc[r][2 * q + 1]);
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

#if defined(__aarch64__)
constexpr int kMaxAcc = 16;
#else
constexpr int kMaxAcc = 8;
#endif

template <int KR, bool kPair>
void run(int m, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int br0, int br1,
         const QS8Params& p, int8_t* out, size_t ldo) {
  constexpr int Q = KR / 4;
  constexpr int MR = kMaxAcc / (KR / 2) < 4 ? kMaxAcc / (KR / 2) : 4;
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
        tile<KR, MR, kPair>(a + i * lda, lda, h.k, go, gw, nu, acc);
        EO_UNROLL
        for (int r = 0; r < MR; ++r)
          store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
      }
      // Remainder rows (fewer than MR) one tile shape each.
      const int rem = i1 - i;
      if constexpr (MR > 3) {
        if (rem == 3) {
          int32x4_t acc[3][Q];
          tile<KR, 3, kPair>(a + i * lda, lda, h.k, go, gw, nu, acc);
          for (int r = 0; r < 3; ++r)
            store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
        }
      }
      if constexpr (MR > 2) {
        if (rem == 2) {
          int32x4_t acc[2][Q];
          tile<KR, 2, kPair>(a + i * lda, lda, h.k, go, gw, nu, acc);
          for (int r = 0; r < 2; ++r)
            store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
        }
      }
      if constexpr (MR > 1) {
        if (rem == 1) {
          int32x4_t acc[1][Q];
          tile<KR, 1, kPair>(a + i * lda, lda, h.k, go, gw, nu, acc);
          store_row<Q>(acc[0], e, vzp, vmin, vmax, lo, hi, og + i * ldo);
        }
      }
    }
  }
}

void linear_s8(int m, const int8_t* a, size_t lda, const void* packed, int br0, int br1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  const bool pair = !h.has_min8;
  switch (h.kr) {
    case 16:
      pair ? run<16, true>(m, a, lda, base, h, br0, br1, p, out, ldo)
           : run<16, false>(m, a, lda, base, h, br0, br1, p, out, ldo);
      break;
    case 8:
      pair ? run<8, true>(m, a, lda, base, h, br0, br1, p, out, ldo)
           : run<8, false>(m, a, lda, base, h, br0, br1, p, out, ldo);
      break;
    default:
      pair ? run<4, true>(m, a, lda, base, h, br0, br1, p, out, ldo)
           : run<4, false>(m, a, lda, base, h, br0, br1, p, out, ldo);
      break;
  }
}

constexpr QS8BsrUKernel kTable = {
    kNeon, "eo_qs8_bsrgemm_minmax_ukernel_4x8_b8x4__neon", supports, packed_size, pack, linear_s8};

}  // namespace

const QS8BsrUKernel* qs8_bsr_ukernel__neon() {
  return &kTable;
}

}  // namespace edgeopt
