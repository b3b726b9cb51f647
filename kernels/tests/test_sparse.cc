// Block-sparse and codebook kernels vs the reference, on every available path, bit-exact for
// int8. Usage: edgeopt_test_sparse [--quick] [--paths a,b]. Closes with "N passed, N failed".
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/sparse_ukernel.h"
#include "edgeopt/gemm.h"
#include "edgeopt/path.h"
#include "edgeopt/sparse.h"
#include "ref/ref.h"

using namespace edgeopt;

namespace {

int g_passed = 0, g_failed = 0, g_skipped = 0;
bool g_quick = false;
std::mt19937 g_rng(777);
int rnd(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(g_rng);
}

enum Pattern { kRandom, kEmptyRows, kAllZero, kDense };

// Dense int8 weight whose zeros are whole r x c blocks, at about `density` of the blocks.
std::vector<int8_t> block_weight(int n, int k, int r, int c, double density, Pattern pat) {
  std::vector<int8_t> w(static_cast<size_t>(n) * k, 0);
  const int brs = (n + r - 1) / r, bcs = (k + c - 1) / c;
  for (int br = 0; br < brs; ++br) {
    const bool empty_row = pat == kEmptyRows && br % 2 == 0;
    for (int bc = 0; bc < bcs; ++bc) {
      bool keep = std::uniform_real_distribution<double>(0, 1)(g_rng) < density;
      if (pat == kAllZero || empty_row) keep = false;
      if (pat == kDense) keep = true;
      if (!keep) continue;
      for (int rr = 0; rr < r && br * r + rr < n; ++rr)
        for (int cc = 0; cc < c && bc * c + cc < k; ++cc) {
          int v = rnd(-127, 127);
          if (v == 0) v = 1;  // stored blocks have no incidental zeros (strict packing)
          w[static_cast<size_t>(br * r + rr) * k + bc * c + cc] = static_cast<int8_t>(v);
        }
    }
  }
  return w;
}

struct Req {
  std::vector<int32_t> bias, mult, shift;
  QS8Params p;
};

Req make_req(int n, int k) {
  Req q;
  q.bias.resize(n);
  q.mult.resize(n);
  q.shift.resize(n);
  for (int j = 0; j < n; ++j) {
    q.bias[j] = rnd(-(1 << 18), 1 << 18);
    q.mult[j] = (1 << 30) + rnd(0, (1 << 30) - 1);
    q.shift[j] = -static_cast<int>(std::log2(static_cast<double>(k) + 1)) - rnd(0, 6);
    // Now and then the edges of the output stage: left shifts, zero and extreme multipliers.
    if (rnd(0, 15) == 0) q.shift[j] = rnd(-31, 30);
    if (rnd(0, 15) == 0) {
      const int32_t edge[] = {0, std::numeric_limits<int32_t>::min(),
                              std::numeric_limits<int32_t>::max()};
      q.mult[j] = edge[rnd(0, 2)];
    }
  }
  q.p.bias = rnd(0, 5) ? q.bias.data() : nullptr;
  q.p.multiplier = q.mult.data();
  q.p.shift = q.shift.data();
  q.p.input_zero_point = rnd(0, 4) ? rnd(-128, 127) : (rnd(0, 1) ? -128 : 127);
  q.p.output_zero_point = rnd(-128, 127);
  if (rnd(0, 3) == 0) {
    q.p.qmin = rnd(-128, 0);
    q.p.qmax = rnd(0, 127);
  }
  return q;
}

bool compare_s8(const char* what, Path path, int m, int n, int k, const std::vector<int8_t>& want,
                const std::vector<int8_t>& got, const std::string& extra) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      if (want[i * n + j] != got[i * n + j]) {
        std::printf(
            "FAIL %s i=%d j=%d M x N x K = %d x %d x %d path=%s %s: reference %d, "
            "optimized %d\n",
            what, i, j, m, n, k, path_name(path), extra.c_str(), want[i * n + j], got[i * n + j]);
        return false;
      }
  return true;
}

void record(bool ok) {
  ok ? ++g_passed : ++g_failed;
}

