// Public API of the dense GEMM kernels: raw int8, fused int8 linear, fp32 linear.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "edgeopt/path.h"

namespace edgeopt {

// Fused int8 output stage (TFLite int8 spec). For output channel n:
//   acc = sum_k (a[m,k] - input_zero_point) * w[n,k] + bias[n]
//   out = clamp(MultiplyByQuantizedMultiplier(acc, multiplier[n], shift[n]) + output_zero_point,
//               qmin, qmax)
// shift > 0 is a left shift, shift < 0 a right shift (TFLite convention).
struct QS8Params {
  const int32_t* bias = nullptr;        // [N] or nullptr (zero)
  const int32_t* multiplier = nullptr;  // [N], in [2^30, 2^31) for a normalized scale, or 0
  const int32_t* shift = nullptr;       // [N], in [-31, 30]
  int32_t input_zero_point = 0;         // [-128, 127]
  int32_t output_zero_point = 0;        // [-128, 127]
  int32_t qmin = -128;
  int32_t qmax = 127;
};

// XNNPACK's fp32 output stage (format 1.4 FP32 stages, Int8Config(requantization="fp32")):
//   acc = sum_k (a[m,k] - input_zero_point) * w[n,k] + bias[n]      (int32, wrapping)
//   out = clamp(rint(float(acc) * scale[n]) + output_zero_point, qmin, qmax)
// with float32 conversion and product (one IEEE rounding each) and rint half to even.
struct QS8Fp32Params {
  const int32_t* bias = nullptr;  // [N] or nullptr (zero)
  const float* scale = nullptr;   // [N], or [1] when !per_channel; finite and > 0
  bool per_channel = true;
  int32_t input_zero_point = 0;   // [-128, 127]
  int32_t output_zero_point = 0;  // [-128, 127]
  int32_t qmin = -128;
  int32_t qmax = 127;
};

struct F32Params {
  const float* bias = nullptr;  // [N] or nullptr
  float min = -__builtin_inff();
  float max = __builtin_inff();
};

// Lazily packed buffers, one per path (the forced paths of tests pack on first use).
class PackCache {
 public:
  // make() returns the packed buffer and its size, or {nullptr, 0} when the path cannot serve.
  template <typename Make>
  const void* get(Path p, Make make) const {
    // Lock-free once packed: every kernel call asks, so the common case must not take the mutex.
    std::atomic<const void*>& fast = fast_[slot(p)];
    if (const void* q = fast.load(std::memory_order_acquire)) return q;
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& e : packs_) {
      if (e.path == p) return e.buf.get();
    }
    std::pair<std::shared_ptr<void>, size_t> made = make();
    if (!made.first) return nullptr;
    packs_.push_back({p, made.first, made.second});
    fast.store(made.first.get(), std::memory_order_release);
    return made.first.get();
  }
  size_t bytes(Path p) const {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& e : packs_) {
      if (e.path == p) return e.bytes;
    }
    return 0;
  }

 private:
  static int slot(Path p) { return __builtin_ctz(static_cast<uint32_t>(p)) & 7; }
  struct Entry {
    Path path;
    std::shared_ptr<void> buf;
    size_t bytes;
  };
  mutable std::mutex mu_;
  mutable std::vector<Entry> packs_;
  mutable std::atomic<const void*> fast_[8] = {};
};

// Weights int8 [N, K] row-major, packed once per path on first use. The plain copy is kept so
// any path (forced in tests) can pack lazily; pack_for() is thread-safe.
class PackedS8 {
 public:
  PackedS8(const int8_t* w, int n, int k);
  int n() const { return n_; }
  int k() const { return k_; }
  const int8_t* weight() const { return w_.data(); }
  // Per-row sums of w (used for zero-point compensation): int32 [N].
  const int32_t* row_sums() const { return row_sums_.data(); }
  bool has_min_value() const { return has_min_; }  // some weight == -128
  const void* packed_for(Path p) const;
  size_t packed_bytes(Path p) const;

 private:
  int n_, k_;
  std::vector<int8_t> w_;
  std::vector<int32_t> row_sums_;
  bool has_min_ = false;
  PackCache cache_;
};

class PackedF32 {
 public:
  PackedF32(const float* w, int n, int k);
  int n() const { return n_; }
  int k() const { return k_; }
  const float* weight() const { return w_.data(); }
  const void* packed_for(Path p) const;

 private:
  int n_, k_;
  std::vector<float> w_;
  PackCache cache_;
};

// C[M,N] = A[M,K] . B[N,K]^T, exact int32. A rows lda apart (bytes), C rows ldc apart (elements).
void gemm_s8s8s32(int m, const int8_t* a, size_t lda, const PackedS8& b, int32_t* c, size_t ldc,
                  int threads = 1);
// int8 fused linear. out rows ldo apart (bytes).
void linear_s8(int m, const int8_t* a, size_t lda, const PackedS8& w, const QS8Params& p,
               int8_t* out, size_t ldo, int threads = 1);
// int8 linear with the fp32 output stage: the path's exact gemm_s32, then its vector output pass.
void linear_s8_fp32(int m, const int8_t* a, size_t lda, const PackedS8& w, const QS8Fp32Params& p,
                    int8_t* out, size_t ldo, int threads = 1);
// The fp32 output stage alone on n accumulators that already hold the bias and zero-point terms
// (direct depthwise convolutions), on the best available path: out[c] from acc[c], scale[c] (or
// scale[0] when !per_channel), p.output_zero_point, p.qmin, p.qmax (bias / input_zero_point
// unused).
void requantize_fp32_s8(int n, const int32_t* acc, const QS8Fp32Params& p, int8_t* out);
// fp32 linear with bias and clamp.
void linear_f32(int m, const float* a, size_t lda, const PackedF32& w, const F32Params& p,
                float* out, size_t ldo, int threads = 1);

// Convenience: pack + gemm, for tests and one-off calls.
void gemm_s8s8s32_unpacked(int m, int n, int k, const int8_t* a, const int8_t* b, int32_t* c,
                           int threads = 1);

}  // namespace edgeopt
