// Persistent worker threads with a short spin before sleeping.
#include "dispatch/threadpool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EDGEOPT_PAUSE() _mm_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define EDGEOPT_PAUSE() __asm__ volatile("yield")
#else
#define EDGEOPT_PAUSE() ((void)0)
#endif

namespace edgeopt {

ThreadPool& ThreadPool::instance() {
  static ThreadPool* pool = new ThreadPool();  // never destroyed: workers may outlive statics
  return *pool;
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::ensure_workers(int n) {
  while (static_cast<int>(workers_.size()) < n) {
    const int id = static_cast<int>(workers_.size());
    workers_.emplace_back([this, id] { worker_loop(id); });
  }
}

void ThreadPool::work(const std::function<void(int)>& fn, int tasks) {
  for (;;) {
    const int t = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (t >= tasks) break;
    fn(t);
  }
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for a while (~50 us) waiting for the next generation, then sleep on the condvar.
    uint64_t gen = generation_.load(std::memory_order_acquire);
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    int spins = 0;
    while (gen == seen) {
      EDGEOPT_PAUSE();
      if (++spins % 64 == 0 && std::chrono::steady_clock::now() > spin_until) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
        if (stop_) return;
      }
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (id < active_workers_) {
      work(*fn_, tasks_);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

void ThreadPool::run(int tasks, int threads, const std::function<void(int)>& fn) {
  if (tasks <= 0) return;
  if (threads > tasks) threads = tasks;
  if (threads <= 1) {
    for (int t = 0; t < tasks; ++t) fn(t);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  ensure_workers(threads - 1);
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = &fn;
    tasks_ = tasks;
    active_workers_ = threads - 1;
    next_task_.store(0, std::memory_order_relaxed);
    pending_.store(threads - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  work(fn, tasks);
  while (pending_.load(std::memory_order_acquire) != 0) EDGEOPT_PAUSE();
}

}  // namespace edgeopt
