// Codebook (weight-sharing) fused int8 linear for NEON without dot product (AArch64 and ARMv7).
//
// Weights are stored as 4-bit (or 2-bit) indices into the layer's 16-entry int8 table and
// decoded in registers: TBL (vqtbl1q_s8 on AArch64, two vtbl2_s8 on ARMv7) turns 16 indices into
// 16 int8 weights, which feed the dense NEON kernel's c8 chain (qs8_gemm_neon.cc): for each
// (row, channel) one int32x4 accumulator collects 16 products per step with SMULL + SMLAL +
// SADALP. Table entries in [-127, 127] keep the sum of two products inside int16; when the
// table holds -128 the kernel takes the exact single-product path (SMULL + SADALP per 8 bytes).
// 4-bit halves the weight bytes streamed per MAC (2-bit quarters them); the decode is shared by
// the rows of a tile.
//
// Per-channel tables (one table per output channel) are packed decoded, as int8 weights in the
// same layout (correct, as fast as dense int8, without the memory saving).
//
// Tile: MR rows x 8 channels, 8 accumulators per row: 2 rows on AArch64 (16 of 32 registers), 1
// on ARMv7 (16 quad registers). Rows are processed in blocks of about 16 KB of A that stay in L1
// while the panels stream past. The output stage is gemmlowp's exact NEON requantization,
// bit-exact to requant.h; the input zero point is folded into the bias with the row sums.
//
// Packed layout: Header (64 bytes, the table included) | row sums int32 [np * 8] | for each
// panel of 8 channels, for each block of 16 k (K padded to 16): 4-bit: 64 bytes (register j,
// byte t: channel 2j in the low nibble, 2j + 1 in the high nibble, k = t); 2-bit: 32 bytes
// (register j, bits 2s of byte t: channel 4j + s); decoded: 128 bytes (8 x 16).
#include <arm_neon.h>

#include <cstring>

#include "arm/qs8_neon_common.h"
#include "common/requant.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNR = 8;
constexpr int kKB = 16;
#if defined(__aarch64__)
constexpr int kMR = 2;
#else
constexpr int kMR = 1;
#endif
constexpr size_t kHeaderBytes = 64;
enum Mode : int32_t { kI4 = 0, kI2 = 1, kRaw = 2 };

struct Header {
  int32_t n, k, kp, mode;
  int32_t has_min8;  // a weight may be -128: single-product path
  int8_t table[16];
};
static_assert(sizeof(Header) <= kHeaderBytes, "header");

inline int round_up(int x, int m) {
  return (x + m - 1) / m * m;
}
inline int num_panels(int n) {
  return (n + kNR - 1) / kNR;
}
inline Mode mode_of(const CodebookS8View& w) {
  return w.per_channel ? kRaw : w.bits == 4 ? kI4 : kI2;
}
// Packed bytes per block of 16 k of a panel.
inline int block_bytes(Mode m) {
  return m == kI4 ? 64 : m == kI2 ? 32 : 128;
}

bool supports(int bits, bool per_channel) {
  (void)per_channel;
  return bits == 4 || bits == 2;
}

size_t packed_size(const CodebookS8View& w) {
  const size_t np = num_panels(w.n);
  return kHeaderBytes + np * kNR * 4 + np * (round_up(w.k, kKB) / kKB) * block_bytes(mode_of(w));
}

