// The int8 operators (format 1.1): builders that check every shape, option and quantization
// parameter, and their kernels (NHWC), bit-exact to optimizer/quantize/arithmetic.py.
//
// Convolutions and linears run on the project's int8 kernels (linear_s8 with the fused QS8Params
// output stage; dense, block-sparse or codebook weights): 1x1 stride-1 convolutions multiply the
// NHWC input in place, others go through im2col (padded with the input zero point, so padding
// adds exactly 0 to sum (x - zp) * w) in row tiles of a fixed size. Depthwise convolutions are a
// direct loop over the channel vector with int32 accumulators and the same requantization.
// ADD / MUL follow TFLite's int8 kernels (ADD: both inputs rescaled to a 2^-left_shift grid;
// the per-input part is a 256-entry table built at load), pooling rounds as TFLite's
// AVERAGE_POOL_2D, LUT indexes a 256-entry table, QUANTIZE divides in double and rounds half to
// even (as numpy / torch.round), DEQUANTIZE multiplies in double.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the AVX-512 intrinsics' own masked-builtin arguments (a false positive, as in
// kernels/x86/qs8_gemm_avx2.cc).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/requant.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "dispatch/threadpool.h"
#include "edgeopt/gemm.h"
#include "edgeopt/path.h"
#include "edgeopt/sparse.h"
#include "runtime/build.h"

namespace edgeopt {
namespace runtime {
namespace {

constexpr int kMaxRank = 6;
constexpr int kMaxDwTaps = 64;  // windows up to 8x8 run the vector depthwise kernels

void parallel(int tasks, int threads, const std::function<void(int)>& fn) {
  if (threads <= 1 || tasks <= 1) {
    for (int t = 0; t < tasks; ++t) fn(t);
    return;
  }
  ThreadPool::instance().run(tasks, threads, fn);
}

int task_count(size_t n, size_t min_items) {
  return static_cast<int>(
      std::max<size_t>(1, std::min<size_t>(64, n / std::max<size_t>(1, min_items))));
}

size_t product(const std::vector<int64_t>& s, size_t from, size_t to) {
  size_t p = 1;
  for (size_t i = from; i < to; ++i) p *= static_cast<size_t>(s[i]);
  return p;
}

int normalize_axis(const Build& b, int axis, size_t rank) {
  const int r = static_cast<int>(rank);
  b.require(axis >= -r && axis < r, "axis ", axis, " out of range for rank ", r);
  return axis < 0 ? axis + r : axis;
}

// Threads worth waking for an operator of `macs` multiply-adds: below ~4 us of work per thread
// the pool's hand-off costs more than it saves (batch-1 layers of small models). Integer results
// do not depend on the split, so this changes timing only.
constexpr int64_t kMinMacsPerThread = 400000;
int op_threads(int threads, int64_t macs) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(threads, macs / kMinMacsPerThread)));
}

// Keeps the layer's kernel string in step with the ISA path that last ran; the string is only
// rebuilt when the path changes (no allocation per run).
struct KernelNote {
  uint32_t path = 0;
  void note(LayerInfo& info, const char* prefix, const std::function<std::string()>& family) {
    const Path p = last_path();
    if (p == path) return;
    path = p;
    info.kernel = prefix + family() + "__" + path_name(p);
  }
};

// ---- Quantization parameters ------------------------------------------------------------------

const eom::Int8Stage& stage_of(const Build& b) {
  const eom::Int8Stage* s = b.op().int8();
  b.require(s != nullptr, "an int8 operator needs its Int8Stage (`int8` table)");
  return *s;
}

// An int32 vector of exactly n entries, each in [lo, hi].
std::vector<int32_t> int_vector(const Build& b, const flatbuffers::Vector<int32_t>* v, size_t n,
                                int64_t lo, int64_t hi, const char* what) {
  b.require(v != nullptr, "int8.", what, " is missing");
  b.require(v->size() == n, "int8.", what, " must have ", n, " entries, got ", v->size());
  std::vector<int32_t> out(v->begin(), v->end());
  for (size_t i = 0; i < n; ++i) {
    b.require(out[i] >= lo && out[i] <= hi, "int8.", what, "[", i, "] = ", out[i],
              " out of range [", lo, ", ", hi, "]");
  }
  return out;
}

// Multipliers are normalized (in [2^30, 2^31)) or 0 (a scale below 2^-31).
std::vector<int32_t> multipliers(const Build& b, const flatbuffers::Vector<int32_t>* v, size_t n,
                                 const char* what) {
  auto m = int_vector(b, v, n, 0, std::numeric_limits<int32_t>::max(), what);
  for (size_t i = 0; i < n; ++i) {
    b.require(m[i] == 0 || m[i] >= (int32_t{1} << 30), "int8.", what, "[", i, "] = ", m[i],
              " is not a normalized fixed-point multiplier (0 or in [2^30, 2^31))");
  }
  return m;
}

// The zero point the stage declares for a tensor must be the tensor's own.
void same_zero_point(const Build& b, int32_t stage_zp, const Tensor& t, const char* what) {
  b.require(stage_zp == t.zero_point, "int8.", what, " = ", stage_zp,
            " differs from the zero point ", t.zero_point, " of tensor `", t.name, "`");
}

// Operators without an FP32 stage (XNNPACK's arithmetic, format 1.4) refuse one.
void require_gemmlowp(const Build& b, const eom::Int8Stage& s) {
  b.require(s.requantization() == eom::Requantization_GEMMLOWP, "int8.requantization ",
            static_cast<int>(s.requantization()),
            " is not supported here; only CONV2D, LINEAR, ADD, MUL and GLOBAL_AVG_POOL take FP32 "
            "(1) stages");
}

void clamp_bounds(const Build& b, const eom::Int8Stage& s, int32_t* qmin, int32_t* qmax) {
  b.require(s.qmin() >= -128 && s.qmin() <= s.qmax() && s.qmax() <= 127, "int8 clamp [", s.qmin(),
            ", ", s.qmax(), "] must satisfy -128 <= qmin <= qmax <= 127");
  *qmin = s.qmin();
  *qmax = s.qmax();
}

// ---- Weights ----------------------------------------------------------------------------------

// One [n, k] int8 weight matrix in the kernel format the file chose.
struct S8Matrix {
  int n = 0, k = 0;
  std::unique_ptr<PackedS8> dense;
  std::unique_ptr<PackedBsrS8> bsr;
  std::unique_ptr<PackedCodebookS8> codebook;

  void run(int m, const int8_t* a, size_t lda, const QS8Params& p, int8_t* out, size_t ldo,
           int threads) const {
    if (dense)
      linear_s8(m, a, lda, *dense, p, out, ldo, threads);
    else if (bsr)
      linear_s8(m, a, lda, *bsr, p, out, ldo, threads);
    else
      linear_s8(m, a, lda, *codebook, p, out, ldo, threads);
  }
  // The fp32 output stage (format 1.4): dense weights only (the loader keeps them dense).
  void run(int m, const int8_t* a, size_t lda, const QS8Fp32Params& p, int8_t* out, size_t ldo,
           int threads) const {
    linear_s8_fp32(m, a, lda, *dense, p, out, ldo, threads);
  }
  // Packs now for the path the kernels will pick (so the first run does not pay for it).
  void prepack() const {
    if (bsr) {
      bsr->packed_for(bsr_path(bsr->r(), bsr->c(), true));
    } else if (codebook) {
      codebook->packed_for(codebook_path(codebook->bits(), codebook->per_channel(), true));
    } else if (dense) {
      const uint32_t av = available_paths();
      for (Path p : {kAmxInt8, kAvx512Vnni, kAvx2, kNeonDot, kNeon, kScalar}) {
        if ((av & p) && dense->packed_for(p) && p != kAmxInt8) break;
      }
    }
  }
  std::string family() const {
    if (dense) return "s8_gemm";
    if (bsr) return "s8_bsrgemm_b" + std::to_string(bsr->r()) + "x" + std::to_string(bsr->c());
    return "s8_cbgemm_i" + std::to_string(codebook->bits()) +
           (codebook->per_channel() ? "_pc" : "");
  }
};

// The int8 weight of a conv / linear decoded to dense [n, k] (checking every index), or kept in
// its sparse / codebook kernel format when groups == 1, no direct kernel and `allow_sparse` (the
// FP32 output stage runs on the dense kernels' int32 GEMM only).
struct S8Weight {
  std::vector<S8Matrix> groups;
  std::vector<int8_t> dense;  // [n, k] when decoded
};

void check_weight_quantization(const Build& b, const Tensor& v, int n) {
  // Per channel (axis 0, n scales) or per tensor (1 scale); symmetric (zero points 0): the
  // loader checked scales are finite and > 0 and the counts against the axis.
  b.require(v.quant_count == 0 || v.quant_count == 1 || v.quant_count == n, "weight `", v.name,
            "` has ", v.quant_count, " scales; expected 1 or ", n, " (per output channel)");
  b.require(v.zero_points_zero, "weight `", v.name,
            "` has non-zero zero points; int8 weights are symmetric (zero point 0)");
}

S8Weight load_s8_weight(const Build& b, int n, int k, int groups, bool want_dense,
                        bool allow_sparse) {
  const eom::Weight* w = b.op().weight();
  b.require(w != nullptr, "has no weight");
  b.require(w->n() == n && w->k() == k, "weight is declared [", w->n(), ", ", w->k(),
            "], the operator needs [", n, ", ", k, "]");
  S8Weight ws;
  std::vector<int8_t> dense;
  const int ng = n / groups;
  // Called after Build::constant checked the index.
  auto values_tensor = [&](int t) -> const Tensor& { return b.tensor(t); };
  // Format 1.5: the bytes are inline in the Weight table, decoded here (sizes checked).
  const bool inline_form = has_inline_weight(*w);
  InlineS8Weight in;
  if (inline_form) in = decode_inline_s8(b, n, k);
  if (w->format() == eom::WeightFormat_DENSE) {
    const auto* v = reinterpret_cast<const int8_t*>(
        b.constant(w->values(), DType::kS8, static_cast<int64_t>(n) * k, "weight.values"));
    check_weight_quantization(b, values_tensor(w->values()), n);
    dense.assign(v, v + static_cast<size_t>(n) * k);
  } else if (w->format() == eom::WeightFormat_BSR) {
    int r = in.r, c = in.c;
    if (!inline_form) {
      const auto block = b.ints(w->block(), 2, 1, 256, "weight.block");
      r = block[0];
      c = block[1];
    }
    const int brs = (n + r - 1) / r, bcs = (k + c - 1) / c;
    const int32_t* row_ptr = in.row_ptr.data();
    if (!inline_form) {
      row_ptr = reinterpret_cast<const int32_t*>(
          b.constant(w->row_ptr(), DType::kS32, brs + 1, "weight.row_ptr"));
    }
    b.require(row_ptr[0] == 0, "weight.row_ptr[0] must be 0, got ", row_ptr[0]);
    for (int i = 0; i < brs; ++i)
      b.require(row_ptr[i + 1] >= row_ptr[i], "weight.row_ptr must not decrease (at ", i + 1, ")");
    const int64_t nnz = row_ptr[brs];
    b.require(nnz <= static_cast<int64_t>(brs) * bcs, "weight.row_ptr declares ", nnz,
              " blocks, more than the ", static_cast<int64_t>(brs) * bcs, " of the matrix");
    const int32_t* col = in.col_idx.data();
    const int8_t* values = in.values.data();
    if (!inline_form) {
      col = reinterpret_cast<const int32_t*>(
          b.constant(w->col_idx(), DType::kS32, nnz, "weight.col_idx"));
      values = reinterpret_cast<const int8_t*>(
          b.constant(w->values(), DType::kS8, nnz * r * c, "weight.values (BSR blocks)"));
      check_weight_quantization(b, values_tensor(w->values()), n);
    }
    dense.assign(static_cast<size_t>(n) * k, 0);
    for (int br = 0; br < brs; ++br) {
      for (int j = row_ptr[br]; j < row_ptr[br + 1]; ++j) {
        b.require(col[j] >= 0 && col[j] < bcs, "weight.col_idx[", j, "] = ", col[j],
                  " out of range [0, ", bcs, ")");
        b.require(j == row_ptr[br] || col[j] > col[j - 1], "weight.col_idx must increase within ",
                  "block row ", br, " (at ", j, ")");
        const int8_t* blk = values + static_cast<size_t>(j) * r * c;
        for (int rr = 0; rr < r && br * r + rr < n; ++rr)
          for (int cc = 0; cc < c && col[j] * c + cc < k; ++cc)
            dense[static_cast<size_t>(br * r + rr) * k + col[j] * c + cc] = blk[rr * c + cc];
      }
    }
    if (groups == 1 && !want_dense && allow_sparse && bsr_path(r, c, true) != kScalar) {
      S8Matrix m;
      m.n = n;
      m.k = k;
      m.bsr = std::make_unique<PackedBsrS8>(dense.data(), n, k, r, c, /*strict=*/false);
      ws.groups.push_back(std::move(m));
      return ws;
    }
  } else if (w->format() == eom::WeightFormat_CODEBOOK) {
    const int bits = w->bits();
    b.require(bits == 1 || bits == 2 || bits == 4 || bits == 8,
              "weight.bits must be 1, 2, 4 or 8, got ", bits);
    const int entries = 1 << bits;
    const bool per_channel = w->per_channel_table();
    const int8_t* table = in.values.data();
    std::vector<uint8_t> idx = std::move(in.idx);
    if (!inline_form) {
      const size_t row_bytes = (static_cast<size_t>(k) * bits + 7) / 8;
      const uint8_t* packed = b.constant(w->indices(), DType::kU8,
                                         static_cast<int64_t>(row_bytes) * n, "weight.indices");
      table = reinterpret_cast<const int8_t*>(
          b.constant(w->values(), DType::kS8, static_cast<int64_t>(per_channel ? n : 1) * entries,
                     "weight.values (codebook table)"));
      check_weight_quantization(b, values_tensor(w->values()), n);
      idx.resize(static_cast<size_t>(n) * k);
      const int per_byte = 8 / bits;
      for (int i = 0; i < n; ++i) {
        const uint8_t* row = packed + i * row_bytes;
        for (int j = 0; j < k; ++j)
          idx[static_cast<size_t>(i) * k + j] =
              static_cast<uint8_t>((row[j / per_byte] >> ((j % per_byte) * bits)) & (entries - 1));
      }
    }
    if (groups == 1 && !want_dense && allow_sparse &&
        codebook_path(bits, per_channel, true) != kScalar) {
      S8Matrix m;
      m.n = n;
      m.k = k;
      m.codebook = std::make_unique<PackedCodebookS8>(idx.data(), table, n, k, bits, per_channel);
      ws.groups.push_back(std::move(m));
      return ws;
    }
    dense.resize(static_cast<size_t>(n) * k);
    for (int i = 0; i < n; ++i) {
      const int8_t* t = table + (per_channel ? static_cast<size_t>(i) * entries : 0);
      for (int j = 0; j < k; ++j)
        dense[static_cast<size_t>(i) * k + j] = t[idx[static_cast<size_t>(i) * k + j]];
    }
  } else {
    b.error("unknown weight format " + std::to_string(static_cast<int>(w->format())));
  }
  if (want_dense) {
    ws.dense = std::move(dense);
    return ws;
  }
  for (int g = 0; g < groups; ++g) {
    S8Matrix m;
    m.n = ng;
    m.k = k;
    m.dense = std::make_unique<PackedS8>(dense.data() + static_cast<size_t>(g) * ng * k, ng, k);
    ws.groups.push_back(std::move(m));
  }
  return ws;
}

std::vector<int32_t> load_bias(const Build& b, int n) {
  std::vector<int32_t> inline_values;
  if (inline_bias(b, n, &inline_values)) return inline_values;  // format 1.5
  if (b.op().bias() < 0) return std::vector<int32_t>(n, 0);
  const auto* v =
      reinterpret_cast<const int32_t*>(b.constant(b.op().bias(), DType::kS32, n, "bias (int32)"));
  return std::vector<int32_t>(v, v + n);
}

