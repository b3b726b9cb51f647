// Reference block-sparse and codebook linear kernels: plain loops, the oracle for every path.
#include <vector>

#include "common/requant.h"
#include "common/sparse_ukernel.h"
#include "ref/ref.h"

namespace edgeopt {
namespace ref {
namespace {
int32_t wrap_s32(int64_t v) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v)));
}
}  // namespace

void linear_s8_bsr(int m, const int8_t* a, size_t lda, const BsrS8View& w, const QS8Params& p,
                   int8_t* out, size_t ldo) {
  std::vector<int64_t> acc(w.n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < w.n; ++j) acc[j] = p.bias ? p.bias[j] : 0;
    for (int br = 0; br < w.block_rows; ++br) {
      for (int b = w.row_ptr[br]; b < w.row_ptr[br + 1]; ++b) {
        const int8_t* blk = w.values + static_cast<size_t>(b) * w.r * w.c;
        for (int rr = 0; rr < w.r; ++rr) {
          const int j = br * w.r + rr;
          if (j >= w.n) break;
          for (int cc = 0; cc < w.c; ++cc) {
            const int kk = w.col_idx[b] * w.c + cc;
            if (kk >= w.k) break;
            acc[j] += (static_cast<int32_t>(a[i * lda + kk]) - p.input_zero_point) *
                      static_cast<int32_t>(blk[rr * w.c + cc]);
          }
        }
      }
    }
    for (int j = 0; j < w.n; ++j) {
      out[i * ldo + j] = requantize_s8(wrap_s32(acc[j]), p.multiplier[j], p.shift[j],
                                       p.output_zero_point, p.qmin, p.qmax);
    }
  }
}

void linear_s8_codebook(int m, const int8_t* a, size_t lda, const CodebookS8View& w,
                        const QS8Params& p, int8_t* out, size_t ldo) {
  const int entries = 1 << w.bits;
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < w.n; ++j) {
      const int8_t* table = w.table + (w.per_channel ? j * entries : 0);
      int64_t acc = p.bias ? p.bias[j] : 0;
      for (int kk = 0; kk < w.k; ++kk) {
        const int8_t wv = table[w.idx[static_cast<size_t>(j) * w.k + kk]];
        acc += (static_cast<int32_t>(a[i * lda + kk]) - p.input_zero_point) * wv;
      }
      out[i * ldo + j] = requantize_s8(wrap_s32(acc), p.multiplier[j], p.shift[j],
                                       p.output_zero_point, p.qmin, p.qmax);
    }
  }
}

}  // namespace ref
}  // namespace edgeopt
