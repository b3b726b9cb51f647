// The fp32 operators: builders that check every shape and option, and their kernels (NHWC).
//
// Convolutions run as GEMMs on the project's packed fp32 kernels (dense, block-sparse or
// codebook weights): 1x1 stride-1 convolutions multiply the NHWC input in place, others go
// through im2col in row tiles of a fixed size, so the result does not depend on the thread count
// (a tile is computed by one thread with the same kernel whatever the split). Depthwise
// convolutions are direct loops over the channel vector.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dispatch/threadpool.h"
#include "edgeopt/gemm.h"
#include "edgeopt/path.h"
#include "edgeopt/sparse.h"
#include "runtime/build.h"

namespace edgeopt {
namespace runtime {
namespace {

using eom::Activation;

constexpr int kMaxRank = 6;

// Runs fn(task) for every task, on the pool when there is more than one thread and task.
void parallel(int tasks, int threads, const std::function<void(int)>& fn) {
  if (threads <= 1 || tasks <= 1) {
    for (int t = 0; t < tasks; ++t) fn(t);
    return;
  }
  ThreadPool::instance().run(tasks, threads, fn);
}

// Threads worth waking for an operator of `macs` multiply-adds: below a few microseconds of work
// per thread the pool's hand-off costs more than it saves (batch-1 layers of small models). The
// split never changes results (fixed tiles, column blocks), so this changes timing only.
constexpr int64_t kMinMacsPerThread = 200000;
int op_threads(int threads, int64_t macs) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(threads, macs / kMinMacsPerThread)));
}

// Splits `n` items into at most ~64 tasks of at least `min_items` each (elementwise work).
int task_count(size_t n, size_t min_items) {
  return static_cast<int>(
      std::max<size_t>(1, std::min<size_t>(64, n / std::max<size_t>(1, min_items))));
}

// ---- Activations ------------------------------------------------------------------------------

float apply_act(Activation a, float x) {
  switch (a) {
    case Activation::Activation_NONE: return x;
    case Activation::Activation_RELU: return x > 0.0f ? x : 0.0f;
    case Activation::Activation_RELU6: return std::min(std::max(x, 0.0f), 6.0f);
    case Activation::Activation_HARDSWISH:
      return x * std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f;
    case Activation::Activation_SILU: return x / (1.0f + std::exp(-x));
    case Activation::Activation_GELU: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Activation::Activation_GELU_TANH: {
      const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + std::tanh(inner));
    }
    case Activation::Activation_SIGMOID: return 1.0f / (1.0f + std::exp(-x));
    case Activation::Activation_TANH: return std::tanh(x);
    case Activation::Activation_HARDSIGMOID: return std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f;
  }
  return x;
}

const char* act_name(Activation a) {
  switch (a) {
    case Activation::Activation_NONE: return "identity";
    case Activation::Activation_RELU: return "relu";
    case Activation::Activation_RELU6: return "relu6";
    case Activation::Activation_HARDSWISH: return "hardswish";
    case Activation::Activation_SILU: return "silu";
    case Activation::Activation_GELU: return "gelu";
    case Activation::Activation_GELU_TANH: return "gelu_tanh";
    case Activation::Activation_SIGMOID: return "sigmoid";
    case Activation::Activation_TANH: return "tanh";
    case Activation::Activation_HARDSIGMOID: return "hardsigmoid";
  }
  return "?";
}

Activation check_act(const Build& b) {
  const Activation a = b.op().activation();
  b.require(a >= Activation::Activation_MIN && a <= Activation::Activation_MAX,
            "unknown activation ", static_cast<int>(a));
  return a;
}

// Applies a non-clamp activation to n floats in place (ReLU / ReLU6 are fused as a clamp).
void act_inplace(Activation a, float* y, size_t n) {
  if (a == Activation::Activation_NONE) return;
  for (size_t i = 0; i < n; ++i) y[i] = apply_act(a, y[i]);
}

bool is_clamp(Activation a) {
  return a == Activation::Activation_NONE || a == Activation::Activation_RELU ||
         a == Activation::Activation_RELU6;
}

F32Params clamp_params(Activation a, const float* bias) {
  F32Params p;
  p.bias = bias;
  if (a == Activation::Activation_RELU) p.min = 0.0f;
  if (a == Activation::Activation_RELU6) {
    p.min = 0.0f;
    p.max = 6.0f;
  }
  return p;
}

// Activation over [rows, cols] with rows `ld` apart, in parallel.
void act_rows(Activation a, float* y, size_t rows, size_t cols, size_t ld, int threads) {
  if (is_clamp(a)) return;
  const int tasks = task_count(rows * cols, 1 << 14);
  parallel(tasks, threads, [&](int t) {
    const size_t r0 = rows * t / tasks, r1 = rows * (t + 1) / tasks;
    for (size_t r = r0; r < r1; ++r) act_inplace(a, y + r * ld, cols);
  });
}

// ---- Weights ----------------------------------------------------------------------------------

// One [n, k] fp32 weight matrix in the kernel format the file chose.
struct F32Matrix {
  int n = 0, k = 0;
  std::unique_ptr<PackedF32> dense;
  std::unique_ptr<PackedBsrF32> bsr;
  std::unique_ptr<PackedCodebookF32> codebook;

  void run(int m, const float* a, size_t lda, const F32Params& p, float* out, size_t ldo,
           int threads) const {
    if (dense)
      linear_f32(m, a, lda, *dense, p, out, ldo, threads);
    else if (bsr)
      linear_f32(m, a, lda, *bsr, p, out, ldo, threads);
    else
      linear_f32(m, a, lda, *codebook, p, out, ldo, threads);
  }
  std::string family() const {
    if (dense) return "f32_gemm";
    if (bsr) return "f32_bsrgemm_b" + std::to_string(bsr->r()) + "x" + std::to_string(bsr->c());
    return "f32_cbgemm_i" + std::to_string(codebook->bits()) +
           (codebook->per_channel() ? "_pc" : "");
  }
};

// The weight of a conv / linear, decoded and checked, then packed per group: `groups` matrices
// of [n / groups, k]. Block-sparse and codebook weights keep their format when groups == 1.
struct WeightSet {
  std::vector<F32Matrix> groups;
  std::vector<float> dense;  // [n, k], kept only when a caller asks for the plain values
  eom::WeightFormat format = eom::WeightFormat_DENSE;
};