// The per-channel output stage of a conv / linear: multiplier, shift, zero points, clamp; or, for
// an FP32 stage (XNNPACK's arithmetic), the float32 scales instead of multiplier / shift.
struct ChannelStage {
  std::vector<int32_t> multiplier, shift, bias;
  int32_t in_zp = 0, out_zp = 0, qmin = -128, qmax = 127;
  bool fp32 = false;
  std::vector<float> scale;  // FP32: n entries (a single file scale is repeated)
  QS8Fp32Params fparams(int offset) const {
    QS8Fp32Params p;
    p.bias = bias.data() + offset;
    p.scale = scale.data() + offset;
    p.per_channel = true;
    p.input_zero_point = in_zp;
    p.output_zero_point = out_zp;
    p.qmin = qmin;
    p.qmax = qmax;
    return p;
  }
  QS8Params params(int offset) const {
    QS8Params p;
    p.bias = bias.data() + offset;
    p.multiplier = multiplier.data() + offset;
    p.shift = shift.data() + offset;
    p.input_zero_point = in_zp;
    p.output_zero_point = out_zp;
    p.qmin = qmin;
    p.qmax = qmax;
    return p;
  }
};

ChannelStage read_channel_stage(const Build& b, int n, const Tensor& x, const Tensor& y) {
  const eom::Int8Stage& s = stage_of(b);
  ChannelStage st;
  const int rq = static_cast<int>(s.requantization());
  b.require(rq == eom::Requantization_GEMMLOWP || rq == eom::Requantization_FP32,
            "int8.requantization = ", rq, " is unknown; expected GEMMLOWP (0) or FP32 (1)");
  st.fp32 = rq == eom::Requantization_FP32;
  if (st.fp32) {
    b.require(s.multiplier() == nullptr && s.shift() == nullptr,
              "an FP32 int8 stage takes int8.scale, not multiplier / shift");
    const auto* v = s.scale();
    b.require(v != nullptr, "int8.scale is missing (an FP32 stage needs its float32 scales)");
    b.require(v->size() == static_cast<size_t>(n) || v->size() == 1, "int8.scale must have ", n,
              " entries (per output channel) or 1, got ", v->size());
    for (size_t i = 0; i < v->size(); ++i) {
      const float f = v->Get(static_cast<flatbuffers::uoffset_t>(i));
      b.require(std::isfinite(f) && f > 0.0f, "int8.scale[", i, "] = ", f,
                " must be finite and > 0");
      if (v->size() == 1) {
        st.scale.assign(n, f);
      } else {
        st.scale.push_back(f);
      }
    }
  } else {
    b.require(s.scale() == nullptr && s.input_scale() == nullptr,
              "int8.scale / input_scale belong to FP32 stages; this stage is GEMMLOWP");
    st.multiplier = multipliers(b, s.multiplier(), n, "multiplier");
    st.shift = int_vector(b, s.shift(), n, -31, 30, "shift");
  }
  st.in_zp = s.input_zero_point();
  st.out_zp = s.output_zero_point();
  same_zero_point(b, st.in_zp, x, "input_zero_point");
  same_zero_point(b, st.out_zp, y, "output_zero_point");
  clamp_bounds(b, s, &st.qmin, &st.qmax);
  st.bias = load_bias(b, n);
  return st;
}

// ---- Conv2D -----------------------------------------------------------------------------------

// a + b with the int32 accumulator's documented two's-complement wrap (as the vector taps and
// arithmetic._wrap_s32 do), taken in uint32 so the wrap is defined behaviour. Every scalar
// depthwise tap adds through it; the products themselves fit (|.| <= 255 * 128).
inline int32_t wrap_add(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

// acc[c] += (x[c] - zp) * w[c] (wrapping): the reference twin of the vector taps below.
inline void dw_tap(int32_t* __restrict acc, const int8_t* __restrict x, const int8_t* __restrict w,
                   int32_t zp, int n) {
  for (int c = 0; c < n; ++c)
    acc[c] = wrap_add(acc[c], (static_cast<int32_t>(x[c]) - zp) * static_cast<int32_t>(w[c]));
}

// The output stage of n accumulators (the kernels' requantize_s8, bit for bit): per-channel
// multiplier / shift, or one for all (`per_channel` false).
inline void requantize_row(const int32_t* __restrict acc, const int32_t* __restrict mult,
                           const int32_t* __restrict shift, bool per_channel, int32_t out_zp,
                           int32_t qmin, int32_t qmax, int8_t* __restrict out, int n) {
  if (per_channel) {
    for (int c = 0; c < n; ++c)
      out[c] = requantize_s8(acc[c], mult[c], shift[c], out_zp, qmin, qmax);
  } else {
    for (int c = 0; c < n; ++c)
      out[c] = requantize_s8(acc[c], mult[0], shift[0], out_zp, qmin, qmax);
  }
}

// Parameters of the elementwise int8 ADD / MUL (zero points, left shift, input and output
// multipliers and shifts, output zero point, clamp).
struct EltParams {
  int32_t za, zb, left, ma, sa, mb, sb, mo, so, ozp, qmin, qmax;
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EO_RUNTIME_AVX2 1
#define EO_AVX2 __attribute__((target("avx2,fma")))

// Bit-exact vector MultiplyByQuantizedMultiplier (as x86/qs8_gemm_avx2.cc): srdhm(x, m) ==
// (x*m + 2^30) >> 31 (floor) except INT32_MIN * INT32_MIN, which wraps to INT32_MIN and is
// replaced by INT32_MAX; then RoundingDivideByPOT with ties away from zero.
EO_AVX2 inline __m256i mbqm8(__m256i x, __m256i mult, __m256i left, __m256i right) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i half = _mm256_set1_epi64x(int64_t{1} << 30);
  x = _mm256_sllv_epi32(x, left);
  __m256i pe = _mm256_mul_epi32(x, mult);
  __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(mult, 32));
  pe = _mm256_srli_epi64(_mm256_add_epi64(pe, half), 31);
  po = _mm256_slli_epi64(_mm256_add_epi64(po, half), 1);
  __m256i q = _mm256_blend_epi32(pe, po, 0xAA);
  q = _mm256_xor_si256(q, _mm256_cmpeq_epi32(q, _mm256_set1_epi32(INT32_MIN)));
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
  const __m256i rem = _mm256_and_si256(q, mask);
  const __m256i thr = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1), _mm256_srai_epi32(q, 31));
  const __m256i res = _mm256_srav_epi32(q, right);
  return _mm256_sub_epi32(res, _mm256_cmpgt_epi32(rem, thr));
}

// 8 accumulators -> 8 int8: clamp in the zero-point-free domain, then add the zero point.
EO_AVX2 inline void store8(__m256i v, __m256i lo, __m256i hi, __m256i zp, int8_t* out) {
  v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, lo), hi), zp);
  const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(p16, p16));
}

EO_AVX2 void requantize_row_avx2(const int32_t* acc, const int32_t* mult, const int32_t* shift,
                                 bool per_channel, int32_t out_zp, int32_t qmin, int32_t qmax,
                                 int8_t* out, int n) {
  const __m256i lo = _mm256_set1_epi32(qmin - out_zp), hi = _mm256_set1_epi32(qmax - out_zp);
  const __m256i zp = _mm256_set1_epi32(out_zp), zero = _mm256_setzero_si256();
  __m256i m = _mm256_set1_epi32(mult[0]), s = _mm256_set1_epi32(shift[0]);
  __m256i left = _mm256_max_epi32(s, zero),
          right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
  int c = 0;
  for (; c + 8 <= n; c += 8) {
    if (per_channel) {
      m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mult + c));
      s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shift + c));
      left = _mm256_max_epi32(s, zero);
      right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
    }
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + c));
    store8(mbqm8(a, m, left, right), lo, hi, zp, out + c);
  }
  for (; c < n; ++c)
    out[c] = requantize_s8(acc[c], mult[per_channel ? c : 0], shift[per_channel ? c : 0], out_zp,
                           qmin, qmax);
}

// Elementwise int8 ADD / MUL of two contiguous lines (TFLite's kernels; the tables and the scalar
// output stage of BinaryS8 are the reference twin). `is_add`: rescale each input by (m, s) after
// shifting left by `left`, sum, requantize; else multiply the zero-point-free inputs.

EO_AVX2 void eltwise_avx2(bool is_add, const int8_t* a, const int8_t* b, int8_t* y, int n,
                          const EltParams& p) {
  const __m256i la = _mm256_set1_epi32(p.sa > 0 ? p.sa : 0);
  const __m256i ra = _mm256_set1_epi32(p.sa > 0 ? 0 : -p.sa);
  const __m256i lb = _mm256_set1_epi32(p.sb > 0 ? p.sb : 0);
  const __m256i rb = _mm256_set1_epi32(p.sb > 0 ? 0 : -p.sb);
  const __m256i lo_ = _mm256_set1_epi32(p.so > 0 ? p.so : 0);
  const __m256i ro_ = _mm256_set1_epi32(p.so > 0 ? 0 : -p.so);
  const __m256i ma = _mm256_set1_epi32(p.ma), mb = _mm256_set1_epi32(p.mb);
  const __m256i mo = _mm256_set1_epi32(p.mo);
  const __m256i za = _mm256_set1_epi32(p.za), zb = _mm256_set1_epi32(p.zb);
  const __m256i left = _mm256_set1_epi32(p.left);
  const __m256i lo = _mm256_set1_epi32(p.qmin - p.ozp), hi = _mm256_set1_epi32(p.qmax - p.ozp);
  const __m256i zp = _mm256_set1_epi32(p.ozp);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i av = _mm256_sub_epi32(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + i))), za);
    const __m256i bv = _mm256_sub_epi32(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + i))), zb);
    __m256i acc;
    if (is_add) {
      const __m256i ta = mbqm8(_mm256_sllv_epi32(av, left), ma, la, ra);
      const __m256i tb = mbqm8(_mm256_sllv_epi32(bv, left), mb, lb, rb);
      acc = _mm256_add_epi32(ta, tb);
    } else {
      acc = _mm256_mullo_epi32(av, bv);
    }
    store8(mbqm8(acc, mo, lo_, ro_), lo, hi, zp, y + i);
  }
  for (; i < n; ++i) {
    const int32_t av = a[i] - p.za, bv = b[i] - p.zb;
    int32_t acc;
    if (is_add) {
      const int32_t ta = multiply_by_quantized_multiplier(av * (int32_t{1} << p.left), p.ma, p.sa);
      const int32_t tb = multiply_by_quantized_multiplier(bv * (int32_t{1} << p.left), p.mb, p.sb);
      acc = static_cast<int32_t>(static_cast<uint32_t>(ta) + static_cast<uint32_t>(tb));
    } else {
      acc = av * bv;
    }
    y[i] = requantize_s8(acc, p.mo, p.so, p.ozp, p.qmin, p.qmax);
  }
}

// One depthwise output pixel: `taps` valid (input, weight) rows, channels in registers 8 at a
// time through all taps, then the per-channel output stage (no accumulator round trips).
EO_AVX2 void dw_pixel_avx2(const int8_t* const* xs, const int8_t* const* ws, int taps,
                           const int32_t* bias, const int32_t* mult, const int32_t* shift,
                           int32_t in_zp, int32_t out_zp, int32_t qmin, int32_t qmax, int8_t* out,
                           int n, int c0 = 0) {
  const __m256i z = _mm256_set1_epi32(in_zp), zero = _mm256_setzero_si256();
  const __m256i lo = _mm256_set1_epi32(qmin - out_zp), hi = _mm256_set1_epi32(qmax - out_zp);
  const __m256i zp = _mm256_set1_epi32(out_zp);
  int c = c0;
  for (; c + 8 <= n; c += 8) {
    __m256i acc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + c));
    for (int t = 0; t < taps; ++t) {
      const __m256i xv = _mm256_sub_epi32(
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(xs[t] + c))), z);
      const __m256i wv =
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(ws[t] + c)));
      acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(xv, wv));
    }
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shift + c));
    const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mult + c));
    const __m256i left = _mm256_max_epi32(s, zero);
    const __m256i right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
    store8(mbqm8(acc, m, left, right), lo, hi, zp, out + c);
  }
  for (; c < n; ++c) {
    int32_t acc = bias[c];
    for (int t = 0; t < taps; ++t)
      acc =
          wrap_add(acc, (static_cast<int32_t>(xs[t][c]) - in_zp) * static_cast<int32_t>(ws[t][c]));
    out[c] = requantize_s8(acc, mult[c], shift[c], out_zp, qmin, qmax);
  }
}

// Depthwise weights for the 16-bit path: per block of 16 channels and pair of taps (t, t + 1),
// 32 int16 in the order _mm256_unpack{lo,hi}_epi16 gives the input pairs, so one
// _mm256_madd_epi16 adds both taps' products for 8 channels; bias / multiplier / shift of the
// block permuted the same way (accumulator lo: channels 0-3 and 8-11, hi: 4-7 and 12-15).
struct DwPacked16 {
  int blocks = 0, pairs = 0;
  std::vector<int16_t> w;                  // [blocks][pairs][32]
  std::vector<int32_t> bias, mult, shift;  // [blocks * 16], permuted
  std::vector<int8_t> zp_row;              // C + 16 bytes of the input zero point
  std::vector<float> fscale;               // FP32 stage (format 1.4): [blocks * 16], permuted
};

inline int dw_perm(int j) {  // position j of the permuted block -> channel offset
  static const int order[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};
  return order[j];
}

// (x - zp) of 16 channels as int16 (|x - zp| <= 255; products with |w| <= 128 fit int16 and the
// pair sum of _mm256_madd_epi16 is exact in int32).
EO_AVX2 inline __m256i x16(const int8_t* p, __m256i zp) {
  return _mm256_sub_epi16(
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), zp);
}

EO_AVX2 void dw_pixel16_avx2(const int8_t* const* xs, const DwPacked16& pk, int32_t in_zp,
                             int32_t out_zp, int32_t qmin, int32_t qmax, int8_t* out, int b0 = 0) {
  const __m256i z16 = _mm256_set1_epi16(static_cast<int16_t>(in_zp)), zero = _mm256_setzero_si256();
  const __m256i lo = _mm256_set1_epi32(qmin - out_zp), hi = _mm256_set1_epi32(qmax - out_zp);
  const __m256i zp = _mm256_set1_epi32(out_zp);
  for (int b = b0; b < pk.blocks; ++b) {
    const int c = b * 16;
    __m256i acc_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pk.bias.data() + c));
    __m256i acc_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pk.bias.data() + c + 8));
    const int16_t* wp = pk.w.data() + static_cast<size_t>(b) * pk.pairs * 32;
    for (int p = 0; p < pk.pairs; ++p, wp += 32) {
      const __m256i x0 = x16(xs[2 * p] + c, z16), x1 = x16(xs[2 * p + 1] + c, z16);
      const __m256i wl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp));
      const __m256i wh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 16));
      acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), wl));
      acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), wh));
    }
    __m256i r[2];
    const __m256i accs[2] = {acc_lo, acc_hi};
    if (!pk.fscale.empty()) {  // FP32 stage: common/requant_fp32.h in 8 lanes
      const __m256 flo = _mm256_set1_ps(static_cast<float>(qmin - out_zp));
      const __m256 fhi = _mm256_set1_ps(static_cast<float>(qmax - out_zp));
      for (int h = 0; h < 2; ++h) {
        const __m256 sc = _mm256_loadu_ps(pk.fscale.data() + c + 8 * h);
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(accs[h]), sc);
        v = _mm256_min_ps(_mm256_max_ps(v, flo), fhi);
        r[h] = _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
      }
    } else {
      for (int h = 0; h < 2; ++h) {
        const __m256i m =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pk.mult.data() + c + 8 * h));
        const __m256i s =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pk.shift.data() + c + 8 * h));
        const __m256i left = _mm256_max_epi32(s, zero);
        const __m256i right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
        r[h] = _mm256_add_epi32(
            _mm256_min_epi32(_mm256_max_epi32(mbqm8(accs[h], m, left, right), lo), hi), zp);
      }
    }
    // packs work within 128-bit lanes: lo/hi lanes interleave back to channels 0..15.
    const __m256i p16 = _mm256_packs_epi32(r[0], r[1]);
    const __m256i p8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(p16, p16), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm256_castsi256_si128(p8));
  }
}

#define EO_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

