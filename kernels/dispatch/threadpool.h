// A small persistent thread pool for splitting one kernel call across cores.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edgeopt {

// Runs fn(task) for task in [0, tasks) on up to `threads` threads (the caller is one of them).
// Workers spin briefly before sleeping, so back-to-back small calls (edge models call small layers
// often) do not pay a futex wake-up each time. One call at a time: concurrent callers serialize.
class ThreadPool {
 public:
  static ThreadPool& instance();
  void run(int tasks, int threads, const std::function<void(int)>& fn);
  ~ThreadPool();

 private:
  ThreadPool() = default;
  void ensure_workers(int n);
  void worker_loop(int id);
  void work(const std::function<void(int)>& fn, int tasks);

  std::mutex call_mu_;  // serializes run()
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_task_{0};
  std::atomic<int> pending_{0};
  int tasks_ = 0;
  int active_workers_ = 0;
  const std::function<void(int)>* fn_ = nullptr;
  bool stop_ = false;
};

}  // namespace edgeopt
