// Dense int8 GEMM and fused int8 linear with AMX-INT8 (tdpbssd), exact int32 accumulation.
//
// Only worth it for large M: the dispatcher picks this table where AMX is granted (it calls
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) first) and the shape is compute bound;
// every call still handles any m, n, k (tails run on zero-padded tiles).
//
// Arithmetic. TDPBSSD multiplies signed by signed bytes and accumulates groups of 4 products into
// int32, so no zero-point shift is needed and weights equal to -128 stay exact; int32 sums wrap
// as the reference does. linear_s8 adds bias[n] - input_zero_point * row_sum(w)[n] afterwards.
//
// Tiles (Intel SDM, palette 1: 8 tiles of at most 16 rows x 64 bytes). 2x2 register blocking:
// C tiles tmm0-3 hold a 32-row x 32-channel int32 block (16 x 16 each), A tiles tmm4/5 hold rows
// 0-15 / 16-31 x 64 k, B tiles tmm6/7 hold channels 0-15 / 16-31 x 64 k in the VNNI layout
// (tile row g = 16 channels x 4 consecutive k). Each 64-k step issues 4 independent tdpbssd
// for 4 tile loads, the classic blocking that keeps the TMUL busy.
//
// Packed layout: a 64-byte header, row_sum(w) padded to whole panels, then panels of kNR = 32
// channels x K (K padded to a multiple of 64 with zeros). Per 64-k block a panel holds two 1 KiB
// B tiles back to back (channels 0-15, then 16-31), each 16 rows x 64 bytes, so every tile load
// reads one contiguous KiB. A is copied once per call into a thread-local block with rows padded
// to 32 and K to 64 (zeros), so tile loads never read outside the caller's rows.

// GCC 12 warns -Wmaybe-uninitialized inside its own AVX-512 intrinsic headers (GCC PR105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/isa_local.h"
#include "common/requant.h"
#include "common/requant_fp32.h"
#include "common/ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNR = 32;  // output channels per packed panel (two B tiles)
constexpr int kMR = 32;  // rows per block (two A tiles)
constexpr int kKB = 64;  // k per tile step
constexpr size_t kHeaderBytes = 64;
constexpr size_t kTileBytes = 16 * 64;

struct Header {
  int32_t n;
  int32_t k;
  int32_t kblocks;  // ceil(k / 64)
  int32_t panels;   // ceil(n / kNR)
  uint32_t magic;
};
constexpr uint32_t kMagic = 0x584d4151u;  // "QAMX"

// Tile configuration, palette 1 (Intel SDM, LDTILECFG): 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];  // bytes per row, per tile
  uint8_t rows[16];    // rows, per tile
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

inline size_t panel_bytes(int kblocks) {
  return static_cast<size_t>(kblocks) * 2 * kTileBytes;
}

size_t packed_size(int n, int k) {
  const int kblocks = (k + kKB - 1) / kKB;
  const int panels = (n + kNR - 1) / kNR;
  return kHeaderBytes + static_cast<size_t>(panels) * kNR * sizeof(int32_t) +
         static_cast<size_t>(panels) * panel_bytes(kblocks);
}

void pack(const int8_t* w, int n, int k, const int32_t* row_sums, void* dst) {
  const int kblocks = (k + kKB - 1) / kKB;
  const int panels = (n + kNR - 1) / kNR;
  auto* base = static_cast<uint8_t*>(dst);
  Header h{n, k, kblocks, panels, kMagic};
  std::memset(base, 0, kHeaderBytes);
  std::memcpy(base, &h, sizeof(h));
  auto* wsum = reinterpret_cast<int32_t*>(base + kHeaderBytes);
  for (int j = 0; j < panels * kNR; ++j) wsum[j] = j < n ? row_sums[j] : 0;
  auto* out = reinterpret_cast<int8_t*>(base + kHeaderBytes +
                                        static_cast<size_t>(panels) * kNR * sizeof(int32_t));
  for (int p = 0; p < panels; ++p) {
    int8_t* panel = out + static_cast<size_t>(p) * panel_bytes(kblocks);
    for (int kb = 0; kb < kblocks; ++kb) {
      for (int half = 0; half < 2; ++half) {
        int8_t* tile = panel + (static_cast<size_t>(kb) * 2 + half) * kTileBytes;
        for (int g = 0; g < 16; ++g) {    // tile row: 4 consecutive k
          for (int j = 0; j < 16; ++j) {  // channel within the tile
            for (int kk = 0; kk < 4; ++kk) {
              const int row = p * kNR + half * 16 + j;
              const int col = kb * kKB + g * 4 + kk;
              tile[g * 64 + j * 4 + kk] =
                  (row < n && col < k) ? w[static_cast<size_t>(row) * k + col] : 0;
            }
          }
        }
      }
    }
  }
}

