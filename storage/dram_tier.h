// The DRAM tier: a sharded in-memory page cache with a hard byte budget.
//
// Values are immutable shared buffers: a hit hands out another reference to
// the stored bytes instead of copying them, and an entry evicted while a
// reader still holds it stays alive until that reader drops it (its memory
// then no longer counts against the budget). Each shard has its own lock and
// an equal share of the budget and evicts its least recently used entries.
//
// Thread-safety: every method is safe to call concurrently.
#ifndef QAQKV_STORAGE_DRAM_TIER_H_
#define QAQKV_STORAGE_DRAM_TIER_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace qaqkv::storage {

// Immutable page bytes shared between the cache and its readers.
using PageBuffer = std::shared_ptr<const std::string>;

struct DramTierOptions {
  // Bytes charged to all entries together: value + key + a fixed per-entry
  // overhead (kEntryOverheadBytes), so the budget bounds real memory.
  size_t capacity_bytes = size_t{1} << 30;
  // Independent shards (locks); each gets capacity_bytes / shards.
  int shards = 16;
};

struct DramTierStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t inserts = 0;
  uint64_t evictions = 0;
  uint64_t evicted_bytes = 0;
  uint64_t rejected = 0;  // values larger than a shard's budget
  size_t charged_bytes = 0;
  size_t entries = 0;
};

class DramTier {
 public:
  // Per-entry bookkeeping charged on top of key and value (list node, hash
  // slot, shared_ptr control block).
  static constexpr size_t kEntryOverheadBytes = 128;

  // kInvalidArgument for a zero capacity or a shard count outside [1, 1024].
  static absl::StatusOr<std::unique_ptr<DramTier>> Create(const DramTierOptions& options);

  // Use Create(); the token keeps construction inside this class.
  class Token {
    friend class DramTier;
    Token() = default;
  };
  DramTier(Token, const DramTierOptions& options);

  DramTier(const DramTier&) = delete;
  DramTier& operator=(const DramTier&) = delete;
  ~DramTier();

  // Inserts or replaces `key`, then evicts least recently used entries of
  // its shard until the shard is within budget. Returns false (and caches
  // nothing) when the entry alone exceeds a shard's budget or value is null.
  // The keys of evicted entries are appended to `evicted` when given.
  bool Put(std::string_view key, PageBuffer value, std::vector<std::string>* evicted = nullptr);
  // The cached buffer, or nullptr on a miss; a hit becomes most recent.
  PageBuffer Get(std::string_view key);
  // True when `key` was cached.
  bool Erase(std::string_view key);
  // Erases every key that starts with `prefix`; returns how many.
  size_t ErasePrefix(std::string_view prefix);

  DramTierStats Stats() const;
  size_t capacity_bytes() const { return capacity_; }

 private:
  struct Shard;
  Shard& ShardFor(std::string_view key);

  size_t capacity_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_DRAM_TIER_H_
