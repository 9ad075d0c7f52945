// A std::mutex with Abseil's thread-safety annotations.
//
// Why not absl::Mutex: Debian's abseil is a prebuilt library without
// ThreadSanitizer instrumentation, so TSan cannot see absl::Mutex's
// happens-before edges and reports races on data it guards. std::mutex goes
// through pthreads, which TSan intercepts, and the annotations still let
// clang's -Wthread-safety check ABSL_GUARDED_BY.
#ifndef QAQKV_STORAGE_INTERNAL_MUTEX_H_
#define QAQKV_STORAGE_INTERNAL_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace qaqkv::storage::internal {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
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

}  // namespace qaqkv::storage::internal

#endif  // QAQKV_STORAGE_INTERNAL_MUTEX_H_