// Copies A into rows padded to a multiple of 32 and K padded to `kp` (zeros). Thread-local.
const int8_t* pad_a(int m, int k, const int8_t* a, size_t lda, int kp) {
  thread_local LocalVec<int8_t> buf;
  const int mp = (m + kMR - 1) / kMR * kMR;
  const size_t need = static_cast<size_t>(mp) * kp + 64;
  if (buf.size() < need) buf.resize(need);
  // Align the block to 64 bytes inside the buffer (tile loads do not need it, it is cheaper).
  auto addr = reinterpret_cast<uintptr_t>(buf.data());
  int8_t* dst = buf.data() + ((64 - (addr & 63)) & 63);
  for (int i = 0; i < mp; ++i) {
    int8_t* row = dst + static_cast<size_t>(i) * kp;
    if (i < m) {
      std::memcpy(row, a + i * lda, k);
      std::memset(row + k, 0, kp - k);
    } else {
      std::memset(row, 0, kp);
    }
  }
  return dst;
}

// Bit-exact vector form of multiply_by_quantized_multiplier (see common/requant.h and the same
// routine in qs8_gemm_avx512vnni.cc): srdhm(x, m) == (x*m + 2^30) >> 31 (floor) except for
// INT32_MIN*INT32_MIN, the only product whose result wraps to INT32_MIN (-> INT32_MAX).
inline __m512i mbqm(__m512i x, __m512i mult, __m512i left, __m512i right) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i half = _mm512_set1_epi64(int64_t{1} << 30);
  x = _mm512_sllv_epi32(x, left);
  __m512i pe = _mm512_mul_epi32(x, mult);
  __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(mult, 32));
  pe = _mm512_srli_epi64(_mm512_add_epi64(pe, half), 31);
  po = _mm512_slli_epi64(_mm512_add_epi64(po, half), 1);
  __m512i q = _mm512_mask_mov_epi32(pe, 0xAAAA, po);
  q = _mm512_mask_mov_epi32(q, _mm512_cmpeq_epi32_mask(q, _mm512_set1_epi32(INT32_MIN)),
                            _mm512_set1_epi32(INT32_MAX));
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
  const __m512i rem = _mm512_and_si512(q, mask);
  __m512i thr = _mm512_srli_epi32(mask, 1);
  thr = _mm512_mask_add_epi32(thr, _mm512_movepi32_mask(q), thr, one);
  __m512i res = _mm512_srav_epi32(q, right);
  return _mm512_mask_add_epi32(res, _mm512_cmpgt_epi32_mask(rem, thr), res, one);
}

inline __mmask16 col_mask(int cols) {
  if (cols <= 0) return 0;
  if (cols >= 16) return 0xFFFF;
  return static_cast<__mmask16>((1u << cols) - 1);
}

// Writes the valid rows/columns of one 32x32 int32 block (row stride kNR) to the output.
template <bool kLinear>
void store_block(const int32_t* blk, int rows, int col0, int cols, const int32_t* wsum,
                 const QS8Params* p, void* out, size_t ldo) {
  if (!kLinear) {
    auto* c = static_cast<int32_t*>(out);
    for (int r = 0; r < rows; ++r) {
      for (int v = 0; v < 2; ++v) {
        const __mmask16 cm = col_mask(cols - v * 16);
        if (cm == 0) break;
        _mm512_mask_storeu_epi32(c + r * ldo + col0 + v * 16, cm,
                                 _mm512_load_si512(blk + r * kNR + v * 16));
      }
    }
    return;
  }
  auto* o = static_cast<int8_t*>(out);
  const int64_t lim = int64_t{1} << 30;
  if (std::abs(int64_t{p->output_zero_point}) > lim || std::abs(int64_t{p->qmin}) > lim ||
      std::abs(int64_t{p->qmax}) > lim) {  // absurd zero point / bounds: exact scalar stage
    for (int r = 0; r < rows; ++r) {
      for (int j = 0; j < cols; ++j) {
        const int col = col0 + j;
        const uint32_t accu =
            static_cast<uint32_t>(blk[r * kNR + j]) -
            static_cast<uint32_t>(p->input_zero_point) * static_cast<uint32_t>(wsum[j]) +
            static_cast<uint32_t>(p->bias ? p->bias[col] : 0);
        o[r * ldo + col] = requantize_s8(static_cast<int32_t>(accu), p->multiplier[col],
                                         p->shift[col], p->output_zero_point, p->qmin, p->qmax);
      }
    }
    return;
  }
  const __m512i lo = _mm512_set1_epi32(p->qmin - p->output_zero_point);
  const __m512i hi = _mm512_set1_epi32(p->qmax - p->output_zero_point);
  const __m512i zp = _mm512_set1_epi32(p->output_zero_point);
  const __m512i za = _mm512_set1_epi32(p->input_zero_point);
  const __m512i zero = _mm512_setzero_si512();
  for (int v = 0; v < 2; ++v) {
    const __mmask16 cm = col_mask(cols - v * 16);
    if (cm == 0) break;
    const int col = col0 + v * 16;
    __m512i cterm =
        _mm512_sub_epi32(zero, _mm512_mullo_epi32(_mm512_load_si512(wsum + v * 16), za));
    if (p->bias) cterm = _mm512_add_epi32(cterm, _mm512_maskz_loadu_epi32(cm, p->bias + col));
    const __m512i mult = _mm512_maskz_loadu_epi32(cm, p->multiplier + col);
    const __m512i shift = _mm512_maskz_loadu_epi32(cm, p->shift + col);
    const __m512i left = _mm512_max_epi32(shift, zero);
    const __m512i right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
    for (int r = 0; r < rows; ++r) {
      __m512i x = _mm512_add_epi32(_mm512_load_si512(blk + r * kNR + v * 16), cterm);
      x = mbqm(x, mult, left, right);
      x = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(x, lo), hi), zp);
      _mm_mask_storeu_epi8(o + r * ldo + col, cm, _mm512_cvtepi32_epi8(x));
    }
  }
}

