// Block-sparse (BSR) fp32 linear for NEON (AArch64 and ARMv7).
//
// Native blocks: 8x1 and 4x1 (XNNPACK's sparse shapes: R output channels x 1 k), also 16x1. A
// stored unit is KR channel weights for one k: KR / 4 vector loads, and per activation row one
// broadcast of a[k] and KR / 4 FMA (MLA on ARMv7, which has no fused multiply-add in plain NEON),
// so the work is proportional to the stored blocks. Other shapes are re-blocked at pack time into
// KR x 1 units (KR = 16, 8 or 4, the largest that divides R; 4 for R = 1, 2): R x C blocks with R
// a multiple of 4 become C units each (exact cost); R = 1, 2 cost at most 4x (union of the
// source patterns of a unit's channels).
//
// Tiles: MR rows x KR channels, KR / 4 accumulators per row: AArch64 keeps up to 16 accumulators
// (4 rows), ARMv7 up to 8; a single row alternates two accumulator sets over even / odd units so
// the FMA latency is hidden. A given row is always computed by the same tile shape for a given M,
// so results do not depend on the block-row sub-range. Rows are processed in blocks of about
// 16 KB of A while the groups of the requested range stream past.
//
// Packed layout (offsets from the 64-byte aligned base): Header (64 bytes) | ptr int32
// [groups + 1] | unit k indices int32 [units] | units, KR floats each (16-aligned).
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "common/isa_local.h"
#include "common/bsr_reblock.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

#define EO_UNROLL _Pragma("GCC unroll 16")
#define EO_INLINE inline __attribute__((always_inline))

struct Header {
  int32_t n, k, r, kr;
  int32_t groups, units, pad0, pad1;
  uint64_t off_ptr, off_offs, off_w, pad2;
};
static_assert(sizeof(Header) <= 64, "header");
constexpr size_t kHeaderBytes = 64;

inline size_t align16(size_t x) {
  return (x + 15) & ~size_t{15};
}

bool supports(int r, int c) {
  return r >= 1 && c >= 1 && r <= 256 && c <= 256 && (r % 4 == 0 || r <= 2);
}

// Header and size of the packed form; ptr / cols (when non-null) get the units of each group:
// the ascending k any source block of the group covers.
size_t layout(const BsrF32View& w, Header* h, LocalVec<int32_t>* ptr,
              LocalVec<int32_t>* cols) {
  const int kr = bsr_canon_rows(w.r);
  Header x{};
  x.n = w.n;
  x.k = w.k;
  x.r = w.r;
  x.kr = kr;
  x.groups = (w.n + kr - 1) / kr;
  x.units = static_cast<int32_t>(bsr_reblock_structure_kr<1>(kr, w, ptr, cols));
  x.off_ptr = kHeaderBytes;
  x.off_offs = align16(x.off_ptr + sizeof(int32_t) * (x.groups + 1));
  x.off_w = align16(x.off_offs + sizeof(int32_t) * x.units);
  if (h != nullptr) *h = x;
  return x.off_w + sizeof(float) * x.units * kr;
}

size_t packed_size(const BsrF32View& w) {
  return layout(w, nullptr, nullptr, nullptr);
}

void pack(const BsrF32View& w, void* dst) {
  Header h;
  LocalVec<int32_t> ptr, cols;
  const size_t bytes = layout(w, &h, &ptr, &cols);
  uint8_t* base = static_cast<uint8_t*>(dst);
  std::memset(base, 0, bytes);
  std::memcpy(base, &h, sizeof(h));
  const int kr = h.kr;
  std::copy(ptr.begin(), ptr.end(), reinterpret_cast<int32_t*>(base + h.off_ptr));
  std::copy(cols.begin(), cols.end(), reinterpret_cast<int32_t*>(base + h.off_offs));
  float* vals = reinterpret_cast<float*>(base + h.off_w);
  bsr_reblock_values_kr<1>(
      kr, w, ptr, cols, [&](size_t u, int row, int /*col*/, float v) { vals[u * kr + row] = v; });
}

EO_INLINE float32x4_t fma(float32x4_t acc, float32x4_t w, float32x4_t a) {
#if defined(__aarch64__)
  return vfmaq_f32(acc, w, a);
#else
  return vmlaq_f32(acc, w, a);
#endif
}

template <int KR, int MR>
EO_INLINE void unit(float32x4_t (&acc)[MR][KR / 4], const float* const (&ar)[MR], int32_t kk,
                    const float* w) {
  float32x4_t va[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) va[r] = vdupq_n_f32(ar[r][kk]);
  EO_UNROLL
  for (int q = 0; q < KR / 4; ++q) {
    const float32x4_t b = vld1q_f32(w + 4 * q);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) acc[r][q] = fma(acc[r][q], b, va[r]);
  }
}

template <int KR, int MR>
EO_INLINE void tile(const float* a, size_t lda, const int32_t* offs, const float* w, int nu,
                    float32x4_t (&out)[MR][KR / 4]) {
  constexpr int Q = KR / 4;
  constexpr int S = MR == 1 ? 2 : 1;
  float32x4_t acc[S][MR][Q];
  EO_UNROLL
  for (int s = 0; s < S; ++s) EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < Q; ++q) acc[s][r][q] = vdupq_n_f32(0.f);
  const float* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  int u = 0;
  if (S == 2) {
    for (; u + 2 <= nu; u += 2) {
      unit<KR, MR>(acc[0], ar, offs[u], w);
      unit<KR, MR>(acc[S - 1], ar, offs[u + 1], w + KR);
      w += 2 * KR;
    }
  }
  for (; u < nu; ++u) {
    unit<KR, MR>(acc[0], ar, offs[u], w);
    w += KR;
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < Q; ++q)
    out[r][q] = S == 2 ? vaddq_f32(acc[0][r][q], acc[S - 1][r][q]) : acc[0][r][q];
}

