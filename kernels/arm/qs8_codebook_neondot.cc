// Codebook (weight-sharing) fused int8 linear for AArch64 with the Armv8.2 dot product (SDOT).
//
// Weights are stored as 4-bit (or 2-bit) indices into the layer's 16-entry int8 table and
// decoded in registers: TBL (vqtbl1q_s8) turns 16 indices into 16 int8 weights, which feed SDOT
// exactly like the dense 4x16c4 kernel (qs8_gemm_neondot.cc): one k group of 16 channels x 4 k is
// 4 SDOT operands. 4-bit halves the weight bytes streamed per MAC (2-bit quarters them), which is
// what bounds single-row calls; the decode (AND / USHR + TBL per 16 weights) is shared by all
// the rows of a tile. SDOT is exact for any int8 input (-128 included).
//
// Per-channel tables (one table per output channel) are packed decoded, as int8 weights in the
// same layout (correct, as fast as dense int8, without the memory saving).
//
// Tile: 4 rows x 16 channels (16 accumulators); a single row alternates two accumulator sets over
// even / odd k groups (8 SDOT chains). Rows are processed in blocks of about 16 KB of A that stay
// in L1 while the panels stream past. The output stage is gemmlowp's exact NEON requantization,
// bit-exact to requant.h; the input zero point is folded into the bias with the row sums.
//
// Packed layout: Header (64 bytes, the table included) | row sums int32 [np * 16] | for each
// panel of 16 channels, for each group of 4 k (K padded to 16): 4-bit: 32 bytes (byte i of half h
// holds channel 8h + i / 4 in its low nibble, channel 8h + 4 + i / 4 in its high nibble, k = i %
// 4); 2-bit: 16 bytes (bits 2s of byte i: channel 4s + i / 4); decoded: 64 bytes (16 x 4).
#include <arm_neon.h>

#include <cstring>

#include "arm/qs8_neon_common.h"
#include "common/requant.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

constexpr int kNR = 16;
constexpr int kMR = 4;
constexpr size_t kHeaderBytes = 64;
enum Mode : int32_t { kI4 = 0, kI2 = 1, kRaw = 2 };

struct Header {
  int32_t n, k, kp, mode;
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
inline int group_bytes(Mode m) {
  return m == kI4 ? 32 : m == kI2 ? 16 : 64;
}

bool supports(int bits, bool per_channel) {
  (void)per_channel;
  return bits == 4 || bits == 2;
}

size_t packed_size(const CodebookS8View& w) {
  const size_t np = num_panels(w.n);
  return kHeaderBytes + np * kNR * 4 + np * (round_up(w.k, 16) / 4) * group_bytes(mode_of(w));
}

void pack(const CodebookS8View& w, void* dst) {
  const Mode mode = mode_of(w);
  const int np = num_panels(w.n), kp = round_up(w.k, 16), entries = 1 << w.bits;
  uint8_t* base = static_cast<uint8_t*>(dst);
  Header h{};
  h.n = w.n;
  h.k = w.k;
  h.kp = kp;
  h.mode = mode;
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
    for (int kg = 0; kg < kp; kg += 4) {
      const int c0 = p * kNR;
      if (mode == kI4) {
        for (int half = 0; half < 2; ++half)
          for (int i = 0; i < 16; ++i) {
            const int ch = c0 + 8 * half + i / 4, kk = kg + i % 4;
            *out++ = static_cast<uint8_t>(idx(ch, kk) | idx(ch + 4, kk) << 4);
          }
      } else if (mode == kI2) {
        for (int i = 0; i < 16; ++i) {
          int v = 0;
          for (int s = 0; s < 4; ++s) v |= idx(c0 + 4 * s + i / 4, kg + i % 4) << (2 * s);
          *out++ = static_cast<uint8_t>(v);
        }
      } else {
        for (int i = 0; i < 64; ++i) {
          const int ch = c0 + i / 4, kk = kg + i % 4;
          const bool in = ch < w.n && kk < w.k;
          *out++ = in ? static_cast<uint8_t>(w.table[ch * entries + idx(ch, kk)]) : 0;
        }
      }
    }
  }
}

// Decodes one k group (16 channels x 4 k) into the 4 SDOT operands.
template <Mode M>
EO_INLINE void decode(const uint8_t* w, int8x16_t tbl, int8x16_t (&b)[4]) {
  if (M == kI4) {
    const uint8x16_t mask = vdupq_n_u8(0x0F);
    const uint8x16_t p0 = vld1q_u8(w), p1 = vld1q_u8(w + 16);
    b[0] = vqtbl1q_s8(tbl, vandq_u8(p0, mask));
    b[1] = vqtbl1q_s8(tbl, vshrq_n_u8(p0, 4));
    b[2] = vqtbl1q_s8(tbl, vandq_u8(p1, mask));
    b[3] = vqtbl1q_s8(tbl, vshrq_n_u8(p1, 4));
  } else if (M == kI2) {
    const uint8x16_t mask = vdupq_n_u8(0x03);
    const uint8x16_t p = vld1q_u8(w);
    b[0] = vqtbl1q_s8(tbl, vandq_u8(p, mask));
    b[1] = vqtbl1q_s8(tbl, vandq_u8(vshrq_n_u8(p, 2), mask));
    b[2] = vqtbl1q_s8(tbl, vandq_u8(vshrq_n_u8(p, 4), mask));
    b[3] = vqtbl1q_s8(tbl, vshrq_n_u8(p, 6));
  } else {
    EO_UNROLL
    for (int q = 0; q < 4; ++q) b[q] = vld1q_s8(reinterpret_cast<const int8_t*>(w) + 16 * q);
  }
}