// The AVX-512 VNNI twin of dw_pixel16_avx2: blocks of 32 channels, the pairs of taps through
// vpdpwssd (16-bit products summed into int32, exact), the output stage on 16 lanes. Within a
// block, accumulator lo holds channels 8L + 0..3 of each 128-bit lane L, hi 8L + 4..7.
struct DwPacked32 {
  int blocks = 0, pairs = 0;
  int channels = 0;                        // valid channels (the last block may be partial)
  std::vector<int16_t> w;                  // [blocks][pairs][64]
  std::vector<int32_t> bias, mult, shift;  // [blocks * 32], permuted
  // Depthwise only: bias - in_zp * sum_t w[t] (so the taps multiply raw x, no zero point
  // subtraction per tap; a zero-point row then adds in_zp * w, cancelled exactly), and the fast
  // output stage constants per block (DwFast), `fast[b]` when both halves qualify.
  std::vector<int32_t> bias_x;
  std::vector<int64_t> fk;  // [blocks][6][8 lanes][2 halves]: see dw_fast_consts
  std::vector<uint8_t> fast;
  // An FP32 stage (format 1.4): float32 scales [blocks * 32], permuted (padding lanes 1.0).
  bool fp32 = false;
  std::vector<float> fscale;
};

inline int dw_perm32(int j) {
  return j < 16 ? (j / 4) * 8 + j % 4 : ((j - 16) / 4) * 8 + 4 + j % 4;
}

EO_AVX512 inline __m512i mbqm16(__m512i x, __m512i mult, __m512i left, __m512i right) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i half = _mm512_set1_epi64(int64_t{1} << 30);
  x = _mm512_sllv_epi32(x, left);
  __m512i pe = _mm512_mul_epi32(x, mult);
  __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(mult, 32));
  pe = _mm512_srli_epi64(_mm512_add_epi64(pe, half), 31);
  po = _mm512_slli_epi64(_mm512_add_epi64(po, half), 1);
  __m512i q = _mm512_mask_blend_epi32(0xAAAA, pe, po);
  q = _mm512_mask_mov_epi32(q, _mm512_cmpeq_epi32_mask(q, _mm512_set1_epi32(INT32_MIN)),
                            _mm512_set1_epi32(INT32_MAX));
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
  const __m512i rem = _mm512_and_si512(q, mask);
  const __m512i thr = _mm512_sub_epi32(_mm512_srli_epi32(mask, 1), _mm512_srai_epi32(q, 31));
  const __m512i res = _mm512_srav_epi32(q, right);
  return _mm512_mask_add_epi32(res, _mm512_cmpgt_epi32_mask(rem, thr), res, one);
}

// Fast exact output stage (the same single 64-bit rounding as the AVX-512 VNNI GEMM, see
// kernels/x86/qs8_gemm_avx512vnni.cc fast_rq): for shift = -r with r in [1, 23], multiplier !=
// INT32_MIN, |out_zp| <= 128, with ab = x * m:
//   v + zp = floor((ab + 2^30 + 2^(30+r) + zp * 2^(31+r) - 2^31 * [ab < 0]) / 2^(31+r)).
// Per 16 lanes of a block half h, fk holds 6 vectors: m (even lanes), m >> 32 (odd lanes), the
// constants of the even and odd lanes, 31 + r (even), r - 1 (odd lanes land in the high dword).
struct DwFast {
  __m512i me, mo, ke, ko, se, so;
};

// The per-channel constants of one 16-lane vector: fills f (6 x 8 int64), true when every lane
// qualifies for the fast stage.
inline bool dw_fast_consts(const int32_t* mult, const int32_t* shift, int32_t out_zp, int64_t* f) {
  if (out_zp < -128 || out_zp > 128) return false;
  for (int l = 0; l < 16; ++l) {
    const int r = -shift[l];
    if (r < 1 || r > 23 || mult[l] == INT32_MIN) return false;
  }
  for (int l = 0; l < 8; ++l) {
    const int32_t me = mult[2 * l], mo = mult[2 * l + 1];
    const int re = -shift[2 * l], ro = -shift[2 * l + 1];
    auto k = [&](int r) {
      return (int64_t{1} << 30) + (int64_t{1} << (30 + r)) +
             int64_t{out_zp} * (int64_t{1} << (31 + r));
    };
    f[0 * 8 + l] = static_cast<int64_t>(static_cast<uint32_t>(me));  // low dword read by vpmuldq
    f[1 * 8 + l] = static_cast<int64_t>(static_cast<uint32_t>(mo));
    f[2 * 8 + l] = k(re);
    f[3 * 8 + l] = k(ro);
    f[4 * 8 + l] = 31 + re;
    f[5 * 8 + l] = ro - 1;
  }
  return true;
}

EO_AVX512 inline __m512i dw_fast_rq(__m512i x, const int64_t* f, __m512i c31) {
  const __m512i pe = _mm512_mul_epi32(x, _mm512_loadu_si512(f));
  const __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_loadu_si512(f + 8));
  __m512i te = _mm512_add_epi64(pe, _mm512_loadu_si512(f + 16));
  __m512i to = _mm512_add_epi64(po, _mm512_loadu_si512(f + 24));
  te = _mm512_mask_sub_epi64(te, _mm512_movepi64_mask(pe), te, c31);
  to = _mm512_mask_sub_epi64(to, _mm512_movepi64_mask(po), to, c31);
  te = _mm512_srav_epi64(te, _mm512_loadu_si512(f + 32));
  to = _mm512_srav_epi64(to, _mm512_loadu_si512(f + 40));
  return _mm512_mask_mov_epi32(te, 0xAAAA, to);  // v + zp, exact in int32
}

// Output stage of one 32-channel block of NP pixels, in place (values end in [qmin, qmax]).
template <int NP, bool kFp32>
EO_AVX512 inline void dw_stage(__m512i (*acc)[2], const DwPacked32& pk, int b, int32_t out_zp,
                               int32_t qmin, int32_t qmax) {
  const int c = b * 32;
  if (kFp32) {  // common/requant_fp32.h in 16 lanes: MXCSR's default rounding is half to even
    const __m512 lo = _mm512_set1_ps(static_cast<float>(qmin - out_zp));
    const __m512 hi = _mm512_set1_ps(static_cast<float>(qmax - out_zp));
    const __m512i zp = _mm512_set1_epi32(out_zp);
    for (int h = 0; h < 2; ++h) {
      const __m512 sc = _mm512_loadu_ps(pk.fscale.data() + c + 16 * h);
      for (int q = 0; q < NP; ++q) {
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[q][h]), sc);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        acc[q][h] = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
      }
    }
    return;
  }
  if (pk.fast[b]) {
    const __m512i c31 = _mm512_set1_epi64(int64_t{1} << 31);
    const __m512i ql = _mm512_set1_epi32(qmin), qh = _mm512_set1_epi32(qmax);
    for (int h = 0; h < 2; ++h) {
      const int64_t* f = pk.fk.data() + (static_cast<size_t>(b) * 2 + h) * 48;
      for (int q = 0; q < NP; ++q)
        acc[q][h] = _mm512_min_epi32(_mm512_max_epi32(dw_fast_rq(acc[q][h], f, c31), ql), qh);
    }
  } else {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i lo = _mm512_set1_epi32(qmin - out_zp), hi = _mm512_set1_epi32(qmax - out_zp);
    const __m512i zp = _mm512_set1_epi32(out_zp);
    for (int h = 0; h < 2; ++h) {
      const __m512i m = _mm512_loadu_si512(pk.mult.data() + c + 16 * h);
      const __m512i s = _mm512_loadu_si512(pk.shift.data() + c + 16 * h);
      const __m512i left = _mm512_max_epi32(s, zero);
      const __m512i right = _mm512_max_epi32(_mm512_sub_epi32(zero, s), zero);
      for (int q = 0; q < NP; ++q)
        acc[q][h] = _mm512_add_epi32(
            _mm512_min_epi32(_mm512_max_epi32(mbqm16(acc[q][h], m, left, right), lo), hi), zp);
    }
  }
}

// Raw (x as int16) of 32 channels; kTail: only the block's valid bytes are read.
template <bool kTail>
EO_AVX512 inline __m512i dw_x32(const int8_t* p, __mmask32 lm) {
  const __m256i v = kTail ? _mm256_maskz_loadu_epi8(lm, p)
                          : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_cvtepi8_epi16(v);
}

// One block of 32 channels for NP pixels (independent accumulator chains; each pair of weight
// vectors loaded once): pixel q's tap t is at base[q] + off[t] (a zero-point padded copy of the
// input, so every window is whole). The taps multiply raw x (bias_x carries - in_zp * sum w).
// kTail: the last, partial block (lm = its valid channels).
template <int NP, bool kTail, bool kFp32>
EO_AVX512 inline void dw_block32(const int8_t* const* base, const ptrdiff_t* off,
                                 const DwPacked32& pk, int b, __mmask32 lm, int32_t out_zp,
                                 int32_t qmin, int32_t qmax, int8_t* const* outs) {
  const int c = b * 32;
  __m512i acc[NP][2];
  for (int q = 0; q < NP; ++q) {
    acc[q][0] = _mm512_loadu_si512(pk.bias_x.data() + c);
    acc[q][1] = _mm512_loadu_si512(pk.bias_x.data() + c + 16);
  }
  const int16_t* wp = pk.w.data() + static_cast<size_t>(b) * pk.pairs * 64;
  for (int p = 0; p < pk.pairs; ++p, wp += 64) {
    const __m512i wl = _mm512_loadu_si512(wp), wh = _mm512_loadu_si512(wp + 32);
    const ptrdiff_t o0 = off[2 * p] + c, o1 = off[2 * p + 1] + c;
    for (int q = 0; q < NP; ++q) {
      const __m512i x0 = dw_x32<kTail>(base[q] + o0, lm);
      const __m512i x1 = dw_x32<kTail>(base[q] + o1, lm);
      acc[q][0] = _mm512_dpwssd_epi32(acc[q][0], _mm512_unpacklo_epi16(x0, x1), wl);
      acc[q][1] = _mm512_dpwssd_epi32(acc[q][1], _mm512_unpackhi_epi16(x0, x1), wh);
    }
  }
  dw_stage<NP, kFp32>(acc, pk, b, out_zp, qmin, qmax);
  for (int q = 0; q < NP; ++q) {  // values in [-128, 127] already: the narrowing is exact
    const __m128i b0 = _mm512_cvtsepi32_epi8(acc[q][0]), b1 = _mm512_cvtsepi32_epi8(acc[q][1]);
    const __m128i v0 = _mm_unpacklo_epi32(b0, b1), v1 = _mm_unpackhi_epi32(b0, b1);
    if (kTail) {
      _mm_mask_storeu_epi8(outs[q] + c, static_cast<__mmask16>(lm), v0);
      _mm_mask_storeu_epi8(outs[q] + c + 16, static_cast<__mmask16>(lm >> 16), v1);
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(outs[q] + c), v0);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(outs[q] + c + 16), v1);
    }
  }
}

// Every channel of NP pixels: whole blocks, then the partial last block with masked loads and
// stores (never past a row's channels).
template <int NP, bool kFp32>
EO_AVX512 void dw_pixels32_avx512(const int8_t* const* base, const ptrdiff_t* off,
                                  const DwPacked32& pk, int32_t out_zp, int32_t qmin, int32_t qmax,
                                  int8_t* const* outs) {
  const int whole = pk.channels / 32;
  for (int b = 0; b < whole; ++b)
    dw_block32<NP, false, kFp32>(base, off, pk, b, ~__mmask32{0}, out_zp, qmin, qmax, outs);
  if (whole < pk.blocks) {
    const int rest = pk.channels - whole * 32;
    dw_block32<NP, true, kFp32>(base, off, pk, whole,
                                static_cast<__mmask32>((uint64_t{1} << rest) - 1), out_zp, qmin,
                                qmax, outs);
  }
}

// A convolution of one input channel (the first layer of a grayscale model) to O = 32k outputs:
// per pair of taps one broadcast (x0 - zp, x1 - zp) and a vpdpwssd per 16 outputs, weights and
// output stage laid out as DwPacked32 (the scalar twin: im2col + the int8 GEMM, or the generic
// depthwise loop with channel multiplier O).
template <int NP, bool kFp32>
EO_AVX512 void conv1ch_pixels_avx512(const int8_t* const* base, const ptrdiff_t* off,
                                     const DwPacked32& pk, int32_t in_zp, int32_t out_zp,
                                     int32_t qmin, int32_t qmax, int8_t* const* outs) {
  __m512i xp[NP][kMaxDwTaps / 2 + 1];
  for (int q = 0; q < NP; ++q) {
    const int8_t* xq = base[q];
    for (int p = 0; p < pk.pairs; ++p) {
      const uint32_t v0 = static_cast<uint16_t>(static_cast<int16_t>(xq[off[2 * p]] - in_zp));
      const uint32_t v1 = static_cast<uint16_t>(static_cast<int16_t>(xq[off[2 * p + 1]] - in_zp));
      xp[q][p] = _mm512_set1_epi32(static_cast<int32_t>(v0 | (v1 << 16)));
    }
  }
  for (int b = 0; b < pk.blocks; ++b) {
    const int c = b * 32;
    __m512i acc[NP][2];
    for (int q = 0; q < NP; ++q) {
      acc[q][0] = _mm512_loadu_si512(pk.bias.data() + c);
      acc[q][1] = _mm512_loadu_si512(pk.bias.data() + c + 16);
    }
    const int16_t* wp = pk.w.data() + static_cast<size_t>(b) * pk.pairs * 64;
    for (int p = 0; p < pk.pairs; ++p, wp += 64) {
      const __m512i wl = _mm512_loadu_si512(wp), wh = _mm512_loadu_si512(wp + 32);
      for (int q = 0; q < NP; ++q) {
        acc[q][0] = _mm512_dpwssd_epi32(acc[q][0], xp[q][p], wl);
        acc[q][1] = _mm512_dpwssd_epi32(acc[q][1], xp[q][p], wh);
      }
    }
    dw_stage<NP, kFp32>(acc, pk, b, out_zp, qmin, qmax);
    for (int q = 0; q < NP; ++q) {
      const __m128i b0 = _mm512_cvtsepi32_epi8(acc[q][0]), b1 = _mm512_cvtsepi32_epi8(acc[q][1]);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(outs[q] + c), _mm_unpacklo_epi32(b0, b1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(outs[q] + c + 16), _mm_unpackhi_epi32(b0, b1));
    }
  }
}

// ADD's three rescales qualify for the fast stages: right shifts of 0..23 (inputs) or 1..23
// (output), no INT32_MIN multiplier, |output zero point| <= 128.
inline bool elt_fast(const EltParams& p) {
  auto ok = [](int32_t m, int32_t sh, int lo) { return sh <= lo && sh >= -23 && m != INT32_MIN; };
  return ok(p.ma, p.sa, 0) && ok(p.mb, p.sb, 0) && ok(p.mo, p.so, -1) && p.ozp >= -128 &&
         p.ozp <= 128;
}

// multiply_by_quantized_multiplier with shift 0 (the input of the larger scale usually has
// multiplier 2^30, shift 0): srdhm(x, m) = floor((x * m + 2^30) / 2^31), exact for m != INT32_MIN.
EO_AVX512 inline __m512i rq_shift0(__m512i x, __m512i m, __m512i c30) {
  const __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(x, m), c30);
  const __m512i po = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), m), c30);
  return _mm512_mask_mov_epi32(_mm512_srai_epi64(pe, 31), 0xAAAA, _mm512_slli_epi64(po, 1));
}

// dw_fast_rq's constants for one multiplier / shift on every lane.
inline void elt_fast_consts(int32_t m, int32_t shift, int32_t zp, int64_t* f) {
  int32_t mult[16], sh[16];
  for (int l = 0; l < 16; ++l) mult[l] = m, sh[l] = shift;
  dw_fast_consts(mult, sh, zp, f);
}

