// Dense GEMM kernels vs the reference oracle, on every available path, bit-exact for int8.
//
// Usage: edgeopt_test_gemm [--quick] [--paths a,b] [--expect-path NAME]
//   --expect-path  asserts that run-time dispatch picks NAME for a large int8 GEMM (used to check
//                  the path chosen on emulated CPUs under qemu-user).
// Prints one line per failure (i, j, M x N x K, path, reference, optimized) and closes with
// "N passed, N failed[, N skipped]".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/requant.h"
#include "common/ukernel.h"
#include "edgeopt/gemm.h"
#include "edgeopt/path.h"
#include "ref/ref.h"

using namespace edgeopt;

namespace {

int g_passed = 0, g_failed = 0, g_skipped = 0;
bool g_quick = false;
std::mt19937 g_rng(12345);

int rnd(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(g_rng);
}

std::vector<int8_t> random_s8(size_t n, int lo = -128, int hi = 127) {
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(rnd(lo, hi));
  return v;
}

struct Case {
  int m, n, k;
};

// Multipliers and shifts spanning the whole range the output stage must handle.
void random_requant(int n, std::vector<int32_t>& mult, std::vector<int32_t>& shift, int k) {
  mult.resize(n);
  shift.resize(n);
  for (int j = 0; j < n; ++j) {
    const int kind = rnd(0, 9);
    if (kind == 0) {
      mult[j] = rnd(0, 1) ? 0 : std::numeric_limits<int32_t>::min() + rnd(0, 2);
    } else if (kind == 1) {
      mult[j] = std::numeric_limits<int32_t>::max() - rnd(0, 2);
    } else {
      mult[j] = (1 << 30) + rnd(0, (1 << 30) - 1);  // normalized, as quantize_multiplier gives
    }
    const int skind = rnd(0, 9);
    if (skind == 0) {
      shift[j] = rnd(-31, 30);
    } else {
      // Typical: scale ~ 1 / (K * 128) -> right shifts around log2(K) + 7.
      int base = -static_cast<int>(std::log2(static_cast<double>(k) + 1)) - rnd(0, 8);
      shift[j] = base < -31 ? -31 : base;
    }
  }
}

bool check_gemm(Path path, const Case& cs, int threads, bool extreme) {
  const int m = cs.m, n = cs.n, k = cs.k;
  auto a = extreme ? std::vector<int8_t>(static_cast<size_t>(m) * k, -128)
                   : random_s8(static_cast<size_t>(m) * k);
  auto w = extreme ? std::vector<int8_t>(static_cast<size_t>(n) * k, -128)
                   : random_s8(static_cast<size_t>(n) * k);
  std::vector<int32_t> want(static_cast<size_t>(m) * n),
      got(static_cast<size_t>(m) * n, 0x5a5a5a5a);
  ref::gemm_s8s8s32(m, n, k, a.data(), k, w.data(), k, want.data(), n);
  PackedS8 packed(w.data(), n, k);
  gemm_s8s8s32(m, a.data(), k, packed, got.data(), n, threads);
  if (last_path() != path) {
    std::printf("FAIL gemm_s8s8s32 %dx%dx%d: ran path %s, forced %s\n", m, n, k,
                path_name(last_path()), path_name(path));
    return false;
  }
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      if (want[i * n + j] != got[i * n + j]) {
        std::printf(
            "FAIL gemm_s8s8s32 i=%d j=%d M x N x K = %d x %d x %d path=%s threads=%d: "
            "reference %d, optimized %d\n",
            i, j, m, n, k, path_name(path), threads, want[i * n + j], got[i * n + j]);
        return false;
      }
    }
  }
  return true;
}