std::vector<float> decode_bsr(const Build& b, const eom::Weight& w, int n, int k, int* r_out,
                              int* c_out) {
  const auto block = b.ints(w.block(), 2, 1, 256, "weight.block");
  const int r = block[0], c = block[1];
  const int brs = (n + r - 1) / r, bcs = (k + c - 1) / c;
  const auto* row_ptr = reinterpret_cast<const int32_t*>(
      b.constant(w.row_ptr(), DType::kS32, brs + 1, "weight.row_ptr"));
  b.require(row_ptr[0] == 0, "weight.row_ptr[0] must be 0, got ", row_ptr[0]);
  for (int i = 0; i < brs; ++i) {
    b.require(row_ptr[i + 1] >= row_ptr[i], "weight.row_ptr must not decrease (at ", i + 1, ")");
  }
  const int64_t nnz = row_ptr[brs];
  b.require(nnz <= static_cast<int64_t>(brs) * bcs, "weight.row_ptr declares ", nnz,
            " blocks, more than the ", static_cast<int64_t>(brs) * bcs, " of the matrix");
  const auto* col =
      reinterpret_cast<const int32_t*>(b.constant(w.col_idx(), DType::kS32, nnz, "weight.col_idx"));
  const auto* values = reinterpret_cast<const float*>(
      b.constant(w.values(), DType::kF32, nnz * r * c, "weight.values (BSR blocks)"));
  std::vector<float> dense(static_cast<size_t>(n) * k, 0.0f);
  for (int br = 0; br < brs; ++br) {
    for (int j = row_ptr[br]; j < row_ptr[br + 1]; ++j) {
      b.require(col[j] >= 0 && col[j] < bcs, "weight.col_idx[", j, "] = ", col[j],
                " out of range [0, ", bcs, ")");
      b.require(j == row_ptr[br] || col[j] > col[j - 1], "weight.col_idx must increase within ",
                "block row ", br, " (at ", j, ")");
      const float* blk = values + static_cast<size_t>(j) * r * c;
      for (int rr = 0; rr < r && br * r + rr < n; ++rr) {
        for (int cc = 0; cc < c && col[j] * c + cc < k; ++cc) {
          dense[static_cast<size_t>(br * r + rr) * k + col[j] * c + cc] = blk[rr * c + cc];
        }
      }
    }
  }
  *r_out = r;
  *c_out = c;
  return dense;
}

// Codebook indices unpacked to one byte each, and the table [T, 2^bits].
std::vector<uint8_t> decode_codebook(const Build& b, const eom::Weight& w, int n, int k,
                                     const float** table, bool* per_channel, int* bits_out) {
  const int bits = w.bits();
  b.require(bits == 1 || bits == 2 || bits == 4 || bits == 8,
            "weight.bits must be 1, 2, 4 or 8, got ", bits);
  const int entries = 1 << bits;
  const size_t row_bytes = (static_cast<size_t>(k) * bits + 7) / 8;
  const uint8_t* packed =
      b.constant(w.indices(), DType::kU8, static_cast<int64_t>(row_bytes) * n, "weight.indices");
  *per_channel = w.per_channel_table();
  *table = reinterpret_cast<const float*>(
      b.constant(w.values(), DType::kF32, static_cast<int64_t>(*per_channel ? n : 1) * entries,
                 "weight.values (codebook table)"));
  std::vector<uint8_t> idx(static_cast<size_t>(n) * k);
  const int per_byte = 8 / bits;
  const int mask = entries - 1;
  for (int i = 0; i < n; ++i) {
    const uint8_t* row = packed + i * row_bytes;
    for (int j = 0; j < k; ++j) {
      idx[static_cast<size_t>(i) * k + j] =
          static_cast<uint8_t>((row[j / per_byte] >> ((j % per_byte) * bits)) & mask);
    }
  }
  *bits_out = bits;
  return idx;
}

// Reads, checks and packs the weight of a conv/linear: [n, k] split in `groups` row blocks.
WeightSet load_weight(const Build& b, int n, int k, int groups, bool keep_dense) {
  const eom::Weight* w = b.op().weight();
  b.require(w != nullptr, "has no weight");
  b.require(w->n() == n && w->k() == k, "weight is declared [", w->n(), ", ", w->k(),
            "], the operator needs [", n, ", ", k, "]");
  b.require(!has_inline_weight(*w),
            "inline weight fields (format 1.5) hold int8 weights only; a float operator's weight "
            "is in tensors");
  WeightSet ws;
  ws.format = w->format();
  std::vector<float> dense;
  const int ng = n / groups;
  if (w->format() == eom::WeightFormat_DENSE) {
    const auto* v = reinterpret_cast<const float*>(
        b.constant(w->values(), DType::kF32, static_cast<int64_t>(n) * k, "weight.values"));
    for (int g = 0; g < groups; ++g) {
      F32Matrix m;
      m.n = ng;
      m.k = k;
      m.dense = std::make_unique<PackedF32>(v + static_cast<size_t>(g) * ng * k, ng, k);
      ws.groups.push_back(std::move(m));
    }
    if (keep_dense) ws.dense.assign(v, v + static_cast<size_t>(n) * k);
    return ws;
  }
  if (w->format() == eom::WeightFormat_BSR) {
    int r = 0, c = 0;
    dense = decode_bsr(b, *w, n, k, &r, &c);
    if (groups == 1 && !keep_dense) {
      F32Matrix m;
      m.n = n;
      m.k = k;
      m.bsr = std::make_unique<PackedBsrF32>(dense.data(), n, k, r, c, /*strict=*/false);
      m.bsr->packed_for(bsr_path(r, c, false));
      ws.groups.push_back(std::move(m));
      return ws;
    }
  } else if (w->format() == eom::WeightFormat_CODEBOOK) {
    const float* table = nullptr;
    bool per_channel = false;
    int bits = 0;
    const auto idx = decode_codebook(b, *w, n, k, &table, &per_channel, &bits);
    if (groups == 1 && !keep_dense) {
      F32Matrix m;
      m.n = n;
      m.k = k;
      m.codebook = std::make_unique<PackedCodebookF32>(idx.data(), table, n, k, bits, per_channel);
      m.codebook->packed_for(codebook_path(bits, per_channel, false));
      ws.groups.push_back(std::move(m));
      return ws;
    }
    const int entries = 1 << bits;
    dense.resize(static_cast<size_t>(n) * k);
    for (int i = 0; i < n; ++i) {
      const float* t = table + (per_channel ? static_cast<size_t>(i) * entries : 0);
      for (int j = 0; j < k; ++j)
        dense[static_cast<size_t>(i) * k + j] = t[idx[static_cast<size_t>(i) * k + j]];
    }
  } else {
    b.error("unknown weight format " + std::to_string(static_cast<int>(w->format())));
  }
  for (int g = 0; g < groups; ++g) {
    F32Matrix m;
    m.n = ng;
    m.k = k;
    m.dense = std::make_unique<PackedF32>(dense.data() + static_cast<size_t>(g) * ng * k, ng, k);
    ws.groups.push_back(std::move(m));
  }
  if (keep_dense) ws.dense = std::move(dense);
  return ws;
}

std::vector<float> load_bias(const Build& b, int n) {
  if (b.op().bias() < 0) return std::vector<float>(n, 0.0f);
  const auto* v = reinterpret_cast<const float*>(b.constant(b.op().bias(), DType::kF32, n, "bias"));
  return std::vector<float>(v, v + n);
}