template <bool kLinear>
void run(int m, int k, const int8_t* a, size_t lda, const void* packed, int n0, int n1,
         const QS8Params* p, void* out, size_t ldo) {
  if (m <= 0 || n1 <= n0) return;
  const auto* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  const auto* wsum = reinterpret_cast<const int32_t*>(base + kHeaderBytes);
  const auto* panels = reinterpret_cast<const int8_t*>(
      base + kHeaderBytes + static_cast<size_t>(h.panels) * kNR * sizeof(int32_t));
  const int kp = h.kblocks * kKB;
  const int8_t* ap = pad_a(m, k, a, lda, kp);

  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {  // C: 16 x 16 int32; A: 16 rows x 64 k; B: 16 groups x 64 bytes
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);

  alignas(64) int32_t blk[kMR * kNR];
  const size_t esize = kLinear ? 1 : 4;
  auto* o = static_cast<uint8_t*>(out);
  for (int pi = n0 / kNR; pi * kNR < n1; ++pi) {
    const int8_t* bp = panels + static_cast<size_t>(pi) * panel_bytes(h.kblocks);
    const int col0 = pi * kNR;
    const int cols = std::min(kNR, n1 - col0);
    for (int i = 0; i < m; i += kMR) {
      const int8_t* a0 = ap + static_cast<size_t>(i) * kp;
      const int8_t* a1 = a0 + static_cast<size_t>(16) * kp;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int kb = 0; kb < h.kblocks; ++kb) {
        const int8_t* b = bp + static_cast<size_t>(kb) * 2 * kTileBytes;
        _tile_loadd(4, a0 + kb * kKB, kp);
        _tile_loadd(5, a1 + kb * kKB, kp);
        _tile_loadd(6, b, 64);
        _tile_loadd(7, b + kTileBytes, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
      }
      // C tile (row block, channel half) -> blk rows 16*rb.., columns 16*half..
      _tile_stored(0, blk, kNR * 4);
      _tile_stored(1, blk + 16, kNR * 4);
      _tile_stored(2, blk + 16 * kNR, kNR * 4);
      _tile_stored(3, blk + 16 * kNR + 16, kNR * 4);
      store_block<kLinear>(blk, std::min(kMR, m - i), col0, cols, wsum + col0, p,
                           o + static_cast<size_t>(i) * ldo * esize, ldo);
    }
  }
  _tile_release();
}

void gemm_s32(int m, int k, const int8_t* a, size_t lda, const void* packed, int /*n*/, int n0,
              int n1, int32_t* c, size_t ldc) {
  run<false>(m, k, a, lda, packed, n0, n1, nullptr, c, ldc);
}

void linear_s8(int m, int k, const int8_t* a, size_t lda, const void* packed, int /*n*/, int n0,
               int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  run<true>(m, k, a, lda, packed, n0, n1, &p, out, ldo);
}

constexpr QS8GemmUKernel kTable = {
    kAmxInt8,  "eo_qs8_gemm_minmax_ukernel_32x32c4__amx", kNR, packed_size, pack, gemm_s32,
    linear_s8, requant_fp32_rows<requant_fp32_row_avx2>,
};

}  // namespace

const QS8GemmUKernel* qs8_gemm_ukernel__amx() {
  return &kTable;
}

}  // namespace edgeopt
