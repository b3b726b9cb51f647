// Persistent worker threads that claim tasks from a generation-tagged counter.
#include "dispatch/threadpool.h"

#include <sched.h>

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
namespace {

constexpr int kIndexBits = 20;
constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;
constexpr int kGenShift = 2 * kIndexBits;

uint64_t gen_of(uint64_t s) {
  return s >> kGenShift;
}
int tasks_of(uint64_t s) {
  return static_cast<int>((s >> kIndexBits) & kIndexMask);
}
int next_of(uint64_t s) {
  return static_cast<int>(s & kIndexMask);
}

}  // namespace

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

void ThreadPool::work(uint64_t gen, int me) {
  const int threads = next_of(state_.load(std::memory_order_acquire));
  if (threads <= 0) return;
  for (int i = 0; i < threads; ++i) {
    std::atomic<uint64_t>& range = ranges_[(me + i) % threads];
    uint64_t s = range.load(std::memory_order_acquire);
    for (;;) {
      if (gen_of(s) != gen || next_of(s) >= tasks_of(s)) break;  // tasks_of = the range's end
      if (!range.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        continue;
      }
      // A claimed task keeps its call alive (the caller waits for done_), so fn_ is valid.
      (*fn_)(next_of(s));
      done_.fetch_add(1, std::memory_order_acq_rel);
      s = range.load(std::memory_order_acquire);
    }
  }
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = gen_of(state_.load(std::memory_order_acquire));
    if (gen == seen) {
      // Spin ~50 us for the next call, then sleep on the condition variable.
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      int spins = 0;
      while (gen == seen) {
        EDGEOPT_PAUSE();
        if (++spins % 64 == 0 && std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lk(mu_);
          cv_.wait(lk,
                   [&] { return stop_ || gen_of(state_.load(std::memory_order_acquire)) != seen; });
          if (stop_) return;
        }
        gen = gen_of(state_.load(std::memory_order_acquire));
      }
    }
    seen = gen;
    // Workers beyond the call's thread count stay out, so `threads` means what it says.
    if (id < participants_.load(std::memory_order_acquire)) work(gen, id + 1);
  }
}

void ThreadPool::run(int tasks, int threads, const std::function<void(int)>& fn) {
  if (tasks <= 0) return;
  if (threads > tasks) threads = tasks;
  if (threads > kMaxThreads) threads = kMaxThreads;
  if (threads <= 1 || tasks > static_cast<int>(kIndexMask)) {
    for (int t = 0; t < tasks; ++t) fn(t);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  ensure_workers(threads - 1);
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = &fn;
    participants_.store(threads - 1, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    gen = (gen_of(state_.load(std::memory_order_relaxed)) + 1) & ((uint64_t{1} << 24) - 1);
    for (int t = 0; t < threads; ++t) {
      const uint64_t begin = static_cast<uint64_t>(tasks) * t / threads;
      const uint64_t end = static_cast<uint64_t>(tasks) * (t + 1) / threads;
      ranges_[t].store((gen << kGenShift) | (end << kIndexBits) | begin, std::memory_order_relaxed);
    }
    state_.store((gen << kGenShift) | (static_cast<uint64_t>(tasks) << kIndexBits) |
                     static_cast<uint64_t>(threads),
                 std::memory_order_release);
  }
  cv_.notify_all();
  work(gen, 0);
  // Only tasks already claimed by a worker remain; wait for them, yielding the core now and then
  // in case the worker shares it with us.
  int spins = 0;
  while (done_.load(std::memory_order_acquire) != tasks) {
    EDGEOPT_PAUSE();
    if (++spins % 256 == 0) sched_yield();
  }
}

}  // namespace edgeopt