// Keeps the layer's kernel string in step with the ISA path that last ran.
void note_kernel(LayerInfo& info, const std::string& prefix, const std::string& family) {
  const std::string k = prefix + family + "__" + path_name(last_path());
  if (info.kernel != k) info.kernel = k;
}

// ---- Conv2D -----------------------------------------------------------------------------------

class Conv2D : public Op, public ConvGeometry {
 public:
  Activation act;
  WeightSet weights;
  std::vector<float> bias;
  std::vector<float> dw;  // depthwise: [KH * KW, O]
  int tile_rows = 64;

  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    if (depthwise) {
      run_depthwise(x, y, op_threads(ctx.threads, info.macs));
      info.kernel = "f32_dwconv_direct__generic";
    } else {
      run_gemm(x, y, op_threads(ctx.threads, info.macs));
      note_kernel(info, pointwise ? "" : "im2col+", weights.groups[0].family());
    }
    act_rows(act, y, static_cast<size_t>(N) * OH * OW, O, O, ctx.threads);
  }

 private:
  void im2col(const float* x, int g, int m0, int m1, float* col) const {
    const int plane = OH * OW;
    for (int m = m0; m < m1; ++m) {
      const int n = m / plane, rem = m % plane, oh = rem / OW, ow = rem % OW;
      float* dst = col + static_cast<size_t>(m - m0) * K;
      const int iw0 = ow * SW - PL;
      for (int kh = 0; kh < KH; ++kh) {
        const int ih = oh * SH - PT + kh * DH;
        // A kernel row inside the image is one contiguous run of KW * C floats (NHWC, no groups,
        // no dilation across the width): one copy instead of KW.
        if (DW == 1 && G == 1 && ih >= 0 && ih < H && iw0 >= 0 && iw0 + KW <= W) {
          std::memcpy(dst, x + (static_cast<size_t>(n * H + ih) * W + iw0) * C,
                      sizeof(float) * KW * C);
          dst += KW * C;
          continue;
        }
        for (int kw = 0; kw < KW; ++kw, dst += Cg) {
          const int iw = ow * SW - PL + kw * DW;
          if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
            std::memset(dst, 0, sizeof(float) * Cg);
          } else {
            std::memcpy(dst, x + (static_cast<size_t>(n * H + ih) * W + iw) * C + g * Cg,
                        sizeof(float) * Cg);
          }
        }
      }
    }
  }

  void run_gemm(const float* x, float* y, int threads) {
    const int M = N * OH * OW;
    const int tiles = (M + tile_rows - 1) / tile_rows;
    const int tasks = tiles * G;
    // Enough tiles: one tile per task, single-threaded kernel calls; else the kernel splits the
    // columns of each tile. Either way a tile is computed the same way, so results agree.
    const bool by_tile = threads > 1 && tasks >= 2 * threads;
    const int inner = by_tile ? 1 : threads;
    auto task = [&](int t) {
      const int tile = t / G, g = t % G;
      const int m0 = tile * tile_rows, m1 = std::min(M, m0 + tile_rows);
      const F32Params p = clamp_params(act, bias.data() + g * Og);
      float* out = y + static_cast<size_t>(m0) * O + g * Og;
      if (pointwise) {
        weights.groups[g].run(m1 - m0, x + static_cast<size_t>(m0) * C + g * Cg, C, p, out, O,
                              inner);
        return;
      }
      thread_local std::vector<float> col;
      if (col.size() < static_cast<size_t>(tile_rows) * K)
        col.resize(static_cast<size_t>(tile_rows) * K);
      im2col(x, g, m0, m1, col.data());
      weights.groups[g].run(m1 - m0, col.data(), K, p, out, O, inner);
    };
    if (by_tile) {
      parallel(tasks, threads, task);
    } else {
      for (int t = 0; t < tasks; ++t) task(t);
    }
  }

  void run_depthwise(const float* x, float* y, int threads) {
    const int mult = O / C;
    const F32Params p = clamp_params(act, nullptr);
    const int rows = N * OH;
    const int tasks = task_count(static_cast<size_t>(rows) * OW * O * KH * KW, 1 << 15);
    parallel(std::min(tasks, rows), threads, [&](int t) {
      const int ntask = std::min(tasks, rows);
      const int r0 = rows * t / ntask, r1 = rows * (t + 1) / ntask;
      for (int r = r0; r < r1; ++r) {
        const int n = r / OH, oh = r % OH;
        for (int ow = 0; ow < OW; ++ow) {
          float* __restrict acc = y + (static_cast<size_t>(r) * OW + ow) * O;
          std::memcpy(acc, bias.data(), sizeof(float) * O);
          for (int kh = 0; kh < KH; ++kh) {
            const int ih = oh * SH - PT + kh * DH;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
              const int iw = ow * SW - PL + kw * DW;
              if (iw < 0 || iw >= W) continue;
              const float* __restrict xin = x + (static_cast<size_t>(n * H + ih) * W + iw) * C;
              const float* __restrict wk = dw.data() + static_cast<size_t>(kh * KW + kw) * O;
              if (mult == 1) {
                for (int c = 0; c < O; ++c) acc[c] += xin[c] * wk[c];
              } else {
                for (int c = 0; c < O; ++c) acc[c] += xin[c / mult] * wk[c];
              }
            }
          }
          for (int c = 0; c < O; ++c) acc[c] = std::min(std::max(acc[c], p.min), p.max);
        }
      }
    });
  }
};

std::unique_ptr<Op> build_conv(Build& b) {
  auto op = std::make_unique<Conv2D>();
  static_cast<ConvGeometry&>(*op) = read_conv_geometry(b, DType::kF32);
  b.check_output(0, DType::kF32, {op->N, op->OH, op->OW, op->O});
  op->act = check_act(b);
  op->weights = load_weight(b, op->O, op->K, op->depthwise ? 1 : op->G, op->depthwise);
  op->bias = load_bias(b, op->O);
  if (op->depthwise) {
    const int taps = op->KH * op->KW;
    op->dw.resize(static_cast<size_t>(taps) * op->O);
    for (int c = 0; c < op->O; ++c)
      for (int t = 0; t < taps; ++t)
        op->dw[static_cast<size_t>(t) * op->O + c] =
            op->weights.dense[static_cast<size_t>(c) * taps + t];
    op->weights = WeightSet();
  }
  // Tiles of about 64 KiB of im2col rows (a multiple of 16 rows), fixed per layer.
  op->tile_rows = std::max(16, std::min(512, (16384 / std::max(1, op->K)) / 16 * 16));
  op->info.op = "conv2d";
  op->info.macs = static_cast<int64_t>(op->N) * op->OH * op->OW * op->O * op->K;
  return op;
}

// ---- Linear -----------------------------------------------------------------------------------

