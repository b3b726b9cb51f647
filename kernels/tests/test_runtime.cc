// The model runtime without Python: a .eom model built here with the FlatBuffers builder runs and
// matches plain reference loops; results do not depend on the thread count; bad files (truncated,
// corrupted, wrong version or byte order, fuzzed with a valid checksum) raise ModelError and never
// crash. An int8 model (quantize, conv, depthwise, global pool, broadcast mul, add, dequantize)
// gives the same bytes on the scalar path as on the vector paths (the reference twin of the int8
// kernels) and is fuzzed too. Usage: edgeopt_test_runtime [--quick] [--fuzz N]. Closes with
// "N passed, N failed".
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "edgeopt/path.h"
#include "edgeopt/runtime.h"
#include "runtime/schema/eom_generated.h"

using namespace edgeopt;
namespace rt = edgeopt::runtime;

namespace {

int g_passed = 0, g_failed = 0;
std::mt19937 g_rng(1234);

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL %s\n", what.c_str());
  }
}

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}

void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

void fix_crc(std::vector<uint8_t>& f) {
  put32(f, 20, rt::crc32(f.data() + 24, f.size() - 24));
}

// A tiny .eom writer: tensors, constants in a 64-byte aligned data section, operators.
class Builder {
 public:
  int tensor(const std::string& name, std::vector<int32_t> shape, eom::DType dt = eom::DType_F32) {
    tensors_.push_back(eom::CreateTensorDirect(fbb_, name.c_str(), &shape, dt));
    return n_++;
  }
  // An int8 activation with per-tensor quantization.
  int s8(const std::string& name, std::vector<int32_t> shape, float scale, int zero_point) {
    std::vector<float> sc = {scale};
    std::vector<int32_t> zp = {zero_point};
    auto q = eom::CreateQuantizationDirect(fbb_, &sc, &zp);
    tensors_.push_back(eom::CreateTensorDirect(fbb_, name.c_str(), &shape, eom::DType_S8, q));
    return n_++;
  }
  template <typename T>
  int constant(const std::string& name, std::vector<int32_t> shape, const std::vector<T>& v,
               eom::DType dt) {
    while (data_.size() % 64) data_.push_back(0);
    const size_t off = data_.size();
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    data_.insert(data_.end(), p, p + v.size() * sizeof(T));
    buffers_.emplace_back(off, v.size() * sizeof(T));
    tensors_.push_back(eom::CreateTensorDirect(fbb_, name.c_str(), &shape, dt, 0,
                                               static_cast<int>(buffers_.size()) - 1));
    return n_++;
  }
  int f32(const std::string& name, std::vector<int32_t> shape, const std::vector<float>& v) {
    return constant(name, shape, v, eom::DType_F32);
  }
  void op(eom::OpType type, const char* name, std::vector<int32_t> in, std::vector<int32_t> out,
          flatbuffers::Offset<eom::Weight> w = 0, int bias = -1,
          eom::Activation act = eom::Activation_NONE, eom::OpOptions ot = eom::OpOptions_NONE,
          flatbuffers::Offset<void> opts = 0, flatbuffers::Offset<eom::Int8Stage> int8 = 0) {
    ops_.push_back(
        eom::CreateOperatorDirect(fbb_, type, name, &in, &out, w, bias, act, ot, opts, int8));
  }
  flatbuffers::FlatBufferBuilder& fbb() { return fbb_; }

  std::vector<uint8_t> finish(std::vector<int32_t> inputs, std::vector<int32_t> outputs,
                              uint16_t major = rt::kFormatMajor) {
    auto model = eom::CreateModelDirect(fbb_, "test_runtime", &tensors_, &ops_, &inputs, &outputs,
                                        &buffers_);
    fbb_.Finish(model, eom::ModelIdentifier());
    const size_t msize = fbb_.GetSize();
    const size_t data_off = (64 + msize + 63) / 64 * 64;
    std::vector<uint8_t> f(data_off + data_.size(), 0);
    std::memcpy(f.data(), rt::kMagic, 8);
    f[8] = static_cast<uint8_t>(major);
    f[9] = static_cast<uint8_t>(major >> 8);
    put32(f, 12, rt::kEndianMarker);
    put32(f, 16, 64);
    put64(f, 24, f.size());
    put64(f, 32, 64);
    put64(f, 40, msize);
    put64(f, 48, data_off);
    put64(f, 56, data_.size());
    std::memcpy(f.data() + 64, fbb_.GetBufferPointer(), msize);
    if (!data_.empty()) std::memcpy(f.data() + data_off, data_.data(), data_.size());
    fix_crc(f);
    return f;
  }

 private:
  flatbuffers::FlatBufferBuilder fbb_;
  std::vector<flatbuffers::Offset<eom::Tensor>> tensors_;
  std::vector<flatbuffers::Offset<eom::Operator>> ops_;
  std::vector<eom::BufferRef> buffers_;
  std::vector<uint8_t> data_;
  int n_ = 0;
};

