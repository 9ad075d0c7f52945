// Threads that run the store's writes for PutPages streams, so gRPC's
// callback threads never wait on RocksDB (a WAL append, or a write stall
// while memtables flush): Lookups and DRAM-hit GetPages keep flowing while
// puts queue here. Memory-only servers do not use it (their puts never
// touch the disk, and a thread hand-off would only add latency).
#ifndef QAQKV_SERVICE_INTERNAL_STORE_EXECUTOR_H_
#define QAQKV_SERVICE_INTERNAL_STORE_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qaqkv::service::internal {

class StoreExecutor {
 public:
  explicit StoreExecutor(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  // Runs what is queued, then joins.
  ~StoreExecutor() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  StoreExecutor(const StoreExecutor&) = delete;
  StoreExecutor& operator=(const StoreExecutor&) = delete;

  void Submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mu_;  // std::mutex: TSan cannot see into Debian's abseil
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stop_ = false;                        // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace qaqkv::service::internal

#endif  // QAQKV_SERVICE_INTERNAL_STORE_EXECUTOR_H_