class Linear : public Op {
 public:
  int M, K, N;
  Activation act;
  WeightSet weights;
  std::vector<float> bias;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    weights.groups[0].run(M, x, K, clamp_params(act, bias.data()), y, N,
                          op_threads(ctx.threads, info.macs));
    note_kernel(info, "", weights.groups[0].family());
    act_rows(act, y, M, N, N, ctx.threads);
  }
};

std::unique_ptr<Op> build_linear(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  const eom::Weight* w = b.op().weight();
  b.require(w != nullptr, "has no weight");
  auto op = std::make_unique<Linear>();
  op->K = static_cast<int>(x.shape.back());
  op->N = w->n();
  b.require(op->N >= 1, "weight.n must be >= 1, got ", op->N);
  op->M = static_cast<int>(x.elements / op->K);
  std::vector<int64_t> out = x.shape;
  out.back() = op->N;
  b.check_output(0, DType::kF32, out);
  op->act = check_act(b);
  op->weights = load_weight(b, op->N, op->K, 1, false);
  op->bias = load_bias(b, op->N);
  op->info.op = "linear";
  op->info.macs = static_cast<int64_t>(op->M) * op->N * op->K;
  return op;
}

// ---- Pooling ----------------------------------------------------------------------------------

class Pool2D : public Op {
 public:
  bool is_max;
  bool count_include_pad;
  int N, H, W, C, OH, OW, KH, KW, SH, SW, PT, PL, PB, PR;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    const int rows = N * OH;
    const int tasks =
        std::min(rows, task_count(static_cast<size_t>(rows) * OW * C * KH * KW, 1 << 15));
    parallel(tasks, ctx.threads, [&](int t) {
      const int r0 = rows * t / tasks, r1 = rows * (t + 1) / tasks;
      for (int r = r0; r < r1; ++r) {
        const int n = r / OH, oh = r % OH;
        const int hs = oh * SH - PT, he = std::min(hs + KH, H + PB);
        const int h0 = std::max(hs, 0), h1 = std::min(he, H);
        for (int ow = 0; ow < OW; ++ow) {
          const int ws = ow * SW - PL, we = std::min(ws + KW, W + PR);
          const int w0 = std::max(ws, 0), w1 = std::min(we, W);
          float* out = y + (static_cast<size_t>(r) * OW + ow) * C;
          if (is_max) {
            for (int c = 0; c < C; ++c) out[c] = -std::numeric_limits<float>::infinity();
            for (int ih = h0; ih < h1; ++ih)
              for (int iw = w0; iw < w1; ++iw) {
                const float* in = x + (static_cast<size_t>(n * H + ih) * W + iw) * C;
                for (int c = 0; c < C; ++c) out[c] = std::max(out[c], in[c]);
              }
          } else {
            for (int c = 0; c < C; ++c) out[c] = 0.0f;
            for (int ih = h0; ih < h1; ++ih)
              for (int iw = w0; iw < w1; ++iw) {
                const float* in = x + (static_cast<size_t>(n * H + ih) * W + iw) * C;
                for (int c = 0; c < C; ++c) out[c] += in[c];
              }
            const int count = count_include_pad ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0);
            const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.0f;
            for (int c = 0; c < C; ++c) out[c] *= inv;
          }
        }
      }
    });
    info.kernel = is_max ? "f32_maxpool_direct__generic" : "f32_avgpool_direct__generic";
  }
};

std::unique_ptr<Op> build_pool(Build& b, bool is_max) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC, got ", shape_str(x.shape));
  const auto* o = b.op().options_as_Pool2DOptions();
  b.require(o != nullptr, "needs Pool2DOptions");
  auto op = std::make_unique<Pool2D>();
  op->is_max = is_max;
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
  op->OH = static_cast<int>((ph - k[0]) / s[0] + 1);
  op->OW = static_cast<int>((pw - k[1]) / s[1] + 1);
  // Every window must start inside the padded input and hold at least one real cell.
  b.require(static_cast<int64_t>(op->OH - 1) * s[0] - pad[0] < op->H &&
                static_cast<int64_t>(op->OW - 1) * s[1] - pad[1] < op->W,
            "the last window lies entirely in the padding");
  b.check_output(0, DType::kF32, {op->N, op->OH, op->OW, op->C});
  op->info.op = is_max ? "max_pool2d" : "avg_pool2d";
  return op;
}

class GlobalAvgPool : public Op {
 public:
  int N, HW, C;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    const float inv = 1.0f / static_cast<float>(HW);
    for (int n = 0; n < N; ++n) {
      float* out = y + static_cast<size_t>(n) * C;
      for (int c = 0; c < C; ++c) out[c] = 0.0f;
      for (int i = 0; i < HW; ++i) {
        const float* in = x + (static_cast<size_t>(n) * HW + i) * C;
        for (int c = 0; c < C; ++c) out[c] += in[c];
      }
      for (int c = 0; c < C; ++c) out[c] *= inv;
    }
    info.kernel = "f32_global_avgpool__generic";
  }
};

std::unique_ptr<Op> build_global_pool(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC, got ", shape_str(x.shape));
  auto op = std::make_unique<GlobalAvgPool>();
  op->N = static_cast<int>(x.shape[0]);
  op->HW = static_cast<int>(x.shape[1] * x.shape[2]);
  op->C = static_cast<int>(x.shape[3]);
  b.check_output(0, DType::kF32, {x.shape[0], 1, 1, x.shape[3]});
  op->info.op = "global_avg_pool";
  return op;
}

// ---- Elementwise ------------------------------------------------------------------------------

// Broadcast strides of `shape` against `out` (right-aligned, kMaxRank dims).
void broadcast_strides(const std::vector<int64_t>& shape, const std::vector<int64_t>& out,
                       int64_t* strides) {
  const int off = static_cast<int>(out.size() - shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(out.size()) - 1; i >= 0; --i) {
    const int j = i - off;
    if (j < 0 || shape[j] == 1) {
      strides[i] = 0;
    } else {
      strides[i] = s;
    }
    if (j >= 0) s *= shape[j];
  }
}

class Binary : public Op {
 public:
  eom::OpType type;
  Activation act;
  std::vector<int64_t> out_shape;
  int64_t sa[kMaxRank], sb[kMaxRank];
  size_t n = 0;
  bool same = false, b_scalar = false;

