// Packed layout and driver shared by the x86 fp32 codebook kernels (f32_codebook_avx2.cc,
// f32_codebook_avx512.cc), which differ in the vector width kLanes (8 or 16 k per weight vector)
// and the channels per panel kNC. Generic code, no ISA instructions; internal linkage (the files
// are built with different flags).
//
// Packed: 64-byte header | tables (16 floats per table: per layer 1, per channel one per channel
// padded to whole panels; 2-bit tables replicated to 16 entries) | panels of kNC channels x
// ksteps x kLanes bytes ([kstep][channel][kLanes]). A K step covers kLanes * 8 / bits k; byte j of
// a channel's step holds the index of k0 + kLanes * q + j in bits [bits * q, bits * q + bits). K
// is padded with index 0.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

struct F32CbHeader {
  int32_t n, k, bits, per_channel, panels, ksteps;
  uint32_t magic;
};

struct F32CbLayout {
  size_t tables, data, panel_bytes, total;
  int ksteps;
};

template <int kNC, int kLanes>
F32CbLayout f32_cb_layout(int n, int k, int bits, bool per_channel) {
  const int panels = (n + kNC - 1) / kNC;
  const int kstep = kLanes * 8 / bits;
  F32CbLayout l;
  l.ksteps = (k + kstep - 1) / kstep;
  l.tables = 64;
  l.data = l.tables + (per_channel ? static_cast<size_t>(panels) * kNC : 1) * 16 * sizeof(float);
  l.panel_bytes = static_cast<size_t>(l.ksteps) * kNC * kLanes;
  l.total = l.data + static_cast<size_t>(panels) * l.panel_bytes;
  return l;
}

inline bool f32_cb_supports(int bits, bool /*per_channel*/) {
  return bits == 4 || bits == 2;
}

template <int kNC, int kLanes>
size_t f32_cb_packed_size(const CodebookF32View& w) {
  return f32_cb_layout<kNC, kLanes>(w.n, w.k, w.bits, w.per_channel).total;
}

template <int kNC, int kLanes, uint32_t kMagic>
void f32_cb_pack(const CodebookF32View& w, void* dst) {
  const F32CbLayout l = f32_cb_layout<kNC, kLanes>(w.n, w.k, w.bits, w.per_channel);
  const int panels = (w.n + kNC - 1) / kNC;
  const int entries = 1 << w.bits;
  const int q_count = 8 / w.bits;
  auto* base = static_cast<uint8_t*>(dst);
  std::memset(base, 0, l.total);
  F32CbHeader h{w.n, w.k, w.bits, w.per_channel ? 1 : 0, panels, l.ksteps, kMagic};
  std::memcpy(base, &h, sizeof(h));
  auto* tables = reinterpret_cast<float*>(base + l.tables);
  const int n_tables = w.per_channel ? panels * kNC : 1;
  for (int t = 0; t < n_tables; ++t) {
    const int src = w.per_channel ? std::min(t, w.n - 1) : 0;
    for (int e = 0; e < 16; ++e) tables[t * 16 + e] = w.table[src * entries + e % entries];
  }
  for (int p = 0; p < panels; ++p) {
    uint8_t* panel = base + l.data + static_cast<size_t>(p) * l.panel_bytes;
    for (int c = 0; c < kNC; ++c) {
      const int ch = p * kNC + c;
      if (ch >= w.n) continue;
      const uint8_t* row = w.idx + static_cast<size_t>(ch) * w.k;
      for (int kk = 0; kk < w.k; ++kk) {
        const int s = kk / (kLanes * q_count);
        const int q = (kk / kLanes) % q_count;
        panel[(static_cast<size_t>(s) * kNC + c) * kLanes + kk % kLanes] |=
            static_cast<uint8_t>((row[kk] & (entries - 1)) << (w.bits * q));
      }
    }
  }
}

// Panels of the channel range, rows in pairs then a single one: Tile::template apply<BITS,
// kPerChannel, MR>(k, a, lda, panel, table, p, col0, cols, out, ldo) computes one tile.
template <int kNC, int kLanes, typename Tile, int BITS, bool kPerChannel>
void f32_cb_run(int m, int k, const float* a, size_t lda, const uint8_t* base, const F32CbHeader& h,
                int n0, int n1, const F32Params& p, float* out, size_t ldo) {
  const F32CbLayout l = f32_cb_layout<kNC, kLanes>(h.n, h.k, h.bits, h.per_channel != 0);
  const auto* tables = reinterpret_cast<const float*>(base + l.tables);
  for (int pi = n0 / kNC; pi * kNC < n1; ++pi) {
    const uint8_t* w = base + l.data + static_cast<size_t>(pi) * l.panel_bytes;
    const float* tab = tables + (kPerChannel ? static_cast<size_t>(pi) * kNC * 16 : 0);
    const int col0 = pi * kNC;
    const int cols = std::min(kNC, n1 - col0);
    int i = 0;
    for (; i + 2 <= m; i += 2) {
      Tile::template apply<BITS, kPerChannel, 2>(k, a + i * lda, lda, w, tab, p, col0, cols,
                                                 out + i * ldo, ldo);
    }
    if (i < m) {
      Tile::template apply<BITS, kPerChannel, 1>(k, a + i * lda, lda, w, tab, p, col0, cols,
                                                 out + i * ldo, ldo);
    }
  }
}

template <int kNC, int kLanes, typename Tile>
void f32_cb_linear(int m, int k, const float* a, size_t lda, const void* packed, int /*n*/, int n0,
                   int n1, const F32Params& p, float* out, size_t ldo) {
  if (m <= 0 || n1 <= n0) return;
  const auto* base = static_cast<const uint8_t*>(packed);
  F32CbHeader h;
  std::memcpy(&h, base, sizeof(h));
  if (h.bits == 4) {
    if (h.per_channel) {
      f32_cb_run<kNC, kLanes, Tile, 4, true>(m, k, a, lda, base, h, n0, n1, p, out, ldo);
    } else {
      f32_cb_run<kNC, kLanes, Tile, 4, false>(m, k, a, lda, base, h, n0, n1, p, out, ldo);
    }
  } else {
    if (h.per_channel) {
      f32_cb_run<kNC, kLanes, Tile, 2, true>(m, k, a, lda, base, h, n0, n1, p, out, ldo);
    } else {
      f32_cb_run<kNC, kLanes, Tile, 2, false>(m, k, a, lda, base, h, n0, n1, p, out, ldo);
    }
  }
}

}  // namespace
}  // namespace edgeopt