bool check_bsr(Path path, int m, int n, int k, int r, int c, double density, Pattern pat,
               int threads) {
  auto w = block_weight(n, k, r, c, density, pat);
  const size_t lda = k + (rnd(0, 2) ? 0 : rnd(1, 9));
  std::vector<int8_t> a(m * lda);
  for (auto& v : a) v = static_cast<int8_t>(rnd(-128, 127));
  Req q = make_req(n, k);
  std::vector<int8_t> want(static_cast<size_t>(m) * n), twin(want.size()), got(want.size(), 0x55);
  ref::linear_s8(m, n, k, a.data(), lda, w.data(), k, q.p, want.data(), n);
  PackedBsrS8 packed(w.data(), n, k, r, c);
  ref::linear_s8_bsr(m, a.data(), lda, packed.view(), q.p, twin.data(), n);
  char extra[96];
  std::snprintf(extra, sizeof extra, "block %dx%d density %.2f threads %d", r, c, density, threads);
  if (!compare_s8("ref::linear_s8_bsr", kScalar, m, n, k, want, twin, extra)) return false;
  linear_s8(m, a.data(), lda, packed, q.p, got.data(), n, threads);
  if (last_path() != path) {
    std::printf("FAIL bsr %s: ran %s, forced %s\n", extra, path_name(last_path()), path_name(path));
    return false;
  }
  return compare_s8("linear_s8(bsr)", path, m, n, k, want, got, extra);
}

bool check_bsr_f32(Path path, int m, int n, int k, int r, int c, double density, int threads) {
  auto w8 = block_weight(n, k, r, c, density, kRandom);
  std::vector<float> w(w8.size()), a(static_cast<size_t>(m) * k), bias(n);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (size_t i = 0; i < w.size(); ++i) w[i] = w8[i] ? u(g_rng) + (w8[i] > 0 ? 2.f : -2.f) : 0.f;
  for (auto& v : a) v = u(g_rng);
  for (auto& v : bias) v = u(g_rng);
  F32Params p;
  p.bias = bias.data();
  std::vector<float> want(static_cast<size_t>(m) * n), got(want.size()), got2(want.size());
  ref::linear_f32(m, n, k, a.data(), k, w.data(), k, p, want.data(), n);
  PackedBsrF32 packed(w.data(), n, k, r, c);
  linear_f32(m, a.data(), k, packed, p, got.data(), n, 1);
  if (last_path() != path && !(path == kNeonDot && last_path() == kNeon)) {
    std::printf("FAIL bsr f32: ran %s, forced %s\n", path_name(last_path()), path_name(path));
    return false;
  }
  linear_f32(m, a.data(), k, packed, p, got2.data(), n, threads);
  const float tol = 4e-6f * (k + 8) * 3.f;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::fabs(want[i] - got[i]) <= tol) || std::memcmp(&got[i], &got2[i], 4) != 0) {
      std::printf(
          "FAIL linear_f32(bsr) i=%zu j=%zu M x N x K = %d x %d x %d block %dx%d path=%s: "
          "reference %.9g, optimized %.9g, threads=%d %.9g\n",
          i / n, i % n, m, n, k, r, c, path_name(path), want[i], got[i], threads, got2[i]);
      return false;
    }
  }
  return true;
}

bool check_codebook(Path path, int m, int n, int k, int bits, bool per_channel, int used,
                    int threads) {
  const int entries = 1 << bits;
  std::vector<uint8_t> idx(static_cast<size_t>(n) * k);
  for (auto& v : idx) v = static_cast<uint8_t>(rnd(0, used - 1));
  std::vector<int8_t> table((per_channel ? n : 1) * entries);
  for (auto& v : table) v = static_cast<int8_t>(rnd(-128, 127));
  std::vector<int8_t> w(idx.size());
  for (int j = 0; j < n; ++j)
    for (int kk = 0; kk < k; ++kk)
      w[static_cast<size_t>(j) * k + kk] =
          table[(per_channel ? j * entries : 0) + idx[static_cast<size_t>(j) * k + kk]];
  const size_t lda = k + (rnd(0, 2) ? 0 : rnd(1, 9));
  std::vector<int8_t> a(m * lda);
  for (auto& v : a) v = static_cast<int8_t>(rnd(-128, 127));
  Req q = make_req(n, k);
  std::vector<int8_t> want(static_cast<size_t>(m) * n), twin(want.size()), got(want.size());
  ref::linear_s8(m, n, k, a.data(), lda, w.data(), k, q.p, want.data(), n);
  PackedCodebookS8 packed(idx.data(), table.data(), n, k, bits, per_channel);
  ref::linear_s8_codebook(m, a.data(), lda, packed.view(), q.p, twin.data(), n);
  char extra[96];
  std::snprintf(extra, sizeof extra, "%d-bit %s table, %d entries used, threads %d", bits,
                per_channel ? "per-channel" : "per-layer", used, threads);
  if (!compare_s8("ref::linear_s8_codebook", kScalar, m, n, k, want, twin, extra)) return false;
  linear_s8(m, a.data(), lda, packed, q.p, got.data(), n, threads);
  if (last_path() != path) {
    std::printf("FAIL codebook %s: ran %s, forced %s\n", extra, path_name(last_path()),
                path_name(path));
    return false;
  }
  return compare_s8("linear_s8(codebook)", path, m, n, k, want, got, extra);
}

