// Dense GEMM front: weight packing per path, path choice by CPU and shape, and the thread split.
#include "edgeopt/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "common/ukernel.h"
#include "dispatch/split.h"

namespace edgeopt {
namespace {

// Best int8 path for this shape among those available. AMX tiles hold 16 rows, so for a handful
// of rows VNNI's register tiles win (and skip the tile configuration cost).
Path select_qs8(int m, int /*n*/, int k) {
  const uint32_t av = available_paths();
  if ((av & kAmxInt8) && m >= 16 && k >= 64 && qs8_gemm_ukernel(kAmxInt8)) return kAmxInt8;
  for (Path p : {kAvx512Vnni, kAvx2, kNeonDot, kNeon}) {
    if ((av & p) && qs8_gemm_ukernel(p)) return p;
  }
  return kScalar;
}

Path select_f32() {
  const uint32_t av = available_paths();
  for (Path p : {kAvx512Vnni, kAvx2, kNeonDot, kNeon}) {
    if ((av & p) && f32_gemm_ukernel(p)) return p;
  }
  return kScalar;
}

}  // namespace

PackedS8::PackedS8(const int8_t* w, int n, int k)
    : n_(n), k_(k), w_(w, w + static_cast<size_t>(n) * k), row_sums_(n) {
  for (int j = 0; j < n; ++j) {
    int32_t s = 0;
    for (int kk = 0; kk < k; ++kk) {
      const int8_t v = w[static_cast<size_t>(j) * k + kk];
      s += v;
      has_min_ |= v == -128;
    }
    row_sums_[j] = s;
  }
}

const void* PackedS8::packed_for(Path p) const {
  return cache_.get(p, [&]() -> std::pair<std::shared_ptr<void>, size_t> {
    const QS8GemmUKernel* uk = qs8_gemm_ukernel(p);
    if (uk == nullptr) return {nullptr, 0};
    const size_t bytes = uk->packed_size(n_, k_);
    auto buf = aligned_buffer(bytes);
    uk->pack(w_.data(), n_, k_, row_sums_.data(), buf.get());
    return {buf, bytes};
  });
}

size_t PackedS8::packed_bytes(Path p) const {
  packed_for(p);
  return cache_.bytes(p);
}

PackedF32::PackedF32(const float* w, int n, int k)
    : n_(n), k_(k), w_(w, w + static_cast<size_t>(n) * k) {}

const void* PackedF32::packed_for(Path p) const {
  return cache_.get(p, [&]() -> std::pair<std::shared_ptr<void>, size_t> {
    const F32GemmUKernel* uk = f32_gemm_ukernel(p);
    if (uk == nullptr) return {nullptr, 0};
    const size_t bytes = uk->packed_size(n_, k_);
    auto buf = aligned_buffer(bytes);
    uk->pack(w_.data(), n_, k_, buf.get());
    return {buf, bytes};
  });
}

void gemm_s8s8s32(int m, const int8_t* a, size_t lda, const PackedS8& b, int32_t* c, size_t ldc,
                  int threads) {
  if (m <= 0 || b.n() <= 0) return;
  const Path path = select_qs8(m, b.n(), b.k());
  const QS8GemmUKernel* uk = qs8_gemm_ukernel(path);
  const void* packed = b.packed_for(path);
  set_last_path(path);
  run_split(m, b.n(), uk->nr, threads, true, [&](int m0, int m1, int n0, int n1) {
    uk->gemm_s32(m1 - m0, b.k(), a + m0 * lda, lda, packed, b.n(), n0, n1, c + m0 * ldc, ldc);
  });
}

void linear_s8(int m, const int8_t* a, size_t lda, const PackedS8& w, const QS8Params& p,
               int8_t* out, size_t ldo, int threads) {
  if (m <= 0 || w.n() <= 0) return;
  const Path path = select_qs8(m, w.n(), w.k());
  const QS8GemmUKernel* uk = qs8_gemm_ukernel(path);
  const void* packed = w.packed_for(path);
  set_last_path(path);
  run_split(m, w.n(), uk->nr, threads, true, [&](int m0, int m1, int n0, int n1) {
    uk->linear_s8(m1 - m0, w.k(), a + m0 * lda, lda, packed, w.n(), n0, n1, p, out + m0 * ldo, ldo);
  });
}

void linear_s8_fp32(int m, const int8_t* a, size_t lda, const PackedS8& w, const QS8Fp32Params& p,
                    int8_t* out, size_t ldo, int threads) {
  if (m <= 0 || w.n() <= 0) return;
  const Path path = select_qs8(m, w.n(), w.k());
  const QS8GemmUKernel* uk = qs8_gemm_ukernel(path);
  const void* packed = w.packed_for(path);
  set_last_path(path);
  const int n = w.n();
  const int32_t* sums = w.row_sums();
  // Rows in blocks: the int32 block stays in cache between the GEMM and the output pass.
  constexpr int kRows = 32;
  run_split(m, n, uk->nr, threads, true, [&](int m0, int m1, int n0, int n1) {
    thread_local std::vector<int32_t> acc, offset;
    if (acc.size() < static_cast<size_t>(kRows) * n) acc.resize(static_cast<size_t>(kRows) * n);
    if (offset.size() < static_cast<size_t>(n)) offset.resize(n);
    // sum (a - za) w + bias = sum a w + (bias - za * sum w), wrapping as the int32 reference.
    int32_t* off = offset.data();
    const uint32_t za = static_cast<uint32_t>(p.input_zero_point);
    for (int j = n0; j < n1; ++j) {
      const uint32_t b = p.bias ? static_cast<uint32_t>(p.bias[j]) : 0u;
      off[j] = static_cast<int32_t>(b - za * static_cast<uint32_t>(sums[j]));
    }
    for (int r0 = m0; r0 < m1; r0 += kRows) {
      const int rows = std::min(kRows, m1 - r0);
      uk->gemm_s32(rows, w.k(), a + r0 * lda, lda, packed, n, n0, n1, acc.data(), n);
      uk->requant_fp32(rows, n1 - n0, acc.data() + n0, n, off + n0,
                       p.per_channel ? p.scale + n0 : p.scale, p.per_channel, p.output_zero_point,
                       p.qmin, p.qmax, out + r0 * ldo + n0, ldo);
    }
  });
}

void requantize_fp32_s8(int n, const int32_t* acc, const QS8Fp32Params& p, int8_t* out) {
  if (n <= 0) return;
  const Path path = select_qs8(1, n, 1);
  const QS8GemmUKernel* uk = qs8_gemm_ukernel(path);
  uk->requant_fp32(1, n, acc, n, nullptr, p.scale, p.per_channel, p.output_zero_point, p.qmin,
                   p.qmax, out, n);
}

void linear_f32(int m, const float* a, size_t lda, const PackedF32& w, const F32Params& p,
                float* out, size_t ldo, int threads) {
  if (m <= 0 || w.n() <= 0) return;
  const Path path = select_f32();
  const F32GemmUKernel* uk = f32_gemm_ukernel(path);
  const void* packed = w.packed_for(path);
  set_last_path(path);
  // Columns only: a float kernel may pick its micro-tile by the row count, which would change
  // the summation order; splitting columns keeps every thread count bit-identical.
  run_split(m, w.n(), uk->nr, threads, false, [&](int m0, int m1, int n0, int n1) {
    uk->linear_f32(m1 - m0, w.k(), a + m0 * lda, lda, packed, w.n(), n0, n1, p, out + m0 * ldo,
                   ldo);
  });
}

void gemm_s8s8s32_unpacked(int m, int n, int k, const int8_t* a, const int8_t* b, int32_t* c,
                           int threads) {
  PackedS8 packed(b, n, k);
  gemm_s8s8s32(m, a, k, packed, c, n, threads);
}

}  // namespace edgeopt
