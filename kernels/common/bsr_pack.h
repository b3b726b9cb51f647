// Packed layouts shared by the x86 block-sparse kernels (f32_bsr_*.cc, qs8_bsr_*.cc): one native
// kR x kC block per file, built by bsr_reblock.h; plus the row chunking of the activation copy.
// Generic code, no ISA instructions; internal linkage (the files are built with different flags).
//
// fp32:  64-byte header | ptr int32 [groups + 1] | per block its byte offset into an activation
//        row (uint32) | the blocks, kR x kC floats each, in group order and ascending k.
// int8:  64-byte header | ptr int32 [groups + 1] | row_sum(w) padded to kR per group | per block
//        its byte offset into an activation row (uint32) | the blocks, kR x kC bytes each (the
//        order inside a block is the kernel's), in group order and ascending k.
// Sections start 64-byte aligned; the byte offset of block column q is q * kC * kBytesPerK.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/isa_local.h"
#include "common/bsr_reblock.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

inline size_t bsr_align64(size_t x) {
  return (x + 63) & ~size_t{63};
}

// The block shapes every x86 block-sparse kernel accepts.
inline bool bsr_supports_x86(int r, int c) {
  return (r == 1 || r == 2 || r == 4 || r == 8 || r == 16) && (c == 1 || c == 2 || c == 4);
}

struct BsrF32Header {
  uint32_t magic;
  int32_t n, k, r, c;
  int32_t groups;
  int32_t nblocks;
  int32_t pad;
  uint64_t off_ptr, off_offs, off_w;
};
static_assert(sizeof(BsrF32Header) <= 64, "header");

template <int kR, int kC>
size_t bsr_f32_packed_size(const BsrF32View& w) {
  const int groups = (w.n + kR - 1) / kR;
  const size_t nb = bsr_reblock_structure<kR, kC>(w, nullptr, nullptr);
  return 64 + bsr_align64((groups + 1) * sizeof(int32_t)) + bsr_align64(nb * sizeof(uint32_t)) +
         nb * kR * kC * sizeof(float);
}

template <int kR, int kC, uint32_t kMagic>
void bsr_f32_pack(const BsrF32View& w, void* dst) {
  LocalVec<int32_t> ptr, cols;
  const size_t nb = bsr_reblock_structure<kR, kC>(w, &ptr, &cols);
  const int groups = (w.n + kR - 1) / kR;
  auto* base = static_cast<uint8_t*>(dst);
  BsrF32Header h{};
  h.magic = kMagic;
  h.n = w.n;
  h.k = w.k;
  h.r = w.r;
  h.c = w.c;
  h.groups = groups;
  h.nblocks = static_cast<int32_t>(nb);
  h.off_ptr = 64;
  h.off_offs = h.off_ptr + bsr_align64((groups + 1) * sizeof(int32_t));
  h.off_w = h.off_offs + bsr_align64(nb * sizeof(uint32_t));
  std::memset(base, 0, 64);
  std::memcpy(base, &h, sizeof(h));
  std::memcpy(base + h.off_ptr, ptr.data(), ptr.size() * sizeof(int32_t));
  auto* offs = reinterpret_cast<uint32_t*>(base + h.off_offs);
  for (size_t b = 0; b < nb; ++b) offs[b] = static_cast<uint32_t>(cols[b]) * kC * sizeof(float);
  auto* wv = reinterpret_cast<float*>(base + h.off_w);
  std::fill(wv, wv + nb * kR * kC, 0.0f);
  bsr_reblock_values<kR, kC>(w, ptr, cols, [&](size_t b, int row, int col, float v) {
    wv[b * kR * kC + row * kC + col] = v;
  });
}

struct BsrS8Header {
  uint32_t magic;
  int32_t n, k, r, c;
  int32_t groups;   // ceil(n / kR)
  int32_t nblocks;  // kR x kC blocks after re-blocking
  int32_t kgroups;  // ceil(k / kC)
  uint64_t off_ptr, off_rowsum, off_offs, off_w;
};
static_assert(sizeof(BsrS8Header) <= 64, "header");

