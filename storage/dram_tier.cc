#include "storage/dram_tier.h"

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "base/mutex.h"

namespace qaqkv::storage {

struct DramTier::Shard {
  struct Entry {
    std::string key;
    PageBuffer value;
    size_t charge;
  };

  explicit Shard(size_t budget) : budget(budget) {}

  const size_t budget;
  mutable base::Mutex mu;
  // Most recent at the front.
  std::list<Entry> lru ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string_view, std::list<Entry>::iterator> index ABSL_GUARDED_BY(mu);
  size_t charged ABSL_GUARDED_BY(mu) = 0;
  DramTierStats stats ABSL_GUARDED_BY(mu);

  void RemoveLocked(std::list<Entry>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    charged -= it->charge;
    index.erase(std::string_view(it->key));
    lru.erase(it);
  }
};

absl::StatusOr<std::unique_ptr<DramTier>> DramTier::Create(const DramTierOptions& options) {
  if (options.capacity_bytes == 0) {
    return absl::InvalidArgumentError("dram.capacity_bytes: must be > 0");
  }
  if (options.shards < 1 || options.shards > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("dram.shards: ", options.shards, " not in [1, 1024]"));
  }
  return std::make_unique<DramTier>(Token(), options);
}

DramTier::DramTier(Token, const DramTierOptions& options) : capacity_(options.capacity_bytes) {
  const size_t per_shard = options.capacity_bytes / options.shards;
  for (int i = 0; i < options.shards; ++i) shards_.push_back(std::make_unique<Shard>(per_shard));
}

DramTier::~DramTier() = default;

DramTier::Shard& DramTier::ShardFor(std::string_view key) {
  return *shards_[absl::HashOf(key) % shards_.size()];
}

bool DramTier::Put(std::string_view key, PageBuffer value, std::vector<std::string>* evicted) {
  Shard& s = ShardFor(key);
  if (value == nullptr) return false;
  const size_t charge = value->size() + key.size() + kEntryOverheadBytes;
  base::MutexLock lock(&s.mu);
  if (auto it = s.index.find(key); it != s.index.end()) s.RemoveLocked(it->second);
  if (charge > s.budget) {
    ++s.stats.rejected;
    return false;
  }
  // Make room first, so the shard never holds more than its budget.
  while (s.charged + charge > s.budget && !s.lru.empty()) {
    auto victim = std::prev(s.lru.end());
    ++s.stats.evictions;
    s.stats.evicted_bytes += victim->charge;
    if (evicted != nullptr) evicted->push_back(victim->key);
    s.RemoveLocked(victim);
  }
  s.lru.push_front(Shard::Entry{std::string(key), std::move(value), charge});
  s.index.emplace(std::string_view(s.lru.front().key), s.lru.begin());
  s.charged += charge;
  ++s.stats.inserts;
  return true;
}

PageBuffer DramTier::Get(std::string_view key) {
  Shard& s = ShardFor(key);
  base::MutexLock lock(&s.mu);
  auto it = s.index.find(key);
  if (it == s.index.end()) {
    ++s.stats.misses;
    return nullptr;
  }
  ++s.stats.hits;
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->value;
}

bool DramTier::Erase(std::string_view key) {
  Shard& s = ShardFor(key);
  base::MutexLock lock(&s.mu);
  auto it = s.index.find(key);
  if (it == s.index.end()) return false;
  s.RemoveLocked(it->second);
  return true;
}

size_t DramTier::ErasePrefix(std::string_view prefix) {
  size_t erased = 0;
  for (auto& shard : shards_) {
    base::MutexLock lock(&shard->mu);
    for (auto it = shard->lru.begin(); it != shard->lru.end();) {
      auto next = std::next(it);
      if (std::string_view(it->key).substr(0, prefix.size()) == prefix) {
        shard->RemoveLocked(it);
        ++erased;
      }
      it = next;
    }
  }
  return erased;
}

DramTierStats DramTier::Stats() const {
  DramTierStats total;
  for (const auto& shard : shards_) {
    base::MutexLock lock(&shard->mu);
    total.hits += shard->stats.hits;
    total.misses += shard->stats.misses;
    total.inserts += shard->stats.inserts;
    total.evictions += shard->stats.evictions;
    total.evicted_bytes += shard->stats.evicted_bytes;
    total.rejected += shard->stats.rejected;
    total.charged_bytes += shard->charged;
    total.entries += shard->lru.size();
  }
  return total;
}

}  // namespace qaqkv::storage
