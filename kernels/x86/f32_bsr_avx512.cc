// Block-sparse (BSR) fp32 linear (out = clamp(a . W^T + bias)) for x86 AVX-512F.
//
// Native block: 16 output channels x 1 k (XNNPACK's sparse fp32 shape), one zmm of weights; one
// stored block costs one 64-byte load and one FMA per activation row, the activation arriving as
// the FMA's embedded-broadcast memory operand. 8x1 blocks are served natively too: the packer
// pairs the two 8-channel block rows of a 16-channel group, so a 16x1 block holds one or two
// stored 8x1 blocks and the instruction count is never above one per stored 8x1 block (usually
// below). Other shapes (R in {1, 2, 4, 8, 16} x C in {1, 2, 4}: 1x4, 4x4, 16x4, ...) are
// re-blocked the same way into 16x1 blocks: a (group, k) block is stored when any source block
// touches it, values from the source blocks, zeros elsewhere. A C = 4 block becomes 4 blocks (the
// same FMA count as a 16x4 kernel); R < 8 grows with the union of 16/R source patterns.
//
// Packed layout: 64-byte header; ptr[groups + 1]; per block the byte offset 4 * k into an
// activation row (uint32); the blocks, 16 floats each, in group order and ascending k.
//
// Activations are copied per call (thread-local) into row chunks of H = 16, 8, 4, 2, 1 rows; a
// chunk of H <= 8 rows stores, per k, the H rows' floats contiguously, so row r of a block at byte
// offset o is at base + o * H + 4 r (one base register, scaled index, constant displacement).
// Tiles: 16 rows (16 accumulators, one weight load per 16 FMAs), 8 rows with 2 accumulator sets,
// 4/2/1 rows with 4 sets, so the 4-cycle FMA latency is covered and M = 1 streams the blocks.
//
// Every output is computed in the same order for a given M: bias, then the group's blocks in
// ascending k, split over S accumulator sets by block index and summed in a fixed order; the
// column sub-range never changes it.

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

constexpr int kR = 16;
constexpr int kC = 1;
constexpr uint32_t kMagic = 0x42533346u;  // "F3SB"

using Header = BsrF32Header;
using Chunk = BsrChunk<float>;

struct GroupStage {
  __m512 bias, lo, hi;
  __mmask16 cm;
  int col0;
};

// Rows [0, H) of one group over its blocks, S accumulator sets, then bias + clamp + store.
template <int H, int S>
__attribute__((noinline)) void tile(const float* a0, size_t chunk8, const uint32_t* offs,
                                    const __m512* w, int cnt, const GroupStage& gs, float* out,
                                    size_t ldo) {
  constexpr int kScale = H < 8 ? H : 8;
  const auto* b0 = reinterpret_cast<const uint8_t*>(a0);
  const uint8_t* b1 = b0 + chunk8;
  __m512 acc[S][H];
#pragma GCC unroll 16
  for (int r = 0; r < H; ++r) acc[0][r] = gs.bias;
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) acc[s][r] = _mm512_setzero_ps();
  }
  int b = 0;
  for (; b + S <= cnt; b += S) {
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      const size_t o = static_cast<size_t>(offs[b + s]) * kScale;
      const __m512 wv = _mm512_load_ps(w + b + s);
#pragma GCC unroll 16
      for (int r = 0; r < H; ++r) {
        const float* p = reinterpret_cast<const float*>((r < 8 ? b0 : b1) + o + 4 * (r & 7));
        acc[s][r] = _mm512_fmadd_ps(wv, _mm512_set1_ps(*p), acc[s][r]);
      }
    }
  }
  for (; b < cnt; ++b) {
    const size_t o = static_cast<size_t>(offs[b]) * kScale;
    const __m512 wv = _mm512_load_ps(w + b);
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) {
      const float* p = reinterpret_cast<const float*>((r < 8 ? b0 : b1) + o + 4 * (r & 7));
      acc[0][r] = _mm512_fmadd_ps(wv, _mm512_set1_ps(*p), acc[0][r]);
    }
  }
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) acc[0][r] = _mm512_add_ps(acc[0][r], acc[s][r]);
  }
