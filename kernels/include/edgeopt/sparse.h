// Public API of the block-sparse (BSR) and codebook (weight-sharing) linear kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "edgeopt/gemm.h"
#include "edgeopt/path.h"

namespace edgeopt {

struct BsrS8View;
struct BsrF32View;
struct CodebookS8View;
struct CodebookF32View;

// Block-sparse int8 weights built from a dense W[N, K] (int8, row-major) with R x C blocks:
// blocks holding any non-zero are stored. With `strict`, a stored block in which at least half
// the values are zero is refused (std::invalid_argument naming it): the weight's zeros are then
// not whole R x C blocks (pruned with another block shape, or not block-pruned), and BSR would
// store mostly zeros.
class PackedBsrS8 {
 public:
  PackedBsrS8(const int8_t* w, int n, int k, int r, int c, bool strict = true);
  ~PackedBsrS8();
  int n() const { return n_; }
  int k() const { return k_; }
  int r() const { return r_; }
  int c() const { return c_; }
  int nnz_blocks() const { return static_cast<int>(col_idx_.size()); }
  int block_rows() const { return (n_ + r_ - 1) / r_; }
  double density() const;  // stored blocks / all blocks
  const BsrS8View& view() const { return *view_; }
  // nullptr when `p` has no kernel for this block shape.
  const void* packed_for(Path p) const;
  size_t packed_bytes(Path p) const;

 private:
  int n_, k_, r_, c_;
  std::vector<int32_t> row_ptr_, col_idx_, row_sums_;
  std::vector<int8_t> values_;
  std::unique_ptr<BsrS8View> view_;
  PackCache cache_;
};

class PackedBsrF32 {
 public:
  PackedBsrF32(const float* w, int n, int k, int r, int c, bool strict = true);
  ~PackedBsrF32();
  int n() const { return n_; }
  int k() const { return k_; }
  int r() const { return r_; }
  int c() const { return c_; }
  int nnz_blocks() const { return static_cast<int>(col_idx_.size()); }
  int block_rows() const { return (n_ + r_ - 1) / r_; }
  double density() const;
  const BsrF32View& view() const { return *view_; }
  const void* packed_for(Path p) const;
  size_t packed_bytes(Path p) const;

 private:
  int n_, k_, r_, c_;
  std::vector<int32_t> row_ptr_, col_idx_;
  std::vector<float> values_;
  std::unique_ptr<BsrF32View> view_;
  PackCache cache_;
};

// Codebook int8 weights: W[n, k] = table[t(n)][idx[n, k]], idx < 2^bits (bits 1..8; the fast
// kernels serve 4 and 2), one table per layer or per output channel. Throws std::invalid_argument
// naming the first index out of range.
class PackedCodebookS8 {
 public:
  PackedCodebookS8(const uint8_t* idx, const int8_t* table, int n, int k, int bits,
                   bool per_channel);
  ~PackedCodebookS8();
  int n() const { return n_; }
  int k() const { return k_; }
  int bits() const { return bits_; }
  bool per_channel() const { return per_channel_; }
  const CodebookS8View& view() const { return *view_; }
  const void* packed_for(Path p) const;
  size_t packed_bytes(Path p) const;

 private:
  int n_, k_, bits_;
  bool per_channel_;
  std::vector<uint8_t> idx_;
  std::vector<int8_t> table_;
  std::vector<int32_t> row_sums_;
  std::unique_ptr<CodebookS8View> view_;
  PackCache cache_;
};

class PackedCodebookF32 {
 public:
  PackedCodebookF32(const uint8_t* idx, const float* table, int n, int k, int bits,
                    bool per_channel);
  ~PackedCodebookF32();
  int n() const { return n_; }
  int k() const { return k_; }
  int bits() const { return bits_; }
  bool per_channel() const { return per_channel_; }
  const CodebookF32View& view() const { return *view_; }
  const void* packed_for(Path p) const;
  size_t packed_bytes(Path p) const;

 private:
  int n_, k_, bits_;
  bool per_channel_;
  std::vector<uint8_t> idx_;
  std::vector<float> table_;
  std::unique_ptr<CodebookF32View> view_;
  PackCache cache_;
};

// The path each format would run on now (best available path that supports its shape/bits).
Path bsr_path(int r, int c, bool int8);
Path codebook_path(int bits, bool per_channel, bool int8);

void linear_s8(int m, const int8_t* a, size_t lda, const PackedBsrS8& w, const QS8Params& p,
               int8_t* out, size_t ldo, int threads = 1);
void linear_f32(int m, const float* a, size_t lda, const PackedBsrF32& w, const F32Params& p,
                float* out, size_t ldo, int threads = 1);
void linear_s8(int m, const int8_t* a, size_t lda, const PackedCodebookS8& w, const QS8Params& p,
               int8_t* out, size_t ldo, int threads = 1);
void linear_f32(int m, const float* a, size_t lda, const PackedCodebookF32& w, const F32Params& p,
                float* out, size_t ldo, int threads = 1);

}  // namespace edgeopt
