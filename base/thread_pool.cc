#include "base/thread_pool.h"

#include <utility>

namespace qaqkv::base {

ThreadPool::ThreadPool(int threads) {
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

ThreadPool::~ThreadPool() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::Submit(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    queue_.push_back(std::move(task));
  }
  cv_.Signal();
}

void ThreadPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      MutexLock lock(&mu_);
      cv_.Wait(&mu_, [this] {
        mu_.AssertHeld();
        return stop_ || !queue_.empty();
      });
      if (queue_.empty()) return;  // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

void TaskCounter::Add() {
  MutexLock lock(&mu_);
  ++n_;
}

void TaskCounter::Done() {
  MutexLock lock(&mu_);
  --n_;
  cv_.SignalAll();
}

void TaskCounter::WaitBelow(int limit) {
  MutexLock lock(&mu_);
  cv_.Wait(&mu_, [&] {
    mu_.AssertHeld();
    return n_ < limit;
  });
}

}  // namespace qaqkv::base