template <int Q>
EO_INLINE void store_row(const float32x4_t (&acc)[Q], const float32x4_t (&bias)[Q],
                         float32x4_t vmin, float32x4_t vmax, int lo, int hi, float* dst) {
  float tmp[4 * Q];
  EO_UNROLL
  for (int q = 0; q < Q; ++q) {
    const float32x4_t v = vminq_f32(vmaxq_f32(vaddq_f32(acc[q], bias[q]), vmin), vmax);
    if (lo == 0 && hi == 4 * Q) {
      vst1q_f32(dst + 4 * q, v);
    } else {
      vst1q_f32(tmp + 4 * q, v);
    }
  }
  if (!(lo == 0 && hi == 4 * Q)) {
    for (int j = lo; j < hi; ++j) dst[j] = tmp[j];
  }
}

#if defined(__aarch64__)
constexpr int kMaxAcc = 16;
#else
constexpr int kMaxAcc = 8;
#endif

template <int KR, int MR, int Q>
EO_INLINE void rows(int i, int count, const float* a, size_t lda, const int32_t* go,
                    const float* gw, int nu, const float32x4_t (&bias)[Q], float32x4_t vmin,
                    float32x4_t vmax, int lo, int hi, float* og, size_t ldo) {
  float32x4_t acc[MR][Q];
  tile<KR, MR>(a + i * lda, lda, go, gw, nu, acc);
  for (int r = 0; r < count; ++r)
    store_row<Q>(acc[r], bias, vmin, vmax, lo, hi, og + (i + r) * ldo);
}

template <int KR>
void run(int m, const float* a, size_t lda, const uint8_t* base, const Header& h, int br0, int br1,
         const F32Params& p, float* out, size_t ldo) {
  constexpr int Q = KR / 4;
  constexpr int MR = kMaxAcc / Q < 4 ? kMaxAcc / Q : 4;
  const int32_t* ptr = reinterpret_cast<const int32_t*>(base + h.off_ptr);
  const int32_t* offs = reinterpret_cast<const int32_t*>(base + h.off_offs);
  const float* vals = reinterpret_cast<const float*>(base + h.off_w);
  const int c0 = br0 * h.r, c1 = std::min(h.n, br1 * h.r);
  if (c0 >= c1) return;
  const int g0 = c0 / KR, g1 = (c1 + KR - 1) / KR;
  const float32x4_t vmin = vdupq_n_f32(p.min);
  const float32x4_t vmax = vdupq_n_f32(p.max);
  int mb = (4 * 1024 / (h.k + 4)) / MR * MR;
  if (mb < MR) mb = MR;
  for (int i0 = 0; i0 < m; i0 += mb) {
    const int i1 = std::min(m, i0 + mb);
    for (int g = g0; g < g1; ++g) {
      float bb[KR];
      for (int j = 0; j < KR; ++j) {
        const int ch = g * KR + j;
        bb[j] = p.bias != nullptr && ch < h.n ? p.bias[ch] : 0.f;
      }
      float32x4_t bias[Q];
      EO_UNROLL
      for (int q = 0; q < Q; ++q) bias[q] = vld1q_f32(bb + 4 * q);
      const int lo = std::max(c0, g * KR) - g * KR, hi = std::min(c1, g * KR + KR) - g * KR;
      const int nu = ptr[g + 1] - ptr[g];
      const int32_t* go = offs + ptr[g];
      const float* gw = vals + static_cast<size_t>(ptr[g]) * KR;
      float* og = out + g * KR;
      int i = i0;
      for (; i + MR <= i1; i += MR)
        rows<KR, MR, Q>(i, MR, a, lda, go, gw, nu, bias, vmin, vmax, lo, hi, og, ldo);
      const int rem = i1 - i;
      if constexpr (MR > 2) {
        if (rem >= 2) {
          rows<KR, 2, Q>(i, 2, a, lda, go, gw, nu, bias, vmin, vmax, lo, hi, og, ldo);
          i += 2;
        }
      }
      for (; i < i1; ++i)
        rows<KR, 1, Q>(i, 1, a, lda, go, gw, nu, bias, vmin, vmax, lo, hi, og, ldo);
    }
  }
}

void linear_f32(int m, const float* a, size_t lda, const void* packed, int br0, int br1,
                const F32Params& p, float* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  switch (h.kr) {
    case 16: run<16>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
    case 8: run<8>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
    default: run<4>(m, a, lda, base, h, br0, br1, p, out, ldo); break;
  }
}

constexpr F32BsrUKernel kTable = {
    kNeon, "eo_f32_bsrgemm_minmax_ukernel_4x8_b8x1__neon", supports, packed_size, pack, linear_f32};

}  // namespace

const F32BsrUKernel* f32_bsr_ukernel__neon() {
  return &kTable;
}

}  // namespace edgeopt
