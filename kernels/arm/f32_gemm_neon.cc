// fp32 linear (bias + clamp) for NEON: AArch64 Advanced SIMD (FMLA) and ARMv7 NEON (VMLA).
//
// Tile: MR x 8 with broadcast-by-lane multiply-adds (XNNPACK's "ld128" f32 GEMMs). AArch64 runs
// 6x8: 12 accumulators + 6 A registers (4 k each) + 2 weight registers of the 32, every weight
// load feeding 6 FMLAs. ARMv7 has 16 quad registers and runs 4x8 (8 accumulators). Single-row
// calls (GEMV) run 1x32, four panels at once, so 8 independent chains cover the FMA latency.
//
// Every output element is accumulated the same way in every variant (one chain over k in
// order, then + bias, then clamp), so results are bit-identical however the dispatcher splits
// rows or columns. ARMv7 NEON has no fused multiply-add unless built with VFPv4 and flushes
// denormals to zero; the tests compare fp32 with a K-scaled tolerance.
//
// Packed layout (from the 64-byte aligned base): Header (64 bytes) | for each panel of 8 output
// channels, for each k: 8 floats (channels past n are zero).
#include <arm_neon.h>

#include <cstring>

#include "common/ukernel.h"

namespace edgeopt {
namespace {

// Small constant loops over registers must be unrolled so accumulator arrays live in registers.
#define EO_UNROLL _Pragma("GCC unroll 16")

// Copies the first n (< N) elements with plain loads and stores: a library call here would
// force the live accumulator registers to be spilled around it.
template <int N, typename T>
inline void copy_prefix(T* dst, const T* src, int n) {
  for (int j = 0; j < N; ++j) {
    if (j < n) dst[j] = src[j];
  }
}

constexpr int kNR = 8;
constexpr size_t kHeaderBytes = 64;
#if defined(__aarch64__)
constexpr int kMR = 6;
#else
constexpr int kMR = 4;
#endif
constexpr int kGemvPanels = 4;

inline int num_panels(int n) {
  return (n + kNR - 1) / kNR;
}

size_t packed_size(int n, int k) {
  return kHeaderBytes + static_cast<size_t>(num_panels(n)) * kNR * k * sizeof(float);
}

void pack(const float* w, int n, int k, void* dst) {
  uint8_t* base = static_cast<uint8_t*>(dst);
  std::memset(base, 0, kHeaderBytes);
  const int32_t hdr[2] = {n, k};
  std::memcpy(base, hdr, sizeof(hdr));
  float* out = reinterpret_cast<float*>(base + kHeaderBytes);
  const int np = num_panels(n);
  for (int p = 0; p < np; ++p) {
    for (int kk = 0; kk < k; ++kk) {
      for (int j = 0; j < kNR; ++j) {
        const int col = p * kNR + j;
        *out++ = col < n ? w[static_cast<size_t>(col) * k + kk] : 0.0f;
      }
    }
  }
}

// acc + b * a[lane]
template <int L>
inline float32x4_t mla_lane(float32x4_t acc, float32x4_t b, float32x4_t a) {
#if defined(__aarch64__)
  return vfmaq_laneq_f32(acc, b, a, L);
#elif defined(__ARM_FEATURE_FMA)
  return vfmaq_f32(acc, b, vdupq_n_f32(vgetq_lane_f32(a, L)));
#else
  return L < 2 ? vmlaq_lane_f32(acc, b, vget_low_f32(a), L & 1)
               : vmlaq_lane_f32(acc, b, vget_high_f32(a), L & 1);
#endif
}

inline float32x4_t mla(float32x4_t acc, float32x4_t b, float32x4_t a) {
#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
  return vfmaq_f32(acc, b, a);
#else
  return vmlaq_f32(acc, b, a);
#endif
}

// One k (given lane L of each row's A register) for MR rows x NP panels.
template <int MR, int NP, int L>
inline void step(float32x4_t (&acc)[MR][NP][2], const float32x4_t (&va)[MR], const float* w,
                 size_t panel_stride) {
  EO_UNROLL
  for (int p = 0; p < NP; ++p) {
    const float32x4_t b0 = vld1q_f32(w + p * panel_stride);
    const float32x4_t b1 = vld1q_f32(w + p * panel_stride + 4);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      acc[r][p][0] = mla_lane<L>(acc[r][p][0], b0, va[r]);
      acc[r][p][1] = mla_lane<L>(acc[r][p][1], b1, va[r]);
    }
  }
}

// out[r][p] = rows r of panels p (8 columns) for MR rows of A; w = first panel's k = 0.
template <int MR, int NP>
inline void tile(int k, const float* a, size_t lda, const float* w, size_t panel_stride,
                 float32x4_t (&acc)[MR][NP][2]) {
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int p = 0; p < NP; ++p) acc[r][p][0] = acc[r][p][1] = vdupq_n_f32(0.0f);
  const float* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  int kk = 0;
  for (; kk + 4 <= k; kk += 4) {
    float32x4_t va[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      va[r] = vld1q_f32(ar[r]);
      ar[r] += 4;
    }
    // The empty asm statements stop the compiler from hoisting all weight loads of the four
    // steps to the top (32 registers for the GEMV tile, which then spills accumulators).
    step<MR, NP, 0>(acc, va, w, panel_stride);
    __asm__ __volatile__("" ::: "memory");
    step<MR, NP, 1>(acc, va, w + kNR, panel_stride);
    __asm__ __volatile__("" ::: "memory");
    step<MR, NP, 2>(acc, va, w + 2 * kNR, panel_stride);
    __asm__ __volatile__("" ::: "memory");
    step<MR, NP, 3>(acc, va, w + 3 * kNR, panel_stride);
    w += 4 * kNR;
  }
  for (; kk < k; ++kk) {
    // K tail: one k at a time, broadcast loads never read past the row.
    EO_UNROLL
    for (int p = 0; p < NP; ++p) {
      const float32x4_t b0 = vld1q_f32(w + p * panel_stride);
      const float32x4_t b1 = vld1q_f32(w + p * panel_stride + 4);
      EO_UNROLL
      for (int r = 0; r < MR; ++r) {
        const float32x4_t va = vld1q_dup_f32(ar[r]);
        acc[r][p][0] = mla(acc[r][p][0], b0, va);
        acc[r][p][1] = mla(acc[r][p][1], b1, va);
      }
    }
    EO_UNROLL
    for (int r = 0; r < MR; ++r) ar[r] += 1;
    w += kNR;
  }
}

