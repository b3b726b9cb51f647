// Block-sparse (BSR) fused int8 linear for AVX2 without VNNI, exact int32 accumulation.
//
// Arithmetic as in qs8_gemm_avx2.cc: both operands are sign-extended to int16 and multiplied with
// vpmaddwd (s16 x s16 -> s32 pair sums), which cannot overflow for int8 inputs, so every product
// is exact (weights equal to -128 included) and int32 sums wrap as the reference does. The zero
// point is folded into the start value of each accumulator: bias[n] - input_zero_point *
// row_sum(w)[n].
//
// Native block: 8 output channels x 4 k, 32 bytes stored as two 16-byte halves (channels 0-7 x
// (k0, k1), then x (k2, k3)) so that one vpmovsxbw per half yields the int16 pairs vpmaddwd wants;
// per activation row a block costs 2 broadcasts + 2 vpmaddwd + 2 vpaddd. Other shapes (R in
// {1, 2, 4, 8, 16} x C in {1, 2, 4}) are re-blocked at pack time into 8x4 blocks: 16x4 splits into
// two (the same work); otherwise an (8-channel group, 4-k group) block is stored when any source
// block touches it (values from the source blocks, zeros elsewhere: exact). Each 8x4 block covers
// at least one source block; for R < 8 the work grows with the union of 8/R source patterns.
//
// Packed layout: 64-byte header; ptr[groups + 1]; row_sum(w) padded to 8 per group; per block the
// byte offset 8 * kgroup into an int16 activation row (uint32); the 32-byte blocks in group order
// and ascending k.
//
// Activations are sign-extended per call into a thread-local int16 buffer (K padded to a multiple
// of 4 with zeros) in row chunks of H = 8, 4, 2, 1 rows; per k group a chunk stores its H rows' 4
// int16 contiguously, so row r of a block at byte offset o is at base + o * H + 8 r.
// Tiles: 8 rows (8 accumulators + 2 weight halves + broadcast + product: 12 of the 16 ymm), 4 rows
// with 2 accumulator sets, 2 and 1 rows with 4 sets (M = 1 streams the blocks with independent
// chains). Groups outside, row tiles inside, so a group's blocks stay in L1 for all row tiles.

// GCC 12 warns -Wmaybe-uninitialized inside its own intrinsic headers (GCC PR105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/isa_local.h"
#include "common/bsr_pack.h"
#include "common/requant.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

#define EO_INLINE inline __attribute__((always_inline))

constexpr int kR = 8;                     // canonical block: channels
constexpr int kC = 4;                     // canonical block: k
constexpr uint32_t kMagic = 0x32533851u;  // "Q8S2"

using Header = BsrS8Header;

void pack(const BsrS8View& w, void* dst) {
  // pair half (col / 2), then channel, then k within the pair
  bsr_s8_pack<kR, kC, kMagic, 2>(
      w, dst, [](int row, int col) { return (col / 2) * 16 + row * 2 + col % 2; });
}

// Activation copy (see the top comment). Returns the chunk base of every row tile.
using Chunk = BsrChunk<int16_t>;

template <int H>
EO_INLINE void copy_chunk(const int8_t* a, size_t lda, int k, int kgroups, int16_t* dst) {
  const int full = k / 4;
  for (int r = 0; r < H; ++r) {
    const int8_t* row = a + r * lda;
    int16_t* d = dst + 4 * r;
    int g = 0;
    for (; g < full; ++g) {
      int32_t v;
      std::memcpy(&v, row + 4 * g, 4);
      const __m128i x = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(v));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(d + static_cast<size_t>(g) * H * 4), x);
    }
    if (g < kgroups) {
      int16_t t[4] = {0, 0, 0, 0};
      for (int q = 0; q < k - 4 * full; ++q) t[q] = row[4 * full + q];
      std::memcpy(d + static_cast<size_t>(g) * H * 4, t, sizeof(t));
    }
  }
}