  template <typename Fn>
  void compute(const float* a, const float* b, float* y, Fn fn) const {
    const int rank = static_cast<int>(out_shape.size());
    if (same) {
      for (size_t i = 0; i < n; ++i) y[i] = fn(a[i], b[i]);
    } else if (b_scalar) {
      const float bv = b[0];
      for (size_t i = 0; i < n; ++i) y[i] = fn(a[i], bv);
    } else {
      // Odometer over the outer dims; the innermost dim runs with strides 0 or 1.
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
        const float* pa = a + oa;
        const float* pb = b + ob;
        float* py = y + o;
        if (ia == 1 && ib == 1) {
          for (int64_t i = 0; i < inner; ++i) py[i] = fn(pa[i], pb[i]);
        } else if (ia == 1 && ib == 0) {
          const float bv = pb[0];
          for (int64_t i = 0; i < inner; ++i) py[i] = fn(pa[i], bv);
        } else {
          for (int64_t i = 0; i < inner; ++i) py[i] = fn(pa[i * ia], pb[i * ib]);
        }
        o += inner;
        for (int d = rank - 2; d >= 0; --d) {
          if (++idx[d] < out_shape[d]) break;
          idx[d] = 0;
        }
      }
    }
  }
  void run(RunContext& ctx) override {
    const float* a = ctx.get<float>(inputs[0]);
    const float* b = ctx.get<float>(inputs[1]);
    float* y = ctx.get<float>(outputs[0]);
    switch (type) {
      case eom::OpType_ADD: compute(a, b, y, [](float u, float v) { return u + v; }); break;
      case eom::OpType_SUB: compute(a, b, y, [](float u, float v) { return u - v; }); break;
      case eom::OpType_MUL: compute(a, b, y, [](float u, float v) { return u * v; }); break;
      default: compute(a, b, y, [](float u, float v) { return u / v; }); break;
    }
    if (act == Activation::Activation_RELU) {
      for (size_t i = 0; i < n; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    } else if (act == Activation::Activation_RELU6) {
      for (size_t i = 0; i < n; ++i) y[i] = std::min(std::max(y[i], 0.0f), 6.0f);
    } else {
      act_inplace(act, y, n);
    }
    info.kernel = "f32_binary__generic";
  }
};

std::unique_ptr<Op> build_binary(Build& b, eom::OpType type) {
  b.expect_inputs(2, 2);
  b.expect_outputs(1, 1);
  const Tensor& a = b.any_in(0, DType::kF32);
  const Tensor& c = b.any_in(1, DType::kF32);
  b.require(a.constant == nullptr, "input 0 must be an activation (constants go second)");
  b.require(a.shape.size() <= kMaxRank && c.shape.size() <= kMaxRank, "rank above ", kMaxRank);
  auto op = std::make_unique<Binary>();
  op->type = type;
  op->act = check_act(b);
  const size_t rank = std::max(a.shape.size(), c.shape.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i + a.shape.size() >= rank ? a.shape[i + a.shape.size() - rank] : 1;
    const int64_t dc = i + c.shape.size() >= rank ? c.shape[i + c.shape.size() - rank] : 1;
    b.require(da == dc || da == 1 || dc == 1, "shapes ", shape_str(a.shape), " and ",
              shape_str(c.shape), " do not broadcast");
    out[i] = std::max(da, dc);
  }
  b.check_output(0, DType::kF32, out);
  op->out_shape = out;
  op->n = b.tensor(b.output(0)).elements;
  op->same = a.shape == out && c.shape == out;
  op->b_scalar = a.shape == out && c.elements == 1;
  broadcast_strides(a.shape, out, op->sa);
  broadcast_strides(c.shape, out, op->sb);
  const char* names[] = {"add", "sub", "mul", "div"};
  op->info.op = names[type - eom::OpType_ADD];
  return op;
}

class ActivationOp : public Op {
 public:
  Activation act;
  size_t n;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    const int tasks = task_count(n, 1 << 14);
    parallel(tasks, ctx.threads, [&](int t) {
      const size_t i0 = n * t / tasks, i1 = n * (t + 1) / tasks;
      for (size_t i = i0; i < i1; ++i) y[i] = apply_act(act, x[i]);
    });
    info.kernel = std::string("f32_") + act_name(act) + "__generic";
  }
};

std::unique_ptr<Op> build_activation(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  b.check_output(0, DType::kF32, x.shape);
  auto op = std::make_unique<ActivationOp>();
  op->act = check_act(b);
  op->n = x.elements;
  op->info.op = act_name(op->act);
  return op;
}

class ChannelAffine : public Op {
 public:
  Activation act;
  size_t rows;
  int C;
  std::vector<float> w, bias;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    for (size_t r = 0; r < rows; ++r)
      for (int c = 0; c < C; ++c) y[r * C + c] = apply_act(act, x[r * C + c] * w[c] + bias[c]);
    info.kernel = "f32_channel_affine__generic";
  }
};

std::unique_ptr<Op> build_affine(Build& b) {
  b.expect_inputs(3, 3);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  auto op = std::make_unique<ChannelAffine>();
  op->C = static_cast<int>(x.shape.back());
  op->rows = x.elements / op->C;
  const auto* w =
      reinterpret_cast<const float*>(b.constant(b.input(1), DType::kF32, op->C, "scale"));
  const auto* s =
      reinterpret_cast<const float*>(b.constant(b.input(2), DType::kF32, op->C, "shift"));
  op->w.assign(w, w + op->C);
  op->bias.assign(s, s + op->C);
  op->act = check_act(b);
  b.check_output(0, DType::kF32, x.shape);
  op->info.op = "channel_affine";
  return op;
}

// ---- Data movement ----------------------------------------------------------------------------

class Concat : public Op {
 public:
  size_t outer;
  std::vector<size_t> inner;  // per input: extent along axis * trailing elements
  void run(RunContext& ctx) override {
    float* y = ctx.get<float>(outputs[0]);
    size_t total = 0;
    for (size_t v : inner) total += v;
    size_t off = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const float* x = ctx.get<float>(inputs[i]);
      for (size_t o = 0; o < outer; ++o)
        std::memcpy(y + o * total + off, x + o * inner[i], sizeof(float) * inner[i]);
      off += inner[i];
    }
    info.kernel = "copy";
  }
};

int normalize_axis(const Build& b, int axis, size_t rank) {
  const int r = static_cast<int>(rank);
  b.require(axis >= -r && axis < r, "axis ", axis, " out of range for rank ", r);
  return axis < 0 ? axis + r : axis;
}

size_t product(const std::vector<int64_t>& s, size_t from, size_t to) {
  size_t p = 1;
  for (size_t i = from; i < to; ++i) p *= static_cast<size_t>(s[i]);
  return p;
}