// ---- Reference (NCHW, plain loops) ------------------------------------------------------------

struct T4 {
  int n, c, h, w;
  std::vector<float> v;
  float& at(int a, int b, int y, int x) {
    return v[((static_cast<size_t>(a) * c + b) * h + y) * w + x];
  }
};

// weight OHWI [o, kh, kw, cin/groups]
T4 ref_conv(T4& x, const std::vector<float>& wt, const std::vector<float>& bias, int o, int k,
            int stride, int pad, int groups, float lo, float hi, bool silu) {
  const int oh = (x.h + 2 * pad - k) / stride + 1, ow = (x.w + 2 * pad - k) / stride + 1;
  T4 y{x.n, o, oh, ow, std::vector<float>(static_cast<size_t>(x.n) * o * oh * ow)};
  const int cg = x.c / groups, og = o / groups;
  for (int n = 0; n < x.n; ++n)
    for (int oc = 0; oc < o; ++oc)
      for (int i = 0; i < oh; ++i)
        for (int j = 0; j < ow; ++j) {
          double acc = bias[oc];
          const int g = oc / og;
          for (int a = 0; a < k; ++a)
            for (int b = 0; b < k; ++b) {
              const int ih = i * stride - pad + a, iw = j * stride - pad + b;
              if (ih < 0 || ih >= x.h || iw < 0 || iw >= x.w) continue;
              for (int c = 0; c < cg; ++c)
                acc += x.at(n, g * cg + c, ih, iw) *
                       wt[((static_cast<size_t>(oc) * k + a) * k + b) * cg + c];
            }
          float v = static_cast<float>(acc);
          v = std::min(std::max(v, lo), hi);
          if (silu) v = v / (1.0f + std::exp(-v));
          y.at(n, oc, i, j) = v;
        }
  return y;
}

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Case {
  std::vector<uint8_t> file;
  std::vector<float> input;
  std::vector<float> expect;
  int out_elems;
};