// The AVX-512 twin of eltwise_avx2 (16 lanes); the last n % 16 elements go to eltwise_avx2.
EO_AVX512 void eltwise_avx512(bool is_add, const int8_t* a, const int8_t* b, int8_t* y, int n,
                              const EltParams& p) {
  const __m512i la = _mm512_set1_epi32(p.sa > 0 ? p.sa : 0);
  const __m512i ra = _mm512_set1_epi32(p.sa > 0 ? 0 : -p.sa);
  const __m512i lb = _mm512_set1_epi32(p.sb > 0 ? p.sb : 0);
  const __m512i rb = _mm512_set1_epi32(p.sb > 0 ? 0 : -p.sb);
  const __m512i lo_ = _mm512_set1_epi32(p.so > 0 ? p.so : 0);
  const __m512i ro_ = _mm512_set1_epi32(p.so > 0 ? 0 : -p.so);
  const __m512i ma = _mm512_set1_epi32(p.ma), mb = _mm512_set1_epi32(p.mb);
  const __m512i mo = _mm512_set1_epi32(p.mo);
  const __m512i za = _mm512_set1_epi32(p.za), zb = _mm512_set1_epi32(p.zb);
  const __m512i left = _mm512_set1_epi32(p.left);
  const __m512i lo = _mm512_set1_epi32(p.qmin - p.ozp), hi = _mm512_set1_epi32(p.qmax - p.ozp);
  const __m512i zp = _mm512_set1_epi32(p.ozp);
  int i = 0;
  if (is_add && elt_fast(p)) {  // every rescale a plain right shift: dw_fast_rq's single rounding
    const __m512i c31 = _mm512_set1_epi64(int64_t{1} << 31);
    alignas(64) int64_t fa[48], fb[48], fo[48];
    if (p.sa != 0) elt_fast_consts(p.ma, p.sa, 0, fa);
    if (p.sb != 0) elt_fast_consts(p.mb, p.sb, 0, fb);
    const __m512i c30 = _mm512_set1_epi64(int64_t{1} << 30);
    const __m512i ma64 = _mm512_set1_epi64(static_cast<uint32_t>(p.ma));
    const __m512i mb64 = _mm512_set1_epi64(static_cast<uint32_t>(p.mb));
    elt_fast_consts(p.mo, p.so, p.ozp, fo);
    const __m512i ql = _mm512_set1_epi32(p.qmin), qh = _mm512_set1_epi32(p.qmax);
    for (; i + 16 <= n; i += 16) {
      const __m512i av = _mm512_sllv_epi32(
          _mm512_sub_epi32(
              _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))), za),
          left);
      const __m512i bv = _mm512_sllv_epi32(
          _mm512_sub_epi32(
              _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i))), zb),
          left);
      const __m512i ra_ = p.sa == 0 ? rq_shift0(av, ma64, c30) : dw_fast_rq(av, fa, c31);
      const __m512i rb_ = p.sb == 0 ? rq_shift0(bv, mb64, c30) : dw_fast_rq(bv, fb, c31);
      const __m512i acc = _mm512_add_epi32(ra_, rb_);
      const __m512i v = _mm512_min_epi32(_mm512_max_epi32(dw_fast_rq(acc, fo, c31), ql), qh);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm512_cvtsepi32_epi8(v));
    }
  }
  for (; i + 16 <= n; i += 16) {
    const __m512i av = _mm512_sub_epi32(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))), za);
    const __m512i bv = _mm512_sub_epi32(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i))), zb);
    __m512i acc;
    if (is_add) {
      acc = _mm512_add_epi32(mbqm16(_mm512_sllv_epi32(av, left), ma, la, ra),
                             mbqm16(_mm512_sllv_epi32(bv, left), mb, lb, rb));
    } else {
      acc = _mm512_mullo_epi32(av, bv);
    }
    const __m512i v =
        _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(mbqm16(acc, mo, lo_, ro_), lo), hi), zp);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm512_cvtsepi32_epi8(v));
  }
  if (i < n) eltwise_avx2(is_add, a + i, b + i, y + i, n - i, p);
}

// XNNPACK's int8 ADD (FP32 stage), 16 pairs per step: (bias + a * ma + b * mb) >> shift + zp,
// clamped; bias = 2^(shift-1) - ma * za - mb * zb. |a * ma| < 2^28, so the int32 sum is exact.
// Narrowing saturates (monotone), so clamping after it gives the clamp of the exact value.
EO_AVX2 void add_fp32_avx2(const int8_t* a, const int8_t* b, int8_t* y, int64_t n, int32_t ma,
                           int32_t mb, int32_t bias, int shift, int32_t zp, int32_t qmin,
                           int32_t qmax) {
  const __m256i vma = _mm256_set1_epi32(ma), vmb = _mm256_set1_epi32(mb);
  const __m256i vbias = _mm256_set1_epi32(bias), vzp = _mm256_set1_epi32(zp);
  const __m128i vsh = _mm_cvtsi32_si128(shift);
  const __m128i lo8 = _mm_set1_epi8(static_cast<int8_t>(qmin));
  const __m128i hi8 = _mm_set1_epi8(static_cast<int8_t>(qmax));
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i va = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i));
    const __m128i vb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i));
    __m256i r[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i a32 = _mm256_cvtepi8_epi32(h ? _mm_srli_si128(va, 8) : va);
      const __m256i b32 = _mm256_cvtepi8_epi32(h ? _mm_srli_si128(vb, 8) : vb);
      const __m256i acc = _mm256_add_epi32(
          vbias, _mm256_add_epi32(_mm256_mullo_epi32(a32, vma), _mm256_mullo_epi32(b32, vmb)));
      r[h] = _mm256_add_epi32(_mm256_sra_epi32(acc, vsh), vzp);
    }
    const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(r[0], r[1]), 0xD8);
    __m128i p8 = _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
    p8 = _mm_min_epi8(_mm_max_epi8(p8, lo8), hi8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), p8);
  }
  for (; i < n; ++i) {
    const int32_t v = ((bias + a[i] * ma + b[i] * mb) >> shift) + zp;
    y[i] = static_cast<int8_t>(std::min(std::max(v, qmin), qmax));
  }
}

EO_AVX2 void dw_tap_avx2(int32_t* acc, const int8_t* x, const int8_t* w, int32_t zp, int n) {
  const __m256i z = _mm256_set1_epi32(zp);
  int c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256i xv = _mm256_sub_epi32(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + c))), z);
    const __m256i wv =
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + c)));
    __m256i* a = reinterpret_cast<__m256i*>(acc + c);
    _mm256_storeu_si256(a, _mm256_add_epi32(_mm256_loadu_si256(a), _mm256_mullo_epi32(xv, wv)));
  }
  for (; c < n; ++c)
    acc[c] = wrap_add(acc[c], (static_cast<int32_t>(x[c]) - zp) * static_cast<int32_t>(w[c]));
}
#endif

bool use_avx2() {
#ifdef EO_RUNTIME_AVX2
  return (available_paths() & kAvx2) != 0;
#else
  return false;
#endif
}

void requantize_any(bool avx2, const int32_t* acc, const int32_t* mult, const int32_t* shift,
                    bool per_channel, int32_t out_zp, int32_t qmin, int32_t qmax, int8_t* out,
                    int n) {
#ifdef EO_RUNTIME_AVX2
  if (avx2) {
    requantize_row_avx2(acc, mult, shift, per_channel, out_zp, qmin, qmax, out, n);
    return;
  }
#endif
  requantize_row(acc, mult, shift, per_channel, out_zp, qmin, qmax, out, n);
}

class Conv2DS8 : public Op, public ConvGeometry {
 public:
  ChannelStage st;
  S8Weight weights;
  std::vector<int8_t> dw;  // depthwise: [KH * KW, O]
  int tile_rows = 64;
  KernelNote kernel_note;

  void run(RunContext& ctx) override {
    const int8_t* x = ctx.get<int8_t>(inputs[0]);
    int8_t* y = ctx.get<int8_t>(outputs[0]);
    if (depthwise || conv1ch) {
      run_depthwise(x, y, op_threads(ctx.threads, info.macs));
      info.kernel = dw_kernel;
    } else {
      run_gemm(x, y, op_threads(ctx.threads, info.macs));
      kernel_note.note(info, pointwise ? "" : "im2col+",
                       [this] { return weights.groups[0].family(); });
    }
  }

 private:
  // Copies n bytes: short runs inline (a call per tap costs more than the copy for the first
  // layers' 1..3 channels), the usual channel counts as fixed-size copies the compiler inlines.
  static inline void copy_bytes(int8_t* __restrict dst, const int8_t* __restrict src, int n) {
    switch (n) {
      case 16: std::memcpy(dst, src, 16); return;
      case 32: std::memcpy(dst, src, 32); return;
      case 48: std::memcpy(dst, src, 48); return;
      case 64: std::memcpy(dst, src, 64); return;
      case 96: std::memcpy(dst, src, 96); return;
      case 128: std::memcpy(dst, src, 128); return;
      default: break;
    }
    if (n < 16) {
      for (int c = 0; c < n; ++c) dst[c] = src[c];
    } else {
      std::memcpy(dst, src, n);
    }
  }
  static inline void fill_bytes(int8_t* dst, int8_t v, int n) {
    if (n < 16) {
      for (int c = 0; c < n; ++c) dst[c] = v;
    } else {
      std::memset(dst, v, n);
    }
  }

  void im2col(const int8_t* x, int g, int m0, int m1, int8_t* col) const {
    const int plane = OH * OW;
    const int8_t pad = static_cast<int8_t>(st.in_zp);
    // A kernel row inside the image is one contiguous run of KW * C bytes (NHWC, no groups,
    // no dilation across the width).
    const bool rows_contiguous = DW == 1 && G == 1;
    // (n, oh, ow) of row m, stepped instead of divided per row.
    int n = m0 / plane, oh = (m0 % plane) / OW, ow = (m0 % plane) % OW;
    for (int m = m0; m < m1; ++m) {
      int8_t* dst = col + static_cast<size_t>(m - m0) * K;
      const int iw0 = ow * SW - PL;
      for (int kh = 0; kh < KH; ++kh) {
        const int ih = oh * SH - PT + kh * DH;
        if (ih < 0 || ih >= H) {
          fill_bytes(dst, pad, KW * Cg);
          dst += KW * Cg;
          continue;
        }
        const int8_t* row = x + static_cast<size_t>(n * H + ih) * W * C + g * Cg;
        if (rows_contiguous && iw0 >= 0 && iw0 + KW <= W) {
          copy_bytes(dst, row + static_cast<size_t>(iw0) * C, KW * C);
          dst += KW * C;
          continue;
        }
        for (int kw = 0; kw < KW; ++kw, dst += Cg) {
          const int iw = iw0 + kw * DW;
          if (iw < 0 || iw >= W) {
            fill_bytes(dst, pad, Cg);
          } else {
            copy_bytes(dst, row + static_cast<size_t>(iw) * C, Cg);
          }
        }
      }
      if (++ow == OW) {
        ow = 0;
        if (++oh == OH) {
          oh = 0;
          ++n;
        }
      }
    }
  }

  // Images [n0, n1) copied into `dst` with a border of the input zero point wide enough for every
  // window (hp x wp pixels of C channels per image): then each window row is one contiguous run.
  void pad_images(const int8_t* x, int n0, int n1, int hp, int wp, int8_t* dst) const {
    const int8_t zp = static_cast<int8_t>(st.in_zp);
    const size_t rowb = static_cast<size_t>(wp) * C;
    for (int n = n0; n < n1; ++n) {
      for (int ip = 0; ip < hp; ++ip, dst += rowb) {
        const int ih = ip - PT;
        if (ih < 0 || ih >= H) {
          std::memset(dst, zp, rowb);
          continue;
        }
        std::memset(dst, zp, static_cast<size_t>(PL) * C);
        std::memcpy(dst + static_cast<size_t>(PL) * C,
                    x + (static_cast<size_t>(n) * H + ih) * W * C, static_cast<size_t>(W) * C);
        std::memset(dst + static_cast<size_t>(PL + W) * C, zp,
                    static_cast<size_t>(wp - PL - W) * C);
      }
    }
  }
  int padded_h() const { return PT + std::max(H, (OH - 1) * SH - PT + (KH - 1) * DH + 1); }
  int padded_w() const { return PL + std::max(W, (OW - 1) * SW - PL + (KW - 1) * DW + 1); }

  // im2col from the padded copy (G == 1, DW == 1): KH copies of KW * C bytes per row, no tests.
  // The common run lengths (KW = 3 over 1..128 channels) are compile-time copies; every size is a
  // local, since the int8 stores may alias the operator's members and would force reloads.
  void im2col_padded(const int8_t* pad, int hp, int wp, int m0, int m1, int8_t* col) const {
    switch (KW * C) {
      case 3: return im2col_padded_run<3>(pad, hp, wp, m0, m1, col);
      case 9: return im2col_padded_run<9>(pad, hp, wp, m0, m1, col);
      case 48: return im2col_padded_run<48>(pad, hp, wp, m0, m1, col);
      case 72: return im2col_padded_run<72>(pad, hp, wp, m0, m1, col);
      case 96: return im2col_padded_run<96>(pad, hp, wp, m0, m1, col);
      case 144: return im2col_padded_run<144>(pad, hp, wp, m0, m1, col);
      case 192: return im2col_padded_run<192>(pad, hp, wp, m0, m1, col);
      case 288: return im2col_padded_run<288>(pad, hp, wp, m0, m1, col);
      case 384: return im2col_padded_run<384>(pad, hp, wp, m0, m1, col);
      default: return im2col_padded_run<0>(pad, hp, wp, m0, m1, col);
    }
  }
  template <int kRun>  // KW * C, or 0: taken at run time
  void im2col_padded_run(const int8_t* pad, int hp, int wp, int m0, int m1, int8_t* col) const {
    const int ow_n = OW, oh_n = OH, kh_n = KH, c = C, sh = SH, sw = SW;
    const int run = kRun > 0 ? kRun : KW * c;
    const size_t k = static_cast<size_t>(K);
    const size_t kstep = static_cast<size_t>(DH) * wp * c;
    const size_t row_step = static_cast<size_t>(sh) * wp * c, px_step = static_cast<size_t>(sw) * c;
    const int plane = oh_n * ow_n;
    int n = m0 / plane, oh = (m0 % plane) / ow_n, ow = (m0 % plane) % ow_n;
    const int8_t* row = pad + (static_cast<size_t>(n) * hp + static_cast<size_t>(oh) * sh) * wp * c;
    for (int m = m0; m < m1; ++m, col += k) {
      const int8_t* src = row + ow * px_step;
      int8_t* dst = col;
      for (int kh = 0; kh < kh_n; ++kh, dst += run, src += kstep) {
        if constexpr (kRun > 0) {
          std::memcpy(dst, src, kRun);
        } else {
          copy_bytes(dst, src, run);
        }
      }
      if (++ow == ow_n) {
        ow = 0;
        if (++oh == oh_n) {
          oh = 0;
          ++n;
          row = pad + static_cast<size_t>(n) * hp * wp * c;
        } else {
          row += row_step;
        }
      }
    }
  }

  // Group g's matrix on m rows of a (lda apart) into out (rows O apart), in the stage's arithmetic.
  void run_matrix(int g, int m, const int8_t* a, size_t lda, int8_t* out, int threads) const {
    if (st.fp32) {
      weights.groups[g].run(m, a, lda, st.fparams(g * Og), out, O, threads);
    } else {
      weights.groups[g].run(m, a, lda, st.params(g * Og), out, O, threads);
    }
  }

