// A value loaded from files and loaded again when one of them changes, for
// credentials that rotate under a running server (a token file, a TLS
// certificate and key). A change is a new FileVersion: a file renamed in,
// a Kubernetes Secret's symlink swapped, an edit.
//
// A change that does not load leaves the value before in force, and that
// version is not tried again (its error is reported once): the next change
// is. The versions are read before the files, so a change made during a
// load is loaded again by the next Reload. Of two reloads that overlap,
// the one that saw the newer versions decides the value.
//
// Thread-safety: every method may be called concurrently; loads run
// outside the lock.
#ifndef QAQKV_BASE_RELOADING_FILES_H_
#define QAQKV_BASE_RELOADING_FILES_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/file.h"
#include "base/mutex.h"
#include "base/status_macros.h"

namespace qaqkv::base {

template <typename T>
class ReloadingFiles {
 public:
  using Loader = std::function<absl::StatusOr<std::shared_ptr<const T>>()>;

  // Loads the first value: the loader's error if it fails.
  static absl::StatusOr<std::unique_ptr<ReloadingFiles>> Open(std::vector<std::string> paths,
                                                             Loader load) {
    auto self = std::make_unique<ReloadingFiles>(Token(), std::move(paths), std::move(load));
    const std::vector<FileVersion> before = self->Versions();
    QAQKV_ASSIGN_OR_RETURN(std::shared_ptr<const T> value, self->load_());
    MutexLock lock(&self->mu_);
    self->value_ = std::move(value);
    self->versions_ = before;
    return self;
  }

  // The value in force; a reload does not change a value already handed out.
  std::shared_ptr<const T> Get() const {
    MutexLock lock(&mu_);
    return value_;
  }

  // True when a file changed and the new value is in force; false when
  // none changed; the loader's error when they changed into something it
  // refuses (the value before stays).
  absl::StatusOr<bool> Reload() {
    const std::vector<FileVersion> now = Versions();
    uint64_t ticket = 0;
    {
      MutexLock lock(&mu_);
      if (now == versions_) return false;
      versions_ = now;
      ticket = ++claimed_;
    }
    QAQKV_ASSIGN_OR_RETURN(std::shared_ptr<const T> value, load_());
    MutexLock lock(&mu_);
    if (ticket > stored_) {
      value_ = std::move(value);
      stored_ = ticket;
    }
    return true;
  }

  struct Token {};
  ReloadingFiles(Token, std::vector<std::string> paths, Loader load)
      : paths_(std::move(paths)), load_(std::move(load)) {}

 private:
  std::vector<FileVersion> Versions() const {
    std::vector<FileVersion> out;
    out.reserve(paths_.size());
    for (const std::string& p : paths_) out.push_back(FileVersionOf(p));
    return out;
  }

  const std::vector<std::string> paths_;
  const Loader load_;
  mutable Mutex mu_;
  std::shared_ptr<const T> value_ ABSL_GUARDED_BY(mu_);
  std::vector<FileVersion> versions_ ABSL_GUARDED_BY(mu_);  // what value_ came from, or last refused
  uint64_t claimed_ ABSL_GUARDED_BY(mu_) = 0;  // reloads started
  uint64_t stored_ ABSL_GUARDED_BY(mu_) = 0;   // the newest reload whose value is in force
};

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_RELOADING_FILES_H_
