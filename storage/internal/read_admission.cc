#include "storage/internal/read_admission.h"

#include <algorithm>

#include "absl/hash/hash.h"

namespace qaqkv::storage::internal {

ReadAdmission::ReadAdmission(size_t capacity)
    : capacity_(std::max<size_t>(capacity, 1)), ring_(capacity_) {
  seen_.reserve(capacity_);
}

bool ReadAdmission::Admit(std::string_view key) {
  const uint64_t hash = absl::HashOf(key);
  base::MutexLock lock(&mu_);
  if (auto it = seen_.find(hash); it != seen_.end()) {
    seen_.erase(it);  // its ring slot is now stale and is skipped when reused
    return true;
  }
  const uint64_t seq = next_seq_++;
  Slot& slot = ring_[seq % capacity_];
  if (slot.seq != 0) {
    auto old = seen_.find(slot.hash);
    if (old != seen_.end() && old->second == slot.seq) seen_.erase(old);
  }
  slot = {hash, seq};
  seen_.emplace(hash, seq);
  return false;
}

}  // namespace qaqkv::storage::internal
