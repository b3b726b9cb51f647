// Portable scalar block-sparse and codebook paths (the fallback for any block shape / table).
//
// The packed forms are plain copies of the views (one buffer: header, then the arrays, each
// 64-byte aligned); the loops visit only stored blocks, so the cost scales with them.
#include <cstring>

#include "common/requant.h"
#include "common/sparse_ukernel.h"

namespace edgeopt {
namespace {

inline size_t align64(size_t v) {
  return (v + 63) & ~size_t{63};
}
inline float clampf(float v, float lo, float hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

struct BsrHeader {
  int32_t n, k, r, c, block_rows, block_cols, nnz;
};

// Lays out header | row_ptr | col_idx | values | row_sums (row_sums only for int8).
template <typename T>
struct BsrLayout {
  size_t row_ptr, col_idx, values, row_sums, total;
  BsrLayout(int block_rows, int nnz, int r, int c, int n, bool sums) {
    row_ptr = align64(sizeof(BsrHeader));
    col_idx = align64(row_ptr + sizeof(int32_t) * (block_rows + 1));
    values = align64(col_idx + sizeof(int32_t) * nnz);
    row_sums = align64(values + sizeof(T) * static_cast<size_t>(nnz) * r * c);
    total = row_sums + (sums ? sizeof(int32_t) * n : 0);
  }
};

template <typename T, typename View>
size_t bsr_size(const View& w, bool sums) {
  const int nnz = w.row_ptr[w.block_rows];
  return BsrLayout<T>(w.block_rows, nnz, w.r, w.c, w.n, sums).total;
}

template <typename T, typename View>
void bsr_pack(const View& w, const int32_t* row_sums, void* dst) {
  const int nnz = w.row_ptr[w.block_rows];
  BsrLayout<T> L(w.block_rows, nnz, w.r, w.c, w.n, row_sums != nullptr);
  uint8_t* d = static_cast<uint8_t*>(dst);
  BsrHeader h{w.n, w.k, w.r, w.c, w.block_rows, w.block_cols, nnz};
  std::memcpy(d, &h, sizeof h);
  std::memcpy(d + L.row_ptr, w.row_ptr, sizeof(int32_t) * (w.block_rows + 1));
  std::memcpy(d + L.col_idx, w.col_idx, sizeof(int32_t) * nnz);
  std::memcpy(d + L.values, w.values, sizeof(T) * static_cast<size_t>(nnz) * w.r * w.c);
  if (row_sums) std::memcpy(d + L.row_sums, row_sums, sizeof(int32_t) * w.n);
}

size_t qs8_bsr_size(const BsrS8View& w) {
  return bsr_size<int8_t>(w, true);
}
void qs8_bsr_pack(const BsrS8View& w, void* dst) {
  bsr_pack<int8_t>(w, w.row_sums, dst);
}
size_t f32_bsr_size(const BsrF32View& w) {
  return bsr_size<float>(w, false);
}
void f32_bsr_pack(const BsrF32View& w, void* dst) {
  bsr_pack<float>(w, nullptr, dst);
}
bool any_block(int, int) {
  return true;
}

void qs8_bsr_linear(int m, const int8_t* a, size_t lda, const void* packed, int br0, int br1,
                    const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  BsrHeader h;
  std::memcpy(&h, base, sizeof h);
  BsrLayout<int8_t> L(h.block_rows, h.nnz, h.r, h.c, h.n, true);
  const int32_t* row_ptr = reinterpret_cast<const int32_t*>(base + L.row_ptr);
  const int32_t* col_idx = reinterpret_cast<const int32_t*>(base + L.col_idx);
  const int8_t* values = reinterpret_cast<const int8_t*>(base + L.values);
  const int32_t* row_sums = reinterpret_cast<const int32_t*>(base + L.row_sums);
  uint32_t acc[64];
  for (int i = 0; i < m; ++i) {
    const int8_t* ar = a + i * lda;
    for (int br = br0; br < br1; ++br) {
      const int j0 = br * h.r;
      const int rows = h.n - j0 < h.r ? h.n - j0 : h.r;
      for (int rr0 = 0; rr0 < rows; rr0 += 64) {  // r may exceed the local buffer: chunk it
        const int rn = rows - rr0 < 64 ? rows - rr0 : 64;
        for (int rr = 0; rr < rn; ++rr) acc[rr] = 0;
        for (int b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
          const int k0 = col_idx[b] * h.c;
          const int cn = h.k - k0 < h.c ? h.k - k0 : h.c;
          const int8_t* blk = values + static_cast<size_t>(b) * h.r * h.c;
          for (int rr = 0; rr < rn; ++rr) {
            uint32_t s = 0;
            for (int cc = 0; cc < cn; ++cc) {
              s += static_cast<uint32_t>(static_cast<int32_t>(ar[k0 + cc]) *
                                         blk[(rr0 + rr) * h.c + cc]);
            }
            acc[rr] += s;
          }
        }
        for (int rr = 0; rr < rn; ++rr) {
          const int j = j0 + rr0 + rr;
          uint32_t v = acc[rr] - static_cast<uint32_t>(p.input_zero_point) *
                                     static_cast<uint32_t>(row_sums[j]);
          if (p.bias) v += static_cast<uint32_t>(p.bias[j]);
          out[i * ldo + j] = requantize_s8(static_cast<int32_t>(v), p.multiplier[j], p.shift[j],
                                           p.output_zero_point, p.qmin, p.qmax);
        }
      }
    }
  }
}

void f32_bsr_linear(int m, const float* a, size_t lda, const void* packed, int br0, int br1,
                    const F32Params& p, float* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  BsrHeader h;
  std::memcpy(&h, base, sizeof h);
  BsrLayout<float> L(h.block_rows, h.nnz, h.r, h.c, h.n, false);
  const int32_t* row_ptr = reinterpret_cast<const int32_t*>(base + L.row_ptr);
  const int32_t* col_idx = reinterpret_cast<const int32_t*>(base + L.col_idx);
  const float* values = reinterpret_cast<const float*>(base + L.values);
  for (int i = 0; i < m; ++i) {
    const float* ar = a + i * lda;
    for (int br = br0; br < br1; ++br) {
      const int j0 = br * h.r;
      const int rows = h.n - j0 < h.r ? h.n - j0 : h.r;
      for (int rr = 0; rr < rows; ++rr) {
        float s = p.bias ? p.bias[j0 + rr] : 0.f;
        for (int b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
          const int k0 = col_idx[b] * h.c;
          const int cn = h.k - k0 < h.c ? h.k - k0 : h.c;
          const float* blk = values + static_cast<size_t>(b) * h.r * h.c + rr * h.c;
          for (int cc = 0; cc < cn; ++cc) s += ar[k0 + cc] * blk[cc];
        }
        out[i * ldo + j0 + rr] = clampf(s, p.min, p.max);
      }
    }
  }
}

// --- Codebook: header | idx [N, K] bytes | table | row_sums -------------------------------------

struct CbHeader {
  int32_t n, k, bits, per_channel;
};

struct CbLayout {
  size_t idx, table, row_sums, total;
  CbLayout(int n, int k, int bits, bool per_channel, size_t elem) {
    idx = align64(sizeof(CbHeader));
    table = align64(idx + static_cast<size_t>(n) * k);
    row_sums = align64(table + elem * (per_channel ? n : 1) * (1u << bits));
    total = row_sums + sizeof(int32_t) * n;
  }
};

bool cb_supports(int bits, bool) {
  return bits >= 1 && bits <= 8;
}

template <typename T, typename View>
size_t cb_size(const View& w) {
  return CbLayout(w.n, w.k, w.bits, w.per_channel, sizeof(T)).total;
}

template <typename T, typename View>
void cb_pack(const View& w, const int32_t* row_sums, void* dst) {
  CbLayout L(w.n, w.k, w.bits, w.per_channel, sizeof(T));
  uint8_t* d = static_cast<uint8_t*>(dst);
  CbHeader h{w.n, w.k, w.bits, w.per_channel ? 1 : 0};
  std::memcpy(d, &h, sizeof h);
  std::memcpy(d + L.idx, w.idx, static_cast<size_t>(w.n) * w.k);
  std::memcpy(d + L.table, w.table, sizeof(T) * (w.per_channel ? w.n : 1) * (1u << w.bits));
  if (row_sums) std::memcpy(d + L.row_sums, row_sums, sizeof(int32_t) * w.n);
}

size_t qs8_cb_size(const CodebookS8View& w) {
  return cb_size<int8_t>(w);
}
void qs8_cb_pack(const CodebookS8View& w, void* dst) {
  cb_pack<int8_t>(w, w.row_sums, dst);
}
size_t f32_cb_size(const CodebookF32View& w) {
  return cb_size<float>(w);
}
void f32_cb_pack(const CodebookF32View& w, void* dst) {
  cb_pack<float>(w, nullptr, dst);
}

void qs8_cb_linear(int m, int k, const int8_t* a, size_t lda, const void* packed, int n, int n0,
                   int n1, const QS8Params& p, int8_t* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  CbHeader h;
  std::memcpy(&h, base, sizeof h);
  CbLayout L(h.n, h.k, h.bits, h.per_channel != 0, 1);
  const uint8_t* idx = base + L.idx;
  const int8_t* tables = reinterpret_cast<const int8_t*>(base + L.table);
  const int32_t* row_sums = reinterpret_cast<const int32_t*>(base + L.row_sums);
  const int entries = 1 << h.bits;
  for (int j = n0; j < n1; ++j) {
    const int8_t* t = tables + (h.per_channel ? j * entries : 0);
    const uint8_t* ir = idx + static_cast<size_t>(j) * k;
    for (int i = 0; i < m; ++i) {
      const int8_t* ar = a + i * lda;
      uint32_t s = 0;
      for (int kk = 0; kk < k; ++kk)
        s += static_cast<uint32_t>(static_cast<int32_t>(ar[kk]) * t[ir[kk]]);
      s -= static_cast<uint32_t>(p.input_zero_point) * static_cast<uint32_t>(row_sums[j]);
      if (p.bias) s += static_cast<uint32_t>(p.bias[j]);
      out[i * ldo + j] = requantize_s8(static_cast<int32_t>(s), p.multiplier[j], p.shift[j],
                                       p.output_zero_point, p.qmin, p.qmax);
    }
  }
}

void f32_cb_linear(int m, int k, const float* a, size_t lda, const void* packed, int n, int n0,
                   int n1, const F32Params& p, float* out, size_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(packed);
  CbHeader h;
  std::memcpy(&h, base, sizeof h);
  CbLayout L(h.n, h.k, h.bits, h.per_channel != 0, sizeof(float));
  const uint8_t* idx = base + L.idx;
  const float* tables = reinterpret_cast<const float*>(base + L.table);
  const int entries = 1 << h.bits;
  for (int j = n0; j < n1; ++j) {
    const float* t = tables + (h.per_channel ? j * entries : 0);
    const uint8_t* ir = idx + static_cast<size_t>(j) * k;
    for (int i = 0; i < m; ++i) {
      const float* ar = a + i * lda;
      float s = p.bias ? p.bias[j] : 0.f;
      for (int kk = 0; kk < k; ++kk) s += ar[kk] * t[ir[kk]];
      out[i * ldo + j] = clampf(s, p.min, p.max);
    }
  }
}

constexpr QS8BsrUKernel kQs8Bsr = {kScalar,      "eo_qs8_bsrgemm_minmax_ukernel_1x1_bRxC__scalar",
                                   any_block,    qs8_bsr_size,
                                   qs8_bsr_pack, qs8_bsr_linear};
constexpr F32BsrUKernel kF32Bsr = {kScalar,      "eo_f32_bsrgemm_minmax_ukernel_1x1_bRxC__scalar",
                                   any_block,    f32_bsr_size,
                                   f32_bsr_pack, f32_bsr_linear};
constexpr QS8CodebookUKernel kQs8Cb = {kScalar,
                                       "eo_qs8_cbgemm_minmax_ukernel_1x1_iN__scalar",
                                       1,
                                       cb_supports,
                                       qs8_cb_size,
                                       qs8_cb_pack,
                                       qs8_cb_linear};
constexpr F32CodebookUKernel kF32Cb = {kScalar,
                                       "eo_f32_cbgemm_minmax_ukernel_1x1_iN__scalar",
                                       1,
                                       cb_supports,
                                       f32_cb_size,
                                       f32_cb_pack,
                                       f32_cb_linear};

}  // namespace

const QS8BsrUKernel* qs8_bsr_ukernel__scalar() {
  return &kQs8Bsr;
}
const F32BsrUKernel* f32_bsr_ukernel__scalar() {
  return &kF32Bsr;
}
const QS8CodebookUKernel* qs8_codebook_ukernel__scalar() {
  return &kQs8Cb;
}
const F32CodebookUKernel* f32_codebook_ukernel__scalar() {
  return &kF32Cb;
}

}  // namespace edgeopt