// input [2,3,9,9] NCHW -> transpose -> conv3x3 (8, relu) -> dwconv3x3 s2 (8, relu6)
// -> conv1x1 groups 2 (16, silu) -> maxpool 2 -> add(self) -> global avg -> reshape [2,16]
// -> linear BSR 4x4 (12) -> linear dense (5)
Case make_case() {
  Builder b;
  const int N = 2, C = 3, H = 9, W = 9;
  Case cs;
  cs.input = randn(static_cast<size_t>(N) * C * H * W);
  auto w1 = randn(8 * 3 * 3 * 3, 0.3f), b1 = randn(8, 0.1f);
  auto w2 = randn(8 * 3 * 3, 0.3f), b2 = randn(8, 0.1f);
  auto w3 = randn(16 * 4, 0.3f), b3 = randn(16, 0.1f);
  auto w4 = randn(12 * 16, 0.3f), b4 = randn(12, 0.1f);
  auto w5 = randn(5 * 12, 0.3f), b5 = randn(5, 0.1f);
  // Block-sparse w4: zero every other 4x4 block.
  for (int r = 0; r < 12; ++r)
    for (int c = 0; c < 16; ++c)
      if (((r / 4) + (c / 4)) % 2) w4[r * 16 + c] = 0.0f;

  const int x = b.tensor("x", {N, C, H, W});
  const int xt = b.tensor("x.nhwc", {N, H, W, C});
  const int t1 = b.tensor("c1", {N, 9, 9, 8});
  const int t2 = b.tensor("dw", {N, 5, 5, 8});
  const int t3 = b.tensor("pw", {N, 5, 5, 16});
  const int t4 = b.tensor("pool", {N, 2, 2, 16});
  const int t5 = b.tensor("add", {N, 2, 2, 16});
  const int t6 = b.tensor("gap", {N, 1, 1, 16});
  const int t7 = b.tensor("flat", {N, 16});
  const int t8 = b.tensor("fc1", {N, 12});
  const int y = b.tensor("y", {N, 5});
  auto& f = b.fbb();
  std::vector<int32_t> perm = {0, 2, 3, 1};
  b.op(eom::OpType_TRANSPOSE, "in", {x}, {xt}, 0, -1, eom::Activation_NONE,
       eom::OpOptions_TransposeOptions, eom::CreateTransposeOptionsDirect(f, &perm).Union());
  auto conv = [&](const char* name, int in, int out, const std::vector<float>& w,
                  const std::vector<float>& bias, int o, int k, int s, int p, int g,
                  eom::Activation act) {
    const int kk = static_cast<int>(w.size()) / o;
    const int wt = b.f32(std::string(name) + ".w", {o, kk}, w);
    const int bt = b.f32(std::string(name) + ".b", {o}, bias);
    std::vector<int32_t> kv = {k, k}, sv = {s, s}, dv = {1, 1}, pv = {p, p, p, p};
    auto opts = eom::CreateConv2DOptionsDirect(f, &kv, &sv, &dv, &pv, g);
    auto weight = eom::CreateWeightDirect(f, eom::WeightFormat_DENSE, o, kk, wt);
    b.op(eom::OpType_CONV2D, name, {in}, {out}, weight, bt, act, eom::OpOptions_Conv2DOptions,
         opts.Union());
  };
  conv("conv1", xt, t1, w1, b1, 8, 3, 1, 1, 1, eom::Activation_RELU);
  conv("dw", t1, t2, w2, b2, 8, 3, 2, 1, 8, eom::Activation_RELU6);
  conv("pw", t2, t3, w3, b3, 16, 1, 1, 0, 2, eom::Activation_SILU);
  std::vector<int32_t> k2 = {2, 2}, s2 = {2, 2}, p0 = {0, 0, 0, 0};
  b.op(eom::OpType_MAX_POOL2D, "pool", {t3}, {t4}, 0, -1, eom::Activation_NONE,
       eom::OpOptions_Pool2DOptions, eom::CreatePool2DOptionsDirect(f, &k2, &s2, &p0).Union());
  b.op(eom::OpType_ADD, "add", {t4, t4}, {t5});
  b.op(eom::OpType_GLOBAL_AVG_POOL, "gap", {t5}, {t6});
  b.op(eom::OpType_RESHAPE, "flatten", {t6}, {t7});
  // BSR of w4 with 4x4 blocks.
  std::vector<int32_t> row_ptr = {0}, col_idx;
  std::vector<float> blocks;
  for (int br = 0; br < 3; ++br) {
    for (int bc = 0; bc < 4; ++bc) {
      if ((br + bc) % 2) continue;
      col_idx.push_back(bc);
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) blocks.push_back(w4[(br * 4 + r) * 16 + bc * 4 + c]);
    }
    row_ptr.push_back(static_cast<int32_t>(col_idx.size()));
  }
  const int vt = b.f32("fc1.blocks", {static_cast<int32_t>(col_idx.size()), 4, 4}, blocks);
  const int rp = b.constant("fc1.row_ptr", {4}, row_ptr, eom::DType_S32);
  const int ci =
      b.constant("fc1.col_idx", {static_cast<int32_t>(col_idx.size())}, col_idx, eom::DType_S32);
  const int b4t = b.f32("fc1.b", {12}, b4);
  std::vector<int32_t> blk = {4, 4};
  b.op(eom::OpType_LINEAR, "fc1", {t7}, {t8},
       eom::CreateWeightDirect(f, eom::WeightFormat_BSR, 12, 16, vt, &blk, rp, ci), b4t,
       eom::Activation_RELU);
  const int w5t = b.f32("fc2.w", {5, 12}, w5), b5t = b.f32("fc2.b", {5}, b5);
  b.op(eom::OpType_LINEAR, "fc2", {t8}, {y},
       eom::CreateWeightDirect(f, eom::WeightFormat_DENSE, 5, 12, w5t), b5t);
  cs.file = b.finish({x}, {y});

  // Reference.
  T4 in{N, C, H, W, cs.input};
  T4 a = ref_conv(in, w1, b1, 8, 3, 1, 1, 1, 0.0f, kInf, false);
  T4 d = ref_conv(a, w2, b2, 8, 3, 2, 1, 8, 0.0f, 6.0f, false);
  T4 p = ref_conv(d, w3, b3, 16, 1, 1, 0, 2, -kInf, kInf, true);
  std::vector<float> feat(N * 16, 0.0f);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < 16; ++c) {
      double s = 0;
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
          float m = -kInf;
          for (int u = 0; u < 2; ++u)
            for (int v = 0; v < 2; ++v) m = std::max(m, p.at(n, c, 2 * i + u, 2 * j + v));
          s += 2.0 * m;
        }
      feat[n * 16 + c] = static_cast<float>(s / 4.0);
    }
  std::vector<float> h1(N * 12);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < 12; ++o) {
      double s = b4[o];
      for (int k = 0; k < 16; ++k) s += feat[n * 16 + k] * w4[o * 16 + k];
      h1[n * 12 + o] = std::max(0.0f, static_cast<float>(s));
    }
  cs.expect.resize(N * 5);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < 5; ++o) {
      double s = b5[o];
      for (int k = 0; k < 12; ++k) s += h1[n * 12 + k] * w5[o * 12 + k];
      cs.expect[n * 5 + o] = static_cast<float>(s);
    }
  cs.out_elems = N * 5;
  return cs;
}

