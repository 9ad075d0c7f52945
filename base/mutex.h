// A std::mutex with Abseil's thread-safety annotations, the project's one
// mutex type.
//
// Why not absl::Mutex: Debian's abseil is a prebuilt library without
// ThreadSanitizer instrumentation, so TSan cannot see absl::Mutex's
// happens-before edges and reports races on data it guards. std::mutex goes
// through pthreads, which TSan intercepts, and the annotations still let
// clang's -Wthread-safety check ABSL_GUARDED_BY (the tsan preset builds with
// clang and that warning as an error).
#ifndef QAQKV_BASE_MUTEX_H_
#define QAQKV_BASE_MUTEX_H_

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/hash/hash.h"
#include "absl/synchronization/mutex.h"

namespace qaqkv::base {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Tells the analysis the caller holds the lock, where it cannot see it
  // (a CondVar predicate runs with the lock held, in a lambda).
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable for Mutex. Wait releases `mu` while it sleeps and
// holds it again when it returns, so callers keep their annotations.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Blocks until `done()` holds. `done` runs with `mu` held; a lambda that
  // reads guarded members says so with `mu->AssertHeld()`.
  template <typename Pred>
  void Wait(Mutex* mu, Pred done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock, done);
    lock.release();  // still held: the caller's MutexLock unlocks it
  }
  // As Wait, for at most `timeout`; returns done().
  template <typename Rep, typename Period, typename Pred>
  bool WaitFor(Mutex* mu, std::chrono::duration<Rep, Period> timeout, Pred done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool ok = cv_.wait_for(lock, timeout, done);
    lock.release();
    return ok;
  }
  void SignalAll() { cv_.notify_all(); }
  void Signal() { cv_.notify_one(); }

 private:
  std::condition_variable cv_;
};

// N mutexes chosen by a key's hash: per-key serialization (a block's
// read-modify-write, a page's location change) without a lock per key.
// Two keys may share a stripe, so a holder must not wait for another key's
// stripe while holding one, except through Locks, which takes them in
// order.
template <size_t N>
class StripedMutex {
 public:
  static size_t IndexOf(std::string_view key) { return absl::HashOf(key) % N; }
  Mutex& For(std::string_view key) { return stripes_[IndexOf(key)]; }

  // The stripes of several keys, locked in index order (so two holders
  // cannot deadlock) and released when it goes. The set is only known at
  // run time, hence no static lock annotations.
  class Locks {
   public:
    Locks(StripedMutex& striped, std::vector<size_t> which) ABSL_NO_THREAD_SAFETY_ANALYSIS
        : striped_(striped), which_(std::move(which)) {
      std::sort(which_.begin(), which_.end());
      which_.erase(std::unique(which_.begin(), which_.end()), which_.end());
      for (size_t i : which_) striped_.stripes_[i].Lock();
    }
    ~Locks() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      for (auto it = which_.rbegin(); it != which_.rend(); ++it) striped_.stripes_[*it].Unlock();
    }
    Locks(const Locks&) = delete;
    Locks& operator=(const Locks&) = delete;

   private:
    StripedMutex& striped_;
    std::vector<size_t> which_;  // IndexOf of each key
  };

 private:
  std::array<Mutex, N> stripes_;
};

// Debian's abseil is built with Mutex deadlock detection on, which records
// every lock order in a global graph (GraphCycles showed in the service's
// profiles). Builds with NDEBUG (release and the sanitizer presets) turn it
// off; the debug preset keeps it. Inline, so NDEBUG is the caller's: call
// it first thing in main, before any Mutex is taken.
inline void SkipMutexDeadlockDetectionWithNdebug() {
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_MUTEX_H_