// Bit-exact vector form of multiply_by_quantized_multiplier (see common/requant.h and
// qs8_gemm_avx2.cc): srdhm(x, m) == (x*m + 2^30) >> 31 except INT32_MIN * INT32_MIN.
EO_INLINE __m256i mbqm(__m256i x, __m256i mult, __m256i left, __m256i right) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i half = _mm256_set1_epi64x(int64_t{1} << 30);
  x = _mm256_sllv_epi32(x, left);
  __m256i pe = _mm256_mul_epi32(x, mult);
  __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(mult, 32));
  pe = _mm256_srli_epi64(_mm256_add_epi64(pe, half), 31);
  po = _mm256_slli_epi64(_mm256_add_epi64(po, half), 1);
  __m256i q = _mm256_blend_epi32(pe, po, 0xAA);
  q = _mm256_xor_si256(q, _mm256_cmpeq_epi32(q, _mm256_set1_epi32(INT32_MIN)));  // -> INT32_MAX
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
  const __m256i rem = _mm256_and_si256(q, mask);
  const __m256i thr = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1), _mm256_srai_epi32(q, 31));
  const __m256i res = _mm256_srav_epi32(q, right);
  return _mm256_sub_epi32(res, _mm256_cmpgt_epi32(rem, thr));
}

// Output-stage constants of one 8-channel group.
struct GroupStage {
  __m256i cterm, mult, left, right, lo, hi, zp;
  int lo_lane, hi_lane;  // lanes [lo_lane, hi_lane) are in the call's channel range
  bool vector_ok;
  int col0;
  const QS8Params* p;
};

EO_INLINE __m256i bcast32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Rows [0, H) of one group: acc[r] = cterm + sum over the group's blocks, then requantized and
// stored. S accumulator sets cover the latency when H is small.
template <int H, int S>
__attribute__((noinline)) void tile(const int16_t* a0, const uint32_t* offs, const int8_t* w,
                                    int cnt, const GroupStage& gs, int8_t* out, size_t ldo) {
  const auto* ab = reinterpret_cast<const uint8_t*>(a0);
  __m256i acc[S][H];
#pragma GCC unroll 8
  for (int r = 0; r < H; ++r) acc[0][r] = gs.cterm;
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) acc[s][r] = _mm256_setzero_si256();
  }
  auto step = [&](int b, int s) {
    const size_t o = static_cast<size_t>(offs[b]) * H;
    const int8_t* wb = w + static_cast<size_t>(b) * 32;
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(wb)));
    const __m256i w1 =
        _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(wb + 16)));
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) {
      const uint8_t* p = ab + o + 8 * r;
      const __m256i p0 = _mm256_madd_epi16(w0, bcast32(p));
      const __m256i p1 = _mm256_madd_epi16(w1, bcast32(p + 4));
      acc[s][r] = _mm256_add_epi32(acc[s][r], _mm256_add_epi32(p0, p1));
    }
  };
  int b = 0;
  for (; b + S <= cnt; b += S) {
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) step(b + s, s);
  }
  for (; b < cnt; ++b) step(b, 0);
#pragma GCC unroll 4
  for (int s = 1; s < S; ++s) {
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) acc[0][r] = _mm256_add_epi32(acc[0][r], acc[s][r]);
  }
  const QS8Params& p = *gs.p;
  alignas(32) int32_t t[H][8];
  if (!gs.vector_ok) {
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) _mm256_store_si256(reinterpret_cast<__m256i*>(t[r]), acc[0][r]);
    for (int r = 0; r < H; ++r) {
      for (int j = gs.lo_lane; j < gs.hi_lane; ++j) {
        const int col = gs.col0 + j;
        out[r * ldo + col] = requantize_s8(t[r][j], p.multiplier[col], p.shift[col],
                                           p.output_zero_point, p.qmin, p.qmax);
      }
    }
    return;
  }
  const __m256i bytes =
      _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                       -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const bool whole = gs.lo_lane == 0 && gs.hi_lane == 8;