// int8: x [1, 60, 5, 6] NCHW -> transpose -> quantize -> conv3x3 (60, clamp as a ReLU)
// -> depthwise 3x3 s2 (60: blocks of 32 and 16 channels, then 8 and 4 left) -> global avg pool ->
// mul (broadcast gate)
// -> add -> dequantize [1, 3, 3, 60].
Case make_int8_case() {
  Builder b;
  Case cs;
  cs.input = randn(60 * 5 * 6, 2.0f);
  cs.out_elems = 3 * 3 * 60;
  auto& f = b.fbb();
  std::uniform_int_distribution<int> wv(-127, 127);
  auto weights = [&](size_t n) {
    std::vector<int8_t> w(n);
    for (auto& v : w) v = static_cast<int8_t>(wv(g_rng));
    return w;
  };
  std::uniform_int_distribution<int> bv(-2000, 2000);
  auto biases = [&](size_t n) {
    std::vector<int32_t> v(n);
    for (auto& x : v) x = bv(g_rng);
    return v;
  };
  const int x = b.tensor("x", {1, 60, 5, 6});
  const int xt = b.tensor("x.nhwc", {1, 5, 6, 60});
  const int xq = b.s8("xq", {1, 5, 6, 60}, 0.05f, 3);
  const int c1 = b.s8("c1", {1, 5, 6, 60}, 0.08f, -5);
  const int d1 = b.s8("d1", {1, 3, 3, 60}, 0.06f, 2);
  const int g = b.s8("g", {1, 1, 1, 60}, 0.06f, 2);
  const int m = b.s8("m", {1, 3, 3, 60}, 0.04f, -1);
  const int a = b.s8("a", {1, 3, 3, 60}, 0.1f, 0);
  const int y = b.tensor("y", {1, 3, 3, 60});
  std::vector<int32_t> perm = {0, 2, 3, 1};
  b.op(eom::OpType_TRANSPOSE, "in", {x}, {xt}, 0, -1, eom::Activation_NONE,
       eom::OpOptions_TransposeOptions, eom::CreateTransposeOptionsDirect(f, &perm).Union());
  b.op(eom::OpType_QUANTIZE, "quant", {xt}, {xq});
  std::vector<int32_t> mult(60), shift(60);
  std::uniform_int_distribution<int> mv(1 << 30, std::numeric_limits<int32_t>::max());
  auto conv = [&](const char* name, int in, int out, int kk, int s, int g_, int in_zp, int out_zp,
                  int qmin) {
    const int wt = b.constant(std::string(name) + ".w", {60, kk}, weights(60 * kk), eom::DType_S8);
    const int bt = b.constant(std::string(name) + ".b", {60}, biases(60), eom::DType_S32);
    for (int c = 0; c < 60; ++c) {
      mult[c] = mv(g_rng);
      shift[c] = -7 - c % 3;
    }
    auto stage = eom::CreateInt8StageDirect(f, &mult, &shift, in_zp, out_zp, qmin, 127);
    std::vector<int32_t> kv = {3, 3}, sv = {s, s}, dv = {1, 1}, pv = {1, 1, 1, 1};
    auto opts = eom::CreateConv2DOptionsDirect(f, &kv, &sv, &dv, &pv, g_);
    auto weight = eom::CreateWeightDirect(f, eom::WeightFormat_DENSE, 60, kk, wt);
    b.op(eom::OpType_CONV2D, name, {in}, {out}, weight, bt, eom::Activation_NONE,
         eom::OpOptions_Conv2DOptions, opts.Union(), stage);
  };
  conv("conv1", xq, c1, 9 * 60, 1, 1, 3, -5, -5);
  conv("dw", c1, d1, 9, 2, 60, -5, 2, -128);
  b.op(eom::OpType_GLOBAL_AVG_POOL, "gap", {d1}, {g});
  std::vector<int32_t> zps = {2, 2}, m1 = {1518500250}, s1 = {-3};
  b.op(eom::OpType_MUL, "gate", {d1, g}, {m}, 0, -1, eom::Activation_NONE, eom::OpOptions_NONE, 0,
       eom::CreateInt8StageDirect(f, &m1, &s1, 0, -1, -128, 127, &zps));
  std::vector<int32_t> zps2 = {-1, 2}, im = {1431655765, 1073741824}, is = {0, 0};
  std::vector<int32_t> mo = {1717986918}, so = {-17};
  b.op(eom::OpType_ADD, "add", {m, d1}, {a}, 0, -1, eom::Activation_NONE, eom::OpOptions_NONE, 0,
       eom::CreateInt8StageDirect(f, &mo, &so, 0, 0, -100, 127, &zps2, &im, &is, 20));
  b.op(eom::OpType_DEQUANTIZE, "dequant", {a}, {y});
  cs.file = b.finish({x}, {y});
  return cs;
}

std::vector<float> run(rt::Model& m, const std::vector<float>& x, int out_elems);

