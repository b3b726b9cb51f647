// Block-sparse (BSR) fused int8 linear for AArch64 with the Armv8.2 dot product (SDOT).
//
// Native block: 8x4 (8 output channels x 4 consecutive k; 4x4 and 16x4 are native too). A
// row-major 4x4 int8 piece of a block is one SDOT operand (lane j = channel j's 4 weights), and
// the 4 activations of that block column are one 32-bit load replicated to all lanes (LD1R), so a
// stored 8x4 block costs two 16-byte weight loads and, per activation row, one LD1R and two SDOT:
// the work is proportional to the stored blocks. SDOT is exact for any int8 input (-128
// included), so there is a single code path; the input zero point is folded into the bias as
// bias - input_zero_point * row_sum(w), int32 wrapping like the reference.
//
// Other block shapes are re-blocked at pack time into units of KR x 4 (KR = 16, 8 or 4 channels,
// the largest that divides R; 4 for R = 1, 2): a unit is stored when any source block touches it,
// with the source values and zeros elsewhere (exact). R x C with C a multiple of 4 and R a
// multiple of 4 costs exactly the stored blocks; C = 1, 2 or R = 1, 2 cost at most 4x (the union
// of the source patterns inside a unit). Units wholly past K are never stored.
//
// Tiles: 4 activation rows x KR channels (KR / 4 accumulators per row, at most 16 in all); a
// single row alternates two accumulator sets over even / odd units so 2 * KR / 4 SDOT chains hide
// the latency. Rows are processed in blocks of about 16 KB of A (kept in L1) while the groups of
// the requested range stream past; a group's units stay in L1 for all the row tiles of a block.
// The output stage is gemmlowp's exact NEON requantization (SQRDMULH + rounding shift with the
// ties fixup), bit-exact to requant.h.
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

// acc[r][q] += unit (KR x 4 at w) . a[r][o .. o + 3] for MR rows.
template <int KR, int MR>
EO_INLINE void unit(int32x4_t (&acc)[MR][KR / 4], const int8_t* const (&ar)[MR], int32_t o,
                    const int8_t* w) {
  int8x16_t va[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    int32_t x;
    std::memcpy(&x, ar[r] + o, 4);
    va[r] = vreinterpretq_s8_s32(vdupq_n_s32(x));
  }
  EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) {
    const int8x16_t b = vld1q_s8(w + 16 * q);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) acc[r][q] = vdotq_s32(acc[r][q], b, va[r]);
  }
}

// out[r][q] = channels 4q..4q+3 of the group for MR rows (raw sums, no zero point).
template <int KR, int MR>
EO_INLINE void tile(const int8_t* a, size_t lda, int k, const int32_t* offs, const int8_t* w,
                    int nu, int32x4_t (&out)[MR][KR / 4]) {
  constexpr int Q = KR / 4;
  constexpr int S = MR == 1 ? 2 : 1;
  constexpr int kUnit = KR * 4;
  int32x4_t acc[S][MR][Q];
  EO_UNROLL
  for (int s = 0; s < S; ++s) EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < Q; ++q) acc[s][r][q] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  // The last unit may run past K (k % 4 != 0): its activations are copied, never over-read.
  const bool tail = nu > 0 && offs[nu - 1] + 4 > k;
  const int full = nu - (tail ? 1 : 0);
  int u = 0;
  if (S == 2) {
    for (; u + 2 <= full; u += 2) {
      unit<KR, MR>(acc[0], ar, offs[u], w);
      unit<KR, MR>(acc[S - 1], ar, offs[u + 1], w + kUnit);
      w += 2 * kUnit;
    }
  }
  for (; u < full; ++u) {
    unit<KR, MR>(acc[0], ar, offs[u], w);
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
    unit<KR, MR>(acc[0], br, 0, w);
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < Q; ++q)
    out[r][q] = S == 2 ? vaddq_s32(acc[0][r][q], acc[S - 1][r][q]) : acc[0][r][q];
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

template <int KR>
void run(int m, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int br0, int br1,
         const QS8Params& p, int8_t* out, size_t ldo) {
  constexpr int Q = KR / 4;
  constexpr int MR = 4;
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
        tile<KR, MR>(a + i * lda, lda, h.k, go, gw, nu, acc);
        EO_UNROLL
        for (int r = 0; r < MR; ++r)
          store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
      }
      switch (i1 - i) {
        case 3: {
          int32x4_t acc[3][Q];
          tile<KR, 3>(a + i * lda, lda, h.k, go, gw, nu, acc);
          for (int r = 0; r < 3; ++r)
            store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
          break;
        }
        case 2: {
          int32x4_t acc[2][Q];
          tile<KR, 2>(a + i * lda, lda, h.k, go, gw, nu, acc);
          for (int r = 0; r < 2; ++r)
            store_row<Q>(acc[r], e, vzp, vmin, vmax, lo, hi, og + (i + r) * ldo);
          break;
        }
        case 1: {
          int32x4_t acc[1][Q];
          tile<KR, 1>(a + i * lda, lda, h.k, go, gw, nu, acc);
          store_row<Q>(acc[0], e, vzp, vmin, vmax, lo, hi, og + i * ldo);
          break;
        }
        default: break;
      }
    }
  }
}

void linear_s8(int m, const int8_t* a, size_t lda, const void* packed, int br0, int br1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  switch (h.kr) {
    case 16: run<16>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
    case 8: run<8>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
    default: run<4>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
  }
}

constexpr QS8BsrUKernel kTable = {kNeonDot, "eo_qs8_bsrgemm_minmax_ukernel_4x8_b8x4__neondot",
                                  supports, packed_size,
                                  pack,     linear_s8};

}  // namespace

const QS8BsrUKernel* qs8_bsr_ukernel__neondot() {
  return &kTable;
}

}  // namespace edgeopt
