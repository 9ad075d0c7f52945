// A fixed set of threads running submitted tasks in FIFO order: the client's
// encode/decode pool and read-repair thread, the server's store writers.
//
// Thread-safety: Submit may be called from any thread, including from a
// task. The destructor must not run on one of the pool's own threads.
#ifndef QAQKV_BASE_THREAD_POOL_H_
#define QAQKV_BASE_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "base/mutex.h"

namespace qaqkv::base {

class ThreadPool {
 public:
  // threads >= 1.
  explicit ThreadPool(int threads);
  // Runs the tasks still queued, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // The queue is unbounded: callers bound their own work in flight
  // (TaskCounter), so one caller cannot flood the pool for others.
  void Submit(std::function<void()> task);
  int threads() const { return static_cast<int>(threads_.size()); }

 private:
  void Run();

  Mutex mu_;
  CondVar cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Counts one caller's tasks in flight, so the caller can bound them and
// wait for all of them before its buffers go away.
class TaskCounter {
 public:
  TaskCounter() = default;
  // Waits for every task: tasks reference the caller's stack and buffers.
  ~TaskCounter() { WaitBelow(1); }
  TaskCounter(const TaskCounter&) = delete;
  TaskCounter& operator=(const TaskCounter&) = delete;

  void Add();
  void Done();
  // Blocks until fewer than `limit` tasks are in flight.
  void WaitBelow(int limit);

 private:
  Mutex mu_;
  CondVar cv_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_THREAD_POOL_H_