void pack(const CodebookS8View& w, void* dst) {
  const Mode mode = mode_of(w);
  const int np = num_panels(w.n), kp = round_up(w.k, kKB), entries = 1 << w.bits;
  uint8_t* base = static_cast<uint8_t*>(dst);
  Header h{};
  h.n = w.n;
  h.k = w.k;
  h.kp = kp;
  h.mode = mode;
  for (int e = 0; e < (w.per_channel ? w.n : 1) * entries; ++e) {
    if (w.table[e] == -128) h.has_min8 = 1;
  }
  if (mode != kRaw) {
    for (int e = 0; e < entries; ++e) h.table[e] = w.table[e];
  }
  std::memset(base, 0, kHeaderBytes);
  std::memcpy(base, &h, sizeof(h));
  int32_t* sums = reinterpret_cast<int32_t*>(base + kHeaderBytes);
  for (int j = 0; j < np * kNR; ++j) sums[j] = j < w.n ? w.row_sums[j] : 0;
  uint8_t* out = reinterpret_cast<uint8_t*>(sums + np * kNR);
  // Index of (channel, k); 0 outside the matrix (the activations are zero there).
  auto idx = [&](int ch, int kk) -> int {
    return ch < w.n && kk < w.k ? w.idx[static_cast<size_t>(ch) * w.k + kk] : 0;
  };
  for (int p = 0; p < np; ++p) {
    const int c0 = p * kNR;
    for (int kb = 0; kb < kp; kb += kKB) {
      if (mode == kI4) {
        for (int j = 0; j < 4; ++j)
          for (int t = 0; t < kKB; ++t)
            *out++ =
                static_cast<uint8_t>(idx(c0 + 2 * j, kb + t) | idx(c0 + 2 * j + 1, kb + t) << 4);
      } else if (mode == kI2) {
        for (int j = 0; j < 2; ++j)
          for (int t = 0; t < kKB; ++t) {
            int v = 0;
            for (int s = 0; s < 4; ++s) v |= idx(c0 + 4 * j + s, kb + t) << (2 * s);
            *out++ = static_cast<uint8_t>(v);
          }
      } else {
        for (int c = 0; c < kNR; ++c)
          for (int t = 0; t < kKB; ++t) {
            const int ch = c0 + c, kk = kb + t;
            const bool in = ch < w.n && kk < w.k;
            *out++ = in ? static_cast<uint8_t>(w.table[ch * entries + idx(ch, kk)]) : 0;
          }
      }
    }
  }
}

#if defined(__aarch64__)
using Table = int8x16_t;
EO_INLINE Table load_table(const int8_t* t) {
  return vld1q_s8(t);
}
EO_INLINE int8x16_t lut(Table t, uint8x16_t i) {
  return vqtbl1q_s8(t, i);
}
#else
using Table = int8x8x2_t;
EO_INLINE Table load_table(const int8_t* t) {
  return int8x8x2_t{{vld1_s8(t), vld1_s8(t + 8)}};
}
EO_INLINE int8x16_t lut(Table t, uint8x16_t i) {
  const int8x16_t s = vreinterpretq_s8_u8(i);
  return vcombine_s8(vtbl2_s8(t, vget_low_s8(s)), vtbl2_s8(t, vget_high_s8(s)));
}
#endif

// Decodes one block of 16 k x 8 channels: b[c] = channel c's 16 weights.
template <Mode M>
EO_INLINE void decode(const uint8_t* w, const Table& tbl, int8x16_t (&b)[kNR]) {
  if (M == kI4) {
    const uint8x16_t mask = vdupq_n_u8(0x0F);
    EO_UNROLL
    for (int j = 0; j < 4; ++j) {
      const uint8x16_t p = vld1q_u8(w + 16 * j);
      b[2 * j] = lut(tbl, vandq_u8(p, mask));
      b[2 * j + 1] = lut(tbl, vshrq_n_u8(p, 4));
    }
  } else if (M == kI2) {
    const uint8x16_t mask = vdupq_n_u8(0x03);
    EO_UNROLL
    for (int j = 0; j < 2; ++j) {
      const uint8x16_t p = vld1q_u8(w + 16 * j);
      b[4 * j] = lut(tbl, vandq_u8(p, mask));
      b[4 * j + 1] = lut(tbl, vandq_u8(vshrq_n_u8(p, 2), mask));
      b[4 * j + 2] = lut(tbl, vandq_u8(vshrq_n_u8(p, 4), mask));
      b[4 * j + 3] = lut(tbl, vshrq_n_u8(p, 6));
    }
  } else {
    EO_UNROLL
    for (int c = 0; c < kNR; ++c) b[c] = vld1q_s8(reinterpret_cast<const int8_t*>(w) + 16 * c);
  }
}

