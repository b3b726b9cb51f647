// Block-sparse (BSR) fused int8 linear with AVX-512 VNNI (vpdpbusd), exact int32 accumulation.
//
// Native block: 16 output channels x 4 k. A row-major 16x4 int8 block is exactly one zmm in the
// VNNI interleave (lane j = channel j's 4 weights), so one stored block costs one 64-byte load and
// one vpdpbusd per activation row. Operands: vpdpbusd multiplies unsigned bytes by signed bytes;
// here the *activations* are the unsigned side (a ^ 0x80 = a + 128, copied once per call) and the
// weights stay raw int8, so
//   sum_k (a + 128) * w = sum_k a * w + 128 * row_sum(w)[n],
// a per-channel constant whatever blocks are stored: every accumulator starts at
// bias[n] - (input_zero_point + 128) * row_sum(w)[n] (int32, wrapping like the reference). Weights
// equal to -128 stay exact (they are the signed side).
//
// Other block shapes (R in {1, 2, 4, 8, 16} x C in {1, 2, 4}) are re-blocked at pack time into
// 16x4 blocks: the 16-channel group x 4-k group is stored when any source block touches it (values
// from the source blocks, zeros elsewhere; exact). Each 16x4 block covers at least one source
// block, so the work never exceeds the work of a kernel that walks the source blocks one by one
// (it is usually less: a zmm covers up to 16/R source blocks), but it grows with the union of the
// source patterns of 16/R block rows: 8x4 costs at most 2x and 1x4 at most 16x the stored blocks.
//
// Packed layout: 64-byte header; ptr[groups + 1] (first block of each 16-channel group);
// row_sum(w) padded to 16 per group; per block its column as the byte offset 4 * kgroup into an
// activation row (uint32); the blocks, 64 bytes each, in group order and ascending k.
//
// Activations are copied per call into a thread-local buffer (xor 0x80, K padded to a multiple of
// 4) in row chunks of H = 16, 8, 4, 2, 1 rows; a chunk of H <= 8 rows stores, per k group, the H
// rows' 4 bytes contiguously, so row r of a block at byte offset o is at base + o * H + 4 r: one
// base register, the offset scaled by the addressing mode, the row in the displacement. A 16-row
// chunk is two 8-row chunks.
//
// Tiles: 16 rows per block group (16 zmm accumulators: one weight load feeds 16 vpdpbusd, 16
// independent chains hide the vpdpbusd latency); remainders use 8 (2 accumulator sets over even/odd
// blocks), 4, 2 and 1 rows (4 sets), so M = 1 streams the blocks with 4 independent chains. The
// loop runs groups outside and row tiles inside, so a group's blocks stay in L1 for all row tiles.

// GCC 12 warns -Wmaybe-uninitialized inside its own AVX-512 intrinsic headers (GCC PR105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "common/bsr_pack.h"
#include "common/isa_local.h"
#include "common/requant.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

#define EO_INLINE inline __attribute__((always_inline))

constexpr int kR = 16;                    // canonical block: channels
constexpr int kC = 4;                     // canonical block: k
constexpr uint32_t kMagic = 0x42533851u;  // "Q8SB"

using Header = BsrS8Header;

void pack(const BsrS8View& w, void* dst) {
  bsr_s8_pack<kR, kC, kMagic, 1>(w, dst, [](int row, int col) { return row * kC + col; });
}

// Activation copy (see the top comment): one chunk per row tile.
using Chunk = BsrChunk<uint8_t>;

template <int H>
EO_INLINE void copy_chunk(const int8_t* a, size_t lda, int k, int kgroups, uint8_t* dst) {
  const int full = k / 4;
  const int8_t* rows[H];
#pragma GCC unroll 8
  for (int r = 0; r < H; ++r) rows[r] = a + r * lda;
  // g outer, rows inner: the destination is written sequentially, each row read sequentially.
  for (int g = 0; g < full; ++g) {
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) {
      uint32_t v;
      std::memcpy(&v, rows[r] + 4 * g, 4);
      v ^= 0x80808080u;
      std::memcpy(dst + (static_cast<size_t>(g) * H + r) * 4, &v, 4);
    }
  }
  if (full < kgroups) {
    for (int r = 0; r < H; ++r) {
      uint8_t t[4] = {0x80, 0x80, 0x80, 0x80};
      for (int q = 0; q < k - 4 * full; ++q)
        t[q] = static_cast<uint8_t>(rows[r][4 * full + q]) ^ 0x80u;
      std::memcpy(dst + (static_cast<size_t>(full) * H + r) * 4, t, 4);
    }
  }
}