template <int kR, int kC>
size_t bsr_s8_packed_size(const BsrS8View& w) {
  const int groups = (w.n + kR - 1) / kR;
  const size_t nb = bsr_reblock_structure<kR, kC>(w, nullptr, nullptr);
  size_t s = 64;
  s += bsr_align64((groups + 1) * sizeof(int32_t));
  s += bsr_align64(static_cast<size_t>(groups) * kR * sizeof(int32_t));
  s += bsr_align64(nb * sizeof(uint32_t));
  s += nb * kR * kC;
  return s;
}

// place(row, col) is the byte of a block that holds its (channel row, k col) weight.
template <int kR, int kC, uint32_t kMagic, int kBytesPerK, typename Place>
void bsr_s8_pack(const BsrS8View& w, void* dst, Place place) {
  LocalVec<int32_t> ptr, cols;
  const size_t nb = bsr_reblock_structure<kR, kC>(w, &ptr, &cols);
  const int groups = (w.n + kR - 1) / kR;
  const int kgroups = (w.k + kC - 1) / kC;
  auto* base = static_cast<uint8_t*>(dst);
  BsrS8Header h{};
  h.magic = kMagic;
  h.n = w.n;
  h.k = w.k;
  h.r = w.r;
  h.c = w.c;
  h.groups = groups;
  h.nblocks = static_cast<int32_t>(nb);
  h.kgroups = kgroups;
  h.off_ptr = 64;
  h.off_rowsum = h.off_ptr + bsr_align64((groups + 1) * sizeof(int32_t));
  h.off_offs = h.off_rowsum + bsr_align64(static_cast<size_t>(groups) * kR * sizeof(int32_t));
  h.off_w = h.off_offs + bsr_align64(nb * sizeof(uint32_t));
  std::memset(base, 0, 64);
  std::memcpy(base, &h, sizeof(h));
  std::memcpy(base + h.off_ptr, ptr.data(), ptr.size() * sizeof(int32_t));
  auto* rs = reinterpret_cast<int32_t*>(base + h.off_rowsum);
  for (int j = 0; j < groups * kR; ++j) rs[j] = j < w.n ? w.row_sums[j] : 0;
  auto* offs = reinterpret_cast<uint32_t*>(base + h.off_offs);
  for (size_t b = 0; b < nb; ++b) offs[b] = static_cast<uint32_t>(cols[b]) * kC * kBytesPerK;
  int8_t* wv = reinterpret_cast<int8_t*>(base + h.off_w);
  std::memset(wv, 0, nb * kR * kC);
  bsr_reblock_values<kR, kC>(w, ptr, cols, [&](size_t b, int row, int col, int8_t v) {
    wv[b * kR * kC + place(row, col)] = v;
  });
}

// One chunk of the per-call activation copy: rows [row, row + h) stored from base.
template <typename T>
struct BsrChunk {
  int row;
  int h;
  const T* base;
};

// Cuts rows [0, m) into chunks of kMaxH rows, then one chunk per power of two below kMaxH that
// the remaining count holds, stored one after the other from dst (per_row elements per row);
// copy(row, h, dst) fills a chunk.
template <int kMaxH, typename T, typename Copy>
void bsr_row_chunks(int m, size_t per_row, T* dst, LocalVec<BsrChunk<T>>& chunks, Copy copy) {
  chunks.clear();
  int i = 0;
  auto emit = [&](int hh) {
    chunks.push_back(BsrChunk<T>{i, hh, dst});
    copy(i, hh, dst);
    dst += per_row * hh;
    i += hh;
  };
  while (m - i >= kMaxH) emit(kMaxH);
  for (int hh = kMaxH / 2; hh >= 1; hh /= 2) {
    if ((m - i) & hh) emit(hh);
  }
}

// fp32 activation copy of H <= 8 rows: per k, the H rows' floats contiguously.
template <int H>
inline __attribute__((always_inline)) void bsr_f32_copy_rows(const float* a, size_t lda, int k,
                                                             float* dst) {
  if (H == 1) {
    std::memcpy(dst, a, static_cast<size_t>(k) * sizeof(float));
    return;
  }
  for (int kk = 0; kk < k; ++kk) {
#pragma GCC unroll 8
    for (int r = 0; r < H; ++r) dst[static_cast<size_t>(kk) * H + r] = a[r * lda + kk];
  }
}

}  // namespace
}  // namespace edgeopt
