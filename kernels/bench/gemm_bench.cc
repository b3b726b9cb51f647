// Kernel micro-benchmark: GOPS of the dense int8 and fp32 GEMM per path and shape (C++ only, so
// it cross-builds for devices).  Usage: edgeopt-gemm-bench [--threads N] [--paths a,b] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "edgeopt/gemm.h"
#include "edgeopt/path.h"

using namespace edgeopt;

namespace {

template <typename Fn>
double median_seconds(Fn fn, double min_batch_seconds, int repeats) {
  fn();
  int calls = 1;
  for (;;) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) fn();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt >= min_batch_seconds || calls > (1 << 24)) break;
    calls *= 2;
  }
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) fn();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                    calls);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  uint32_t only = kAllPaths;
  bool quick = false;
  struct Shape {
    int m, k, n;
  };
  std::vector<Shape> custom;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (arg == "--paths" && i + 1 < argc)
      only = parse_paths(argv[++i]);
    else if (arg == "--quick")
      quick = true;
    else if (arg == "--shape" && i + 1 < argc) {
      Shape s{};
      if (std::sscanf(argv[++i], "%dx%dx%d", &s.m, &s.k, &s.n) != 3 || s.m < 1 || s.k < 1 ||
          s.n < 1) {
        std::fprintf(stderr, "%s: --shape wants MxKxN (positive), got '%s'\n", argv[0], argv[i]);
        return 2;
      }
      custom.push_back(s);
    } else {
      std::fprintf(stderr, "usage: %s [--threads N] [--paths a,b] [--quick] [--shape MxKxN]...\n",
                   argv[0]);
      return 2;
    }
  }
  std::vector<Shape> shapes = {{1, 1024, 1024},  {4, 1024, 1024}, {16, 1024, 1024},
                               {64, 1024, 1024}, {1, 4096, 4096}, {16, 4096, 4096},
                               {256, 256, 256},  {196, 576, 64},  {3136, 147, 64},
                               {128, 768, 768},  {128, 768, 3072}};
  if (quick) shapes = {{1, 256, 256}, {16, 256, 256}, {64, 256, 256}};
  if (!custom.empty()) shapes = custom;
  std::printf("# cpu: %s, threads %d\n", cpu_description().c_str(), threads);
  std::printf("%-6s %-16s %10s %10s\n", "path", "M x K x N", "int8 GOPS", "fp32 GFLOPS");
  const uint32_t avail = available_paths();  // before forcing: forcing narrows it
  for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
    if (!(avail & bit) || !(only & bit)) continue;
    force_paths(bit);
    for (const Shape& s : shapes) {
      std::vector<int8_t> a(static_cast<size_t>(s.m) * s.k, 3),
          w(static_cast<size_t>(s.n) * s.k, -5), out(static_cast<size_t>(s.m) * s.n);
      std::vector<int32_t> bias(s.n, 1), mult(s.n, 1 << 30), shift(s.n, -12);
      std::vector<float> af(a.begin(), a.end()), wf(w.begin(), w.end()), of(out.size());
      PackedS8 pw(w.data(), s.n, s.k);
      PackedF32 pf(wf.data(), s.n, s.k);
      QS8Params p;
      p.bias = bias.data();
      p.multiplier = mult.data();
      p.shift = shift.data();
      const double ops = 2.0 * s.m * s.n * s.k;
      const double ti =
          median_seconds([&] { linear_s8(s.m, a.data(), s.k, pw, p, out.data(), s.n, threads); },
                         0.02, quick ? 3 : 7);
      const Path ran = last_path();
      F32Params fp;
      const double tf =
          median_seconds([&] { linear_f32(s.m, af.data(), s.k, pf, fp, of.data(), s.n, threads); },
                         0.02, quick ? 3 : 7);
      char shape[32];
      std::snprintf(shape, sizeof shape, "%dx%dx%d", s.m, s.k, s.n);
      std::printf("%-6s %-16s %10.1f %10.1f\n", path_name(ran), shape, ops / ti * 1e-9,
                  ops / tf * 1e-9);
    }
  }
  force_paths(0);
  return 0;
}