bool check_linear(Path path, const Case& cs, int threads, int za, int zo, int qmin, int qmax,
                  bool strided) {
  const int m = cs.m, n = cs.n, k = cs.k;
  const size_t lda = strided ? k + rnd(1, 13) : k;  // prime-ish row strides
  const size_t ldo = strided ? n + rnd(1, 7) : n;
  auto a = random_s8(m * lda);
  auto w = random_s8(static_cast<size_t>(n) * k, -127, 127);
  std::vector<int32_t> bias(n), mult, shift;
  for (auto& b : bias) b = rnd(-(1 << 20), 1 << 20);
  if (rnd(0, 20) == 0) bias[rnd(0, n - 1)] = std::numeric_limits<int32_t>::max() - rnd(0, 5);
  random_requant(n, mult, shift, k);
  QS8Params p;
  p.bias = rnd(0, 8) ? bias.data() : nullptr;
  p.multiplier = mult.data();
  p.shift = shift.data();
  p.input_zero_point = za;
  p.output_zero_point = zo;
  p.qmin = qmin;
  p.qmax = qmax;
  std::vector<int8_t> want(m * ldo, 0), got(m * ldo, 0);
  ref::linear_s8(m, n, k, a.data(), lda, w.data(), k, p, want.data(), ldo);
  PackedS8 packed(w.data(), n, k);
  linear_s8(m, a.data(), lda, packed, p, got.data(), ldo, threads);
  if (last_path() != path) {
    std::printf("FAIL linear_s8 %dx%dx%d: ran path %s, forced %s\n", m, n, k,
                path_name(last_path()), path_name(path));
    return false;
  }
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      if (want[i * ldo + j] != got[i * ldo + j]) {
        std::printf(
            "FAIL linear_s8 i=%d j=%d M x N x K = %d x %d x %d path=%s threads=%d za=%d "
            "zo=%d clamp=[%d,%d] mult=%d shift=%d: reference %d, optimized %d\n",
            i, j, m, n, k, path_name(path), threads, za, zo, qmin, qmax, mult[j], shift[j],
            want[i * ldo + j], got[i * ldo + j]);
        return false;
      }
    }
  }
  return true;
}

// float32 scales for the fp32 output stage: typical layer scales, powers of two (exact .5 ties,
// which must round to even), huge (clamping, float overflow to inf) and tiny (everything 0).
float random_fp32_scale() {
  switch (rnd(0, 9)) {
    case 0: return std::ldexp(1.0f, rnd(-8, 0));
    case 1: return std::ldexp(1.0f, rnd(20, 127)) * (1.0f + rnd(0, 1000) / 1000.0f);
    case 2: return std::ldexp(1.0f, -rnd(40, 149));  // down to the smallest denormal
    default: return std::ldexp(1.0f + rnd(0, 1 << 20) / float(1 << 20), -rnd(4, 24));
  }
}

bool check_linear_fp32(Path path, const Case& cs, int threads, int za, int zo, int qmin, int qmax,
                       bool strided) {
  const int m = cs.m, n = cs.n, k = cs.k;
  const size_t lda = strided ? k + rnd(1, 13) : k;
  const size_t ldo = strided ? n + rnd(1, 7) : n;
  auto a = random_s8(m * lda);
  auto w = random_s8(static_cast<size_t>(n) * k, -127, 127);
  std::vector<int32_t> bias(n);
  for (auto& b : bias) b = rnd(-(1 << 20), 1 << 20);
  std::vector<float> scale(n);
  for (auto& s : scale) s = random_fp32_scale();
  QS8Fp32Params p;
  p.bias = rnd(0, 8) ? bias.data() : nullptr;
  p.scale = scale.data();
  p.per_channel = rnd(0, 4) != 0;
  p.input_zero_point = za;
  p.output_zero_point = zo;
  p.qmin = qmin;
  p.qmax = qmax;
  std::vector<int8_t> want(m * ldo, 0), got(m * ldo, 0);
  ref::linear_s8_fp32(m, n, k, a.data(), lda, w.data(), k, p, want.data(), ldo);
  PackedS8 packed(w.data(), n, k);
  linear_s8_fp32(m, a.data(), lda, packed, p, got.data(), ldo, threads);
  if (last_path() != path) {
    std::printf("FAIL linear_s8_fp32 %dx%dx%d: ran path %s, forced %s\n", m, n, k,
                path_name(last_path()), path_name(path));
    return false;
  }
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      if (want[i * ldo + j] != got[i * ldo + j]) {
        std::printf(
            "FAIL linear_s8_fp32 i=%d j=%d M x N x K = %d x %d x %d path=%s threads=%d za=%d "
            "zo=%d clamp=[%d,%d] scale=%a: reference %d, optimized %d\n",
            i, j, m, n, k, path_name(path), threads, za, zo, qmin, qmax,
            scale[p.per_channel ? j : 0], want[i * ldo + j], got[i * ldo + j]);
        return false;
      }
    }
  }
  return true;
}

// The fp32 output stage alone on ties: acc * 2^-s lands on every .5 (half to even), both signs.
bool check_requant_fp32_ties(Path path) {
  const int n = 77;
  std::vector<int32_t> acc(n);
  std::vector<float> scale(n);
  for (int c = 0; c < n; ++c) {
    acc[c] = (c - n / 2) * 3;
    scale[c] = std::ldexp(1.0f, -rnd(1, 3));
  }
  acc[0] = std::numeric_limits<int32_t>::min();
  acc[1] = std::numeric_limits<int32_t>::max();
  QS8Fp32Params p;
  p.scale = scale.data();
  p.output_zero_point = rnd(-20, 20);
  std::vector<int8_t> got(n);
  requantize_fp32_s8(n, acc.data(), p, got.data());
  for (int c = 0; c < n; ++c) {
    const double exact = static_cast<double>(acc[c]) * scale[c];
    double r = std::floor(exact);
    const double frac = exact - r;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(r, 2.0) != 0.0)) r += 1.0;
    const double o = std::min(127.0, std::max(-128.0, r + p.output_zero_point));
    if (got[c] != static_cast<int8_t>(o)) {
      std::printf("FAIL requantize_fp32_s8 c=%d acc=%d scale=%a path=%s: expected %d, got %d\n", c,
                  acc[c], scale[c], path_name(path), static_cast<int>(o), got[c]);
      return false;
    }
  }
  return true;
}