// int8, one input channel (a grayscale model's first layer): x [1, 1, 6, 7] -> quantize ->
// conv3x3 pad 1 (32 outputs, the direct kernel on AVX-512 VNNI) -> dequantize [1, 6, 7, 32].
Case make_int8_gray_case() {
  Builder b;
  Case cs;
  cs.input = randn(6 * 7, 2.0f);
  cs.out_elems = 6 * 7 * 32;
  auto& f = b.fbb();
  std::uniform_int_distribution<int> wv(-127, 127), bv(-3000, 3000);
  std::uniform_int_distribution<int> mv(1 << 30, std::numeric_limits<int32_t>::max());
  std::vector<int8_t> w(32 * 9);
  for (auto& v : w) v = static_cast<int8_t>(wv(g_rng));
  std::vector<int32_t> bias(32), mult(32), shift(32);
  for (int c = 0; c < 32; ++c) {
    bias[c] = bv(g_rng);
    mult[c] = mv(g_rng);
    shift[c] = -6 - c % 4;
  }
  const int x = b.tensor("x", {1, 6, 7, 1});
  const int xq = b.s8("xq", {1, 6, 7, 1}, 0.03f, -9);
  const int c1 = b.s8("c1", {1, 6, 7, 32}, 0.07f, 4);
  const int y = b.tensor("y", {1, 6, 7, 32});
  b.op(eom::OpType_QUANTIZE, "quant", {x}, {xq});
  const int wt = b.constant("conv.w", {32, 9}, w, eom::DType_S8);
  const int bt = b.constant("conv.b", {32}, bias, eom::DType_S32);
  auto stage = eom::CreateInt8StageDirect(f, &mult, &shift, -9, 4, -100, 127);
  std::vector<int32_t> kv = {3, 3}, sv = {1, 1}, dv = {1, 1}, pv = {1, 1, 1, 1};
  auto opts = eom::CreateConv2DOptionsDirect(f, &kv, &sv, &dv, &pv, 1);
  b.op(eom::OpType_CONV2D, "conv", {xq}, {c1},
       eom::CreateWeightDirect(f, eom::WeightFormat_DENSE, 32, 9, wt), bt, eom::Activation_NONE,
       eom::OpOptions_Conv2DOptions, opts.Union(), stage);
  b.op(eom::OpType_DEQUANTIZE, "dequant", {c1}, {y});
  cs.file = b.finish({x}, {y});
  return cs;
}

// The same bytes on the scalar path (im2col + the scalar GEMM) as on the best path.
void test_int8_gray(const Case& cs) {
  std::vector<float> ref;
  force_paths(kScalar);
  {
    auto m = rt::Model::from_bytes(cs.file.data(), cs.file.size());
    ref = run(*m, cs.input, cs.out_elems);
  }
  force_paths(0);
  auto m = rt::Model::from_bytes(cs.file.data(), cs.file.size());
  const auto y = run(*m, cs.input, cs.out_elems);
  check(std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) == 0,
        "one-channel int8 conv on " + m->layers()[1].kernel + " equals the scalar path");
  check((available_paths() & kAvx512Vnni) == 0 ||
            m->layers()[1].kernel == "s8_conv1ch_direct__avx512vnni",
        "the one-channel conv runs the direct kernel with AVX-512 VNNI (" + m->layers()[1].kernel +
            ")");
}