struct Ctx {
  int k;
  const float* a;
  size_t lda;
  const float* wbase;
  size_t panel_stride;  // floats per panel: 8 * k
  int n1;
  const float* bias;  // [N] or nullptr
  float32x4_t vmin, vmax;
  float* out;
  size_t ldo;
};

// Bias, clamp and store MR rows x NP panels starting at row i, column j0.
template <int MR, int NP>
inline void finish(const Ctx& c, int i, int j0, float32x4_t (&acc)[MR][NP][2]) {
  EO_UNROLL
  for (int p = 0; p < NP; ++p) {
    const int col = j0 + p * kNR;
    const int nc = c.n1 - col < kNR ? c.n1 - col : kNR;
    float b[kNR] = {0};
    if (c.bias) copy_prefix<kNR>(b, c.bias + col, nc);
    const float32x4_t vb0 = vld1q_f32(b);
    const float32x4_t vb1 = vld1q_f32(b + 4);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      float32x4_t v0 = vaddq_f32(acc[r][p][0], vb0);
      float32x4_t v1 = vaddq_f32(acc[r][p][1], vb1);
      // max then min, like the reference's two comparisons (a NaN stays NaN).
      v0 = vminq_f32(vmaxq_f32(v0, c.vmin), c.vmax);
      v1 = vminq_f32(vmaxq_f32(v1, c.vmin), c.vmax);
      float* dst = c.out + static_cast<size_t>(i + r) * c.ldo + col;
      if (nc == kNR) {
        vst1q_f32(dst, v0);
        vst1q_f32(dst + 4, v1);
      } else {
        float tmp[kNR];
        vst1q_f32(tmp, v0);
        vst1q_f32(tmp + 4, v1);
        copy_prefix<kNR>(dst, tmp, nc);
      }
    }
  }
}

template <int MR, int NP>
inline void run_tile(const Ctx& c, int i, int j0) {
  float32x4_t acc[MR][NP][2];
  tile<MR, NP>(c.k, c.a + i * c.lda, c.lda, c.wbase + (j0 / kNR) * c.panel_stride, c.panel_stride,
               acc);
  finish<MR, NP>(c, i, j0, acc);
}

template <int MR>
inline void run_rows(const Ctx& c, int i, int j0) {
  run_tile<MR, 1>(c, i, j0);
}

void rows_tail(const Ctx& c, int i, int rem, int j0) {
  switch (rem) {
#if defined(__aarch64__)
    case 5: run_rows<5>(c, i, j0); break;
    case 4: run_rows<4>(c, i, j0); break;
#endif
    case 3: run_rows<3>(c, i, j0); break;
    case 2: run_rows<2>(c, i, j0); break;
    case 1: run_rows<1>(c, i, j0); break;
    default: break;
  }
}

void linear_f32(int m, int k, const float* a, size_t lda, const void* packed, int n, int n0, int n1,
                const F32Params& p, float* out, size_t ldo) {
  (void)n;
  const Ctx c{k,
              a,
              lda,
              reinterpret_cast<const float*>(static_cast<const uint8_t*>(packed) + kHeaderBytes),
              static_cast<size_t>(kNR) * k,
              n1,
              p.bias,
              vdupq_n_f32(p.min),
              vdupq_n_f32(p.max),
              out,
              ldo};
  if (m == 1) {
    // GEMV: four panels per pass, the weights streamed exactly once.
    int j0 = n0;
    // A group runs while its last panel still starts inside the range (so all four exist).
    for (; j0 + (kGemvPanels - 1) * kNR < n1; j0 += kGemvPanels * kNR) {
      run_tile<1, kGemvPanels>(c, 0, j0);
    }
    for (; j0 < n1; j0 += kNR) run_tile<1, 1>(c, 0, j0);
    return;
  }
  // A rows of one block (about 16 KB) stay in L1 while all panels of the range pass by.
  int mb = (16 * 1024 / (4 * k + 16)) / kMR * kMR;
  if (mb < kMR) mb = kMR;
  for (int i0 = 0; i0 < m; i0 += mb) {
    const int i1 = m - i0 < mb ? m : i0 + mb;
    for (int j0 = n0; j0 < n1; j0 += kNR) {
      int i = i0;
      for (; i + kMR <= i1; i += kMR) run_rows<kMR>(c, i, j0);
      if (i < i1) rows_tail(c, i, i1 - i, j0);
    }
  }
}

#if defined(__aarch64__)
constexpr F32GemmUKernel kTable = {
    kNeon, "eo_f32_gemm_minmax_ukernel_6x8__neon", kNR, packed_size, pack, linear_f32};
#else
constexpr F32GemmUKernel kTable = {
    kNeon, "eo_f32_gemm_minmax_ukernel_4x8__neon", kNR, packed_size, pack, linear_f32};
#endif

}  // namespace

const F32GemmUKernel* f32_gemm_ukernel__neon() {
  return &kTable;
}

}  // namespace edgeopt
