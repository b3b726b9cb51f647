// Internal helpers of the dispatchers: aligned packed buffers and the thread split of one call.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "dispatch/threadpool.h"

namespace edgeopt {

inline std::shared_ptr<void> aligned_buffer(size_t bytes) {
  const size_t rounded = ((bytes + 63) / 64) * 64 + 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

// How one call is cut into tasks: column blocks (multiples of nr) when N is wide enough to give
// every thread a few panels, else row blocks. Each output element is computed by exactly one task
// with the same kernel, so the result does not depend on the thread count.
struct Split {
  bool by_rows;
  int tasks;
  int chunk;  // rows or columns per task
};

inline Split plan_split(int m, int n, int nr, int threads, bool allow_rows) {
  if (threads <= 1) return {false, 1, n};
  // A few tasks per thread: a thread the OS descheduled then holds back at most one small task
  // while the others (the caller included) take the rest.
  const int want = 4 * threads;
  const int panels = (n + nr - 1) / nr;
  if (!allow_rows || panels >= 2 * threads || m < 2 * threads) {
    const int per = (panels + std::min(panels, want) - 1) / std::min(panels, want);
    return {false, (panels + per - 1) / per, per * nr};
  }
  // Row blocks stay a multiple of 16 rows (every kernel's row tile divides it) where M allows.
  int per = (m + want - 1) / want;
  if (m >= 16 * want) per = (per + 15) / 16 * 16;
  return {true, (m + per - 1) / per, per};
}

template <typename Fn>
void run_split(int m, int n, int nr, int threads, bool allow_rows, Fn fn) {
  const Split s = plan_split(m, n, nr, threads, allow_rows);
  if (s.tasks <= 1) {
    fn(0, m, 0, n);
    return;
  }
  ThreadPool::instance().run(s.tasks, threads, [&](int t) {
    if (s.by_rows) {
      const int m0 = t * s.chunk, m1 = std::min(m, m0 + s.chunk);
      if (m0 < m1) fn(m0, m1, 0, n);
    } else {
      const int n0 = t * s.chunk, n1 = std::min(n, n0 + s.chunk);
      if (n0 < n1) fn(0, m, n0, n1);
    }
  });
}

}  // namespace edgeopt