// Format 1.5: x [3, 20] -> QUANTIZE -> int8 LINEAR [24, 20] -> DEQUANTIZE with the weight stored
// `form`: 0 dense tensors (the reference), 1 inline packed BSR (8 x 4 blocks, 3-bit indices into
// a 6-entry table), 2 inline BSR int8 blocks, 3 inline CODEBOOK (4-bit). The matrix has zero
// blocks and 6 distinct values (one of them 0), so every form holds it exactly.
Case make_inline_case(int form) {
  constexpr int kN = 24, kK = 20, kR = 8, kC = 4, kBrs = kN / kR, kBcs = kK / kC;
  std::mt19937 rng(77);  // the same matrix for every form
  const std::vector<int8_t> table = {-90, -31, 0, 17, 64, 127};
  std::uniform_int_distribution<int> pick(0, 5), bv(-2000, 2000);
  std::vector<uint8_t> keep(kBrs * kBcs);
  for (int i = 0; i < kBrs * kBcs; ++i) keep[i] = (i * 7 + 3) % 5 < 3;  // 9 of 15 blocks
  std::vector<uint8_t> idx(kN * kK, 2);                                 // table[2] == 0
  std::vector<int8_t> dense(kN * kK, 0);
  for (int i = 0; i < kN; ++i)
    for (int j = 0; j < kK; ++j)
      if (keep[(i / kR) * kBcs + j / kC]) {
        idx[i * kK + j] = static_cast<uint8_t>(pick(rng));
        dense[i * kK + j] = table[idx[i * kK + j]];
      }
  std::vector<int32_t> bias(kN), mult(kN, 1 << 30), shift(kN, -8);
  for (auto& v : bias) v = bv(rng);
  Builder b;
  Case cs;
  std::mt19937 xr(5);
  std::normal_distribution<float> xd(0.0f, 2.0f);
  for (int i = 0; i < 3 * kK; ++i) cs.input.push_back(xd(xr));
  cs.out_elems = 3 * kN;
  auto& f = b.fbb();
  const int x = b.tensor("x", {3, kK});
  const int xq = b.s8("xq", {3, kK}, 0.05f, 3);
  const int yq = b.s8("yq", {3, kN}, 0.9f, -2);
  const int y = b.tensor("y", {3, kN});
  b.op(eom::OpType_QUANTIZE, "quant", {x}, {xq});
  auto stage = eom::CreateInt8StageDirect(f, &mult, &shift, 3, -2, -128, 127);
  // The mask, row-major over the block grid, and the stored values in [nnz, R, C] order.
  std::vector<uint8_t> mask((kBrs * kBcs + 7) / 8, 0), bidx;
  std::vector<int8_t> blocks;
  for (int br = 0; br < kBrs; ++br)
    for (int bc = 0; bc < kBcs; ++bc) {
      if (!keep[br * kBcs + bc]) continue;
      mask[(br * kBcs + bc) / 8] |= static_cast<uint8_t>(1u << ((br * kBcs + bc) % 8));
      for (int r = 0; r < kR; ++r)
        for (int c = 0; c < kC; ++c) {
          bidx.push_back(idx[(br * kR + r) * kK + bc * kC + c]);
          blocks.push_back(dense[(br * kR + r) * kK + bc * kC + c]);
        }
    }
  std::vector<uint8_t> stream((bidx.size() * 3 + 7) / 8, 0);  // 3-bit little-endian bit stream
  for (size_t e = 0; e < bidx.size(); ++e)
    for (int bit = 0; bit < 3; ++bit)
      if ((bidx[e] >> bit) & 1)
        stream[(e * 3 + bit) / 8] |= static_cast<uint8_t>(1u << ((e * 3 + bit) % 8));
  std::vector<uint8_t> rows(kN * kK / 2, 0);  // CODEBOOK: 4-bit, two a byte, low nibble first
  for (int i = 0; i < kN; ++i)
    for (int j = 0; j < kK; ++j)
      rows[i * (kK / 2) + j / 2] |= static_cast<uint8_t>(idx[i * kK + j] << ((j % 2) * 4));
  const std::vector<int32_t> blk = {kR, kC};
  flatbuffers::Offset<eom::Weight> weight;
  int bias_t = -1;
  if (form == 0) {
    const int wt = b.constant("w", {kN, kK}, dense, eom::DType_S8);
    bias_t = b.constant("b", {kN}, bias, eom::DType_S32);
    weight = eom::CreateWeightDirect(f, eom::WeightFormat_DENSE, kN, kK, wt);
  } else if (form == 1) {
    weight = eom::CreateWeightDirect(f, eom::WeightFormat_BSR, kN, kK, -1, &blk, -1, -1, -1, 3,
                                     false, -1, -1, &mask, &stream, &table, nullptr, &bias);
  } else if (form == 2) {
    weight = eom::CreateWeightDirect(f, eom::WeightFormat_BSR, kN, kK, -1, &blk, -1, -1, -1, 0,
                                     false, -1, -1, &mask, nullptr, nullptr, &blocks, &bias);
  } else {
    weight = eom::CreateWeightDirect(f, eom::WeightFormat_CODEBOOK, kN, kK, -1, nullptr, -1, -1, -1,
                                     4, false, -1, -1, nullptr, &rows, &table, nullptr, &bias);
  }
  b.op(eom::OpType_LINEAR, "fc", {xq}, {yq}, weight, bias_t, eom::Activation_NONE,
       eom::OpOptions_NONE, 0, stage);
  b.op(eom::OpType_DEQUANTIZE, "dequant", {yq}, {y});
  cs.file = b.finish({x}, {y});
  return cs;
}

// Every inline form gives the dense file's bytes, on the scalar path and the best one.
void test_inline_int8() {
  const Case ref = make_inline_case(0);
  std::vector<float> want;
  {
    auto m = rt::Model::from_bytes(ref.file.data(), ref.file.size());
    want = run(*m, ref.input, ref.out_elems);
  }
  bool varied = false;
  for (float v : want) varied = varied || v != want[0];
  check(varied, "the inline test model's outputs are not all equal");
  const char* names[] = {"", "packed BSR", "BSR int8", "CODEBOOK"};
  for (int form = 1; form <= 3; ++form) {
    const Case cs = make_inline_case(form);
    check(cs.file.size() < ref.file.size(),
          std::string("the inline ") + names[form] + " file is smaller than the dense one");
    for (uint32_t paths : {static_cast<uint32_t>(kScalar), 0u}) {
      force_paths(paths);
      auto m = rt::Model::from_bytes(cs.file.data(), cs.file.size());
      const auto y = run(*m, cs.input, cs.out_elems);
      check(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0,
            std::string("inline ") + names[form] + " weight on " + m->layers()[1].kernel +
                " equals the dense weight");
    }
    force_paths(0);
  }
}