  void run_gemm(const int8_t* x, int8_t* y, int threads) {
    const int M = N * OH * OW;
    if (pointwise && G == 1) {
      run_matrix(0, M, x, C, y, threads);
      return;
    }
    // A padded copy of the whole input (made once, read by every task) when the windows' rows
    // are contiguous runs: KH copies per im2col row instead of per-tap bounds tests.
    const bool use_pad = !pointwise && G == 1 && DW == 1;
    const int hp = use_pad ? padded_h() : 0, wp = use_pad ? padded_w() : 0;
    thread_local std::vector<int8_t> padded;
    if (use_pad) {
      const size_t need = static_cast<size_t>(N) * hp * wp * C;
      if (padded.size() < need) padded.resize(need);
      pad_images(x, 0, N, hp, wp, padded.data());
    }
    const int8_t* pad = padded.data();
    const int tiles = (M + tile_rows - 1) / tile_rows;
    const int tasks = tiles * G;
    const bool by_tile = threads > 1 && tasks >= 2 * threads;
    const int inner = by_tile ? 1 : threads;
    auto task = [&](int t) {
      const int tile = t / G, g = t % G;
      const int m0 = tile * tile_rows, m1 = std::min(M, m0 + tile_rows);
      int8_t* out = y + static_cast<size_t>(m0) * O + g * Og;
      if (pointwise) {
        run_matrix(g, m1 - m0, x + static_cast<size_t>(m0) * C + g * Cg, C, out, inner);
        return;
      }
      thread_local std::vector<int8_t> col;
      if (col.size() < static_cast<size_t>(tile_rows) * K)
        col.resize(static_cast<size_t>(tile_rows) * K);
      if (use_pad) {
        im2col_padded(pad, hp, wp, m0, m1, col.data());
      } else {
        im2col(x, g, m0, m1, col.data());
      }
      run_matrix(g, m1 - m0, col.data(), K, out, inner);
    };
    if (by_tile) {
      parallel(tasks, threads, task);
    } else {
      for (int t = 0; t < tasks; ++t) task(t);
    }
  }

  void run_depthwise(const int8_t* x, int8_t* y, int threads) {
    const int rows = N * OH;
    const int ntask =
        std::min(rows, task_count(static_cast<size_t>(rows) * OW * O * KH * KW, 1 << 15));
    parallel(ntask, threads, [&](int t) {
      thread_local std::vector<int32_t> accv;
      if (accv.size() < static_cast<size_t>(O)) accv.resize(O);
      depthwise_rows(x, y, rows * t / ntask, rows * (t + 1) / ntask, accv.data());
    });
  }

 public:
  bool avx2 = false;  // the vector twin of the scalar taps and output stage (x86 AVX2)
  const char* dw_kernel = "s8_dwconv_direct__generic";
  bool conv1ch = false;  // one input channel, O = 32k outputs: conv1ch_pixel_avx512 (x86)
#ifdef EO_RUNTIME_AVX2
  DwPacked16 dw16;  // 16-bit pair-of-taps weights (AVX2, channel multiplier 1, C >= 16)
  DwPacked32 dw32;  // the same in blocks of 32 channels (AVX-512 VNNI, C >= 32)
  bool avx512 = false;

  void pack_dw32() {
    if (!avx512 || dw16.blocks < 2) return;
    pack32((C + 31) / 32);
    DwPacked32& pk = dw32;
    pk.channels = C;
    const int T = KH * KW;
    pk.bias_x.assign(pk.bias.size(), 0);
    for (int b = 0; b < pk.blocks; ++b) {
      for (int j = 0; j < 32; ++j) {
        const int c = b * 32 + dw_perm32(j);
        if (c >= C) continue;  // padding lanes: bias 0, multiplier 0
        int64_t sw = 0;
        for (int t = 0; t < T; ++t) sw += dw[static_cast<size_t>(t) * O + c];
        // Wraps like the int32 accumulator: the sum mod 2^32 is the reference's.
        pk.bias_x[b * 32 + j] =
            static_cast<int32_t>(static_cast<uint32_t>(st.bias[c]) -
                                 static_cast<uint32_t>(static_cast<int64_t>(st.in_zp) * sw));
      }
    }
    pack_fast();
  }
  // The fast output stage constants of dw32 (dw_block32, conv1ch_pixels_avx512).
  void pack_fast() {
    DwPacked32& pk = dw32;
    pk.fk.assign(static_cast<size_t>(pk.blocks) * 2 * 48, 0);
    pk.fast.assign(pk.blocks, 0);
    if (st.fp32) return;  // dw_stage's FP32 branch
    for (int b = 0; b < pk.blocks; ++b) {
      bool fast = true;
      for (int h = 0; h < 2; ++h)
        fast = fast &&
               dw_fast_consts(pk.mult.data() + b * 32 + h * 16, pk.shift.data() + b * 32 + h * 16,
                              st.out_zp, pk.fk.data() + (static_cast<size_t>(b) * 2 + h) * 48);
      pk.fast[b] = fast;
    }
  }

  // dw32 for `blocks` blocks of 32 channels (depthwise) or outputs (one input channel).
  void pack32(int blocks) {
    const int T = KH * KW;
    DwPacked32& pk = dw32;
    pk.blocks = blocks;
    pk.pairs = (T + 1) / 2;
    pk.w.assign(static_cast<size_t>(pk.blocks) * pk.pairs * 64, 0);
    pk.bias.resize(pk.blocks * 32);
    pk.mult.resize(pk.blocks * 32);
    pk.shift.resize(pk.blocks * 32);
    pk.fp32 = st.fp32;
    if (st.fp32) pk.fscale.assign(pk.blocks * 32, 1.0f);
    for (int b = 0; b < pk.blocks; ++b) {
      for (int j = 0; j < 32; ++j) {
        const int c = b * 32 + dw_perm32(j);
        const bool in = c < O;  // a partial last block: zero weights, multiplier 0, shift -1
        pk.bias[b * 32 + j] = in ? st.bias[c] : 0;
        pk.mult[b * 32 + j] = in && !st.fp32 ? st.multiplier[c] : 0;
        pk.shift[b * 32 + j] = in && !st.fp32 ? st.shift[c] : -1;
        if (st.fp32) pk.fscale[b * 32 + j] = in ? st.scale[c] : 1.0f;
      }
      for (int p = 0; p < pk.pairs; ++p) {
        int16_t* wp = pk.w.data() + (static_cast<size_t>(b) * pk.pairs + p) * 64;
        for (int half = 0; half < 2; ++half)
          for (int lane = 0; lane < 4; ++lane)
            for (int j = 0; j < 4; ++j) {
              const int c = b * 32 + lane * 8 + half * 4 + j;
              const int at = half * 32 + lane * 8 + j * 2;
              for (int u = 0; u < 2; ++u) {
                const int t = 2 * p + u;
                wp[at + u] = t < T && c < O ? dw[static_cast<size_t>(t) * O + c] : 0;
              }
            }
      }
    }
  }

  void pack_dw16() {
    const int T = KH * KW;
    if (!avx2 || O != C || C < 16 || T > kMaxDwTaps) return;
    DwPacked16& pk = dw16;
    pk.blocks = C / 16;
    pk.pairs = (T + 1) / 2;
    pk.w.assign(static_cast<size_t>(pk.blocks) * pk.pairs * 32, 0);
    pk.bias.resize(pk.blocks * 16);
    pk.mult.resize(pk.blocks * 16);
    pk.shift.resize(pk.blocks * 16);
    pk.zp_row.assign(C + 16, static_cast<int8_t>(st.in_zp));
    pk.fscale.assign(st.fp32 ? pk.blocks * 16 : 0, 0.0f);
    for (int b = 0; b < pk.blocks; ++b) {
      for (int j = 0; j < 16; ++j) {
        const int c = b * 16 + dw_perm(j);
        pk.bias[b * 16 + j] = st.bias[c];
        pk.mult[b * 16 + j] = st.fp32 ? 0 : st.multiplier[c];  // FP32: fscale instead
        pk.shift[b * 16 + j] = st.fp32 ? -1 : st.shift[c];
        if (st.fp32) pk.fscale[b * 16 + j] = st.scale[c];
      }
      for (int p = 0; p < pk.pairs; ++p) {
        int16_t* wp = pk.w.data() + (static_cast<size_t>(b) * pk.pairs + p) * 32;
        // wl: lane 0 channels 0-3, lane 1 channels 8-11; wh: 4-7 and 12-15; each (t0, t1).
        for (int half = 0; half < 2; ++half)
          for (int lane = 0; lane < 2; ++lane)
            for (int j = 0; j < 4; ++j) {
              const int c = b * 16 + lane * 8 + half * 4 + j;
              const int at = half * 16 + lane * 8 + j * 2;
              for (int u = 0; u < 2; ++u) {
                const int t = 2 * p + u;
                wp[at + u] = t < T ? dw[static_cast<size_t>(t) * O + c] : 0;
              }
            }
      }
    }
  }
#endif

 private:
  // Output rows [r0, r1) through the AVX-512 depthwise (or one-channel conv) kernel: the images
  // they need are copied once into a buffer padded with the input zero point (a zero-point tap
  // adds in_zp * w, which bias_x cancels exactly, like the reference's skipped tap), so every
  // window is whole and a pixel's taps sit at fixed offsets from its corner; pixels go 4 at a
  // time.
  void dw32_rows(const int8_t* x, int8_t* y, int r0, int r1) const {
#ifdef EO_RUNTIME_AVX2
    const int hp = padded_h(), wp = padded_w();
    const int n0 = r0 / OH, n1 = (r1 - 1) / OH + 1;
    const size_t img = static_cast<size_t>(hp) * wp * C;
    thread_local std::vector<int8_t> padded;
    if (padded.size() < img * (n1 - n0)) padded.resize(img * (n1 - n0));
    pad_images(x, n0, n1, hp, wp, padded.data());
    ptrdiff_t off[kMaxDwTaps + 1];
    const int T = KH * KW;
    for (int kh = 0; kh < KH; ++kh)
      for (int kw = 0; kw < KW; ++kw)
        off[kh * KW + kw] = (static_cast<ptrdiff_t>(kh) * DH * wp + kw * DW) * C;
    off[T] = 0;  // pairs an odd tap count: its weights are zero
    const int8_t* base[4];
    int8_t* outs[4];
    int np = 0;
    for (int r = r0; r < r1; ++r) {
      const int n = r / OH, oh = r % OH;
      const int8_t* row = padded.data() + (n - n0) * img + static_cast<size_t>(oh) * SH * wp * C;
      for (int ow = 0; ow < OW; ++ow) {
        base[np] = row + static_cast<size_t>(ow) * SW * C;
        outs[np] = y + (static_cast<size_t>(r) * OW + ow) * O;
        if (++np == 4) {
          // The fp32 / fixed-point stage is a template argument: one branch per 4 pixels,
          // and each instantiation keeps only its own stage's registers.
          if (conv1ch && dw32.fp32) {
            conv1ch_pixels_avx512<4, true>(base, off, dw32, st.in_zp, st.out_zp, st.qmin, st.qmax,
                                           outs);
          } else if (conv1ch) {
            conv1ch_pixels_avx512<4, false>(base, off, dw32, st.in_zp, st.out_zp, st.qmin, st.qmax,
                                            outs);
          } else if (dw32.fp32) {
            dw_pixels32_avx512<4, true>(base, off, dw32, st.out_zp, st.qmin, st.qmax, outs);
          } else {
            dw_pixels32_avx512<4, false>(base, off, dw32, st.out_zp, st.qmin, st.qmax, outs);
          }
          np = 0;
        }
      }
    }
    for (int q = 0; q < np; ++q) {
      if (conv1ch && dw32.fp32) {
        conv1ch_pixels_avx512<1, true>(base + q, off, dw32, st.in_zp, st.out_zp, st.qmin, st.qmax,
                                       outs + q);
      } else if (conv1ch) {
        conv1ch_pixels_avx512<1, false>(base + q, off, dw32, st.in_zp, st.out_zp, st.qmin, st.qmax,
                                        outs + q);
      } else if (dw32.fp32) {
        dw_pixels32_avx512<1, true>(base + q, off, dw32, st.out_zp, st.qmin, st.qmax, outs + q);
      } else {
        dw_pixels32_avx512<1, false>(base + q, off, dw32, st.out_zp, st.qmin, st.qmax, outs + q);
      }
    }
#else
    (void)x, (void)y, (void)r0, (void)r1;
#endif
  }

  // Output rows [r0, r1) (r = n * OH + oh); every parameter is a local so the channel loops
  // vectorize (no aliasing with the operator's members).
  void depthwise_rows(const int8_t* x, int8_t* y, int r0, int r1, int32_t* acc) const {
    const int o = O, c_in = C, mult = O / C, h = H, w = W, oh_n = OH, ow_n = OW;
    const int kh_n = KH, kw_n = KW, sh = SH, sw = SW, pt = PT, pl = PL, dh = DH, dwd = DW;
    const int32_t zp = st.in_zp;
    const int32_t* bias = st.bias.data();
    const int8_t* wts = dw.data();
#ifdef EO_RUNTIME_AVX2
    // The AVX-512 kernels (dw32, conv1ch) and dw_pixel16_avx2 compute either stage; dw_pixel_avx2
    // only the gemmlowp one: other FP32 stages take the tap loop at the end.
    if (conv1ch || (avx2 && mult == 1 && dw32.blocks > 0)) {
      dw32_rows(x, y, r0, r1);
      return;
    }
    // (FP32: only when the 16-channel blocks cover every channel; dw_pixel_avx2, which does the
    // rest, has the gemmlowp stage only.)
    if (avx2 && mult == 1 && dw16.blocks > 0 && (!st.fp32 || dw16.blocks * 16 == o)) {
      // Every tap of the window (plus one to pair an odd count); taps outside the image read a
      // row of zero points, which adds exactly 0 (AVX2 CPUs, 16 or more channels).
      constexpr int kS = kMaxDwTaps + 1;
      const int T = kh_n * kw_n;
      const int8_t* full[4 * kS];
      int8_t* outs[4];
      const int8_t* ws[kS];
      for (int t = 0; t < T; ++t) ws[t] = wts + static_cast<size_t>(t) * o;
      const int8_t* zrow = dw16.zp_row.data();
      auto flush = [&](int np) {
        for (int q = 0; q < np; ++q) {
          dw_pixel16_avx2(full + q * kS, dw16, zp, st.out_zp, st.qmin, st.qmax, outs[q]);
          if (dw16.blocks * 16 < o) {
            dw_pixel_avx2(full + q * kS, ws, T, bias, st.multiplier.data(), st.shift.data(), zp,
                          st.out_zp, st.qmin, st.qmax, outs[q], o, dw16.blocks * 16);
          }
        }
      };
      int np = 0;
      const int8_t* rows[kMaxDwTaps];  // per kernel row: the input row, or nullptr outside
      const size_t step = static_cast<size_t>(dwd) * c_in;
      for (int r = r0; r < r1; ++r) {
        const int n = r / oh_n, oh = r % oh_n;
        for (int kh = 0; kh < kh_n; ++kh) {
          const int ih = oh * sh - pt + kh * dh;
          rows[kh] = ih >= 0 && ih < h ? x + static_cast<size_t>(n * h + ih) * w * c_in : nullptr;
        }
        for (int ow = 0; ow < ow_n; ++ow) {
          const int8_t** fp = full + np * kS;
          const int iw0 = ow * sw - pl;
          const bool cols_in = iw0 >= 0 && iw0 + (kw_n - 1) * dwd < w;
          int t = 0;
          for (int kh = 0; kh < kh_n; ++kh) {
            const int8_t* row = rows[kh];
            if (row == nullptr) {
              for (int kw = 0; kw < kw_n; ++kw) fp[t++] = zrow;
            } else if (cols_in) {  // the common case: the whole window row is in the image
              const int8_t* p = row + static_cast<size_t>(iw0) * c_in;
              for (int kw = 0; kw < kw_n; ++kw, p += step) fp[t++] = p;
            } else {
              for (int kw = 0; kw < kw_n; ++kw) {
                const int iw = iw0 + kw * dwd;
                fp[t++] = iw >= 0 && iw < w ? row + static_cast<size_t>(iw) * c_in : zrow;
              }
            }
          }
          fp[T] = zrow;
          outs[np] = y + (static_cast<size_t>(r) * ow_n + ow) * o;
          if (++np == 4) {
            flush(4);
            np = 0;
          }
        }
      }
      if (np) flush(np);
      return;
    }
    if (avx2 && mult == 1 && kh_n * kw_n <= 64 && !st.fp32) {
      const int8_t* xs[64];
      const int8_t* ws[64];
      for (int r = r0; r < r1; ++r) {
        const int n = r / oh_n, oh = r % oh_n;
        for (int ow = 0; ow < ow_n; ++ow) {
          int taps = 0;
          for (int kh = 0; kh < kh_n; ++kh) {
            const int ih = oh * sh - pt + kh * dh;
            if (ih < 0 || ih >= h) continue;
            for (int kw = 0; kw < kw_n; ++kw) {
              const int iw = ow * sw - pl + kw * dwd;
              if (iw < 0 || iw >= w) continue;
              xs[taps] = x + (static_cast<size_t>(n * h + ih) * w + iw) * c_in;
              ws[taps++] = wts + static_cast<size_t>(kh * kw_n + kw) * o;
            }
          }
          dw_pixel_avx2(xs, ws, taps, bias, st.multiplier.data(), st.shift.data(), zp, st.out_zp,
                        st.qmin, st.qmax, y + (static_cast<size_t>(r) * ow_n + ow) * o, o);
        }
      }
      return;
    }
#endif
    for (int r = r0; r < r1; ++r) {
      const int n = r / oh_n, oh = r % oh_n;
      for (int ow = 0; ow < ow_n; ++ow) {
        std::memcpy(acc, bias, sizeof(int32_t) * o);
        for (int kh = 0; kh < kh_n; ++kh) {
          const int ih = oh * sh - pt + kh * dh;
          if (ih < 0 || ih >= h) continue;
          for (int kw = 0; kw < kw_n; ++kw) {
            const int iw = ow * sw - pl + kw * dwd;
            if (iw < 0 || iw >= w) continue;
            const int8_t* xin = x + (static_cast<size_t>(n * h + ih) * w + iw) * c_in;
            const int8_t* wk = wts + static_cast<size_t>(kh * kw_n + kw) * o;
            if (mult == 1) {
#ifdef EO_RUNTIME_AVX2
              if (avx2) {
                dw_tap_avx2(acc, xin, wk, zp, o);
                continue;
              }
#endif
              dw_tap(acc, xin, wk, zp, o);
            } else {
              for (int c = 0; c < o; ++c)
                acc[c] = wrap_add(acc[c], (static_cast<int32_t>(xin[c / mult]) - zp) *
                                              static_cast<int32_t>(wk[c]));
            }
          }
        }
        int8_t* out = y + (static_cast<size_t>(r) * ow_n + ow) * o;
        if (st.fp32) {
          requantize_fp32_s8(o, acc, st.fparams(0), out);
        } else {
          requantize_any(avx2, acc, st.multiplier.data(), st.shift.data(), true, st.out_zp, st.qmin,
                         st.qmax, out, o);
        }
      }
    }
  }
};

