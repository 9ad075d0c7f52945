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

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
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