std::unique_ptr<Op> build_concat(Build& b) {
  b.expect_inputs(1, 1 << 12);
  b.expect_outputs(1, 1);
  const auto* o = b.op().options_as_ConcatOptions();
  b.require(o != nullptr, "needs ConcatOptions");
  const Tensor& x0 = b.activation_in(0, DType::kF32);
  const int axis = normalize_axis(b, o->axis(), x0.shape.size());
  auto op = std::make_unique<Concat>();
  std::vector<int64_t> out = x0.shape;
  out[axis] = 0;
  for (int i = 0; i < b.num_inputs(); ++i) {
    const Tensor& x = b.activation_in(i, DType::kF32);
    b.require(x.shape.size() == x0.shape.size(), "inputs must have the same rank");
    for (size_t d = 0; d < x.shape.size(); ++d) {
      b.require(static_cast<int>(d) == axis || x.shape[d] == x0.shape[d], "input ", i, " shape ",
                shape_str(x.shape), " differs from ", shape_str(x0.shape), " off the axis");
    }
    out[axis] += x.shape[axis];
    op->inner.push_back(product(x.shape, axis, x.shape.size()));
  }
  b.require(out[axis] <= std::numeric_limits<int32_t>::max(), "concatenated extent too large");
  b.check_output(0, DType::kF32, out);
  op->outer = product(x0.shape, 0, axis);
  op->info.op = "concat";
  return op;
}

class Split : public Op {
 public:
  size_t outer, total;
  std::vector<size_t> inner;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    size_t off = 0;
    for (size_t i = 0; i < outputs.size(); ++i) {
      float* y = ctx.get<float>(outputs[i]);
      for (size_t o = 0; o < outer; ++o)
        std::memcpy(y + o * inner[i], x + o * total + off, sizeof(float) * inner[i]);
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
  const Tensor& x = b.activation_in(0, DType::kF32);
  const int axis = normalize_axis(b, o->axis(), x.shape.size());
  const auto sizes =
      b.ints(o->sizes(), b.num_outputs(), 1, std::numeric_limits<int32_t>::max(), "sizes");
  auto op = std::make_unique<Split>();
  int64_t sum = 0;
  const size_t trailing = product(x.shape, axis + 1, x.shape.size());
  for (int i = 0; i < b.num_outputs(); ++i) {
    std::vector<int64_t> s = x.shape;
    s[axis] = sizes[i];
    sum += sizes[i];
    b.require(sum <= x.shape[axis], "sizes add up to more than the axis extent ", x.shape[axis]);
    b.check_output(i, DType::kF32, s);
    op->inner.push_back(static_cast<size_t>(sizes[i]) * trailing);
  }
  b.require(sum == x.shape[axis], "sizes add up to ", sum, ", the axis extent is ", x.shape[axis]);
  op->outer = product(x.shape, 0, axis);
  op->total = product(x.shape, axis, x.shape.size());
  op->info.op = "split";
  return op;
}

class Reshape : public Op {
 public:
  void run(RunContext&) override { info.kernel = "alias"; }
  bool aliases_input() const override { return true; }
};

std::unique_ptr<Op> build_reshape(Build& b, DType dt) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, dt);
  const Tensor& y = b.tensor(b.output(0));
  b.require(y.dtype == dt, "output must be ", dtype_name(dt));
  b.require(y.elements == x.elements, "output ", shape_str(y.shape), " holds ", y.elements,
            " elements, the input ", shape_str(x.shape), " ", x.elements);
  auto op = std::make_unique<Reshape>();
  op->info.op = "reshape";
  op->info.kernel = "alias";
  return op;
}

class Transpose : public Op {
 public:
  std::vector<int64_t> out_shape;
  int64_t in_strides[kMaxRank];  // input stride of each output dim
  size_t n, esize;
  void run(RunContext& ctx) override {
    const uint8_t* x = ctx.get<uint8_t>(inputs[0]);
    uint8_t* y = ctx.get<uint8_t>(outputs[0]);
    const int rank = static_cast<int>(out_shape.size());
    int64_t idx[kMaxRank] = {0};
    const int64_t inner = out_shape[rank - 1], is = in_strides[rank - 1];
    size_t o = 0;
    while (o < n) {
      int64_t off = 0;
      for (int d = 0; d < rank - 1; ++d) off += idx[d] * in_strides[d];
      if (esize == 4) {
        const auto* xs = reinterpret_cast<const float*>(x);
        auto* ys = reinterpret_cast<float*>(y);
        for (int64_t i = 0; i < inner; ++i) ys[o + i] = xs[off + i * is];
      } else {
        for (int64_t i = 0; i < inner; ++i) y[o + i] = x[off + i * is];
      }
      o += inner;
      for (int d = rank - 2; d >= 0; --d) {
        if (++idx[d] < out_shape[d]) break;
        idx[d] = 0;
      }
    }
    info.kernel = esize == 4 ? "f32_transpose__generic" : "s8_transpose__generic";
  }
};

std::unique_ptr<Op> build_transpose(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.tensor(b.input(0));
  b.require(x.constant == nullptr, "input must be an activation");
  b.require(x.dtype == DType::kF32 || x.dtype == DType::kS8, "input must be float32 or int8");
  const auto* o = b.op().options_as_TransposeOptions();
  b.require(o != nullptr, "needs TransposeOptions");
  const int rank = static_cast<int>(x.shape.size());
  b.require(rank >= 1 && rank <= kMaxRank, "rank ", rank, " out of range");
  const auto perm = b.ints(o->perm(), rank, 0, rank - 1, "perm");
  std::vector<bool> seen(rank, false);
  auto op = std::make_unique<Transpose>();
  int64_t stride[kMaxRank];
  int64_t s = 1;
  for (int d = rank - 1; d >= 0; --d) {
    stride[d] = s;
    s *= x.shape[d];
  }
  for (int i = 0; i < rank; ++i) {
    b.require(!seen[perm[i]], "perm is not a permutation");
    seen[perm[i]] = true;
    op->out_shape.push_back(x.shape[perm[i]]);
    op->in_strides[i] = stride[perm[i]];
  }
  b.check_output(0, x.dtype, op->out_shape);
  if (x.dtype == DType::kS8) {
    const Tensor& y = b.tensor(b.output(0));
    b.require(y.scale == x.scale && y.zero_point == x.zero_point, "output `", y.name,
              "` must keep the input's int8 quantization (", x.scale, ", ", x.zero_point, ")");
  }
  op->n = x.elements;
  op->esize = dtype_size(x.dtype);
  op->info.op = "transpose";
  return op;
}

class Upsample : public Op {
 public:
  int N, H, W, C, SH, SW;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    const int OH = H * SH, OW = W * SW;
    for (int n = 0; n < N; ++n)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow)
          std::memcpy(y + (static_cast<size_t>(n * OH + oh) * OW + ow) * C,
                      x + (static_cast<size_t>(n * H + oh / SH) * W + ow / SW) * C,
                      sizeof(float) * C);
    info.kernel = "copy";
  }
};

std::unique_ptr<Op> build_upsample(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC");
  const auto* o = b.op().options_as_UpsampleOptions();
  b.require(o != nullptr, "needs UpsampleOptions");
  const auto s = b.ints(o->scale(), 2, 1, 1 << 10, "scale");
  auto op = std::make_unique<Upsample>();
  op->N = static_cast<int>(x.shape[0]);
  op->H = static_cast<int>(x.shape[1]);
  op->W = static_cast<int>(x.shape[2]);
  op->C = static_cast<int>(x.shape[3]);
  op->SH = s[0];
  op->SW = s[1];
  b.check_output(0, DType::kF32, {x.shape[0], x.shape[1] * s[0], x.shape[2] * s[1], x.shape[3]});
  op->info.op = "upsample_nearest";
  return op;
}