#pragma GCC unroll 16
  for (int r = 0; r < H; ++r) {
    // max then min, as the reference: NaN passes through unchanged.
    __m512 x = acc[0][r];
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, gs.lo, _CMP_LT_OQ), x, gs.lo);
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, gs.hi, _CMP_GT_OQ), x, gs.hi);
    _mm512_mask_storeu_ps(out + r * ldo + gs.col0, gs.cm, x);
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
  const auto* wv = reinterpret_cast<const __m512*>(base + h.off_w);

  const int k = h.k;
  const size_t chunk8 = static_cast<size_t>(k) * 8 * sizeof(float);
  thread_local LocalVec<float> abuf;
  const size_t need = static_cast<size_t>(k) * m + 16;
  if (abuf.size() < need) abuf.resize(need);
  thread_local LocalVec<Chunk> chunks;
  bsr_row_chunks<16>(m, k, abuf.data(), chunks, [&](int row, int hh, float* dst) {
    switch (hh) {
      case 16:
        bsr_f32_copy_rows<8>(a + row * lda, lda, k, dst);
        bsr_f32_copy_rows<8>(a + (row + 8) * lda, lda, k, dst + static_cast<size_t>(k) * 8);
        break;
      case 8: bsr_f32_copy_rows<8>(a + row * lda, lda, k, dst); break;
      case 4: bsr_f32_copy_rows<4>(a + row * lda, lda, k, dst); break;
      case 2: bsr_f32_copy_rows<2>(a + row * lda, lda, k, dst); break;
      default: bsr_f32_copy_rows<1>(a + row * lda, lda, k, dst); break;
    }
  });

  GroupStage gs;
  gs.lo = _mm512_set1_ps(p.min);
  gs.hi = _mm512_set1_ps(p.max);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int g = c0 / kR; g * kR < c1; ++g) {
    const int col0 = g * kR;
    const __m512i idx = _mm512_add_epi32(lane, _mm512_set1_epi32(col0));
    gs.cm = _mm512_cmpge_epi32_mask(idx, _mm512_set1_epi32(c0)) &
            _mm512_cmplt_epi32_mask(idx, _mm512_set1_epi32(c1));
    gs.col0 = col0;
    gs.bias = p.bias ? _mm512_maskz_loadu_ps(gs.cm, p.bias + col0) : _mm512_setzero_ps();
    const int b0 = ptr[g];
    const int cnt = ptr[g + 1] - b0;
    const uint32_t* go = offs + b0;
    const __m512* gw = wv + b0;
    for (const Chunk& c : chunks) {
      float* o = out + c.row * ldo;
      switch (c.h) {
        case 16: tile<16, 1>(c.base, chunk8, go, gw, cnt, gs, o, ldo); break;
        case 8: tile<8, 2>(c.base, chunk8, go, gw, cnt, gs, o, ldo); break;
        case 4: tile<4, 4>(c.base, chunk8, go, gw, cnt, gs, o, ldo); break;
        case 2: tile<2, 4>(c.base, chunk8, go, gw, cnt, gs, o, ldo); break;
        default: tile<1, 4>(c.base, chunk8, go, gw, cnt, gs, o, ldo); break;
      }
    }
  }
}

constexpr F32BsrUKernel kTable = {
    kAvx512Vnni,
    "eo_f32_bsrgemm_minmax_ukernel_16x16_b16x1__avx512",
    bsr_supports_x86,
    bsr_f32_packed_size<kR, kC>,
    bsr_f32_pack<kR, kC, kMagic>,
    linear_f32,
};

}  // namespace

const F32BsrUKernel* f32_bsr_ukernel__avx512() {
  return &kTable;
}

}  // namespace edgeopt