// Calls the path's table directly on a column sub-range, as the thread split does.
bool check_subrange(Path path, const Case& cs) {
  const QS8GemmUKernel* uk = qs8_gemm_ukernel(path);
  const int m = cs.m, n = cs.n, k = cs.k;
  const int panels = (n + uk->nr - 1) / uk->nr;
  const int p0 = rnd(0, panels - 1), p1 = rnd(p0 + 1, panels);
  const int n0 = p0 * uk->nr, n1 = std::min(n, p1 * uk->nr);
  auto a = random_s8(static_cast<size_t>(m) * k);
  auto w = random_s8(static_cast<size_t>(n) * k);
  std::vector<int32_t> want(static_cast<size_t>(m) * n), got(static_cast<size_t>(m) * n, 7);
  ref::gemm_s8s8s32(m, n, k, a.data(), k, w.data(), k, want.data(), n);
  PackedS8 packed(w.data(), n, k);
  uk->gemm_s32(m, k, a.data(), k, packed.packed_for(path), n, n0, n1, got.data(), n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      const int32_t expect = (j >= n0 && j < n1) ? want[i * n + j] : 7;
      if (expect != got[i * n + j]) {
        std::printf(
            "FAIL %s columns [%d,%d) i=%d j=%d M x N x K = %d x %d x %d: reference %d, "
            "optimized %d%s\n",
            uk->name, n0, n1, i, j, m, n, k, expect, got[i * n + j],
            (j < n0 || j >= n1) ? " (wrote outside its range)" : "");
        return false;
      }
    }
  }
  return true;
}

bool check_f32(Path path, const Case& cs, int threads) {
  const int m = cs.m, n = cs.n, k = cs.k;
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> a(static_cast<size_t>(m) * k), w(static_cast<size_t>(n) * k), bias(n);
  for (auto& x : a) x = u(g_rng);
  for (auto& x : w) x = u(g_rng);
  for (auto& x : bias) x = u(g_rng);
  F32Params p;
  p.bias = bias.data();
  if (rnd(0, 2) == 0) {
    p.min = 0.f;
    p.max = rnd(0, 1) ? 6.f : std::numeric_limits<float>::infinity();
  }
  std::vector<float> want(static_cast<size_t>(m) * n), got(static_cast<size_t>(m) * n),
      got2(static_cast<size_t>(m) * n);
  ref::linear_f32(m, n, k, a.data(), k, w.data(), k, p, want.data(), n);
  PackedF32 packed(w.data(), n, k);
  linear_f32(m, a.data(), k, packed, p, got.data(), n, 1);
  if (last_path() != path && !(path == kNeonDot && last_path() == kNeon)) {
    std::printf("FAIL linear_f32 %dx%dx%d: ran path %s, forced %s\n", m, n, k,
                path_name(last_path()), path_name(path));
    return false;
  }
  linear_f32(m, a.data(), k, packed, p, got2.data(), n, threads);
  const float tol = 1e-6f * (k + 8) * 4;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::fabs(want[i] - got[i]) <= tol)) {
      std::printf(
          "FAIL linear_f32 i=%zu j=%zu M x N x K = %d x %d x %d path=%s: reference %.9g, "
          "optimized %.9g (tol %.3g)\n",
          i / n, i % n, m, n, k, path_name(path), want[i], got[i], tol);
      return false;
    }
    if (std::memcmp(&got[i], &got2[i], sizeof(float)) != 0) {
      std::printf(
          "FAIL linear_f32 i=%zu j=%zu M x N x K = %d x %d x %d path=%s: threads=%d gave "
          "%.9g, threads=1 gave %.9g (must be identical)\n",
          i / n, i % n, m, n, k, path_name(path), threads, got2[i], got[i]);
      return false;
    }
  }
  return true;
}

void record(bool ok) {
  ok ? ++g_passed : ++g_failed;
}

