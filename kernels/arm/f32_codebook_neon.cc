// Codebook (weight-sharing) fp32 linear for NEON (AArch64 and ARMv7).
//
// Weights stay 4-bit (or 2-bit) indices into a 16-entry fp32 table (per layer or per output
// channel) in memory: 8x (16x) less weight traffic than fp32. Each call decodes one panel of 8
// channels x K into a thread-local fp32 scratch (grown once) and runs the dense fp32 tile over
// it for every row, so the decode is paid once per panel, whatever M; the panel (32 * K bytes)
// stays in L2 while the rows stream past.
//
// Tile: MR rows x 8 channels (2 accumulators per row; 4 rows on AArch64, 2 on ARMv7, which has
// 16 quad registers and MLA instead of FMA). Each row's sums run in the same order whatever the
// column range, so results do not depend on the split.
//
// Packed layout: Header (64 bytes) | tables fp32 [per_channel ? np * 8 : 1][16] | for each panel
// of 8 channels, for each k: 4-bit: 4 bytes (byte j: channel 2j low nibble, 2j + 1 high nibble);
// 2-bit: 2 bytes (byte j, bits 2s: channel 4j + s).
#include <arm_neon.h>

#include <cstring>

#include "common/isa_local.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

#define EO_UNROLL _Pragma("GCC unroll 16")
#define EO_INLINE inline __attribute__((always_inline))

constexpr int kNR = 8;
#if defined(__aarch64__)
constexpr int kMR = 4;
#else
constexpr int kMR = 2;
#endif
constexpr size_t kHeaderBytes = 64;

struct Header {
  int32_t n, k, bits, per_channel;
  uint64_t off_idx;
};
static_assert(sizeof(Header) <= kHeaderBytes, "header");

inline int num_panels(int n) {
  return (n + kNR - 1) / kNR;
}
inline int bytes_per_k(int bits) {
  return bits == 4 ? 4 : 2;
}

bool supports(int bits, bool per_channel) {
  (void)per_channel;
  return bits == 4 || bits == 2;
}

size_t tables_bytes(const CodebookF32View& w) {
  return sizeof(float) * 16 * (w.per_channel ? static_cast<size_t>(num_panels(w.n)) * kNR : 1);
}

size_t packed_size(const CodebookF32View& w) {
  return kHeaderBytes + tables_bytes(w) +
         static_cast<size_t>(num_panels(w.n)) * w.k * bytes_per_k(w.bits);
}

void pack(const CodebookF32View& w, void* dst) {
  uint8_t* base = static_cast<uint8_t*>(dst);
  const int np = num_panels(w.n), entries = 1 << w.bits;
  Header h{w.n, w.k, w.bits, w.per_channel ? 1 : 0, kHeaderBytes + tables_bytes(w)};
  std::memset(base, 0, packed_size(w));
  std::memcpy(base, &h, sizeof(h));
  float* tables = reinterpret_cast<float*>(base + kHeaderBytes);
  const int ntables = w.per_channel ? w.n : 1;
  for (int t = 0; t < ntables; ++t)
    for (int e = 0; e < entries; ++e) tables[t * 16 + e] = w.table[t * entries + e];
  uint8_t* out = base + h.off_idx;
  auto idx = [&](int ch, int kk) -> int {
    return ch < w.n ? w.idx[static_cast<size_t>(ch) * w.k + kk] : 0;
  };
  for (int p = 0; p < np; ++p) {
    const int c0 = p * kNR;
    for (int kk = 0; kk < w.k; ++kk) {
      if (w.bits == 4) {
        for (int j = 0; j < 4; ++j)
          *out++ = static_cast<uint8_t>(idx(c0 + 2 * j, kk) | idx(c0 + 2 * j + 1, kk) << 4);
      } else {
        for (int j = 0; j < 2; ++j) {
          int v = 0;
          for (int s = 0; s < 4; ++s) v |= idx(c0 + 4 * j + s, kk) << (2 * s);
          *out++ = static_cast<uint8_t>(v);
        }
      }
    }
  }
}

