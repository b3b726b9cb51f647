// Codebook (weight-sharing) int8 linear with AVX2: 4- or 2-bit indices decoded by pshufb, int16
// madd.
//
// AVX2 has no vpdpbusd, and vpmaddubsw saturates its int16 pair sums (255 * 127 * 2 > 32767), so
// the exact product path is int16: a 128-bit pshufb turns 16 indices of one channel into its 16
// int8 weights (the table is that channel's 16-byte table, int8 as given), vpmovsxbw widens them,
// and vpmaddwd against the row's 16 activations (also widened to int16) adds exact products into
// 8 int32 lanes of that channel. acc = bias - input_zero_point * row_sum(w) + sum a*w, wrapping in
// int32 exactly as the reference does (-128 weights included); the output stage is the scalar
// requantize_s8 (common/requant.h), so results are bit-exact.
//
// Layout. A panel is kNC = 4 output channels; per 16-k step it stores 16 bytes per 8 / bits
// channels: 4-bit: chunk h (channels 2h, 2h+1) byte j = idx[2h][k+j] | idx[2h+1][k+j] << 4;
// 2-bit: one chunk, bits 2c..2c+1 of byte j = idx[c][k+j]. Per-channel and per-layer tables run
// the same code (per-layer repeats the table for the 4 channels). K is padded with index 0 whose
// products meet activations loaded as zero (nothing past a row's end is read).
// Packed: 64-byte header | row_sum(w) [panels*4] | tables [panels*4][16] | panels of ksteps *
// 8 * bits bytes.
//
// Tile choice: MR = 2 rows x 4 channels = 8 ymm accumulators + 2 activation vectors + the decode
// temporaries fit the 16 ymm registers; each decoded weight vector feeds MR vpmaddwd.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/requant.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNC = 4;  // output channels per panel
constexpr int kKS = 16;
constexpr size_t kHeaderBytes = 64;
constexpr uint32_t kMagic = 0x32433851u;  // "Q8C2"

struct Header {
  int32_t n, k, bits, per_channel, panels, ksteps;
  uint32_t magic;
};

struct Layout {
  size_t sums, tables, data, step_bytes, panel_bytes, total;
};

Layout layout(int n, int k, int bits) {
  const size_t panels = (static_cast<size_t>(n) + kNC - 1) / kNC;
  const size_t ksteps = (static_cast<size_t>(k) + kKS - 1) / kKS;
  Layout l;
  l.sums = kHeaderBytes;
  l.tables = l.sums + ((panels * kNC * sizeof(int32_t) + 63) & ~size_t{63});
  l.data = l.tables + panels * kNC * 16;
  l.step_bytes = static_cast<size_t>(8) * bits;
  l.panel_bytes = ksteps * l.step_bytes;
  l.total = l.data + panels * l.panel_bytes;
  return l;
}

bool supports(int bits, bool /*per_channel*/) {
  return bits == 4 || bits == 2;
}

size_t packed_size(const CodebookS8View& w) {
  return layout(w.n, w.k, w.bits).total;
}

void pack(const CodebookS8View& w, void* dst) {
  const Layout l = layout(w.n, w.k, w.bits);
  const int panels = (w.n + kNC - 1) / kNC;
  const int ksteps = (w.k + kKS - 1) / kKS;
  const int entries = 1 << w.bits;
  auto* base = static_cast<uint8_t*>(dst);
  std::memset(base, 0, l.total);
  Header h{w.n, w.k, w.bits, w.per_channel ? 1 : 0, panels, ksteps, kMagic};
  std::memcpy(base, &h, sizeof(h));
  auto* sums = reinterpret_cast<int32_t*>(base + l.sums);
  for (int j = 0; j < w.n; ++j) sums[j] = w.row_sums[j];
  for (int ch = 0; ch < panels * kNC; ++ch) {
    const int src = w.per_channel ? std::min(ch, w.n - 1) : 0;
    for (int e = 0; e < 16; ++e) {
      base[l.tables + static_cast<size_t>(ch) * 16 + e] =
          static_cast<uint8_t>(w.table[static_cast<size_t>(src) * entries + e % entries]);
    }
  }
  const int per_chunk = 8 / w.bits;  // channels per 16-byte chunk
  for (int p = 0; p < panels; ++p) {
    uint8_t* panel = base + l.data + static_cast<size_t>(p) * l.panel_bytes;
    for (int c = 0; c < kNC; ++c) {
      const int ch = p * kNC + c;
      if (ch >= w.n) continue;
      const int chunk = c / per_chunk;
      const int shift = w.bits * (c % per_chunk);
      for (int kk = 0; kk < w.k; ++kk) {
        const uint32_t v = w.idx[static_cast<size_t>(ch) * w.k + kk] & (entries - 1);
        panel[static_cast<size_t>(kk / kKS) * l.step_bytes + chunk * 16 + kk % kKS] |=
            static_cast<uint8_t>(v << shift);
      }
    }
  }
}

