// A small persistent thread pool for splitting one kernel call across cores.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edgeopt {

// Runs fn(task) for task in [0, tasks) on up to `threads` threads (the caller is one of them).
//
// The tasks are cut into one contiguous range per thread; each thread (the caller is thread 0)
// drains its own range first, so the same thread gets the same columns call after call and
// finds that slice of the weights in its own cache, then steals from the other ranges. A worker
// the OS has descheduled (phones and Pis always carry background load) therefore never holds up
// the call: the others take its tasks and only wait for tasks already claimed and running. Each
// range's claim counter carries the call's generation in the same word, so a worker that wakes
// late can never claim a task of a call that is over or of the next one. Workers spin
// briefly before sleeping, so back-to-back small calls do not pay a futex wake-up each time.
// One call at a time: concurrent callers serialize.
class ThreadPool {
 public:
  static ThreadPool& instance();
  void run(int tasks, int threads, const std::function<void(int)>& fn);
  ~ThreadPool();

 private:
  ThreadPool() = default;
  void ensure_workers(int n);
  void worker_loop(int id);
  // Claims and runs tasks of generation `gen`, own range first, until none is left.
  void work(uint64_t gen, int me);

  static constexpr int kMaxThreads = 64;

  std::mutex call_mu_;  // serializes run()
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  // The call: [63..40] generation, [39..20] task count, [19..0] thread count.
  std::atomic<uint64_t> state_{0};
  // Per thread's range: [63..40] generation, [39..20] end, [19..0] next task to claim.
  std::atomic<uint64_t> ranges_[kMaxThreads] = {};
  std::atomic<int> done_{0};
  const std::function<void(int)>* fn_ = nullptr;
  std::atomic<int> participants_{0};  // workers with id < this join the current call
  bool stop_ = false;
};

}  // namespace edgeopt
