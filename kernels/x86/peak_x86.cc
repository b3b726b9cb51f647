// Front of the x86 int8 peak micro-benchmark: picks the per-ISA body, times it, keeps the best.
#include "x86/peak_x86.h"

#include <algorithm>
#include <chrono>

namespace edgeopt {

namespace {

using Body = double (*)(long);

Body body_for(Path p) {
  switch (p) {
#if defined(EDGEOPT_HAVE_AVX2)
    case kAvx2: return detail::peak_macs_avx2;
#endif
#if defined(EDGEOPT_HAVE_AVX512VNNI)
    case kAvx512Vnni: return detail::peak_macs_avx512vnni;
#endif
#if defined(EDGEOPT_HAVE_AMX)
    case kAmxInt8: return detail::peak_macs_amx;
#endif
    default: return nullptr;
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double peak_int8_gops(Path p, int /*threads_hint_unused*/) {
  Body body = body_for(p);
  if (body == nullptr || (cpu_paths() & p) == 0) return 0.0;
  // Calibrate to ~30 ms per run (clock ramp-up happens in the calibration runs), then keep the
  // best of a few runs: the peak is a property of the core, interruptions only slow it down.
  long iters = 1000;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    body(iters);
    const double s = seconds_since(t0);
    if (s >= 0.005 || iters > (1L << 40)) {
      iters = std::max<long>(1, static_cast<long>(iters * (0.03 / std::max(s, 1e-9))));
      break;
    }
    iters *= 4;
  }
  double best = 0.0;
  for (int run = 0; run < 5; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    const double macs = body(iters);
    const double s = seconds_since(t0);
    if (s > 0) best = std::max(best, 2.0 * macs / s * 1e-9);
  }
  return best;
}

}  // namespace edgeopt