// acc += 16 products of a and b; kExact2 = the int16 sum of two products cannot overflow.
template <Mode M, bool kExact2, int MR>
EO_INLINE void tile(int k, const int8_t* a, size_t lda, const uint8_t* w, const Table& tbl,
                    int32x4_t (&out)[MR][2]) {
  constexpr int B = M == kI4 ? 64 : M == kI2 ? 32 : 128;
  int32x4_t acc[MR][kNR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int c = 0; c < kNR; ++c) acc[r][c] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  int kk = 0;
  for (; kk < k; kk += kKB) {
    int8x16_t va[MR];
    if (kk + kKB <= k) {
      EO_UNROLL
      for (int r = 0; r < MR; ++r) va[r] = vld1q_s8(ar[r] + kk);
    } else {
      // K tail: the rest of each row in a zeroed block (never read past the row); the padded
      // indices decode to table[0], multiplied by these zeros.
      EO_UNROLL
      for (int r = 0; r < MR; ++r) {
        int8_t buf[kKB] = {0};
        copy_prefix<kKB>(buf, ar[r] + kk, k - kk);
        va[r] = vld1q_s8(buf);
      }
    }
    int8x16_t b[kNR];
    decode<M>(w, tbl, b);
    EO_UNROLL
    for (int c = 0; c < kNR; ++c) {
      EO_UNROLL
      for (int r = 0; r < MR; ++r) acc[r][c] = mac16<kExact2>(acc[r][c], va[r], b[c]);
    }
    w += B;
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    out[r][0] = reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    out[r][1] = reduce4(acc[r][4], acc[r][5], acc[r][6], acc[r][7]);
  }
}

using Epilogue = PanelEpilogue<kNR>;

template <Mode M, bool kExact2>
void run(int m, int k, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int n,
         int n0, int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  const int np = num_panels(n);
  const int32_t* sums = reinterpret_cast<const int32_t*>(base + kHeaderBytes);
  const uint8_t* wbase = base + kHeaderBytes + np * kNR * 4;
  const size_t panel_bytes = static_cast<size_t>(h.kp / kKB) * block_bytes(M);
  const Table tbl = load_table(h.table);
  const int32x4_t vzp = vdupq_n_s32(p.output_zero_point);
  const int32x4_t vmin = vdupq_n_s32(p.qmin);
  const int32x4_t vmax = vdupq_n_s32(p.qmax);
  int mb = (16 * 1024 / (k + 16)) / kMR * kMR;
  if (mb < kMR) mb = kMR;
  for (int i0 = 0; i0 < m; i0 += mb) {
    const int i1 = m - i0 < mb ? m : i0 + mb;
    for (int j0 = n0; j0 < n1; j0 += kNR) {
      const int nc = n1 - j0 < kNR ? n1 - j0 : kNR;
      Epilogue e;
      make_panel_epilogue<kNR>(e, j0, nc, sums, p);
      const uint8_t* w = wbase + (j0 / kNR) * panel_bytes;
      auto emit = [&](int rows, int i, int32x4_t(*acc)[2]) {
        for (int r = 0; r < rows; ++r)
          store_panel_row(acc[r], e, vzp, vmin, vmax, nc,
                          out + static_cast<size_t>(i + r) * ldo + j0);
      };
      int i = i0;
      for (; i + kMR <= i1; i += kMR) {
        int32x4_t acc[kMR][2];
        tile<M, kExact2, kMR>(k, a + i * lda, lda, w, tbl, acc);
        emit(kMR, i, acc);
      }
      for (; i < i1; ++i) {
        int32x4_t acc[1][2];
        tile<M, kExact2, 1>(k, a + i * lda, lda, w, tbl, acc);
        emit(1, i, acc);
      }
    }
  }
}

void linear_s8(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0, int n1,
               const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  Header h;
  std::memcpy(&h, base, sizeof(h));
  const bool exact2 = !h.has_min8;
  switch (h.mode) {
    case kI4:
      exact2 ? run<kI4, true>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo)
             : run<kI4, false>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo);
      break;
    case kI2:
      exact2 ? run<kI2, true>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo)
             : run<kI2, false>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo);
      break;
    default:
      exact2 ? run<kRaw, true>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo)
             : run<kRaw, false>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo);
      break;
  }
}

constexpr QS8CodebookUKernel kTable = {
    kNeon,    "eo_qs8_cbgemm_minmax_ukernel_2x8c16_i4__neon", kNR, supports, packed_size, pack,
    linear_s8};

}  // namespace

const QS8CodebookUKernel* qs8_codebook_ukernel__neon() {
  return &kTable;
}

}  // namespace edgeopt
