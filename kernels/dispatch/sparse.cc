// Block-sparse and codebook front: building the formats from dense weights, per-path packing,
// path choice (best available path serving the block shape / bits) and the thread split.
#include "edgeopt/sparse.h"

#include <sstream>

#include "common/sparse_ukernel.h"
#include "dispatch/split.h"

namespace edgeopt {

// --- Registry ----------------------------------------------------------------------------------

const QS8BsrUKernel* qs8_bsr_ukernel(Path p) {
  switch (p) {
    case kScalar: return qs8_bsr_ukernel__scalar();
#ifdef EDGEOPT_HAVE_FILE_QS8_BSR_AVX2
    case kAvx2: return qs8_bsr_ukernel__avx2();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_BSR_AVX512VNNI
    case kAvx512Vnni: return qs8_bsr_ukernel__avx512vnni();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_BSR_NEON
    case kNeon: return qs8_bsr_ukernel__neon();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_BSR_NEONDOT
    case kNeonDot: return qs8_bsr_ukernel__neondot();
#endif
    default: return nullptr;
  }
}

const F32BsrUKernel* f32_bsr_ukernel(Path p) {
  switch (p) {
    case kScalar: return f32_bsr_ukernel__scalar();
#ifdef EDGEOPT_HAVE_FILE_F32_BSR_AVX2
    case kAvx2: return f32_bsr_ukernel__avx2();
#endif
#ifdef EDGEOPT_HAVE_FILE_F32_BSR_AVX512
    case kAvx512Vnni: return f32_bsr_ukernel__avx512();
#endif
#ifdef EDGEOPT_HAVE_FILE_F32_BSR_NEON
    case kNeon: return f32_bsr_ukernel__neon();
    case kNeonDot: return f32_bsr_ukernel__neon();
#endif
    default: return nullptr;
  }
}

const QS8CodebookUKernel* qs8_codebook_ukernel(Path p) {
  switch (p) {
    case kScalar: return qs8_codebook_ukernel__scalar();
#ifdef EDGEOPT_HAVE_FILE_QS8_CODEBOOK_AVX2
    case kAvx2: return qs8_codebook_ukernel__avx2();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_CODEBOOK_AVX512VNNI
    case kAvx512Vnni: return qs8_codebook_ukernel__avx512vnni();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_CODEBOOK_NEON
    case kNeon: return qs8_codebook_ukernel__neon();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_CODEBOOK_NEONDOT
    case kNeonDot: return qs8_codebook_ukernel__neondot();
#endif
    default: return nullptr;
  }
}

const F32CodebookUKernel* f32_codebook_ukernel(Path p) {
  switch (p) {
    case kScalar: return f32_codebook_ukernel__scalar();
#ifdef EDGEOPT_HAVE_FILE_F32_CODEBOOK_AVX2
    case kAvx2: return f32_codebook_ukernel__avx2();
#endif
#ifdef EDGEOPT_HAVE_FILE_F32_CODEBOOK_AVX512
    case kAvx512Vnni: return f32_codebook_ukernel__avx512();
#endif
#ifdef EDGEOPT_HAVE_FILE_F32_CODEBOOK_NEON
    case kNeon: return f32_codebook_ukernel__neon();
    case kNeonDot: return f32_codebook_ukernel__neon();
#endif
    default: return nullptr;
  }
}

namespace {

constexpr Path kPreference[] = {kAvx512Vnni, kAvx2, kNeonDot, kNeon};

template <typename Table, typename Lookup, typename Ok>
Path best_path(Lookup lookup, Ok ok) {
  const uint32_t av = available_paths();
  for (Path p : kPreference) {
    if (!(av & p)) continue;
    const Table* t = lookup(p);
    if (t != nullptr && ok(t)) return p;
  }
  return kScalar;
}

// Builds row_ptr / col_idx / values of the BSR form of a dense matrix.
template <typename T>
void build_bsr(const T* w, int n, int k, int r, int c, bool strict, const char* api,
               std::vector<int32_t>& row_ptr, std::vector<int32_t>& col_idx,
               std::vector<T>& values) {
  if (n <= 0 || k <= 0)
    throw std::invalid_argument(std::string(api) + ": weight must be non-empty");
  if (r <= 0 || c <= 0 || r > 256 || c > 256) {
    throw std::invalid_argument(std::string(api) +
                                ": block must be (R, C) with 1 <= R, C <= 256, got (" +
                                std::to_string(r) + ", " + std::to_string(c) + ")");
  }
  const int brs = (n + r - 1) / r, bcs = (k + c - 1) / c;
  row_ptr.assign(1, 0);
  for (int br = 0; br < brs; ++br) {
    for (int bc = 0; bc < bcs; ++bc) {
      int nonzero = 0, total = 0;
      for (int rr = 0; rr < r && br * r + rr < n; ++rr) {
        for (int cc = 0; cc < c && bc * c + cc < k; ++cc) {
          nonzero += w[static_cast<size_t>(br * r + rr) * k + bc * c + cc] != T(0);
          ++total;
        }
      }
      if (nonzero == 0) continue;
      if (strict && 2 * (total - nonzero) >= total && total > 1) {
        std::ostringstream os;
        os << api << ": block (" << r << ", " << c << ") at rows " << br * r << ".."
           << std::min(n, br * r + r) - 1 << ", columns " << bc * c << ".."
           << std::min(k, bc * c + c) - 1 << " is only partly zero (" << total - nonzero << " of "
           << total << " values are 0): the zeros of `weight` are not whole " << r << "x" << c
           << " blocks. Pack with the block shape the weight was pruned with, or pass "
              "strict=False to store partly-zero blocks densely";
        throw std::invalid_argument(os.str());
      }
      col_idx.push_back(bc);
      for (int rr = 0; rr < r; ++rr) {
        for (int cc = 0; cc < c; ++cc) {
          const bool in = br * r + rr < n && bc * c + cc < k;
          values.push_back(in ? w[static_cast<size_t>(br * r + rr) * k + bc * c + cc] : T(0));
        }
      }
    }
    row_ptr.push_back(static_cast<int32_t>(col_idx.size()));
  }
}

}  // namespace

Path bsr_path(int r, int c, bool int8) {
  if (int8) {
    return best_path<QS8BsrUKernel>(qs8_bsr_ukernel,
                                    [&](const QS8BsrUKernel* t) { return t->supports(r, c); });
  }
  return best_path<F32BsrUKernel>(f32_bsr_ukernel,
                                  [&](const F32BsrUKernel* t) { return t->supports(r, c); });
}

Path codebook_path(int bits, bool per_channel, bool int8) {
  if (int8) {
    return best_path<QS8CodebookUKernel>(qs8_codebook_ukernel, [&](const QS8CodebookUKernel* t) {
      return t->supports(bits, per_channel);
    });
  }
  return best_path<F32CodebookUKernel>(f32_codebook_ukernel, [&](const F32CodebookUKernel* t) {
    return t->supports(bits, per_channel);
  });
}

// --- Block-sparse ------------------------------------------------------------------------------

PackedBsrS8::PackedBsrS8(const int8_t* w, int n, int k, int r, int c, bool strict)
    : n_(n), k_(k), r_(r), c_(c), row_sums_(n > 0 ? n : 0) {
  build_bsr(w, n, k, r, c, strict, "PackedBsrS8", row_ptr_, col_idx_, values_);
  for (int j = 0; j < n; ++j) {
    int32_t s = 0;
    for (int kk = 0; kk < k; ++kk) s += w[static_cast<size_t>(j) * k + kk];
    row_sums_[j] = s;
  }
  view_.reset(new BsrS8View{n, k, r, c, block_rows(), (k + c - 1) / c, row_ptr_.data(),
                            col_idx_.data(), values_.data(), row_sums_.data()});
}
PackedBsrS8::~PackedBsrS8() = default;

double PackedBsrS8::density() const {
  return static_cast<double>(nnz_blocks()) /
         (static_cast<double>(block_rows()) * ((k_ + c_ - 1) / c_));
}

const void* PackedBsrS8::packed_for(Path p) const {
  return cache_.get(p, [&]() -> std::pair<std::shared_ptr<void>, size_t> {
    const QS8BsrUKernel* t = qs8_bsr_ukernel(p);
    if (t == nullptr || !t->supports(r_, c_)) return {nullptr, 0};
    const size_t bytes = t->packed_size(*view_);
    auto buf = aligned_buffer(bytes);
    t->pack(*view_, buf.get());
    return {buf, bytes};
  });
}
size_t PackedBsrS8::packed_bytes(Path p) const {
  packed_for(p);
  return cache_.bytes(p);
}

PackedBsrF32::PackedBsrF32(const float* w, int n, int k, int r, int c, bool strict)
    : n_(n), k_(k), r_(r), c_(c) {
  build_bsr(w, n, k, r, c, strict, "PackedBsrF32", row_ptr_, col_idx_, values_);
  view_.reset(new BsrF32View{n, k, r, c, block_rows(), (k + c - 1) / c, row_ptr_.data(),
                             col_idx_.data(), values_.data()});
}
PackedBsrF32::~PackedBsrF32() = default;

double PackedBsrF32::density() const {
  return static_cast<double>(nnz_blocks()) /
         (static_cast<double>(block_rows()) * ((k_ + c_ - 1) / c_));
}

const void* PackedBsrF32::packed_for(Path p) const {
  return cache_.get(p, [&]() -> std::pair<std::shared_ptr<void>, size_t> {
    const F32BsrUKernel* t = f32_bsr_ukernel(p);
    if (t == nullptr || !t->supports(r_, c_)) return {nullptr, 0};
    const size_t bytes = t->packed_size(*view_);
    auto buf = aligned_buffer(bytes);
    t->pack(*view_, buf.get());
    return {buf, bytes};
  });
}
size_t PackedBsrF32::packed_bytes(Path p) const {
  packed_for(p);
  return cache_.bytes(p);
}

void linear_s8(int m, const int8_t* a, size_t lda, const PackedBsrS8& w, const QS8Params& p,
               int8_t* out, size_t ldo, int threads) {
  if (m <= 0) return;
  const Path path = bsr_path(w.r(), w.c(), true);
  const QS8BsrUKernel* uk = qs8_bsr_ukernel(path);
  const void* packed = w.packed_for(path);
  set_last_path(path);
  run_split(m, w.block_rows(), 1, threads, true, [&](int m0, int m1, int b0, int b1) {
    uk->linear_s8(m1 - m0, a + m0 * lda, lda, packed, b0, b1, p, out + m0 * ldo, ldo);
  });
}

void linear_f32(int m, const float* a, size_t lda, const PackedBsrF32& w, const F32Params& p,
                float* out, size_t ldo, int threads) {
  if (m <= 0) return;
  const Path path = bsr_path(w.r(), w.c(), false);
  const F32BsrUKernel* uk = f32_bsr_ukernel(path);
  const void* packed = w.packed_for(path);
  set_last_path(path);
  run_split(m, w.block_rows(), 1, threads, false, [&](int m0, int m1, int b0, int b1) {
    uk->linear_f32(m1 - m0, a + m0 * lda, lda, packed, b0, b1, p, out + m0 * ldo, ldo);
  });
}

// --- Codebook ----------------------------------------------------------------------------------

namespace {
void check_codebook(const char* api, const uint8_t* idx, int n, int k, int bits) {
  if (n <= 0 || k <= 0)
    throw std::invalid_argument(std::string(api) + ": indices must be non-empty");
  if (bits < 1 || bits > 8) {
    throw std::invalid_argument(std::string(api) + ": bits must be in [1, 8], got " +
                                std::to_string(bits));
  }
  const int entries = 1 << bits;
  for (size_t i = 0; i < static_cast<size_t>(n) * k; ++i) {
    if (idx[i] >= entries) {
      throw std::invalid_argument(std::string(api) + ": indices[" + std::to_string(i / k) + ", " +
                                  std::to_string(i % k) + "] = " + std::to_string(idx[i]) +
                                  " is out of range for " + std::to_string(bits) +
                                  "-bit indices (expected < " + std::to_string(entries) + ")");
    }
  }
}
}  // namespace

PackedCodebookS8::PackedCodebookS8(const uint8_t* idx, const int8_t* table, int n, int k, int bits,
                                   bool per_channel)
    : n_(n), k_(k), bits_(bits), per_channel_(per_channel) {
  check_codebook("PackedCodebookS8", idx, n, k, bits);
  idx_.assign(idx, idx + static_cast<size_t>(n) * k);
  const size_t entries = size_t{1} << bits;
  table_.assign(table, table + (per_channel ? n : 1) * entries);
  row_sums_.resize(n);
  for (int j = 0; j < n; ++j) {
    const int8_t* t = table_.data() + (per_channel ? j * entries : 0);
    int32_t s = 0;
    for (int kk = 0; kk < k; ++kk) s += t[idx_[static_cast<size_t>(j) * k + kk]];
    row_sums_[j] = s;
  }
  view_.reset(
      new CodebookS8View{n, k, bits, per_channel, idx_.data(), table_.data(), row_sums_.data()});
}
PackedCodebookS8::~PackedCodebookS8() = default;

const void* PackedCodebookS8::packed_for(Path p) const {
  return cache_.get(p, [&]() -> std::pair<std::shared_ptr<void>, size_t> {
    const QS8CodebookUKernel* t = qs8_codebook_ukernel(p);
    if (t == nullptr || !t->supports(bits_, per_channel_)) return {nullptr, 0};
    const size_t bytes = t->packed_size(*view_);
    auto buf = aligned_buffer(bytes);
    t->pack(*view_, buf.get());
    return {buf, bytes};
  });
}
size_t PackedCodebookS8::packed_bytes(Path p) const {
  packed_for(p);
  return cache_.bytes(p);
}

PackedCodebookF32::PackedCodebookF32(const uint8_t* idx, const float* table, int n, int k, int bits,
                                     bool per_channel)
    : n_(n), k_(k), bits_(bits), per_channel_(per_channel) {
  check_codebook("PackedCodebookF32", idx, n, k, bits);
  idx_.assign(idx, idx + static_cast<size_t>(n) * k);
  const size_t entries = size_t{1} << bits;
  table_.assign(table, table + (per_channel ? n : 1) * entries);
  view_.reset(new CodebookF32View{n, k, bits, per_channel, idx_.data(), table_.data()});
}
PackedCodebookF32::~PackedCodebookF32() = default;

const void* PackedCodebookF32::packed_for(Path p) const {
  return cache_.get(p, [&]() -> std::pair<std::shared_ptr<void>, size_t> {
    const F32CodebookUKernel* t = f32_codebook_ukernel(p);
    if (t == nullptr || !t->supports(bits_, per_channel_)) return {nullptr, 0};
    const size_t bytes = t->packed_size(*view_);
    auto buf = aligned_buffer(bytes);
    t->pack(*view_, buf.get());
    return {buf, bytes};
  });
}
size_t PackedCodebookF32::packed_bytes(Path p) const {
  packed_for(p);
  return cache_.bytes(p);
}

void linear_s8(int m, const int8_t* a, size_t lda, const PackedCodebookS8& w, const QS8Params& p,
               int8_t* out, size_t ldo, int threads) {
  if (m <= 0) return;
  const Path path = codebook_path(w.bits(), w.per_channel(), true);
  const QS8CodebookUKernel* uk = qs8_codebook_ukernel(path);
  const void* packed = w.packed_for(path);
  set_last_path(path);
  run_split(m, w.n(), uk->nr, threads, true, [&](int m0, int m1, int n0, int n1) {
    uk->linear_s8(m1 - m0, w.k(), a + m0 * lda, lda, packed, w.n(), n0, n1, p, out + m0 * ldo, ldo);
  });
}

void linear_f32(int m, const float* a, size_t lda, const PackedCodebookF32& w, const F32Params& p,
                float* out, size_t ldo, int threads) {
  if (m <= 0) return;
  const Path path = codebook_path(w.bits(), w.per_channel(), false);
  const F32CodebookUKernel* uk = f32_codebook_ukernel(path);
  const void* packed = w.packed_for(path);
  set_last_path(path);
  run_split(m, w.n(), uk->nr, threads, false, [&](int m0, int m1, int n0, int n1) {
    uk->linear_f32(m1 - m0, w.k(), a + m0 * lda, lda, packed, w.n(), n0, n1, p, out + m0 * ldo,
                   ldo);
  });
}

}  // namespace edgeopt