bool check_codebook_f32(Path path, int m, int n, int k, int bits, bool per_channel, int threads) {
  const int entries = 1 << bits;
  std::vector<uint8_t> idx(static_cast<size_t>(n) * k);
  for (auto& v : idx) v = static_cast<uint8_t>(rnd(0, entries - 1));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> table((per_channel ? n : 1) * entries), a(static_cast<size_t>(m) * k),
      w(idx.size());
  for (auto& v : table) v = u(g_rng);
  for (auto& v : a) v = u(g_rng);
  for (int j = 0; j < n; ++j)
    for (int kk = 0; kk < k; ++kk)
      w[static_cast<size_t>(j) * k + kk] =
          table[(per_channel ? j * entries : 0) + idx[static_cast<size_t>(j) * k + kk]];
  F32Params p;
  std::vector<float> want(static_cast<size_t>(m) * n), got(want.size()), got2(want.size());
  ref::linear_f32(m, n, k, a.data(), k, w.data(), k, p, want.data(), n);
  PackedCodebookF32 packed(idx.data(), table.data(), n, k, bits, per_channel);
  linear_f32(m, a.data(), k, packed, p, got.data(), n, 1);
  linear_f32(m, a.data(), k, packed, p, got2.data(), n, threads);
  const float tol = 4e-6f * (k + 8);
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::fabs(want[i] - got[i]) <= tol) || std::memcmp(&got[i], &got2[i], 4) != 0) {
      std::printf(
          "FAIL linear_f32(codebook) i=%zu j=%zu M x N x K = %d x %d x %d %d-bit path=%s: "
          "reference %.9g, optimized %.9g, threads=%d %.9g\n",
          i / n, i % n, m, n, k, bits, path_name(path), want[i], got[i], threads, got2[i]);
      return false;
    }
  }
  return true;
}