// Decodes panel p into dst[k][8].
void decode_panel(const Header& h, const uint8_t* base, int p, float* dst) {
  const float* tables = reinterpret_cast<const float*>(base + kHeaderBytes);
  const int bpk = bytes_per_k(h.bits);
  const uint8_t* src = base + h.off_idx + static_cast<size_t>(p) * h.k * bpk;
  const float* t[kNR];
  for (int c = 0; c < kNR; ++c) t[c] = tables + (h.per_channel ? (p * kNR + c) * 16 : 0);
  if (h.bits == 4) {
    for (int kk = 0; kk < h.k; ++kk, src += 4, dst += kNR) {
      for (int j = 0; j < 4; ++j) {
        dst[2 * j] = t[2 * j][src[j] & 15];
        dst[2 * j + 1] = t[2 * j + 1][src[j] >> 4];
      }
    }
  } else {
    for (int kk = 0; kk < h.k; ++kk, src += 2, dst += kNR) {
      for (int j = 0; j < 2; ++j)
        for (int s = 0; s < 4; ++s) dst[4 * j + s] = t[4 * j + s][(src[j] >> (2 * s)) & 3];
    }
  }
}

EO_INLINE float32x4_t fma(float32x4_t acc, float32x4_t w, float32x4_t a) {
#if defined(__aarch64__)
  return vfmaq_f32(acc, w, a);
#else
  return vmlaq_f32(acc, w, a);
#endif
}

template <int MR>
EO_INLINE void tile(int k, const float* a, size_t lda, const float* w, float32x4_t (&out)[MR][2]) {
  float32x4_t acc[MR][2];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = vdupq_n_f32(0.f);
  const float* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  for (int kk = 0; kk < k; ++kk, w += kNR) {
    const float32x4_t b0 = vld1q_f32(w), b1 = vld1q_f32(w + 4);
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      const float32x4_t va = vdupq_n_f32(ar[r][kk]);
      acc[r][0] = fma(acc[r][0], b0, va);
      acc[r][1] = fma(acc[r][1], b1, va);
    }
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    out[r][0] = acc[r][0];
    out[r][1] = acc[r][1];
  }
}

void linear_f32(int m, int k, const float* a, size_t lda, const void* packed, int n, int n0, int n1,
                const F32Params& p, float* out, size_t ldo) {
  (void)n;
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  thread_local LocalVec<float> scratch;
  if (scratch.size() < static_cast<size_t>(k) * kNR) scratch.resize(static_cast<size_t>(k) * kNR);
  float* w = scratch.data();
  const float32x4_t vmin = vdupq_n_f32(p.min), vmax = vdupq_n_f32(p.max);
  for (int j0 = n0; j0 < n1; j0 += kNR) {
    const int nc = n1 - j0 < kNR ? n1 - j0 : kNR;
    decode_panel(h, base, j0 / kNR, w);
    float bb[kNR];
    for (int j = 0; j < kNR; ++j) bb[j] = p.bias != nullptr && j < nc ? p.bias[j0 + j] : 0.f;
    const float32x4_t bias0 = vld1q_f32(bb), bias1 = vld1q_f32(bb + 4);
    auto emit = [&](int rows, int i, float32x4_t(*acc)[2]) {
      for (int r = 0; r < rows; ++r) {
        const float32x4_t v0 = vminq_f32(vmaxq_f32(vaddq_f32(acc[r][0], bias0), vmin), vmax);
        const float32x4_t v1 = vminq_f32(vmaxq_f32(vaddq_f32(acc[r][1], bias1), vmin), vmax);
        float* dst = out + static_cast<size_t>(i + r) * ldo + j0;
        if (nc == kNR) {
          vst1q_f32(dst, v0);
          vst1q_f32(dst + 4, v1);
        } else {
          float tmp[kNR];
          vst1q_f32(tmp, v0);
          vst1q_f32(tmp + 4, v1);
          for (int j = 0; j < nc; ++j) dst[j] = tmp[j];
        }
      }
    };
    int i = 0;
    for (; i + kMR <= m; i += kMR) {
      float32x4_t acc[kMR][2];
      tile<kMR>(k, a + i * lda, lda, w, acc);
      emit(kMR, i, acc);
    }
    for (; i < m; ++i) {
      float32x4_t acc[1][2];
      tile<1>(k, a + i * lda, lda, w, acc);
      emit(1, i, acc);
    }
  }
}

constexpr F32CodebookUKernel kTable = {
    kNeon,     "eo_f32_cbgemm_minmax_ukernel_4x8_i4__neon", kNR, supports, packed_size, pack,
    linear_f32};

}  // namespace

const F32CodebookUKernel* f32_codebook_ukernel__neon() {
  return &kTable;
}

}  // namespace edgeopt
