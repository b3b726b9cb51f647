// Codebook (weight-sharing) fp32 linear with AVX2 + FMA: 4- or 2-bit indices decoded by vpermps.
//
// A 16-float table is two 8-float halves: vpermps (_mm256_permutevar8x32_ps, low 3 index bits)
// looks an index up in both and a blend on index bit 3 (moved to the sign bit) picks the half;
// 2-bit tables are stored replicated to 8 entries, so one vpermps suffices and the bits above
// the index never matter. Indices are zero-extended bytes (vpmovzxbd of 8 bytes) shifted right by
// bits * q, with no masking: vpermps reads only the low 3 bits and the blend only bit 3.
//
// Layout ("one channel per vector", as f32_codebook_avx512.cc): a weight vector is ONE output
// channel x 8 consecutive k, so a per-channel table is that channel's table, a memory operand of
// vpermps; per-layer and per-channel tables run the same code. A K step covers 8 * 8 / bits k;
// per step and channel the panel stores 8 bytes, byte j holding the index of k0 + 8q + j in bits
// [bits*q, bits*q + bits). K is padded with index 0, met by activations loaded as zero (masked
// loads never read past a row's end). Packed: 64-byte header | tables (16 floats per table: per
// layer 1, per channel one per channel padded to whole panels) | panels of kNC channels x ksteps x
// 8 bytes ([kstep][channel][8]).
//
// Tile choice: kNC = 4 channels x MR = 2 rows = 8 ymm accumulators + 2 activation vectors + the
// two table halves + decode temporaries fit the 16 ymm registers.
//
// Determinism: every (row, channel) sums its k in the same order whatever the tile, row count or
// column range (8 lanes in k order, a fixed reduction, then the bias).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/f32_codebook_pack.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNC = 4;                    // output channels per panel
constexpr uint32_t kMagic = 0x32433346u;  // "F3C2"
constexpr int kLanes = 8;                 // k per weight vector

inline __m256i lane_mask(int valid) {  // first `valid` (clamped to [0, 8]) lanes all-ones
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(std::max(0, std::min(8, valid))), iota);
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <int BITS, bool kPerChannel, int MR>
__attribute__((noinline)) void tile(int k, const float* a, size_t lda, const uint8_t* w,
                                    const float* tab, const F32Params& p, int col0, int cols,
                                    float* out, size_t ldo) {
  constexpr int Q = 8 / BITS;
  constexpr int KS = 8 * Q;
  __m256 acc[MR][kNC];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < kNC; ++c) acc[r][c] = _mm256_setzero_ps();
  const __m256 tlo = _mm256_loadu_ps(tab);
  const __m256 thi = _mm256_loadu_ps(tab + 8);
  const int steps = (k + KS - 1) / KS;
  const int full = k / KS;
  for (int s = 0; s < steps; ++s) {
    const uint8_t* ws = w + static_cast<size_t>(s) * kNC * 8;
    for (int q = 0; q < Q; ++q) {
      const int k0 = s * KS + q * 8;
      __m256 av[MR];
      if (s < full) {
        for (int r = 0; r < MR; ++r) av[r] = _mm256_loadu_ps(a + r * lda + k0);
      } else {
        const __m256i km = lane_mask(k - k0);
        for (int r = 0; r < MR; ++r) {
          av[r] = k - k0 > 0 ? _mm256_maskload_ps(a + r * lda + k0, km) : _mm256_setzero_ps();
        }
      }
      for (int c = 0; c < kNC; ++c) {
        const __m256i x =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(ws + c * 8)));
        const __m256i idx = q == 0 ? x : _mm256_srli_epi32(x, BITS * q);
        __m256 wv;
        if (BITS == 2) {
          wv = _mm256_permutevar8x32_ps(kPerChannel ? _mm256_loadu_ps(tab + c * 16) : tlo, idx);
        } else {
          const __m256 lo =
              _mm256_permutevar8x32_ps(kPerChannel ? _mm256_loadu_ps(tab + c * 16) : tlo, idx);
          const __m256 hi =
              _mm256_permutevar8x32_ps(kPerChannel ? _mm256_loadu_ps(tab + c * 16 + 8) : thi, idx);
          wv = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
        }
        for (int r = 0; r < MR; ++r) acc[r][c] = _mm256_fmadd_ps(av[r], wv, acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < cols; ++c) {
      float v = hsum(acc[r][c]);
      if (p.bias) v += p.bias[col0 + c];
      v = v < p.min ? p.min : v;  // same compares as the reference (NaN passes through)
      v = v > p.max ? p.max : v;
      out[r * ldo + col0 + c] = v;
    }
  }
}

struct Tile {
  template <int BITS, bool kPerChannel, int MR>
  static inline __attribute__((always_inline)) void apply(int k, const float* a, size_t lda,
                                                          const uint8_t* w, const float* tab,
                                                          const F32Params& p, int col0, int cols,
                                                          float* out, size_t ldo) {
    tile<BITS, kPerChannel, MR>(k, a, lda, w, tab, p, col0, cols, out, ldo);
  }
};

constexpr F32CodebookUKernel kTable = {
    kAvx2,
    "eo_f32_cbgemm_minmax_ukernel_2x4c8_i4__avx2",
    kNC,
    f32_cb_supports,
    f32_cb_packed_size<kNC, kLanes>,
    f32_cb_pack<kNC, kLanes, kMagic>,
    f32_cb_linear<kNC, kLanes, Tile>,
};

}  // namespace

const F32CodebookUKernel* f32_codebook_ukernel__avx2() {
  return &kTable;
}

}  // namespace edgeopt
