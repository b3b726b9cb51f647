// Codebook (weight-sharing) fp32 linear with AVX-512F: 4- or 2-bit indices decoded by vpermps.
//
// A 16-float table fits one zmm, and vpermps (_mm512_permutexvar_ps) looks 16 indices up in it in
// one instruction, reading only the low 4 bits of each dword index, so no masking is needed:
// 16 index bytes zero-extended to dwords (vpmovzxbd) hold 2 (4-bit) or 4 (2-bit) index vectors,
// taken by shifting right by 0, 4 (resp. 0, 2, 4, 6) bits; 2-bit tables are stored replicated to
// 16 entries. The weight stream is 8x (4-bit) or 16x (2-bit) smaller than dense fp32.
//
// Layout ("one channel per vector"). A weight vector holds ONE output channel x 16 consecutive k,
// so a per-channel table is simply that channel's 16-float table, taken straight from memory by
// vpermps (its table operand may be a memory operand): per-layer and per-channel tables run the
// same code. The activations are plain 16-float loads of a row, shared by the channels of a tile;
// each (row, channel) accumulates 16 partial sums, reduced once after the K loop. A K step covers
// 16 * 8 / bits k; per step and channel the panel stores 16 bytes, byte j holding the index of
// k0 + 16q + j in bits [bits*q, bits*q + bits). K is padded with index 0, multiplied by
// activations loaded as zero (masked loads never read past a row's end).
// Packed: 64-byte header | tables (per layer: 16 floats; per channel: 16 floats per channel,
// padded to whole panels) | panels of kNC channels x ksteps x 16 bytes ([kstep][channel][16]).
//
// Tile choice: kNC = 8 channels x MR <= 2 rows = up to 16 accumulators, + the 8 index vectors of
// a K step + activations + table: 27 zmm (MR = 3 made GCC spill, measured slower). Every decoded
// weight vector feeds MR FMAs, every activation load kNC FMAs. A single row still has 8 independent
// FMA chains (4-cycle latency, 2 FMAs/cycle). nr = 8 gives the dispatcher a fine split.
//
// Determinism: every (row, channel) sums its k in the same order whatever the tile, row count or
// column range (16 lanes in k order, then a fixed reduction, then the bias), so results do not
// depend on how the dispatcher splits the work.

// GCC 12 warns -W(maybe-)uninitialized inside its own AVX-512 intrinsic headers (GCC PR105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/f32_codebook_pack.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNC = 8;                    // output channels per panel
constexpr uint32_t kMagic = 0x42433346u;  // "F3CB"
constexpr int kLanes = 16;                // k per weight vector

inline __mmask16 lane_mask(int valid) {
  if (valid <= 0) return 0;
  if (valid >= 16) return 0xFFFF;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

// Rows [0, MR) x one panel (channels col0 .. col0 + cols) over all K.
template <int BITS, bool kPerChannel, int MR>
__attribute__((noinline)) void tile(int k, const float* a, size_t lda, const uint8_t* w,
                                    const float* tab, const F32Params& p, int col0, int cols,
                                    float* out, size_t ldo) {
  constexpr int Q = 8 / BITS;
  constexpr int KS = 16 * Q;
  __m512 acc[MR][kNC];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < kNC; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  const __m512 t0 = _mm512_load_ps(tab);
  const float* ar[MR];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  const int steps = (k + KS - 1) / KS;
  const int full = k / KS;
  for (int s = 0; s < steps; ++s) {
    const uint8_t* ws = w + static_cast<size_t>(s) * kNC * 16;
    __m512i x[kNC];
#pragma GCC unroll 8
    for (int c = 0; c < kNC; ++c) {
      x[c] = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(ws + c * 16)));
    }
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      const int k0 = s * KS + q * 16;
      const __mmask16 km = s < full ? static_cast<__mmask16>(0xFFFF) : lane_mask(k - k0);
      __m512 av[MR];
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) av[r] = _mm512_maskz_loadu_ps(km, ar[r] + k0);
#pragma GCC unroll 8
      for (int c = 0; c < kNC; ++c) {
        const __m512i idx = q == 0 ? x[c] : _mm512_srli_epi32(x[c], BITS * q);
        const __m512 wv = kPerChannel ? _mm512_permutexvar_ps(idx, _mm512_load_ps(tab + c * 16))
                                      : _mm512_permutexvar_ps(idx, t0);
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) acc[r][c] = _mm512_fmadd_ps(av[r], wv, acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    alignas(64) float v[16];
    for (int c = 0; c < kNC; ++c) v[c] = _mm512_reduce_add_ps(acc[r][c]);
    const __mmask16 cm = lane_mask(cols);
    __m512 y = _mm512_maskz_load_ps(0x00FF, v);
    if (p.bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(cm, p.bias + col0));
    // max(lo, x) / min(hi, x) return x when x is NaN, like the reference's compares (as in
    // f32_gemm_avx512.cc).
    y = _mm512_maskz_min_ps(0xFFFF, _mm512_set1_ps(p.max),
                            _mm512_maskz_max_ps(0xFFFF, _mm512_set1_ps(p.min), y));
    _mm512_mask_storeu_ps(out + r * ldo + col0, cm, y);
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
    kAvx512Vnni,
    "eo_f32_cbgemm_minmax_ukernel_2x8c16_i4__avx512",
    kNC,
    f32_cb_supports,
    f32_cb_packed_size<kNC, kLanes>,
    f32_cb_pack<kNC, kLanes, kMagic>,
    f32_cb_linear<kNC, kLanes, Tile>,
};

}  // namespace

const F32CodebookUKernel* f32_codebook_ukernel__avx512() {
  return &kTable;
}

}  // namespace edgeopt