#pragma GCC unroll 8
  for (int r = 0; r < H; ++r) {
    __m256i x = mbqm(acc[0][r], gs.mult, gs.left, gs.right);
    x = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(x, gs.lo), gs.hi), gs.zp);
    // Low byte of every lane (static_cast<int8_t> semantics), 8 bytes.
    const __m256i sh = _mm256_shuffle_epi8(x, bytes);
    const __m128i v =
        _mm_unpacklo_epi32(_mm256_castsi256_si128(sh), _mm256_extracti128_si256(sh, 1));
    int8_t* dst = out + r * ldo + gs.col0;
    if (whole) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), v);
    } else {
      alignas(16) int8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), v);
      std::memcpy(dst + gs.lo_lane, tmp + gs.lo_lane, gs.hi_lane - gs.lo_lane);
    }
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
  const auto* wv = reinterpret_cast<const int8_t*>(base + h.off_w);

  // Activation copy, chunked by tile height.
  const int kg = h.kgroups;
  thread_local LocalVec<int16_t> abuf;
  const size_t need = static_cast<size_t>(kg) * 4 * m + 32;
  if (abuf.size() < need) abuf.resize(need);
  thread_local LocalVec<Chunk> chunks;
  bsr_row_chunks<8>(m, static_cast<size_t>(kg) * 4, abuf.data(), chunks,
                    [&](int row, int hh, int16_t* dst) {
                      switch (hh) {
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
  gs.lo = _mm256_set1_epi32(p.qmin - p.output_zero_point);
  gs.hi = _mm256_set1_epi32(p.qmax - p.output_zero_point);
  gs.zp = _mm256_set1_epi32(p.output_zero_point);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i za = _mm256_set1_epi32(p.input_zero_point);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int g = c0 / kR; g * kR < c1; ++g) {
    const int col0 = g * kR;
    gs.col0 = col0;
    gs.lo_lane = std::max(0, c0 - col0);
    gs.hi_lane = std::min(kR, c1 - col0);
    // Loads are masked to the valid channels, so out-of-range lanes are never read.
    const __m256i cm = _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(gs.lo_lane - 1)),
                                        _mm256_cmpgt_epi32(_mm256_set1_epi32(gs.hi_lane), lane));
    const __m256i wsum = _mm256_load_si256(reinterpret_cast<const __m256i*>(rs + col0));
    __m256i ct = _mm256_sub_epi32(zero, _mm256_mullo_epi32(wsum, za));
    if (p.bias) ct = _mm256_add_epi32(ct, _mm256_maskload_epi32(p.bias + col0, cm));
    gs.cterm = ct;
    gs.mult = _mm256_maskload_epi32(p.multiplier + col0, cm);
    const __m256i shift = _mm256_maskload_epi32(p.shift + col0, cm);
    gs.left = _mm256_max_epi32(shift, zero);
    gs.right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
    const int b0 = ptr[g];
    const int cnt = ptr[g + 1] - b0;
    const uint32_t* go = offs + b0;
    const int8_t* gw = wv + static_cast<size_t>(b0) * kR * kC;
    for (const Chunk& c : chunks) {
      int8_t* o = out + c.row * ldo;
      switch (c.h) {
        case 8: tile<8, 1>(c.base, go, gw, cnt, gs, o, ldo); break;
        case 4: tile<4, 2>(c.base, go, gw, cnt, gs, o, ldo); break;
        case 2: tile<2, 4>(c.base, go, gw, cnt, gs, o, ldo); break;
        default: tile<1, 4>(c.base, go, gw, cnt, gs, o, ldo); break;
      }
    }
  }
}

constexpr QS8BsrUKernel kTable = {
    kAvx2,
    "eo_qs8_bsrgemm_minmax_ukernel_8x8_b8x4__avx2",
    bsr_supports_x86,
    bsr_s8_packed_size<kR, kC>,
    pack,
    linear_s8,
};

}  // namespace

const QS8BsrUKernel* qs8_bsr_ukernel__avx2() {
  return &kTable;
}

}  // namespace edgeopt
