// A fixed set of threads running submitted tasks in FIFO order, shared by
// every call of one Client (page encoding and decoding).
#ifndef QAQKV_CLIENT_INTERNAL_WORK_POOL_H_
#define QAQKV_CLIENT_INTERNAL_WORK_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include <condition_variable>
#include <mutex>

namespace qaqkv::client::internal {

class WorkPool {
 public:
  // threads >= 1.
  explicit WorkPool(int threads);
  // Runs the tasks still queued, then joins the threads.
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Thread-safe. The queue is unbounded: callers bound their own work in
  // flight (TaskCounter), so one call cannot flood the pool for others.
  void Submit(std::function<void()> task);
  int threads() const { return static_cast<int>(threads_.size()); }

 private:
  void Run();

  // std::mutex, not absl::Mutex: Debian's abseil is not built with TSan
  // instrumentation, so TSan could not see absl::Mutex's ordering.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stop_ = false;                        // guarded by mu_
  std::vector<std::thread> threads_;
};

// Counts one call's tasks in flight, so the call can bound them and wait
// for all of them before its buffers go away.
class TaskCounter {
 public:
  TaskCounter() = default;
  // Waits for every task: tasks reference the caller's stack and buffers.
  ~TaskCounter() { WaitBelow(1); }
  TaskCounter(const TaskCounter&) = delete;
  TaskCounter& operator=(const TaskCounter&) = delete;

  void Add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++n_;
  }
  void Done() {
    std::lock_guard<std::mutex> lock(mu_);
    --n_;
    cv_.notify_all();
  }
  // Blocks until fewer than `limit` tasks are in flight.
  void WaitBelow(int limit) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return n_ < limit; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_ = 0;  // guarded by mu_
};

}  // namespace qaqkv::client::internal

#endif  // QAQKV_CLIENT_INTERNAL_WORK_POOL_H_