// ---- Normalization, softmax, reductions --------------------------------------------------------

class Softmax : public Op {
 public:
  size_t outer, len, inner;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    for (size_t o = 0; o < outer; ++o)
      for (size_t i = 0; i < inner; ++i) {
        const float* xs = x + o * len * inner + i;
        float* ys = y + o * len * inner + i;
        float mx = -std::numeric_limits<float>::infinity();
        for (size_t j = 0; j < len; ++j) mx = std::max(mx, xs[j * inner]);
        double sum = 0.0;
        for (size_t j = 0; j < len; ++j) {
          ys[j * inner] = std::exp(xs[j * inner] - mx);
          sum += ys[j * inner];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (size_t j = 0; j < len; ++j) ys[j * inner] *= inv;
      }
    info.kernel = "f32_softmax__generic";
  }
};

std::unique_ptr<Op> build_softmax(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  const auto* o = b.op().options_as_SoftmaxOptions();
  b.require(o != nullptr, "needs SoftmaxOptions");
  const int axis = normalize_axis(b, o->axis(), x.shape.size());
  b.check_output(0, DType::kF32, x.shape);
  auto op = std::make_unique<Softmax>();
  op->outer = product(x.shape, 0, axis);
  op->len = static_cast<size_t>(x.shape[axis]);
  op->inner = product(x.shape, axis + 1, x.shape.size());
  op->info.op = "softmax";
  return op;
}

class LayerNorm : public Op {
 public:
  size_t outer, inner;
  float eps;
  std::vector<float> w, bias;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    for (size_t o = 0; o < outer; ++o) {
      const float* xs = x + o * inner;
      float* ys = y + o * inner;
      double mean = 0.0, var = 0.0;
      for (size_t i = 0; i < inner; ++i) mean += xs[i];
      mean /= static_cast<double>(inner);
      for (size_t i = 0; i < inner; ++i) var += (xs[i] - mean) * (xs[i] - mean);
      var /= static_cast<double>(inner);
      const float m = static_cast<float>(mean);
      const float r = static_cast<float>(1.0 / std::sqrt(var + eps));
      for (size_t i = 0; i < inner; ++i) ys[i] = (xs[i] - m) * r * w[i] + bias[i];
    }
    info.kernel = "f32_layernorm__generic";
  }
};

std::unique_ptr<Op> build_layer_norm(Build& b) {
  b.expect_inputs(1, 3);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  const auto* o = b.op().options_as_NormOptions();
  b.require(o != nullptr, "needs NormOptions");
  const int axis = normalize_axis(b, o->axis(), x.shape.size());
  b.require(o->eps() >= 0.0f && std::isfinite(o->eps()), "eps must be finite and >= 0");
  b.check_output(0, DType::kF32, x.shape);
  auto op = std::make_unique<LayerNorm>();
  op->outer = product(x.shape, 0, axis);
  op->inner = product(x.shape, axis, x.shape.size());
  op->eps = o->eps();
  op->w.assign(op->inner, 1.0f);
  op->bias.assign(op->inner, 0.0f);
  if (b.num_inputs() > 1) {
    const auto* w =
        reinterpret_cast<const float*>(b.constant(b.input(1), DType::kF32, op->inner, "weight"));
    op->w.assign(w, w + op->inner);
  }
  if (b.num_inputs() > 2) {
    const auto* s =
        reinterpret_cast<const float*>(b.constant(b.input(2), DType::kF32, op->inner, "bias"));
    op->bias.assign(s, s + op->inner);
  }
  op->info.op = "layer_norm";
  return op;
}

class GroupNorm : public Op {
 public:
  int N, HW, C, G;
  float eps;
  std::vector<float> w, bias;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    const int Cg = C / G;
    for (int n = 0; n < N; ++n)
      for (int g = 0; g < G; ++g) {
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < HW; ++i) {
          const float* xs = x + (static_cast<size_t>(n) * HW + i) * C + g * Cg;
          for (int c = 0; c < Cg; ++c) mean += xs[c];
        }
        const double cnt = static_cast<double>(HW) * Cg;
        mean /= cnt;
        for (int i = 0; i < HW; ++i) {
          const float* xs = x + (static_cast<size_t>(n) * HW + i) * C + g * Cg;
          for (int c = 0; c < Cg; ++c) var += (xs[c] - mean) * (xs[c] - mean);
        }
        var /= cnt;
        const float m = static_cast<float>(mean);
        const float r = static_cast<float>(1.0 / std::sqrt(var + eps));
        for (int i = 0; i < HW; ++i) {
          const size_t base = (static_cast<size_t>(n) * HW + i) * C + g * Cg;
          for (int c = 0; c < Cg; ++c)
            y[base + c] = (x[base + c] - m) * r * w[g * Cg + c] + bias[g * Cg + c];
        }
      }
    info.kernel = "f32_groupnorm__generic";
  }
};

std::unique_ptr<Op> build_group_norm(Build& b) {
  b.expect_inputs(3, 3);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC");
  const auto* o = b.op().options_as_NormOptions();
  b.require(o != nullptr, "needs NormOptions");
  auto op = std::make_unique<GroupNorm>();
  op->N = static_cast<int>(x.shape[0]);
  op->HW = static_cast<int>(x.shape[1] * x.shape[2]);
  op->C = static_cast<int>(x.shape[3]);
  op->G = o->groups();
  b.require(op->G >= 1 && op->C % op->G == 0, "groups = ", op->G, " must divide ", op->C,
            " channels");
  b.require(o->eps() >= 0.0f && std::isfinite(o->eps()), "eps must be finite and >= 0");
  op->eps = o->eps();
  const auto* w =
      reinterpret_cast<const float*>(b.constant(b.input(1), DType::kF32, op->C, "weight"));
  const auto* s =
      reinterpret_cast<const float*>(b.constant(b.input(2), DType::kF32, op->C, "bias"));
  op->w.assign(w, w + op->C);
  op->bias.assign(s, s + op->C);
  b.check_output(0, DType::kF32, x.shape);
  op->info.op = "group_norm";
  return op;
}