std::vector<float> run(rt::Model& m, const std::vector<float>& x, int out_elems) {
  std::vector<float> y(out_elems);
  m.run({x.data()}, {y.data()});
  return y;
}

void test_parity(const Case& cs) {
  auto m = rt::Model::from_bytes(cs.file.data(), cs.file.size());
  check(m->inputs().size() == 1 && m->inputs()[0].shape == std::vector<int64_t>({2, 3, 9, 9}),
        "input spec");
  const auto y = run(*m, cs.input, cs.out_elems);
  double worst = 0;
  for (int i = 0; i < cs.out_elems; ++i)
    worst = std::max(worst, std::fabs(double(y[i]) - cs.expect[i]));
  check(worst < 1e-4, "parity with the reference loops (max error " + std::to_string(worst) + ")");
  check(m->arena_bytes() < m->activation_bytes(), "the arena reuses activation memory (" +
                                                      std::to_string(m->arena_bytes()) + " < " +
                                                      std::to_string(m->activation_bytes()) + ")");
  bool kernels_named = true;
  for (const auto& l : m->layers()) kernels_named = kernels_named && !l.kernel.empty();
  check(kernels_named, "every layer names its kernel after a run");
  check(m->layers()[8].kernel.find("bsrgemm") != std::string::npos,
        "the BSR linear runs a block-sparse kernel (" + m->layers()[8].kernel + ")");
  for (int threads : {2, 3}) {
    m->set_num_threads(threads);
    const auto y2 = run(*m, cs.input, cs.out_elems);
    check(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0,
          "bit-identical with " + std::to_string(threads) + " threads");
  }
  std::vector<double> secs;
  std::vector<float> y3(cs.out_elems);
  m->run_profiled({cs.input.data()}, {y3.data()}, &secs);
  check(secs.size() == m->layers().size(), "one time per layer");
  bool threw = false;
  try {
    m->run({}, {y3.data()});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "run() with the wrong number of inputs throws invalid_argument");
}

// The int8 kernels' vector paths (VNNI / AVX2 / NEON GEMMs, the AVX2 depthwise and output
// stage) give the bytes of the scalar path, whatever the thread count.
void test_int8(const Case& cs) {
  std::vector<float> ref;
  force_paths(kScalar);
  {
    auto m = rt::Model::from_bytes(cs.file.data(), cs.file.size());
    ref = run(*m, cs.input, cs.out_elems);
    check(m->layers()[3].kernel == "s8_dwconv_direct__generic",
          "scalar depthwise when forced (" + m->layers()[3].kernel + ")");
  }
  force_paths(0);
  bool varied = false;
  for (float v : ref) varied = varied || v != ref[0];
  check(varied, "the int8 model's outputs are not all equal");
  auto m = rt::Model::from_bytes(cs.file.data(), cs.file.size());
  for (int threads : {1, 2, 3}) {
    m->set_num_threads(threads);
    const auto y = run(*m, cs.input, cs.out_elems);
    check(std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) == 0,
          "int8 on " + m->layers()[2].kernel + " / " + m->layers()[3].kernel + " with " +
              std::to_string(threads) + " threads equals the scalar path");
  }
  check(m->layers()[2].kernel.rfind("im2col+s8_gemm__", 0) == 0,
        "the int8 conv runs im2col + the int8 GEMM (" + m->layers()[2].kernel + ")");
}

// Loading `f` must either succeed (and then run) or throw ModelError; anything else fails.
bool loads_or_refuses(const std::vector<uint8_t>& f, const std::vector<float>& x,
                      std::string* msg) {
  try {
    auto m = rt::Model::from_bytes(f.data(), f.size());
    std::vector<std::vector<float>> outs;
    std::vector<void*> ptrs;
    for (const auto& s : m->outputs()) outs.emplace_back(s.bytes() / sizeof(float) + 1);
    for (auto& o : outs) ptrs.push_back(o.data());
    std::vector<float> in(m->inputs()[0].bytes() / sizeof(float) + 1, 0.5f);
    std::vector<const void*> ins(m->inputs().size(), in.data());
    if (m->inputs().size() == 1 && m->inputs()[0].elements() == x.size()) ins[0] = x.data();
    if (m->inputs().size() == 1) m->run(ins, ptrs);
    *msg = "loaded";
    return true;
  } catch (const rt::ModelError& e) {
    *msg = e.what();
    return true;
  } catch (const std::exception& e) {
    *msg = std::string("unexpected exception: ") + e.what();
    return false;
  }
}