std::unique_ptr<Op> build_conv(Build& b) {
  auto op = std::make_unique<Conv2DS8>();
  static_cast<ConvGeometry&>(*op) = read_conv_geometry(b, DType::kS8);
  const Tensor& x = b.tensor(b.input(0));
  b.check_output(0, DType::kS8, {op->N, op->OH, op->OW, op->O});
  b.require(b.op().activation() == eom::Activation_NONE,
            "an int8 operator's activation is its clamp (int8.qmin / qmax); got activation ",
            static_cast<int>(b.op().activation()));
  op->st = read_channel_stage(b, op->O, x, b.tensor(b.output(0)));
  op->avx2 = use_avx2();
#ifdef EO_RUNTIME_AVX2
  op->conv1ch = (available_paths() & kAvx512Vnni) != 0 && op->C == 1 && op->G == 1 &&
                !op->pointwise && op->O % 32 == 0 && op->KH * op->KW <= kMaxDwTaps &&
                b.op().weight()->format() == eom::WeightFormat_DENSE;
#endif
  const bool direct = op->depthwise || op->conv1ch;
  op->weights = load_s8_weight(b, op->O, op->K, direct ? 1 : op->G, direct, !op->st.fp32);
  if (direct) {
    const int taps = op->KH * op->KW;
    op->dw.resize(static_cast<size_t>(taps) * op->O);
    for (int c = 0; c < op->O; ++c)
      for (int t = 0; t < taps; ++t)
        op->dw[static_cast<size_t>(t) * op->O + c] =
            op->weights.dense[static_cast<size_t>(c) * taps + t];
    op->weights = S8Weight();
  } else {
    for (const auto& m : op->weights.groups) m.prepack();
  }
#ifdef EO_RUNTIME_AVX2
  if (op->depthwise) {
    op->avx512 = (available_paths() & kAvx512Vnni) != 0;
    op->pack_dw16();
    op->pack_dw32();
  }
  if (op->depthwise && op->avx2)
    op->dw_kernel = op->dw32.blocks > 0 ? (op->st.fp32 ? "s8_dwconv_direct_fp32__avx512vnni"
                                                       : "s8_dwconv_direct__avx512vnni")
                    : op->st.fp32       ? "s8_dwconv_direct_fp32__avx2"
                                        : "s8_dwconv_direct__avx2";
  if (op->conv1ch) {
    op->avx512 = true;
    op->pack32(op->O / 32);
    op->pack_fast();
    op->dw_kernel =
        op->st.fp32 ? "s8_conv1ch_direct_fp32__avx512vnni" : "s8_conv1ch_direct__avx512vnni";
  }
#endif
  op->tile_rows = std::max(16, std::min(512, (32768 / std::max(1, op->K)) / 16 * 16));
  op->info.op = "conv2d";
  op->info.macs = static_cast<int64_t>(op->N) * op->OH * op->OW * op->O * op->K;
  return op;
}

// ---- Linear -----------------------------------------------------------------------------------

class LinearS8 : public Op {
 public:
  int M, K, N;
  ChannelStage st;
  S8Weight weights;
  KernelNote kernel_note;
  void run(RunContext& ctx) override {
    const int threads = op_threads(ctx.threads, info.macs);
    if (st.fp32) {
      weights.groups[0].run(M, ctx.get<int8_t>(inputs[0]), K, st.fparams(0),
                            ctx.get<int8_t>(outputs[0]), N, threads);
    } else {
      weights.groups[0].run(M, ctx.get<int8_t>(inputs[0]), K, st.params(0),
                            ctx.get<int8_t>(outputs[0]), N, threads);
    }
    kernel_note.note(info, "", [this] { return weights.groups[0].family(); });
  }
};

std::unique_ptr<Op> build_linear(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kS8);
  const eom::Weight* w = b.op().weight();
  b.require(w != nullptr, "has no weight");
  auto op = std::make_unique<LinearS8>();
  op->K = static_cast<int>(x.shape.back());
  op->N = w->n();
  b.require(op->N >= 1, "weight.n must be >= 1, got ", op->N);
  op->M = static_cast<int>(x.elements / op->K);
  std::vector<int64_t> out = x.shape;
  out.back() = op->N;
  b.check_output(0, DType::kS8, out);
  b.require(b.op().activation() == eom::Activation_NONE,
            "an int8 operator's activation is its clamp (int8.qmin / qmax); got activation ",
            static_cast<int>(b.op().activation()));
  op->st = read_channel_stage(b, op->N, x, b.tensor(b.output(0)));
  op->weights = load_s8_weight(b, op->N, op->K, 1, false, !op->st.fp32);
  op->weights.groups[0].prepack();
  op->info.op = "linear";
  op->info.macs = static_cast<int64_t>(op->M) * op->N * op->K;
  return op;
}

// ---- Pooling ----------------------------------------------------------------------------------

// out[c] = max over a rows x cols window (rows `ld` apart, cells C apart) of x[.., c].
// The max of a rows x cols window, channels [0, C) of pixels `stride` bytes apart (stride = C
// unless a vector kernel hands over its tail channels).
void max_window(const int8_t* __restrict x, int rows, int cols, size_t ld, int C,
                int8_t* __restrict out, int stride = -1) {
  const size_t px = static_cast<size_t>(stride < 0 ? C : stride);
  for (int c = 0; c < C; ++c) out[c] = -128;
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const int8_t* __restrict in = x + i * ld + j * px;
      for (int c = 0; c < C; ++c) out[c] = in[c] > out[c] ? in[c] : out[c];
    }
}

#ifdef EO_RUNTIME_AVX2
// max_window's vector twin: 32 channels per vpmaxsb (SSE2, the generic build's baseline, has no
// signed byte max), the tail scalar.
EO_AVX2 void max_window_avx2(const int8_t* __restrict x, int rows, int cols, size_t ld, int C,
                             int8_t* __restrict out) {
  int c = 0;
  for (; c + 32 <= C; c += 32) {
    __m256i m = _mm256_set1_epi8(-128);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j)
        m = _mm256_max_epi8(m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                   x + i * ld + static_cast<size_t>(j) * C + c)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), m);
  }
  for (; c + 16 <= C; c += 16) {
    __m128i m = _mm_set1_epi8(-128);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j)
        m = _mm_max_epi8(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(
                                x + i * ld + static_cast<size_t>(j) * C + c)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), m);
  }
  if (c < C) max_window(x + c, rows, cols, ld, C - c, out + c, C);
}
#endif

// acc[c] = sum over `rows` rows of C int8 values (restrict: the int8 input cannot alias the
// int32 sums, so the loop vectorizes).
void sum_rows(const int8_t* __restrict x, int rows, int C, int32_t* __restrict acc) {
  for (int c = 0; c < C; ++c) acc[c] = 0;
  for (int i = 0; i < rows; ++i) {
    const int8_t* __restrict in = x + static_cast<size_t>(i) * C;
    for (int c = 0; c < C; ++c) acc[c] += in[c];
  }
}

// TFLite's int8 average: sum / count rounded half away from zero (C division truncates).
inline int32_t rounded_average(int32_t acc, int32_t count) {
  const int32_t half = count / 2;
  return acc > 0 ? (acc + half) / count : (acc - half) / count;
}

class Pool2DS8 : public Op {
 public:
  bool is_max, count_include_pad, avx2 = false;
  int N, H, W, C, OH, OW, KH, KW, SH, SW, PT, PL, PB, PR;
  int32_t qmin = -128, qmax = 127;
  void run(RunContext& ctx) override {
    const int8_t* x = ctx.get<int8_t>(inputs[0]);
    int8_t* y = ctx.get<int8_t>(outputs[0]);
    const int rows = N * OH;
    const int tasks =
        std::min(rows, task_count(static_cast<size_t>(rows) * OW * C * KH * KW, 1 << 15));
    parallel(tasks, ctx.threads, [&](int t) {
      const int r0 = rows * t / tasks, r1 = rows * (t + 1) / tasks;
      thread_local std::vector<int32_t> accv;
      if (accv.size() < static_cast<size_t>(C)) accv.resize(C);
      int32_t* acc = accv.data();
      for (int r = r0; r < r1; ++r) {
        const int n = r / OH, oh = r % OH;
        const int hs = oh * SH - PT, he = std::min(hs + KH, H + PB);
        const int h0 = std::max(hs, 0), h1 = std::min(he, H);
        for (int ow = 0; ow < OW; ++ow) {
          const int ws = ow * SW - PL, we = std::min(ws + KW, W + PR);
          const int w0 = std::max(ws, 0), w1 = std::min(we, W);
          int8_t* out = y + (static_cast<size_t>(r) * OW + ow) * C;
          if (is_max) {
            const int8_t* win = x + (static_cast<size_t>(n * H + h0) * W + w0) * C;
#ifdef EO_RUNTIME_AVX2
            if (avx2) {
              max_window_avx2(win, h1 - h0, w1 - w0, static_cast<size_t>(W) * C, C, out);
            } else {
              max_window(win, h1 - h0, w1 - w0, static_cast<size_t>(W) * C, C, out);
            }
#else
            max_window(win, h1 - h0, w1 - w0, static_cast<size_t>(W) * C, C, out);
#endif
            if (qmin > -128 || qmax < 127) {  // a stage's narrower clamp (the exporter sets none)
              for (int c = 0; c < C; ++c)
                out[c] =
                    static_cast<int8_t>(std::min<int32_t>(std::max<int32_t>(out[c], qmin), qmax));
            }
          } else {
            for (int c = 0; c < C; ++c) acc[c] = 0;
            for (int ih = h0; ih < h1; ++ih)
              for (int iw = w0; iw < w1; ++iw) {
                const int8_t* in = x + (static_cast<size_t>(n * H + ih) * W + iw) * C;
                for (int c = 0; c < C; ++c) acc[c] += in[c];
              }
            const int count = count_include_pad ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0);
            for (int c = 0; c < C; ++c) {
              const int32_t v = rounded_average(acc[c], count);
              out[c] = static_cast<int8_t>(std::min(std::max(v, qmin), qmax));
            }
          }
        }
      }
    });
    info.kernel = is_max ? (avx2 ? "s8_maxpool_direct__avx2" : "s8_maxpool_direct__generic")
                         : "s8_avgpool_direct__generic";
  }
};

// Pools keep the input's quantization; a stage, when present, may only narrow the clamp.
void pool_clamp(const Build& b, const Tensor& x, const Tensor& y, int32_t* qmin, int32_t* qmax) {
  b.require(y.zero_point == x.zero_point && y.scale == x.scale, "output quantization (", y.scale,
            ", ", y.zero_point, ") must equal the input's (", x.scale, ", ", x.zero_point, ")");
  if (const eom::Int8Stage* s = b.op().int8()) {
    require_gemmlowp(b, *s);
    clamp_bounds(b, *s, qmin, qmax);
  }
}

std::unique_ptr<Op> build_pool(Build& b, bool is_max) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kS8);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC, got ", shape_str(x.shape));
  const auto* o = b.op().options_as_Pool2DOptions();
  b.require(o != nullptr, "needs Pool2DOptions");
  auto op = std::make_unique<Pool2DS8>();
  op->is_max = is_max;
  op->avx2 = use_avx2();
  op->count_include_pad = o->count_include_pad();
  op->N = static_cast<int>(x.shape[0]);
  op->H = static_cast<int>(x.shape[1]);
  op->W = static_cast<int>(x.shape[2]);
  op->C = static_cast<int>(x.shape[3]);
  const auto k = b.ints(o->kernel(), 2, 1, 1 << 14, "kernel");
  const auto s = b.ints(o->stride(), 2, 1, 1 << 14, "stride");
  const auto pad = b.ints(o->pad(), 4, 0, 1 << 14, "pad");
  op->KH = k[0], op->KW = k[1], op->SH = s[0], op->SW = s[1];
  op->PT = pad[0], op->PL = pad[1], op->PB = pad[2], op->PR = pad[3];
  b.require(pad[0] < k[0] && pad[2] < k[0] && pad[1] < k[1] && pad[3] < k[1],
            "padding must be smaller than the window (every window holds an input cell)");
  const int64_t ph = op->H + pad[0] + pad[2], pw = op->W + pad[1] + pad[3];
  b.require(ph >= k[0] && pw >= k[1], "the window does not fit the padded input");
  b.require(static_cast<int64_t>(k[0]) * k[1] <= (1 << 22), "the window is too large");
  op->OH = static_cast<int>((ph - k[0]) / s[0] + 1);
  op->OW = static_cast<int>((pw - k[1]) / s[1] + 1);
  b.require(static_cast<int64_t>(op->OH - 1) * s[0] - pad[0] < op->H &&
                static_cast<int64_t>(op->OW - 1) * s[1] - pad[1] < op->W,
            "the last window lies entirely in the padding");
  b.check_output(0, DType::kS8, {op->N, op->OH, op->OW, op->C});
  pool_clamp(b, x, b.tensor(b.output(0)), &op->qmin, &op->qmax);
  op->info.op = is_max ? "max_pool2d" : "avg_pool2d";
  return op;
}

// XNNPACK's int8 MEAN over H and W (an FP32 stage, format 1.4; TFLite's MEAN under LiteRT's
// delegate): y = clamp(rint(float32(float32(sum) * scale) + bias)) with the raw int32 sum (no zero
// point subtracted), scale = int8.scale[0] and bias = float32(z_out + float32(float32(-z_in * HW) *
// scale)) (optimizer.quantize.arithmetic.global_avg_pool_s8_fp32). The product is rounded to
// float32 before the add: the volatile store keeps a compiler from fusing them into one FMA.
inline int8_t mean_fp32_s8(int32_t sum, float scale, float bias, float lo, float hi) {
  volatile float product = static_cast<float>(sum) * scale;
  const float v = product + bias;
  return static_cast<int8_t>(std::nearbyint(std::min(std::max(v, lo), hi)));
}