void test_path(Path path) {
  force_paths(path);
  const int before = g_failed;
  const int blocks[][2] = {{16, 4}, {8, 4}, {4, 4}, {1, 4}, {4, 1}, {8, 1}, {16, 1}, {2, 2}};
  const QS8BsrUKernel* bsr = qs8_bsr_ukernel(path);
  const F32BsrUKernel* bsrf = f32_bsr_ukernel(path);
  for (auto& b : blocks) {
    const int r = b[0], c = b[1];
    if (bsr && bsr->supports(r, c)) {
      const int count = g_quick ? 6 : 30;
      for (int t = 0; t < count; ++t) {
        const int m = t < 4 ? t + 1 : rnd(1, 40), n = rnd(1, 100), k = rnd(1, 300);
        const double dens[] = {0.05, 0.25, 0.5, 1.0};
        record(check_bsr(path, m, n, k, r, c, dens[t % 4], kRandom, rnd(1, 3)));
      }
      record(check_bsr(path, 5, 64, 128, r, c, 0.5, kEmptyRows, 2));
      record(check_bsr(path, 3, 33, 70, r, c, 0.5, kAllZero, 1));
      record(check_bsr(path, 7, 48, 96, r, c, 1.0, kDense, 3));
      record(check_bsr(path, 17, 2 * r + 1, 4 * c + 3, r, c, 0.6, kRandom, 1));
      record(check_bsr(path, 2, 64, 8192, r, c, 0.3, kRandom, 1));
      if (!g_quick) record(check_bsr(path, 64, 256, 1024, r, c, 0.1, kRandom, 2));
    } else if (bsr) {
      std::printf("note %s: %s has no kernel for block %dx%d (scalar serves it)\n", path_name(path),
                  bsr->name, r, c);
    }
    if (bsrf && bsrf->supports(r, c)) {
      for (int t = 0; t < (g_quick ? 3 : 12); ++t) {
        record(check_bsr_f32(path, rnd(1, 30), rnd(1, 80), rnd(1, 200), r, c, 0.3, rnd(1, 3)));
      }
    }
    if (g_failed - before > 10) return;
  }
  const QS8CodebookUKernel* cb = qs8_codebook_ukernel(path);
  const F32CodebookUKernel* cbf = f32_codebook_ukernel(path);
  for (int bits : {4, 2}) {
    for (bool per_channel : {false, true}) {
      if (cb && cb->supports(bits, per_channel)) {
        for (int t = 0; t < (g_quick ? 6 : 30); ++t) {
          const int used = t % 3 == 0 ? rnd(1, (1 << bits)) : (1 << bits);
          const int m = t < 4 ? t + 1 : rnd(1, 40);
          record(check_codebook(path, m, rnd(1, 130), rnd(1, 300), bits, per_channel, used,
                                rnd(1, 3)));
        }
        record(check_codebook(path, 1, 257, 4099, bits, per_channel, 1 << bits, 1));
        record(check_codebook(path, 3, 64, 8192, bits, per_channel, 1 << bits, 2));
      } else if (cb) {
        std::printf("note %s: %s has no kernel for %d-bit %s tables (scalar serves them)\n",
                    path_name(path), cb->name, bits, per_channel ? "per-channel" : "per-layer");
      }
      if (cbf && cbf->supports(bits, per_channel)) {
        for (int t = 0; t < (g_quick ? 3 : 12); ++t) {
          record(check_codebook_f32(path, rnd(1, 30), rnd(1, 80), rnd(1, 300), bits, per_channel,
                                    rnd(1, 3)));
        }
      }
      if (g_failed - before > 10) return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t only = kAllPaths;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick")
      g_quick = true;
    else if (arg == "--paths" && i + 1 < argc)
      only = parse_paths(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--paths a,b]\n", argv[0]);
      return 2;
    }
  }
  std::printf("cpu: %s\n", cpu_description().c_str());
  // Refusals name the offending block / index.
  {
    std::vector<int8_t> w(8 * 8, 1);
    w[0] = 0;
    w[1] = 0;
    w[2] = 0;  // rows 0, cols 0..3 of a 1x4 block: 3 of 4 zero
    bool threw = false;
    try {
      PackedBsrS8 bad(w.data(), 8, 8, 1, 4);
    } catch (const std::invalid_argument& e) {
      threw = std::strstr(e.what(), "rows 0..0, columns 0..3") != nullptr;
      if (!threw) std::printf("FAIL refusal message: %s\n", e.what());
    }
    record(threw);
    std::vector<uint8_t> idx(4 * 4, 3);
    idx[6] = 16;
    std::vector<int8_t> table(16, 1);
    threw = false;
    try {
      PackedCodebookS8 bad(idx.data(), table.data(), 4, 4, 4, false);
    } catch (const std::invalid_argument& e) {
      threw = std::strstr(e.what(), "indices[1, 2] = 16") != nullptr;
      if (!threw) std::printf("FAIL refusal message: %s\n", e.what());
    }
    record(threw);
  }
  const uint32_t avail = available_paths();
  for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
    const Path path = static_cast<Path>(bit);
    if (!(only & bit)) continue;
    const bool compiled = qs8_bsr_ukernel(path) || qs8_codebook_ukernel(path) ||
                          f32_bsr_ukernel(path) || f32_codebook_ukernel(path);
    if (!compiled) continue;
    if (!(avail & bit)) {
      std::printf("skip %s: compiled in, but this CPU lacks it (cpu has:%s)\n", path_name(path),
                  cpu_description().c_str());
      ++g_skipped;
      continue;
    }
    const int f0 = g_failed, p0 = g_passed;
    test_path(path);
    std::printf("%s %s: %d checks passed, %d failed\n", g_failed == f0 ? "ok" : "FAIL",
                path_name(path), g_passed - p0, g_failed - f0);
  }
  force_paths(0);
  std::printf("%d passed, %d failed, %d skipped\n", g_passed, g_failed, g_skipped);
  return g_failed == 0 ? 0 : 1;
}
