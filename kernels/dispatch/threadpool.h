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
// Tasks are claimed one at a time from a shared counter, and the caller claims too, so a worker
// that the OS has descheduled (phones and Pis always carry background load) never holds up the
// call: the caller takes its tasks and only waits for tasks already claimed and running. The
// claim counter carries the call's generation and task count in the same word, so a worker that
// wakes late can never claim a task of a call that is over or of the next one. Workers spin
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
  // Claims and runs tasks of generation `gen` until none is left.
  void work(uint64_t gen);

  std::mutex call_mu_;  // serializes run()
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  // [63..40] generation, [39..20] task count, [19..0] next task to claim.
  std::atomic<uint64_t> state_{0};
  std::atomic<int> done_{0};
  const std::function<void(int)>* fn_ = nullptr;
  std::atomic<int> participants_{0};  // workers with id < this join the current call
  bool stop_ = false;
};

}  // namespace edgeopt