class GlobalAvgPoolS8 : public Op {
 public:
  int N, HW, C;
  int32_t qmin = -128, qmax = 127;
  bool fp32 = false;
  float fp32_scale = 0.0f, fp32_bias = 0.0f;
  std::vector<int32_t> acc;
  void run(RunContext& ctx) override {
    const int8_t* x = ctx.get<int8_t>(inputs[0]);
    int8_t* y = ctx.get<int8_t>(outputs[0]);
    const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
    for (int n = 0; n < N; ++n) {
      sum_rows(x + static_cast<size_t>(n) * HW * C, HW, C, acc.data());
      int8_t* out = y + static_cast<size_t>(n) * C;
      if (fp32) {
        for (int c = 0; c < C; ++c) out[c] = mean_fp32_s8(acc[c], fp32_scale, fp32_bias, lo, hi);
      } else {
        for (int c = 0; c < C; ++c)
          out[c] = static_cast<int8_t>(std::min(std::max(rounded_average(acc[c], HW), qmin), qmax));
      }
    }
    info.kernel = fp32 ? "s8_global_mean_fp32__generic" : "s8_global_avgpool__generic";
  }
};

// An FP32 stage (XNNPACK's MEAN): one finite positive float32 scale, no multiplier / shift.
void read_mean_fp32_stage(const Build& b, const eom::Int8Stage& s, const Tensor& x, const Tensor& y,
                          GlobalAvgPoolS8* op) {
  b.require(s.multiplier() == nullptr && s.shift() == nullptr && s.input_scale() == nullptr,
            "an FP32 GLOBAL_AVG_POOL stage takes one int8.scale, not multiplier / shift / "
            "input_scale");
  const auto* v = s.scale();
  b.require(v != nullptr && v->size() == 1,
            "int8.scale of an FP32 GLOBAL_AVG_POOL must hold 1 float32");
  const float f = v->Get(0);
  b.require(std::isfinite(f) && f > 0.0f, "int8.scale[0] = ", f, " must be finite and > 0");
  same_zero_point(b, s.output_zero_point(), y, "output_zero_point");
  b.require(y.scale == x.scale, "output scale ", y.scale, " must equal the input's ", x.scale);
  clamp_bounds(b, s, &op->qmin, &op->qmax);
  op->fp32 = true;
  op->fp32_scale = f;
  const float zero = static_cast<float>(-static_cast<int64_t>(x.zero_point) * op->HW);
  volatile float zero_term = zero * f;  // rounded to float32 before the add (no FMA)
  op->fp32_bias = static_cast<float>(y.zero_point) + zero_term;
}

std::unique_ptr<Op> build_global_pool(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kS8);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC, got ", shape_str(x.shape));
  auto op = std::make_unique<GlobalAvgPoolS8>();
  op->N = static_cast<int>(x.shape[0]);
  b.require(x.shape[1] * x.shape[2] <= (1 << 22), "the image is too large to average in int32");
  op->HW = static_cast<int>(x.shape[1] * x.shape[2]);
  op->C = static_cast<int>(x.shape[3]);
  op->acc.assign(op->C, 0);
  b.check_output(0, DType::kS8, {x.shape[0], 1, 1, x.shape[3]});
  const Tensor& y = b.tensor(b.output(0));
  const eom::Int8Stage* s = b.op().int8();
  if (s != nullptr && s->requantization() == eom::Requantization_FP32) {
    read_mean_fp32_stage(b, *s, x, y, op.get());
  } else {
    pool_clamp(b, x, y, &op->qmin, &op->qmax);
  }
  op->info.op = "global_avg_pool";
  return op;
}

// ---- Elementwise ------------------------------------------------------------------------------

void broadcast_strides(const std::vector<int64_t>& shape, const std::vector<int64_t>& out,
                       int64_t* strides) {
  const int off = static_cast<int>(out.size() - shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(out.size()) - 1; i >= 0; --i) {
    const int j = i - off;
    strides[i] = (j < 0 || shape[j] == 1) ? 0 : s;
    if (j >= 0) s *= shape[j];
  }
}

class BinaryS8 : public Op {
 public:
  bool is_add = true;
  std::vector<int64_t> out_shape;
  int64_t sa[kMaxRank], sb[kMaxRank];
  size_t n = 0;
  bool same = false;
  // ADD: the rescaled inputs per int8 value (table[q + 128]), the output stage.
  int32_t ta[256], tb[256];
  int32_t za = 0, zb = 0;  // MUL: input zero points
  int32_t multiplier = 0, shift = 0, out_zp = 0, qmin = -128, qmax = 127;
  // FP32 ADD (XNNPACK's): ta / tb hold (q - z) * multiplier (ta also 2^(fp32_shift - 1)); the
  // output is (ta[a] + tb[b]) >> fp32_shift (arithmetic: rounds half up) + out_zp, clamped.
  bool fp32 = false;
  int fp32_shift = 0;
  int32_t fp32_ma = 0, fp32_mb = 0, fp32_bias = 0;  // the same as multipliers and a bias
  // FP32 MUL (XNNPACK's): the product through the fp32 output stage with one scale.
  bool fp32_mul = false;
  float fp32_scale = 0.0f;

  bool avx2 = false;

  // The int32 value before the output stage (ADD: the rescaled sum; MUL: the product).
  inline int32_t add_acc(int8_t a, int8_t b) const {
    return static_cast<int32_t>(static_cast<uint32_t>(ta[a + 128]) +
                                static_cast<uint32_t>(tb[b + 128]));
  }
  inline int32_t mul_acc(int8_t a, int8_t b) const {
    return (static_cast<int32_t>(a) - za) * (static_cast<int32_t>(b) - zb);
  }

  EltParams elt{};      // the same parameters for the vector kernels
  bool avx512 = false;  // AVX-512 VNNI available: 16-lane lines

  // y[i] = stage(fn(a[i * ia], b[i * ib])) for i < len, in chunks through an int32 buffer.
  template <typename Fn>
  void run_line(const int8_t* a, int64_t ia, const int8_t* b, int64_t ib, int8_t* y, int64_t len,
                Fn fn) const {
    if (fp32_mul) {
      QS8Fp32Params fp;
      fp.scale = &fp32_scale;
      fp.per_channel = false;
      fp.output_zero_point = out_zp;
      fp.qmin = qmin;
      fp.qmax = qmax;
      int32_t buf[256];
      for (int64_t i0 = 0; i0 < len; i0 += 256) {
        const int cnt = static_cast<int>(std::min<int64_t>(256, len - i0));
        for (int i = 0; i < cnt; ++i) buf[i] = fn(a[(i0 + i) * ia], b[(i0 + i) * ib]);
        requantize_fp32_s8(cnt, buf, fp, y + i0);
      }
      return;
    }
    if (fp32) {
#ifdef EO_RUNTIME_AVX2
      if (avx2 && ia == 1 && ib == 1) {
        add_fp32_avx2(a, b, y, len, fp32_ma, fp32_mb, fp32_bias, fp32_shift, out_zp, qmin, qmax);
        return;
      }
#endif
      for (int64_t i = 0; i < len; ++i) {
        const int32_t v = (fn(a[i * ia], b[i * ib]) >> fp32_shift) + out_zp;
        y[i] = static_cast<int8_t>(std::min(std::max(v, qmin), qmax));
      }
      return;
    }
#ifdef EO_RUNTIME_AVX2
    if (avx2 && ia == 1 && ib == 1 && len <= std::numeric_limits<int>::max()) {
      if (avx512) {
        eltwise_avx512(is_add, a, b, y, static_cast<int>(len), elt);
      } else {
        eltwise_avx2(is_add, a, b, y, static_cast<int>(len), elt);
      }
      return;
    }
#endif
    int32_t buf[256];
    for (int64_t i0 = 0; i0 < len; i0 += 256) {
      const int cnt = static_cast<int>(std::min<int64_t>(256, len - i0));
      for (int i = 0; i < cnt; ++i) buf[i] = fn(a[(i0 + i) * ia], b[(i0 + i) * ib]);
      requantize_any(avx2, buf, &multiplier, &shift, false, out_zp, qmin, qmax, y + i0, cnt);
    }
  }

  template <typename Fn>
  void compute(const int8_t* a, const int8_t* b, int8_t* y, Fn fn) const {
    const int rank = static_cast<int>(out_shape.size());
    if (same) {
      run_line(a, 1, b, 1, y, static_cast<int64_t>(n), fn);
      return;
    }
    int64_t idx[kMaxRank] = {0};
    const int64_t inner = out_shape[rank - 1];
    const int64_t ia = sa[rank - 1], ib = sb[rank - 1];
    size_t o = 0;
    while (o < n) {
      int64_t oa = 0, ob = 0;
      for (int d = 0; d < rank - 1; ++d) {
        oa += idx[d] * sa[d];
        ob += idx[d] * sb[d];
      }
      run_line(a + oa, ia, b + ob, ib, y + o, inner, fn);
      o += inner;
      for (int d = rank - 2; d >= 0; --d) {
        if (++idx[d] < out_shape[d]) break;
        idx[d] = 0;
      }
    }
  }

  void run(RunContext& ctx) override {
    const int8_t* a = ctx.get<int8_t>(inputs[0]);
    const int8_t* b = ctx.get<int8_t>(inputs[1]);
    int8_t* y = ctx.get<int8_t>(outputs[0]);
    if (is_add) {
      compute(a, b, y, [this](int8_t u, int8_t v) { return add_acc(u, v); });
    } else {
      compute(a, b, y, [this](int8_t u, int8_t v) { return mul_acc(u, v); });
    }
    info.kernel = fp32_mul ? "s8_mul_fp32__generic"
                  : fp32   ? (avx2 ? "s8_add_fp32__avx2" : "s8_add_fp32__generic")
                  : is_add ? (avx512 ? "s8_add__avx512vnni"
                              : avx2 ? "s8_add__avx2"
                                     : "s8_add__generic")
                           : (avx512 ? "s8_mul__avx512vnni"
                              : avx2 ? "s8_mul__avx2"
                                     : "s8_mul__generic");
  }
};

// XNNPACK's int8 ADD from the float32 input-to-output scale ratios (input_scale[2]), as its
// parameter setup derives it: shift = 20 - exponent(max ratio), each multiplier the ratio times
// 2^shift rounded half to even (exact scaling in double, then nearbyint).
std::unique_ptr<Op> build_add_fp32(Build& b, const eom::Int8Stage& s, std::unique_ptr<BinaryS8> op,
                                   const Tensor& a, const Tensor& c, const Tensor& y,
                                   const std::vector<int64_t>& out) {
  b.require(s.multiplier() == nullptr && s.shift() == nullptr && s.input_multiplier() == nullptr &&
                s.input_shift() == nullptr,
            "an FP32 ADD stage takes int8.input_scale, not multipliers / shifts");
  b.require(s.scale() == nullptr || (s.scale()->size() == 1 && s.scale()->Get(0) == 1.0f),
            "int8.scale of an FP32 ADD must be absent or [1.0]");
  const auto* r = s.input_scale();
  b.require(r != nullptr && r->size() == 2,
            "int8.input_scale of an FP32 ADD must hold 2 float32 ratios (input / output scale)");
  float ratio[2];
  for (int i = 0; i < 2; ++i) {
    ratio[i] = r->Get(i);
    b.require(std::isfinite(ratio[i]) && ratio[i] >= 0x1.0p-10f && ratio[i] < 0x1.0p+8f,
              "int8.input_scale[", i, "] = ", ratio[i], " out of XNNPACK's range [2^-10, 2^8)");
  }
  const auto zps = int_vector(b, s.input_zero_points(), 2, -128, 127, "input_zero_points");
  same_zero_point(b, zps[0], a, "input_zero_points[0]");
  same_zero_point(b, zps[1], c, "input_zero_points[1]");
  op->out_zp = s.output_zero_point();
  same_zero_point(b, op->out_zp, y, "output_zero_point");
  clamp_bounds(b, s, &op->qmin, &op->qmax);
  int exponent = 0;
  std::frexp(std::max(ratio[0], ratio[1]), &exponent);  // max = m * 2^exponent, m in [0.5, 1)
  const int shift = 20 - (exponent - 1);                // in [12, 30]
  int32_t m[2];
  for (int i = 0; i < 2; ++i)
    m[i] = static_cast<int32_t>(std::nearbyint(std::ldexp(static_cast<double>(ratio[i]), shift)));
  for (int q = -128; q < 128; ++q) {
    op->ta[q + 128] = (q - zps[0]) * m[0] + (int32_t{1} << (shift - 1));
    op->tb[q + 128] = (q - zps[1]) * m[1];
  }
  op->fp32 = true;
  op->fp32_shift = shift;
  op->fp32_ma = m[0];
  op->fp32_mb = m[1];
  op->fp32_bias = (int32_t{1} << (shift - 1)) - m[0] * zps[0] - m[1] * zps[1];
  op->avx2 = use_avx2();
  op->out_shape = out;
  op->n = y.elements;
  op->same = a.shape == out && c.shape == out;
  broadcast_strides(a.shape, out, op->sa);
  broadcast_strides(c.shape, out, op->sb);
  op->info.op = "add";
  return op;
}

// XNNPACK's int8 MUL: the int32 product of the centred inputs through the fp32 output stage with
// one float32 scale (int8.scale[1]).
std::unique_ptr<Op> build_mul_fp32(Build& b, const eom::Int8Stage& s, std::unique_ptr<BinaryS8> op,
                                   const Tensor& a, const Tensor& c, const Tensor& y,
                                   const std::vector<int64_t>& out) {
  b.require(s.multiplier() == nullptr && s.shift() == nullptr && s.input_scale() == nullptr,
            "an FP32 MUL stage takes one int8.scale, not multiplier / shift / input_scale");
  const auto* v = s.scale();
  b.require(v != nullptr && v->size() == 1, "int8.scale of an FP32 MUL must hold 1 float32");
  const float f = v->Get(0);
  b.require(std::isfinite(f) && f > 0.0f, "int8.scale[0] = ", f, " must be finite and > 0");
  const auto zps = int_vector(b, s.input_zero_points(), 2, -128, 127, "input_zero_points");
  same_zero_point(b, zps[0], a, "input_zero_points[0]");
  same_zero_point(b, zps[1], c, "input_zero_points[1]");
  op->out_zp = s.output_zero_point();
  same_zero_point(b, op->out_zp, y, "output_zero_point");
  clamp_bounds(b, s, &op->qmin, &op->qmax);
  op->za = zps[0];
  op->zb = zps[1];
  op->fp32_mul = true;
  op->fp32_scale = f;
  op->out_shape = out;
  op->n = y.elements;
  op->same = a.shape == out && c.shape == out;
  broadcast_strides(a.shape, out, op->sa);
  broadcast_strides(c.shape, out, op->sb);
  op->info.op = "mul";
  return op;
}