// Bit-exact vector form of multiply_by_quantized_multiplier (see common/requant.h and
// qs8_gemm_avx512vnni.cc): srdhm(x, m) == (x*m + 2^30) >> 31 except INT32_MIN * INT32_MIN.
template <bool kGeneral>
EO_INLINE __m512i mbqm(__m512i x, __m512i mult, __m512i left, __m512i right) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i half = _mm512_set1_epi64(int64_t{1} << 30);
  if (kGeneral) x = _mm512_sllv_epi32(x, left);
  __m512i pe = _mm512_mul_epi32(x, mult);
  __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(mult, 32));
  pe = _mm512_srli_epi64(_mm512_add_epi64(pe, half), 31);
  po = _mm512_slli_epi64(_mm512_add_epi64(po, half), 1);
  __m512i q = _mm512_mask_mov_epi32(pe, 0xAAAA, po);
  if (kGeneral) {
    const __m512i int_min = _mm512_set1_epi32(INT32_MIN);
    q = _mm512_mask_mov_epi32(q, _mm512_cmpeq_epi32_mask(q, int_min), _mm512_set1_epi32(INT32_MAX));
  }
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
  const __m512i rem = _mm512_and_si512(q, mask);
  __m512i thr = _mm512_srli_epi32(mask, 1);
  thr = _mm512_mask_add_epi32(thr, _mm512_movepi32_mask(q), thr, one);
  __m512i res = _mm512_srav_epi32(q, right);
  return _mm512_mask_add_epi32(res, _mm512_cmpgt_epi32_mask(rem, thr), res, one);
}

// Output-stage constants of one 16-channel group.
struct GroupStage {
  __m512i cterm, mult, left, right, lo, hi, zp;
  __mmask16 cm;
  bool general;
  bool vector_ok;
  int col0;
  const QS8Params* p;
};

EO_INLINE __m512i bcast32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Rows [0, H) of one group: acc[r] = cterm + sum over the group's blocks, then requantized and
// stored. S accumulator sets cover the vpdpbusd latency when H is small.
template <int H, int S>
__attribute__((noinline)) void tile(const uint8_t* a0, size_t chunk8, const uint32_t* offs,
                                    const __m512i* w, int cnt, const GroupStage& gs, int8_t* out,
                                    size_t ldo) {
  constexpr int kScale = H < 8 ? H : 8;
  const uint8_t* a1 = a0 + chunk8;  // rows 8..15 of a 16-row chunk
  __m512i acc[S][H];
#pragma GCC unroll 16
  for (int r = 0; r < H; ++r) acc[0][r] = gs.cterm;
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) acc[s][r] = _mm512_setzero_si512();
  }
  int b = 0;
  for (; b + S <= cnt; b += S) {
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      const size_t o = static_cast<size_t>(offs[b + s]) * kScale;
      const __m512i wv = _mm512_load_si512(w + b + s);
#pragma GCC unroll 16
      for (int r = 0; r < H; ++r) {
        const uint8_t* p = (r < 8 ? a0 : a1) + o + 4 * (r & 7);
        acc[s][r] = _mm512_dpbusd_epi32(acc[s][r], bcast32(p), wv);
      }
    }
  }
  for (; b < cnt; ++b) {
    const size_t o = static_cast<size_t>(offs[b]) * kScale;
    const __m512i wv = _mm512_load_si512(w + b);
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) {
      const uint8_t* p = (r < 8 ? a0 : a1) + o + 4 * (r & 7);
      acc[0][r] = _mm512_dpbusd_epi32(acc[0][r], bcast32(p), wv);
    }
  }
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) acc[0][r] = _mm512_add_epi32(acc[0][r], acc[s][r]);
  }
  const QS8Params& p = *gs.p;
  if (!gs.vector_ok) {
    alignas(64) int32_t t[H][16];
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) _mm512_store_si512(t[r], acc[0][r]);
    for (int r = 0; r < H; ++r) {
      for (int j = 0; j < 16; ++j) {
        if (!((gs.cm >> j) & 1)) continue;
        const int col = gs.col0 + j;
        out[r * ldo + col] = requantize_s8(t[r][j], p.multiplier[col], p.shift[col],
                                           p.output_zero_point, p.qmin, p.qmax);
      }
    }
    return;
  }
  auto rows = [&](auto general_tag) {
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r) {
      __m512i x = mbqm<decltype(general_tag)::value>(acc[0][r], gs.mult, gs.left, gs.right);
      x = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(x, gs.lo), gs.hi), gs.zp);
      _mm_mask_storeu_epi8(out + r * ldo + gs.col0, gs.cm, _mm512_cvtepi32_epi8(x));
    }
  };
  if (gs.general) {
    rows(std::true_type());
  } else {
    rows(std::false_type());
  }
}

