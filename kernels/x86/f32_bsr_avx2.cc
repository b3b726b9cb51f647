// Block-sparse (BSR) fp32 linear (out = clamp(a . W^T + bias)) for x86 AVX2 + FMA.
//
// Native block: 8 output channels x 1 k, one ymm of weights; one stored block costs one 32-byte
// load and, per activation row, one broadcast load and one FMA. 16x1 blocks are split into two 8x1
// blocks (the same work). Other shapes (R in {1, 2, 4, 8, 16} x C in {1, 2, 4}) are re-blocked at
// pack time into 8x1 blocks: an (8-channel group, k) block is stored when any source block touches
// it, values from the source blocks, zeros elsewhere; C = 4 blocks become 4 blocks (the same FMA
// count), R < 8 grows with the union of the 8/R source patterns.
//
// Packed layout: 64-byte header; ptr[groups + 1]; per block the byte offset 4 * k into an
// activation row (uint32); the blocks, 8 floats each (32 bytes), in group order and ascending k.
//
// Activations are copied per call (thread-local) into row chunks of H = 8, 4, 2, 1 rows storing,
// per k, the H rows' floats contiguously: row r of a block at byte offset o is at base + o*H + 4r.
// Tiles: 8 rows (8 accumulators + weights + broadcast fit the 16 ymm registers), 4 rows with 2
// accumulator sets, 2 and 1 rows with 4 sets, so the FMA latency is covered and M = 1 streams the
// blocks. Every output is computed in the same order for a given M whatever the column range.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/isa_local.h"
#include "common/bsr_pack.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

#define EO_INLINE inline __attribute__((always_inline))

constexpr int kR = 8;
constexpr int kC = 1;
constexpr uint32_t kMagic = 0x32533346u;  // "F3S2"

using Header = BsrF32Header;
using Chunk = BsrChunk<float>;

struct GroupStage {
  __m256 bias, lo, hi;
  __m256i cm;
  int cols;  // channels of this group within the call's range, from col0
  int col0;
};

// Rows [0, H) of one group over its blocks, S accumulator sets, then bias + clamp + store.
template <int H, int S>
__attribute__((noinline)) void tile(const float* a0, const uint32_t* offs, const __m256* w, int cnt,
                                    const GroupStage& gs, float* out, size_t ldo) {
  const auto* b0 = reinterpret_cast<const uint8_t*>(a0);
  __m256 acc[S][H];
#pragma GCC unroll 8
  for (int r = 0; r < H; ++r) acc[0][r] = gs.bias;
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) acc[s][r] = _mm256_setzero_ps();
  }
  int b = 0;
  for (; b + S <= cnt; b += S) {
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      const size_t o = static_cast<size_t>(offs[b + s]) * H;
      const __m256 wv = _mm256_load_ps(reinterpret_cast<const float*>(w + b + s));
#pragma GCC unroll 8
      for (int r = 0; r < H; ++r) {
        const float* p = reinterpret_cast<const float*>(b0 + o + 4 * r);
        acc[s][r] = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(p), acc[s][r]);
      }
    }
  }
  for (; b < cnt; ++b) {
    const size_t o = static_cast<size_t>(offs[b]) * H;
    const __m256 wv = _mm256_load_ps(reinterpret_cast<const float*>(w + b));
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) {
      const float* p = reinterpret_cast<const float*>(b0 + o + 4 * r);
      acc[0][r] = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(p), acc[0][r]);
    }
  }
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) acc[0][r] = _mm256_add_ps(acc[0][r], acc[s][r]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < H; ++r) {
    // max then min, as the reference: NaN passes through unchanged.
    __m256 x = acc[0][r];
    x = _mm256_blendv_ps(x, gs.lo, _mm256_cmp_ps(x, gs.lo, _CMP_LT_OQ));
    x = _mm256_blendv_ps(x, gs.hi, _mm256_cmp_ps(x, gs.hi, _CMP_GT_OQ));
    float* dst = out + r * ldo + gs.col0;
    if (gs.cols == 8) {
      _mm256_storeu_ps(dst, x);
    } else {
      _mm256_maskstore_ps(dst, gs.cm, x);
    }
  }
}

void linear_f32(int m, const float* a, size_t lda, const void* packed, int br0, int br1,
                const F32Params& p, float* out, size_t ldo) {
  if (m <= 0 || br1 <= br0) return;
  const auto* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  const int c0 = br0 * h.r;
  const int c1 = std::min(h.n, br1 * h.r);
  if (c1 <= c0) return;
  const auto* ptr = reinterpret_cast<const int32_t*>(base + h.off_ptr);
  const auto* offs = reinterpret_cast<const uint32_t*>(base + h.off_offs);
  const auto* wv = reinterpret_cast<const __m256*>(base + h.off_w);

  const int k = h.k;
  thread_local LocalVec<float> abuf;
  const size_t need = static_cast<size_t>(k) * m + 16;
  if (abuf.size() < need) abuf.resize(need);
  thread_local LocalVec<Chunk> chunks;
  bsr_row_chunks<8>(m, k, abuf.data(), chunks, [&](int row, int hh, float* dst) {
    switch (hh) {
      case 8: bsr_f32_copy_rows<8>(a + row * lda, lda, k, dst); break;
      case 4: bsr_f32_copy_rows<4>(a + row * lda, lda, k, dst); break;
      case 2: bsr_f32_copy_rows<2>(a + row * lda, lda, k, dst); break;
      default: bsr_f32_copy_rows<1>(a + row * lda, lda, k, dst); break;
    }
  });

  GroupStage gs;
  gs.lo = _mm256_set1_ps(p.min);
  gs.hi = _mm256_set1_ps(p.max);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int g = c0 / kR; g * kR < c1; ++g) {
    const int col0 = g * kR;
    // Lanes [lo, hi) of this group are in the call's channel range.
    const int lo = std::max(0, c0 - col0), hi = std::min(kR, c1 - col0);
    gs.cm = _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo - 1)),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane));
    gs.cols = (lo == 0 && hi == kR) ? kR : 0;
    gs.col0 = col0;
    gs.bias = p.bias ? _mm256_maskload_ps(p.bias + col0, gs.cm) : _mm256_setzero_ps();
    const int b0 = ptr[g];
    const int cnt = ptr[g + 1] - b0;
    const uint32_t* go = offs + b0;
    const __m256* gw = wv + b0;
    for (const Chunk& c : chunks) {
      float* o = out + c.row * ldo;
      switch (c.h) {
        case 8: tile<8, 1>(c.base, go, gw, cnt, gs, o, ldo); break;
        case 4: tile<4, 2>(c.base, go, gw, cnt, gs, o, ldo); break;
        case 2: tile<2, 4>(c.base, go, gw, cnt, gs, o, ldo); break;
        default: tile<1, 4>(c.base, go, gw, cnt, gs, o, ldo); break;
      }
    }
  }
}

constexpr F32BsrUKernel kTable = {
    kAvx2,
    "eo_f32_bsrgemm_minmax_ukernel_8x8_b8x1__avx2",
    bsr_supports_x86,
    bsr_f32_packed_size<kR, kC>,
    bsr_f32_pack<kR, kC, kMagic>,
    linear_f32,
};

}  // namespace

const F32BsrUKernel* f32_bsr_ukernel__avx2() {
  return &kTable;
}

}  // namespace edgeopt