void expect_error(const std::vector<uint8_t>& f, const std::string& needle,
                  const std::string& what) {
  try {
    rt::Model::from_bytes(f.data(), f.size());
    check(false, what + ": loaded");
  } catch (const rt::ModelError& e) {
    const std::string m = e.what();
    check(m.find(needle) != std::string::npos,
          what + ": message `" + m + "` lacks `" + needle + "`");
  }
}

void test_bad_files(const Case& cs) {
  const auto& good = cs.file;
  for (size_t cut :
       {size_t(0), size_t(7), size_t(63), size_t(64), good.size() / 2, good.size() - 1}) {
    expect_error(std::vector<uint8_t>(good.begin(), good.begin() + cut), "truncated",
                 "truncated at " + std::to_string(cut));
  }
  auto f = good;
  f[good.size() - 3] ^= 0x40;
  expect_error(f, "checksum", "corrupted data byte");
  f = good;
  f[0] = 'X';
  expect_error(f, "not a .eom", "bad magic");
  f = good;
  f[8] = static_cast<uint8_t>(rt::kFormatMajor + 1);
  expect_error(f, "format version 2.0 is not supported", "newer major version");
  f = good;
  put32(f, 12, __builtin_bswap32(rt::kEndianMarker));
  expect_error(f, "big-endian", "big-endian file");
  f = good;
  f.push_back(0);
  expect_error(f, "trailing", "trailing byte");
  // A corrupted table with a valid checksum: the verifier or the graph checks catch it.
  f = good;
  put64(f, 40, 8);  // model size far too small
  fix_crc(f);
  std::string msg;
  check(loads_or_refuses(f, cs.input, &msg) && msg != "loaded", "bad model size: " + msg);
}

void fuzz(const Case& cs, int iters) {
  const auto& good = cs.file;
  // Most mutations land in the header and the model table (the rest in the tensor data).
  size_t table_end = 64;
  for (int i = 0; i < 8; ++i) table_end += static_cast<size_t>(good[40 + i]) << (8 * i);
  table_end = std::min(table_end, good.size());
  std::uniform_int_distribution<size_t> any_pos(24, good.size() - 1), table_pos(24, table_end - 1);
  std::uniform_int_distribution<int> pct(0, 99);
  auto pos = [&](std::mt19937& r) { return pct(r) < 85 ? table_pos(r) : any_pos(r); };
  std::uniform_int_distribution<int> byte(0, 255), flips(1, 4), mode(0, 9);
  int refused = 0, loaded = 0, bad = 0;
  std::string first_bad;
  for (int it = 0; it < iters; ++it) {
    auto f = good;
    const int m = mode(g_rng);
    if (m == 0) {
      f.resize(std::uniform_int_distribution<size_t>(0, good.size() - 1)(g_rng));
    } else {
      const int nf = flips(g_rng);
      for (int j = 0; j < nf; ++j) {
        const size_t at = pos(g_rng);
        f[at] = m < 5 ? static_cast<uint8_t>(f[at] ^ (1u << (byte(g_rng) & 7)))
                      : static_cast<uint8_t>(byte(g_rng));
      }
      if (m != 9) fix_crc(f);  // most mutations get a valid checksum, to reach the parser
    }
    std::string msg;
    if (!loads_or_refuses(f, cs.input, &msg)) {
      ++bad;
      if (first_bad.empty()) first_bad = msg;
    } else if (msg == "loaded") {
      ++loaded;
    } else {
      ++refused;
    }
  }
  std::printf("fuzz: %d mutated files, %d refused with ModelError, %d loaded and ran\n", iters,
              refused, loaded);
  check(bad == 0, "fuzzed files give ModelError or load (" + std::to_string(bad) +
                      " did not: " + first_bad + ")");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int iters = -1;
  std::string model_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    if (a == "--fuzz" && i + 1 < argc) iters = std::atoi(argv[++i]);
    if (a == "--model" && i + 1 < argc) model_path = argv[++i];
  }
  if (iters < 0) iters = quick ? 2000 : 20000;
  if (!model_path.empty()) {  // fuzz a given (exported) model file only
    std::FILE* fp = std::fopen(model_path.c_str(), "rb");
    Case cs;
    if (fp) {
      int c;
      while ((c = std::fgetc(fp)) != EOF) cs.file.push_back(static_cast<uint8_t>(c));
      std::fclose(fp);
    }
    std::string msg;
    check(cs.file.size() > 64 && loads_or_refuses(cs.file, cs.input, &msg) && msg == "loaded",
          "the given model loads: " + msg);
    if (g_failed == 0) fuzz(cs, iters);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
  }
  const Case cs = make_case();
  test_parity(cs);
  test_bad_files(cs);
  fuzz(cs, iters);
  const Case cs8 = make_int8_case();
  test_int8(cs8);
  test_int8_gray(make_int8_gray_case());
  fuzz(cs8, iters / 2);
  test_inline_int8();
  fuzz(make_inline_case(1), iters / 4);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