// M = 1 at high sparsity is bound by per-group overhead, not by vpdpbusd: this loop keeps every
// group inline (no call, constants decided once per call) so the out-of-order core overlaps one
// group's output stage with the next group's block loads. Same arithmetic as tile<1, S>.
void row1(const uint8_t* a, const int32_t* ptr, const int32_t* rs, const uint32_t* offs,
          const __m512i* wv, int c0, int c1, const QS8Params& p, int8_t* out) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i za =
      _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(p.input_zero_point) + 128u));
  const __m512i lo = _mm512_set1_epi32(p.qmin - p.output_zero_point);
  const __m512i hi = _mm512_set1_epi32(p.qmax - p.output_zero_point);
  const __m512i zp = _mm512_set1_epi32(p.output_zero_point);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int g = c0 / kR; g * kR < c1; ++g) {
    const int col0 = g * kR;
    const __m512i cols = _mm512_add_epi32(lane, _mm512_set1_epi32(col0));
    const __mmask16 cm = _mm512_cmpge_epi32_mask(cols, _mm512_set1_epi32(c0)) &
                         _mm512_cmplt_epi32_mask(cols, _mm512_set1_epi32(c1));
    __m512i acc0 = _mm512_sub_epi32(zero, _mm512_mullo_epi32(_mm512_load_si512(rs + col0), za));
    if (p.bias) acc0 = _mm512_add_epi32(acc0, _mm512_maskz_loadu_epi32(cm, p.bias + col0));
    __m512i acc1 = zero, acc2 = zero, acc3 = zero;
    const int b1 = ptr[g + 1];
    int b = ptr[g];
    for (; b + 4 <= b1; b += 4) {
      acc0 = _mm512_dpbusd_epi32(acc0, bcast32(a + offs[b]), _mm512_load_si512(wv + b));
      acc1 = _mm512_dpbusd_epi32(acc1, bcast32(a + offs[b + 1]), _mm512_load_si512(wv + b + 1));
      acc2 = _mm512_dpbusd_epi32(acc2, bcast32(a + offs[b + 2]), _mm512_load_si512(wv + b + 2));
      acc3 = _mm512_dpbusd_epi32(acc3, bcast32(a + offs[b + 3]), _mm512_load_si512(wv + b + 3));
    }
    for (; b < b1; ++b) {
      acc0 = _mm512_dpbusd_epi32(acc0, bcast32(a + offs[b]), _mm512_load_si512(wv + b));
    }
    const __m512i acc =
        _mm512_add_epi32(_mm512_add_epi32(acc0, acc1), _mm512_add_epi32(acc2, acc3));
    const __m512i shift = _mm512_maskz_loadu_epi32(cm, p.shift + col0);
    const __m512i left = _mm512_max_epi32(shift, zero);
    const __m512i right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
    const __m512i mult = _mm512_maskz_loadu_epi32(cm, p.multiplier + col0);
    const bool general = _mm512_test_epi32_mask(left, left) != 0 ||
                         _mm512_cmpeq_epi32_mask(mult, _mm512_set1_epi32(INT32_MIN)) != 0;
    __m512i x = general ? mbqm<true>(acc, mult, left, right) : mbqm<false>(acc, mult, left, right);
    x = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(x, lo), hi), zp);
    _mm_mask_storeu_epi8(out + col0, cm, _mm512_cvtepi32_epi8(x));
  }
}