template <Mode M, int MR, int L>
EO_INLINE void dot_group(int32x4_t (&acc)[MR][4], const int8x16_t (&va)[MR], const uint8_t* w,
                         int8x16_t tbl) {
  int8x16_t b[4];
  decode<M>(w, tbl, b);
  EO_UNROLL
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = vdotq_laneq_s32(acc[r][0], b[0], va[r], L);
    acc[r][1] = vdotq_laneq_s32(acc[r][1], b[1], va[r], L);
    acc[r][2] = vdotq_laneq_s32(acc[r][2], b[2], va[r], L);
    acc[r][3] = vdotq_laneq_s32(acc[r][3], b[3], va[r], L);
  }
}

template <Mode M, int MR>
EO_INLINE void tile(int k, const int8_t* a, size_t lda, const uint8_t* w, int8x16_t tbl,
                    int32x4_t (&out)[MR][4]) {
  constexpr int kSets = MR == 1 ? 2 : 1;
  constexpr int G = M == kI4 ? 32 : M == kI2 ? 16 : 64;
  int32x4_t acc[kSets][MR][4];
  EO_UNROLL
  for (int s = 0; s < kSets; ++s) EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < 4; ++q) acc[s][r][q] = vdupq_n_s32(0);
  const int8_t* ar[MR];
  EO_UNROLL
  for (int r = 0; r < MR; ++r) ar[r] = a + r * lda;
  int kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    int8x16_t va[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      va[r] = vld1q_s8(ar[r]);
      ar[r] += 16;
    }
    dot_group<M, MR, 0>(acc[0], va, w, tbl);
    __asm__ __volatile__("" ::: "memory");
    dot_group<M, MR, 1>(acc[kSets - 1], va, w + G, tbl);
    __asm__ __volatile__("" ::: "memory");
    dot_group<M, MR, 2>(acc[0], va, w + 2 * G, tbl);
    __asm__ __volatile__("" ::: "memory");
    dot_group<M, MR, 3>(acc[kSets - 1], va, w + 3 * G, tbl);
    w += 4 * G;
  }
  if (kk < k) {
    // K tail (1..15): the rest of each row in a zeroed block (nothing read past the row); the
    // padded indices decode to table[0], multiplied by these zeros.
    const int rem = k - kk;
    int8x16_t va[MR];
    EO_UNROLL
    for (int r = 0; r < MR; ++r) {
      int8_t buf[16] = {0};
      copy_prefix<16>(buf, ar[r], rem);
      va[r] = vld1q_s8(buf);
    }
    dot_group<M, MR, 0>(acc[0], va, w, tbl);
    if (rem > 4) dot_group<M, MR, 1>(acc[0], va, w + G, tbl);
    if (rem > 8) dot_group<M, MR, 2>(acc[0], va, w + 2 * G, tbl);
    if (rem > 12) dot_group<M, MR, 3>(acc[0], va, w + 3 * G, tbl);
  }
  EO_UNROLL
  for (int r = 0; r < MR; ++r) EO_UNROLL
  for (int q = 0; q < 4; ++q)
    out[r][q] = kSets == 2 ? vaddq_s32(acc[0][r][q], acc[kSets - 1][r][q]) : acc[0][r][q];
}

using Epilogue = PanelEpilogue<kNR>;

template <Mode M>
void run(int m, int k, const int8_t* a, size_t lda, const uint8_t* base, const Header& h, int n,
         int n0, int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  constexpr int G = M == kI4 ? 32 : M == kI2 ? 16 : 64;
  const int np = num_panels(n);
  const int32_t* sums = reinterpret_cast<const int32_t*>(base + kHeaderBytes);
  const uint8_t* wbase = base + kHeaderBytes + np * kNR * 4;
  const size_t panel_bytes = static_cast<size_t>(h.kp / 4) * G;
  const int8x16_t tbl = vld1q_s8(h.table);
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
      auto emit = [&](int rows, int i, int32x4_t(*acc)[4]) {
        for (int r = 0; r < rows; ++r)
          store_panel_row(acc[r], e, vzp, vmin, vmax, nc,
                          out + static_cast<size_t>(i + r) * ldo + j0);
      };
      int i = i0;
      for (; i + kMR <= i1; i += kMR) {
        int32x4_t acc[kMR][4];
        tile<M, kMR>(k, a + i * lda, lda, w, tbl, acc);
        emit(kMR, i, acc);
      }
      const int rem = i1 - i;
      if (rem == 3) {
        int32x4_t acc[3][4];
        tile<M, 3>(k, a + i * lda, lda, w, tbl, acc);
        emit(3, i, acc);
      } else if (rem == 2) {
        int32x4_t acc[2][4];
        tile<M, 2>(k, a + i * lda, lda, w, tbl, acc);
        emit(2, i, acc);
      } else if (rem == 1) {
        int32x4_t acc[1][4];
        tile<M, 1>(k, a + i * lda, lda, w, tbl, acc);
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
  switch (h.mode) {
    case kI4: run<kI4>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo); break;
    case kI2: run<kI2>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo); break;
    default: run<kRaw>(m, k, a, lda, base, h, n, n0, n1, p, out, ldo); break;
  }
}

constexpr QS8CodebookUKernel kTable = {
    kNeonDot, "eo_qs8_cbgemm_minmax_ukernel_4x16c4_i4__neondot", kNR, supports, packed_size, pack,
    linear_s8};

}  // namespace

const QS8CodebookUKernel* qs8_codebook_ukernel__neondot() {
  return &kTable;
}

}  // namespace edgeopt