class Mean : public Op {
 public:
  std::vector<int64_t> in_shape;
  int64_t out_stride[kMaxRank];  // output stride of each input dim (0 when reduced)
  size_t n_in, n_out;
  float inv;
  void run(RunContext& ctx) override {
    const float* x = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    for (size_t i = 0; i < n_out; ++i) y[i] = 0.0f;
    const int rank = static_cast<int>(in_shape.size());
    int64_t idx[kMaxRank] = {0};
    for (size_t i = 0; i < n_in; ++i) {
      int64_t o = 0;
      for (int d = 0; d < rank; ++d) o += idx[d] * out_stride[d];
      y[o] += x[i];
      for (int d = rank - 1; d >= 0; --d) {
        if (++idx[d] < in_shape[d]) break;
        idx[d] = 0;
      }
    }
    for (size_t i = 0; i < n_out; ++i) y[i] *= inv;
    info.kernel = "f32_mean__generic";
  }
};

std::unique_ptr<Op> build_mean(Build& b) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, DType::kF32);
  const auto* o = b.op().options_as_MeanOptions();
  b.require(o != nullptr, "needs MeanOptions");
  const int rank = static_cast<int>(x.shape.size());
  b.require(rank <= kMaxRank, "rank above ", kMaxRank);
  const auto axes = b.ints(o->axes(), -1, -rank, rank - 1, "axes");
  std::vector<bool> reduced(rank, false);
  for (int a : axes) reduced[a < 0 ? a + rank : a] = true;
  auto op = std::make_unique<Mean>();
  std::vector<int64_t> out, kept;
  size_t count = 1;
  for (int d = 0; d < rank; ++d) {
    if (reduced[d]) {
      count *= static_cast<size_t>(x.shape[d]);
      if (o->keep_dims()) out.push_back(1);
    } else {
      out.push_back(x.shape[d]);
    }
  }
  b.check_output(0, DType::kF32, out);
  int64_t s = 1;
  for (int d = rank - 1; d >= 0; --d) {
    op->out_stride[d] = reduced[d] ? 0 : s;
    if (!reduced[d]) s *= x.shape[d];
  }
  op->in_shape = x.shape;
  op->n_in = x.elements;
  op->n_out = b.tensor(b.output(0)).elements;
  op->inv = 1.0f / static_cast<float>(count);
  op->info.op = "mean";
  return op;
}

class BatchMatMul : public Op {
 public:
  size_t batch;
  int M, K, N;
  bool ta, tb;
  float alpha;
  void run(RunContext& ctx) override {
    const float* a = ctx.get<float>(inputs[0]);
    const float* b = ctx.get<float>(inputs[1]);
    float* y = ctx.get<float>(outputs[0]);
    for (size_t bt = 0; bt < batch; ++bt) {
      const float* A = a + bt * M * K;
      const float* B = b + bt * K * N;
      float* Y = y + bt * M * N;
      for (int i = 0; i < M; ++i) {
        float* yr = Y + static_cast<size_t>(i) * N;
        for (int j = 0; j < N; ++j) yr[j] = 0.0f;
        for (int k = 0; k < K; ++k) {
          const float av =
              ta ? A[static_cast<size_t>(k) * M + i] : A[static_cast<size_t>(i) * K + k];
          if (tb) {
            for (int j = 0; j < N; ++j) yr[j] += av * B[static_cast<size_t>(j) * K + k];
          } else {
            const float* br = B + static_cast<size_t>(k) * N;
            for (int j = 0; j < N; ++j) yr[j] += av * br[j];
          }
        }
        for (int j = 0; j < N; ++j) yr[j] *= alpha;
      }
    }
    info.kernel = "f32_batch_matmul__generic";
  }
};

std::unique_ptr<Op> build_batch_matmul(Build& b) {
  b.expect_inputs(2, 2);
  b.expect_outputs(1, 1);
  const Tensor& a = b.activation_in(0, DType::kF32);
  const Tensor& c = b.activation_in(1, DType::kF32);
  const auto* o = b.op().options_as_BatchMatMulOptions();
  b.require(o != nullptr, "needs BatchMatMulOptions");
  b.require(a.shape.size() >= 2 && a.shape.size() == c.shape.size(),
            "inputs must have the same rank >= 2, got ", shape_str(a.shape), " and ",
            shape_str(c.shape));
  const size_t r = a.shape.size();
  for (size_t d = 0; d + 2 < r; ++d)
    b.require(a.shape[d] == c.shape[d], "batch dims differ: ", shape_str(a.shape), " and ",
              shape_str(c.shape));
  auto op = std::make_unique<BatchMatMul>();
  op->ta = o->transpose_a();
  op->tb = o->transpose_b();
  op->alpha = o->alpha();
  op->M = static_cast<int>(op->ta ? a.shape[r - 1] : a.shape[r - 2]);
  op->K = static_cast<int>(op->ta ? a.shape[r - 2] : a.shape[r - 1]);
  const int kb = static_cast<int>(op->tb ? c.shape[r - 1] : c.shape[r - 2]);
  op->N = static_cast<int>(op->tb ? c.shape[r - 2] : c.shape[r - 1]);
  b.require(kb == op->K, "inner dims differ: ", op->K, " and ", kb);
  std::vector<int64_t> out(a.shape.begin(), a.shape.end() - 2);
  out.push_back(op->M);
  out.push_back(op->N);
  b.check_output(0, DType::kF32, out);
  op->batch = product(a.shape, 0, r - 2);
  op->info.op = "batch_matmul";
  op->info.macs = static_cast<int64_t>(op->batch) * op->M * op->N * op->K;
  return op;
}

}  // namespace

std::unique_ptr<Op> build_f32_op(Build& b) {
  switch (b.op().type()) {
    case eom::OpType_CONV2D: return build_conv(b);
    case eom::OpType_LINEAR: return build_linear(b);
    case eom::OpType_MAX_POOL2D: return build_pool(b, true);
    case eom::OpType_AVG_POOL2D: return build_pool(b, false);
    case eom::OpType_GLOBAL_AVG_POOL: return build_global_pool(b);
    case eom::OpType_ADD:
    case eom::OpType_SUB:
    case eom::OpType_MUL:
    case eom::OpType_DIV: return build_binary(b, b.op().type());
    case eom::OpType_CONCAT: return build_concat(b);
    case eom::OpType_SPLIT: return build_split(b);
    case eom::OpType_RESHAPE: return build_reshape(b, DType::kF32);
    case eom::OpType_TRANSPOSE: return build_transpose(b);
    case eom::OpType_ACTIVATION: return build_activation(b);
    case eom::OpType_SOFTMAX: return build_softmax(b);
    case eom::OpType_LAYER_NORM: return build_layer_norm(b);
    case eom::OpType_GROUP_NORM: return build_group_norm(b);
    case eom::OpType_UPSAMPLE_NEAREST: return build_upsample(b);
    case eom::OpType_BATCH_MATMUL: return build_batch_matmul(b);
    case eom::OpType_CHANNEL_AFFINE: return build_affine(b);
    case eom::OpType_MEAN: return build_mean(b);
    default:
      b.error("is not a float32 operator this runtime knows (unknown type, or an int8-only type " +
              std::string("on float tensors)"));
  }
}

}  // namespace runtime
}  // namespace edgeopt