void test_path(Path path) {
  force_paths(path);
  const int before = g_failed;
  // 1. Exhaustive small shapes.
  const int lim = g_quick ? 9 : 17;
  for (int m = 1; m <= lim; ++m)
    for (int n = 1; n <= lim; ++n)
      for (int k = 1; k <= lim; ++k) {
        if (g_quick && ((m + n + k) % 3 != 0)) continue;
        record(check_gemm(path, {m, n, k}, 1, false));
        const int za = rnd(0, 4) == 0 ? (rnd(0, 1) ? -128 : 127) : rnd(-128, 127);
        const int zo = rnd(0, 4) == 0 ? (rnd(0, 1) ? -128 : 127) : rnd(-128, 127);
        int lo = -128, hi = 127;
        if (rnd(0, 3) == 0) {
          lo = rnd(-128, 127);
          hi = rnd(lo, 127);
        }
        record(check_linear(path, {m, n, k}, 1, za, zo, lo, hi, rnd(0, 3) == 0));
        record(check_linear_fp32(path, {m, n, k}, 1, za, zo, lo, hi, rnd(0, 3) == 0));
        if (g_failed - before > 10) return;
      }
  // 2. Tile multiples and one off, strides, threads.
  const int ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 15, 16, 17, 31, 32, 33, 63, 64, 65};
  const int ns[] = {15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 95, 96, 97, 127, 128, 129, 255};
  const int ks[] = {3,  4,  5,  7,   8,   9,   15,  16,  17,  31,   32,  33,
                    63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 1024};
  const int count = g_quick ? 40 : 400;
  for (int t = 0; t < count; ++t) {
    Case cs{ms[rnd(0, 18)], ns[rnd(0, 18)], ks[rnd(0, 22)]};
    const int threads = rnd(1, 3);
    record(check_gemm(path, cs, threads, false));
    record(check_linear(path, cs, threads, rnd(-128, 127), rnd(-128, 127), -128, 127, rnd(0, 1)));
    record(check_subrange(path, cs));
    record(
        check_linear_fp32(path, cs, threads, rnd(-128, 127), rnd(-128, 127), -128, 127, rnd(0, 1)));
    if (g_failed - before > 10) return;
  }
  // 3. K large enough to test the int32 range: all -128 (the largest products), K = 8192.
  record(check_gemm(path, {3, 33, 8192}, 1, true));
  record(check_gemm(path, {17, 20, 8191}, 2, true));
  record(check_linear(path, {5, 37, 8192}, 1, 127, -128, -128, 127, false));
  record(check_linear(path, {2, 19, 8192}, 2, -128, 127, -128, 127, false));
  record(check_linear_fp32(path, {5, 37, 8192}, 1, 127, -128, -128, 127, false));
  record(check_linear_fp32(path, {2, 19, 8192}, 2, -128, 127, -128, 127, false));
  record(check_requant_fp32_ties(path));
  // 4. Random larger shapes.
  for (int t = 0; t < (g_quick ? 2 : 12); ++t) {
    Case cs{rnd(1, 200), rnd(1, 300), rnd(1, 2000)};
    record(check_gemm(path, cs, rnd(1, 2), false));
    record(check_linear(path, cs, rnd(1, 2), rnd(-128, 127), rnd(-128, 127), -128, 127, true));
  }
  // 5. fp32 linear.
  if (f32_gemm_ukernel(path)) {
    for (int t = 0; t < (g_quick ? 30 : 300); ++t) {
      Case cs{rnd(1, 40), rnd(1, 100), rnd(1, 300)};
      if (t % 10 == 0) cs = {ms[rnd(0, 18)], ns[rnd(0, 18)], ks[rnd(0, 22)]};
      record(check_f32(path, cs, rnd(2, 3)));
      if (g_failed - before > 10) return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t only = kAllPaths;
  std::string expect;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      g_quick = true;
    } else if (arg == "--paths" && i + 1 < argc) {
      only = parse_paths(argv[++i]);
    } else if (arg == "--expect-path" && i + 1 < argc) {
      expect = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--paths a,b] [--expect-path NAME]\n", argv[0]);
      return 2;
    }
  }
  std::printf("cpu: %s\n", cpu_description().c_str());
  const uint32_t avail = available_paths();
  if (!expect.empty()) {
    std::vector<int8_t> a(64 * 256, 1), w(64 * 256, 1);
    std::vector<int32_t> c(64 * 64);
    gemm_s8s8s32_unpacked(64, 64, 256, a.data(), w.data(), c.data());
    const bool ok = expect == path_name(last_path());
    std::printf("%s dispatch: picked %s, expected %s\n", ok ? "ok" : "FAIL", path_name(last_path()),
                expect.c_str());
    record(ok);
  }
  for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
    const Path path = static_cast<Path>(bit);
    if (!(only & bit)) continue;
    const bool compiled = (compiled_paths() & bit) && qs8_gemm_ukernel(path) != nullptr;
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