// Rows [0, MR) x one panel over all K; acc_out[r][c] = sum_k a[r,k] * w[c,k] (wrapping int32).
template <int BITS, int MR>
__attribute__((always_inline)) inline void kloop(int k, const int8_t* a, size_t lda,
                                                 const uint8_t* w, const uint8_t* tab,
                                                 int32_t (&acc_out)[MR][kNC]) {
  constexpr size_t kStep = 8 * BITS;
  const __m128i m = _mm_set1_epi8(BITS == 4 ? 0x0F : 0x03);
  __m128i t[kNC];
  for (int c = 0; c < kNC; ++c)
    t[c] = _mm_load_si128(reinterpret_cast<const __m128i*>(tab + 16 * c));
  __m256i acc[MR][kNC];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < kNC; ++c) acc[r][c] = _mm256_setzero_si256();
  const int steps = (k + kKS - 1) / kKS;
  const int full = k / kKS;
  alignas(16) int8_t tail[MR][16];
  for (int s = 0; s < steps; ++s) {
    __m256i x[MR];
    for (int r = 0; r < MR; ++r) {
      const int8_t* src = a + r * lda + static_cast<size_t>(s) * kKS;
      if (s == full) {  // partial last step: copy the valid bytes, zero the rest
        std::memset(tail[r], 0, 16);
        std::memcpy(tail[r], src, static_cast<size_t>(k - s * kKS));
        src = tail[r];
      }
      x[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    }
    const uint8_t* ws = w + static_cast<size_t>(s) * kStep;
    for (int c = 0; c < kNC; ++c) {
      const int per_chunk = 8 / BITS;
      const __m128i raw =
          _mm_load_si128(reinterpret_cast<const __m128i*>(ws + (c / per_chunk) * 16));
      const int sh = BITS * (c % per_chunk);
      const __m128i idx = _mm_and_si128(sh ? _mm_srli_epi16(raw, sh) : raw, m);
      const __m256i wv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(t[c], idx));
      for (int r = 0; r < MR; ++r) {
        acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(wv, x[r]));
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    const __m256i h01 = _mm256_hadd_epi32(acc[r][0], acc[r][1]);
    const __m256i h23 = _mm256_hadd_epi32(acc[r][2], acc[r][3]);
    const __m256i h = _mm256_hadd_epi32(h01, h23);  // lane l: [c0, c1, c2, c3] partials
    const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(acc_out[r]), s4);
  }
}

template <int BITS, int MR>
__attribute__((noinline)) void tile(int k, const int8_t* a, size_t lda, const uint8_t* w,
                                    const uint8_t* tab, const int32_t* wsum, const QS8Params& p,
                                    int col0, int cols, int8_t* out, size_t ldo) {
  int32_t acc[MR][kNC];
  kloop<BITS, MR>(k, a, lda, w, tab, acc);
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < cols; ++c) {
      const int col = col0 + c;
      uint32_t v = static_cast<uint32_t>(acc[r][c]) -
                   static_cast<uint32_t>(p.input_zero_point) * static_cast<uint32_t>(wsum[c]);
      if (p.bias) v += static_cast<uint32_t>(p.bias[col]);
      out[r * ldo + col] = requantize_s8(static_cast<int32_t>(v), p.multiplier[col], p.shift[col],
                                         p.output_zero_point, p.qmin, p.qmax);
    }
  }
}

template <int BITS>
void run(int m, int k, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int n0,
         int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  const Layout l = layout(h.n, h.k, h.bits);
  const auto* wsum = reinterpret_cast<const int32_t*>(base + l.sums);
  for (int pi = n0 / kNC; pi * kNC < n1; ++pi) {
    const uint8_t* w = base + l.data + static_cast<size_t>(pi) * l.panel_bytes;
    const uint8_t* tab = base + l.tables + static_cast<size_t>(pi) * kNC * 16;
    const int col0 = pi * kNC;
    const int cols = std::min(kNC, n1 - col0);
    int i = 0;
    for (; i + 2 <= m; i += 2) {
      tile<BITS, 2>(k, a + i * lda, lda, w, tab, wsum + col0, p, col0, cols, out + i * ldo, ldo);
    }
    if (i < m) {
      tile<BITS, 1>(k, a + i * lda, lda, w, tab, wsum + col0, p, col0, cols, out + i * ldo, ldo);
    }
  }
}

void linear_s8(int m, int k, const int8_t* a, size_t lda, const void* packed, int /*n*/, int n0,
               int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  if (m <= 0 || n1 <= n0) return;
  const auto* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  if (h.bits == 4) {
    run<4>(m, k, a, lda, base, h, n0, n1, p, out, ldo);
  } else {
    run<2>(m, k, a, lda, base, h, n0, n1, p, out, ldo);
  }
}

constexpr QS8CodebookUKernel kTable = {
    kAvx2,     "eo_qs8_cbgemm_minmax_ukernel_2x4c16_i4__avx2", kNC, supports, packed_size, pack,
    linear_s8,
};

}  // namespace

const QS8CodebookUKernel* qs8_codebook_ukernel__avx2() {
  return &kTable;
}

}  // namespace edgeopt