std::unique_ptr<Op> build_binary(Build& b, bool is_add) {
  b.expect_inputs(2, 2);
  b.expect_outputs(1, 1);
  const Tensor& a = b.activation_in(0, DType::kS8);
  const Tensor& c = b.activation_in(1, DType::kS8);
  b.require(a.shape.size() <= kMaxRank && c.shape.size() <= kMaxRank, "rank above ", kMaxRank);
  b.require(b.op().activation() == eom::Activation_NONE,
            "an int8 operator's activation is its clamp (int8.qmin / qmax)");
  auto op = std::make_unique<BinaryS8>();
  op->is_add = is_add;
  op->avx2 = use_avx2();
  op->avx512 = op->avx2 && (available_paths() & kAvx512Vnni) != 0;
  const size_t rank = std::max(a.shape.size(), c.shape.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i + a.shape.size() >= rank ? a.shape[i + a.shape.size() - rank] : 1;
    const int64_t dc = i + c.shape.size() >= rank ? c.shape[i + c.shape.size() - rank] : 1;
    b.require(da == dc || da == 1 || dc == 1, "shapes ", shape_str(a.shape), " and ",
              shape_str(c.shape), " do not broadcast");
    out[i] = std::max(da, dc);
  }
  b.check_output(0, DType::kS8, out);
  const Tensor& y = b.tensor(b.output(0));
  const eom::Int8Stage& s = stage_of(b);
  if (s.requantization() != eom::Requantization_GEMMLOWP) {
    b.require(s.requantization() == eom::Requantization_FP32,
              "int8.requantization = ", static_cast<int>(s.requantization()),
              " is unknown; expected GEMMLOWP (0) or FP32 (1)");
    if (is_add) return build_add_fp32(b, s, std::move(op), a, c, y, out);
    return build_mul_fp32(b, s, std::move(op), a, c, y, out);
  }
  const auto zps = int_vector(b, s.input_zero_points(), 2, -128, 127, "input_zero_points");
  same_zero_point(b, zps[0], a, "input_zero_points[0]");
  same_zero_point(b, zps[1], c, "input_zero_points[1]");
  op->out_zp = s.output_zero_point();
  same_zero_point(b, op->out_zp, y, "output_zero_point");
  clamp_bounds(b, s, &op->qmin, &op->qmax);
  op->multiplier = multipliers(b, s.multiplier(), 1, "multiplier")[0];
  op->shift = int_vector(b, s.shift(), 1, -31, 30, "shift")[0];
  if (is_add) {
    const int left = s.left_shift();
    // (q - zp) << left_shift must fit int32 for every int8 q and zero point.
    b.require(left >= 0 && left <= 22, "int8.left_shift = ", left, " out of range [0, 22]");
    const auto im = multipliers(b, s.input_multiplier(), 2, "input_multiplier");
    const auto is = int_vector(b, s.input_shift(), 2, -31, 30, "input_shift");
    op->elt.left = left;
    op->elt.ma = im[0];
    op->elt.sa = is[0];
    op->elt.mb = im[1];
    op->elt.sb = is[1];
    for (int q = -128; q < 128; ++q) {
      op->ta[q + 128] =
          multiply_by_quantized_multiplier((q - zps[0]) * (int32_t{1} << left), im[0], is[0]);
      op->tb[q + 128] =
          multiply_by_quantized_multiplier((q - zps[1]) * (int32_t{1} << left), im[1], is[1]);
    }
  } else {
    op->za = zps[0];
    op->zb = zps[1];
  }
  op->elt.za = zps[0];
  op->elt.zb = zps[1];
  op->elt.mo = op->multiplier;
  op->elt.so = op->shift;
  op->elt.ozp = op->out_zp;
  op->elt.qmin = op->qmin;
  op->elt.qmax = op->qmax;
  op->out_shape = out;
  op->n = y.elements;
  op->same = a.shape == out && c.shape == out;
  broadcast_strides(a.shape, out, op->sa);
  broadcast_strides(c.shape, out, op->sb);
  op->info.op = is_add ? "add" : "mul";
  return op;
}

class LutS8 : public Op {
 public:
  int8_t table[256];
  size_t n = 0;
  void run(RunContext& ctx) override {
    const int8_t* x = ctx.get<int8_t>(inputs[0]);
    int8_t* y = ctx.get<int8_t>(outputs[0]);
    for (size_t i = 0; i < n; ++i) y[i] = table[x[i] + 128];
    info.kernel = "s8_lut__generic";
  }
};

std::unique_ptr<Op> build_lut(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kS8);
  b.check_output(0, DType::kS8, x.shape);
  const auto* o = b.op().options_as_LutOptions();
  b.require(o != nullptr, "needs LutOptions");
  b.require(o->table() != nullptr && o->table()->size() == 256,
            "LutOptions.table must have 256 int8 entries (table[q + 128]), got ",
            o->table() ? o->table()->size() : 0);
  auto op = std::make_unique<LutS8>();
  for (int i = 0; i < 256; ++i) op->table[i] = o->table()->Get(i);
  op->n = x.elements;
  op->info.op = "lut";
  return op;
}

// float -> int8 as torch / numpy: x / scale in float64, rounded half to even, plus the zero
// point, saturated; NaN gives the zero point. Adding and subtracting 1.5 * 2^52 rounds a double
// of magnitude below 2^51 to the nearest integer, ties to even (the default rounding mode; the
// build has no -ffast-math), the same as nearbyint, without a call per element: the quotient is
// first limited to +-2^20, which the int8 saturation cannot tell apart from a larger value.
void quantize_line(const float* __restrict x, int8_t* __restrict y, size_t n, double scale,
                   int32_t zp) {
  constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  const double z = static_cast<double>(zp);
  for (size_t i = 0; i < n; ++i) {
    double v = static_cast<double>(x[i]) / scale;
    const bool nan = !(v == v);
    v = v < -1048576.0 ? -1048576.0 : (v > 1048576.0 ? 1048576.0 : v);
    v = (v + kRound) - kRound + z;
    v = v < -128.0 ? -128.0 : (v > 127.0 ? 127.0 : v);
    y[i] = static_cast<int8_t>(nan ? static_cast<int32_t>(zp) : static_cast<int32_t>(v));
  }
}

#ifdef EO_RUNTIME_AVX2
// quantize_line on 8 doubles a lane group: the same IEEE operations in the same order (division,
// clamps, the 1.5 * 2^52 round-half-even, zero point), so the same bytes; NaN gives the zero point.
EO_AVX512 void quantize_line_avx512(const float* __restrict x, int8_t* __restrict y, size_t n,
                                    double scale, int32_t zp) {
  const __m512d sc = _mm512_set1_pd(scale), kr = _mm512_set1_pd(6755399441055744.0);
  const __m512d big = _mm512_set1_pd(1048576.0), nbig = _mm512_set1_pd(-1048576.0);
  const __m512d lo = _mm512_set1_pd(-128.0), hi = _mm512_set1_pd(127.0);
  const __m512d z = _mm512_set1_pd(static_cast<double>(zp));
  const __m256i zpv = _mm256_set1_epi32(zp);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m512d v = _mm512_div_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), sc);
    const __mmask8 nan = _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
    v = _mm512_min_pd(_mm512_max_pd(v, nbig), big);
    v = _mm512_add_pd(_mm512_sub_pd(_mm512_add_pd(v, kr), kr), z);
    v = _mm512_min_pd(_mm512_max_pd(v, lo), hi);
    const __m256i q = _mm256_mask_mov_epi32(_mm512_cvttpd_epi32(v), nan, zpv);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(y + i), _mm256_cvtepi32_epi8(q));
  }
  if (i < n) quantize_line(x + i, y + i, n - i, scale, zp);
}
#endif

class QuantizeOp : public Op {
 public:
  size_t n = 0;
  double scale = 1.0;
  int32_t zp = 0;
  bool avx512 = false;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    int8_t* y = ctx.get<int8_t>(outputs[0]);
#ifdef EO_RUNTIME_AVX2
    if (avx512) {
      quantize_line_avx512(x, y, n, scale, zp);
      info.kernel = "quantize__avx512vnni";
      return;
    }
#endif
    quantize_line(x, y, n, scale, zp);
    info.kernel = "quantize__generic";
  }
};

std::unique_ptr<Op> build_quantize(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  b.check_output(0, DType::kS8, x.shape);
  const Tensor& y = b.tensor(b.output(0));
  auto op = std::make_unique<QuantizeOp>();
  op->n = x.elements;
  op->scale = static_cast<double>(y.scale);
  op->zp = y.zero_point;
#ifdef EO_RUNTIME_AVX2
  op->avx512 = (available_paths() & kAvx512Vnni) != 0;
#endif
  op->info.op = "quantize";
  return op;
}

class DequantizeOp : public Op {
 public:
  size_t n = 0;
  double scale = 1.0;
  int32_t zp = 0;
  void run(RunContext& ctx) override {
    const int8_t* x = ctx.get<int8_t>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    for (size_t i = 0; i < n; ++i)
      y[i] = static_cast<float>((static_cast<double>(x[i]) - zp) * scale);
    info.kernel = "dequantize__generic";
  }
};

std::unique_ptr<Op> build_dequantize(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kS8);
  b.check_output(0, DType::kF32, x.shape);
  auto op = std::make_unique<DequantizeOp>();
  op->n = x.elements;
  op->scale = static_cast<double>(x.scale);
  op->zp = x.zero_point;
  op->info.op = "dequantize";
  return op;
}

// ---- Data movement (bytes: the quantization passes through unchanged) --------------------------

void same_quantization(const Build& b, const Tensor& x, const Tensor& y) {
  b.require(x.scale == y.scale && x.zero_point == y.zero_point, "tensor `", y.name,
            "` must keep the quantization (", x.scale, ", ", x.zero_point, ") of `", x.name,
            "`, got (", y.scale, ", ", y.zero_point, ")");
}

class ConcatS8 : public Op {
 public:
  size_t outer;
  std::vector<size_t> inner;
  void run(RunContext& ctx) override {
    int8_t* y = ctx.get<int8_t>(outputs[0]);
    size_t total = 0;
    for (size_t v : inner) total += v;
    size_t off = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const int8_t* x = ctx.get<int8_t>(inputs[i]);
      for (size_t o = 0; o < outer; ++o)
        std::memcpy(y + o * total + off, x + o * inner[i], inner[i]);
      off += inner[i];
    }
    info.kernel = "copy";
  }
};

std::unique_ptr<Op> build_concat(Build& b) {
  b.expect_inputs(1, 1 << 12);
  b.expect_outputs(1, 1);
  const auto* o = b.op().options_as_ConcatOptions();
  b.require(o != nullptr, "needs ConcatOptions");
  const Tensor& x0 = b.activation_in(0, DType::kS8);
  const int axis = normalize_axis(b, o->axis(), x0.shape.size());
  auto op = std::make_unique<ConcatS8>();
  std::vector<int64_t> out = x0.shape;
  out[axis] = 0;
  for (int i = 0; i < b.num_inputs(); ++i) {
    const Tensor& x = b.activation_in(i, DType::kS8);
    b.require(x.shape.size() == x0.shape.size(), "inputs must have the same rank");
    for (size_t d = 0; d < x.shape.size(); ++d) {
      b.require(static_cast<int>(d) == axis || x.shape[d] == x0.shape[d], "input ", i, " shape ",
                shape_str(x.shape), " differs from ", shape_str(x0.shape), " off the axis");
    }
    out[axis] += x.shape[axis];
    op->inner.push_back(product(x.shape, axis, x.shape.size()));
  }
  b.require(out[axis] <= std::numeric_limits<int32_t>::max(), "concatenated extent too large");
  b.check_output(0, DType::kS8, out);
  for (int i = 0; i < b.num_inputs(); ++i)
    same_quantization(b, b.tensor(b.input(i)), b.tensor(b.output(0)));
  op->outer = product(x0.shape, 0, axis);
  op->info.op = "concat";
  return op;
}

class SplitS8 : public Op {
 public:
  size_t outer, total;
  std::vector<size_t> inner;
  void run(RunContext& ctx) override {
    const int8_t* x = ctx.get<int8_t>(inputs[0]);
    size_t off = 0;
    for (size_t i = 0; i < outputs.size(); ++i) {
      int8_t* y = ctx.get<int8_t>(outputs[i]);
      for (size_t o = 0; o < outer; ++o)
        std::memcpy(y + o * inner[i], x + o * total + off, inner[i]);
      off += inner[i];
    }
    info.kernel = "copy";
  }
};

std::unique_ptr<Op> build_split(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1 << 12);
  const auto* o = b.op().options_as_SplitOptions();
  b.require(o != nullptr, "needs SplitOptions");
  const Tensor& x = b.activation_in(0, DType::kS8);
  const int axis = normalize_axis(b, o->axis(), x.shape.size());
  const auto sizes =
      b.ints(o->sizes(), b.num_outputs(), 1, std::numeric_limits<int32_t>::max(), "sizes");
  auto op = std::make_unique<SplitS8>();
  int64_t sum = 0;
  const size_t trailing = product(x.shape, axis + 1, x.shape.size());
  for (int i = 0; i < b.num_outputs(); ++i) {
    std::vector<int64_t> s = x.shape;
    s[axis] = sizes[i];
    sum += sizes[i];
    b.require(sum <= x.shape[axis], "sizes add up to more than the axis extent ", x.shape[axis]);
    b.check_output(i, DType::kS8, s);
    same_quantization(b, x, b.tensor(b.output(i)));
    op->inner.push_back(static_cast<size_t>(sizes[i]) * trailing);
  }
  b.require(sum == x.shape[axis], "sizes add up to ", sum, ", the axis extent is ", x.shape[axis]);
  op->outer = product(x.shape, 0, axis);
  op->total = product(x.shape, axis, x.shape.size());
  op->info.op = "split";
  return op;
}

class ReshapeS8 : public Op {
 public:
  void run(RunContext&) override { info.kernel = "alias"; }
  bool aliases_input() const override { return true; }
};

std::unique_ptr<Op> build_reshape(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kS8);
  const Tensor& y = b.tensor(b.output(0));
  b.require(y.dtype == DType::kS8, "output must be int8");
  b.require(y.elements == x.elements, "output ", shape_str(y.shape), " holds ", y.elements,
            " elements, the input ", shape_str(x.shape), " ", x.elements);
  same_quantization(b, x, y);
  auto op = std::make_unique<ReshapeS8>();
  op->info.op = "reshape";
  op->info.kernel = "alias";
  return op;
}

class UpsampleS8 : public Op {
 public:
  int N, H, W, C, SH, SW;
  void run(RunContext& ctx) override {
    const int8_t* x = ctx.get<int8_t>(inputs[0]);
    int8_t* y = ctx.get<int8_t>(outputs[0]);
    const int OH = H * SH, OW = W * SW;
    for (int n = 0; n < N; ++n)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow)
          std::memcpy(y + (static_cast<size_t>(n * OH + oh) * OW + ow) * C,
                      x + (static_cast<size_t>(n * H + oh / SH) * W + ow / SW) * C, C);
    info.kernel = "copy";
  }
};

std::unique_ptr<Op> build_upsample(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kS8);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC");
  const auto* o = b.op().options_as_UpsampleOptions();
  b.require(o != nullptr, "needs UpsampleOptions");
  const auto s = b.ints(o->scale(), 2, 1, 1 << 10, "scale");
  auto op = std::make_unique<UpsampleS8>();
  op->N = static_cast<int>(x.shape[0]);
  op->H = static_cast<int>(x.shape[1]);
  op->W = static_cast<int>(x.shape[2]);
  op->C = static_cast<int>(x.shape[3]);
  op->SH = s[0];
  op->SW = s[1];
  b.check_output(0, DType::kS8, {x.shape[0], x.shape[1] * s[0], x.shape[2] * s[1], x.shape[3]});
  same_quantization(b, x, b.tensor(b.output(0)));
  op->info.op = "upsample_nearest";
  return op;
}

}  // namespace

bool is_s8_op(const Build& b) {
  switch (b.op().type()) {
    case eom::OpType_QUANTIZE:
    case eom::OpType_DEQUANTIZE:
    case eom::OpType_LUT: return true;
    case eom::OpType_TRANSPOSE: return false;  // the generic transpose moves any element size
    default: break;
  }
  for (int t : b.inputs())
    if (b.tensor(t).dtype == DType::kS8) return true;
  for (int t : b.outputs())
    if (b.tensor(t).dtype == DType::kS8) return true;
  return false;
}

std::unique_ptr<Op> build_s8_op(Build& b) {
  switch (b.op().type()) {
    case eom::OpType_CONV2D: return build_conv(b);
    case eom::OpType_LINEAR: return build_linear(b);
    case eom::OpType_MAX_POOL2D: return build_pool(b, true);
    case eom::OpType_AVG_POOL2D: return build_pool(b, false);
    case eom::OpType_GLOBAL_AVG_POOL: return build_global_pool(b);
    case eom::OpType_ADD: return build_binary(b, true);
    case eom::OpType_MUL: return build_binary(b, false);
    case eom::OpType_CONCAT: return build_concat(b);
    case eom::OpType_SPLIT: return build_split(b);
    case eom::OpType_RESHAPE: return build_reshape(b);
    case eom::OpType_UPSAMPLE_NEAREST: return build_upsample(b);
    case eom::OpType_QUANTIZE: return build_quantize(b);
    case eom::OpType_DEQUANTIZE: return build_dequantize(b);
    case eom::OpType_LUT: return build_lut(b);
    default:
      b.error(
          "has int8 tensors, but this operator type has no int8 kernel (int8 operators: conv2d, "
          "linear, max/avg/global pooling, add, mul, concat, split, reshape, transpose, "
          "upsample_nearest, quantize, dequantize, lut)");
  }
}

}  // namespace runtime
}  // namespace edgeopt