void linear_s8(int m, const int8_t* a, size_t lda, const void* packed, int br0, int br1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  if (m <= 0 || br1 <= br0) return;
  const auto* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  const int c0 = br0 * h.r;
  const int c1 = std::min(h.n, br1 * h.r);
  if (c1 <= c0) return;
  const auto* ptr = reinterpret_cast<const int32_t*>(base + h.off_ptr);
  const auto* rs = reinterpret_cast<const int32_t*>(base + h.off_rowsum);
  const auto* offs = reinterpret_cast<const uint32_t*>(base + h.off_offs);
  const auto* wv = reinterpret_cast<const __m512i*>(base + h.off_w);

  // Activation copy, chunked by tile height.
  const int kg = h.kgroups;
  const size_t chunk8 = static_cast<size_t>(kg) * 32;
  thread_local LocalVec<uint8_t> abuf;
  const size_t need = static_cast<size_t>(kg) * 4 * m + 64;
  if (abuf.size() < need) abuf.resize(need);
  thread_local LocalVec<Chunk> chunks;
  bsr_row_chunks<16>(m, static_cast<size_t>(kg) * 4, abuf.data(), chunks,
                     [&](int row, int hh, uint8_t* dst) {
                       switch (hh) {
                         case 16:
                           copy_chunk<8>(a + row * lda, lda, h.k, kg, dst);
                           copy_chunk<8>(a + (row + 8) * lda, lda, h.k, kg, dst + chunk8);
                           break;
                         case 8: copy_chunk<8>(a + row * lda, lda, h.k, kg, dst); break;
                         case 4: copy_chunk<4>(a + row * lda, lda, h.k, kg, dst); break;
                         case 2: copy_chunk<2>(a + row * lda, lda, h.k, kg, dst); break;
                         default: copy_chunk<1>(a + row * lda, lda, h.k, kg, dst); break;
                       }
                     });

  GroupStage gs;
  gs.p = &p;
  const int64_t lim = int64_t{1} << 30;
  gs.vector_ok = std::abs(int64_t{p.output_zero_point}) <= lim &&
                 std::abs(int64_t{p.qmin}) <= lim && std::abs(int64_t{p.qmax}) <= lim;
  if (m == 1 && gs.vector_ok) {
    // A 1-row chunk is the row itself with each k group xor'd: offsets index it directly.
    row1(chunks[0].base, ptr, rs, offs, wv, c0, c1, p, out);
    return;
  }
  gs.lo = _mm512_set1_epi32(p.qmin - p.output_zero_point);
  gs.hi = _mm512_set1_epi32(p.qmax - p.output_zero_point);
  gs.zp = _mm512_set1_epi32(p.output_zero_point);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i za =
      _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(p.input_zero_point) + 128u));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int g = c0 / kR; g * kR < c1; ++g) {
    const int col0 = g * kR;
    const __mmask16 cm = _mm512_cmpge_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(col0)),
                                                 _mm512_set1_epi32(c0)) &
                         _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(col0)),
                                                 _mm512_set1_epi32(c1));
    // Loads are masked to the valid channels and shifted back by col0 so out-of-range lanes are
    // never read from the caller's arrays.
    gs.col0 = col0;
    gs.cm = cm;
    const __m512i wsum = _mm512_load_si512(rs + col0);
    __m512i ct = _mm512_sub_epi32(zero, _mm512_mullo_epi32(wsum, za));
    if (p.bias) ct = _mm512_add_epi32(ct, _mm512_maskz_loadu_epi32(cm, p.bias + col0));
    gs.cterm = ct;
    gs.mult = _mm512_maskz_loadu_epi32(cm, p.multiplier + col0);
    const __m512i shift = _mm512_maskz_loadu_epi32(cm, p.shift + col0);
    gs.left = _mm512_max_epi32(shift, zero);
    gs.right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
    gs.general = _mm512_test_epi32_mask(gs.left, gs.left) != 0 ||
                 _mm512_cmpeq_epi32_mask(gs.mult, _mm512_set1_epi32(INT32_MIN)) != 0;
    const int b0 = ptr[g];
    const int cnt = ptr[g + 1] - b0;
    const uint32_t* go = offs + b0;
    const __m512i* gw = wv + b0;
    for (const Chunk& c : chunks) {
      int8_t* o = out + c.row * ldo;
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

constexpr QS8BsrUKernel kTable = {
    kAvx512Vnni,
    "eo_qs8_bsrgemm_minmax_ukernel_16x16_b16x4__avx512vnni",
    bsr_supports_x86,
    bsr_s8_packed_size<kR, kC>,
    pack,
    linear_s8,
};

}  // namespace

const QS8BsrUKernel* qs8_bsr_ukernel__avx512vnni() {
  return &kTable;
}

}  // namespace edgeopt
