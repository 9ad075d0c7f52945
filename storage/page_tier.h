// Where page bytes live. The tiered store (tiered_store.h) holds an ordered
// list of page tiers: reads try them in order and copy a page found in a
// lower tier into the ones above it (the store decides when), writes go to the last tier (the pages'
// home) and then to the ones above it as a cache. Block and session records
// are not a tier's business: they are the store's, kept apart in its record
// database.
//
// A tier is named ("dram", "disk"); GetStats and /metrics report each tier
// by its name, so a new tier needs no change there.
//
// Thread-safety: implementations are safe to call from any number of
// threads.
#ifndef QAQKV_STORAGE_PAGE_TIER_H_
#define QAQKV_STORAGE_PAGE_TIER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/dram_tier.h"

namespace qaqkv::storage {

class RocksDbTier;

struct PageTierStats {
  uint64_t hits = 0;       // Get calls that found the page
  uint64_t misses = 0;     // Get calls that did not
  uint64_t evictions = 0;  // pages the tier pushed out to make room
  uint64_t bytes = 0;      // bytes it holds, as it counts them (0: it does not count)
  uint64_t entries = 0;    // pages it holds (0: it does not count)
};

class PageTier {
 public:
  virtual ~PageTier() = default;

  // The name the tier is reported by ("dram", "disk").
  virtual std::string_view name() const = 0;

  // Keeps `page` under `key` (a page key, storage/keys.h). A tier with a
  // budget may push other pages out to make room: their keys are appended to
  // `evicted` when it is not null. kResourceExhausted when the tier cannot
  // hold this page at all (nothing is kept); other errors as the tier's
  // medium reports them.
  virtual absl::Status Put(std::string_view key, PageBuffer page,
                           std::vector<std::string>* evicted) = 0;

  // The page, or kNotFound. A tier that checks what it reads back returns
  // kDataLoss for a page that fails its checksum, and forgets that copy.
  virtual absl::StatusOr<PageBuffer> Get(std::string_view key) = 0;

  // Forgets every page of `keys`; a key it does not have is fine.
  virtual absl::Status Erase(std::span<const std::string> keys) = 0;

  virtual PageTierStats Stats() const = 0;

  // True for a tier that keeps its pages in the store's record database
  // (RocksDbPageTier): the store then writes a page, and erases a block's
  // pages, in the same atomic batch as the block's record, so a crash leaves
  // both or neither. Other tiers are written on their own, page before record
  // (tiered_store.h).
  virtual bool InRecordDatabase() const { return false; }
};

// The DRAM tier as a page tier: a sharded LRU cache with a hard byte budget
// (dram_tier.h). Puts never fail for lack of room (least recently used
// pages go) unless one page exceeds a shard's share of the budget.
std::unique_ptr<PageTier> NewDramPageTier(std::unique_ptr<DramTier> dram);

// The `pages` column of a RocksDB tier (BlobDB files), checked against each
// page's checksum on every read. `db` must outlive the tier. It keeps its
// pages in the record database (InRecordDatabase), so the store batches its
// writes with the records; its own Put is for callers without a record.
std::unique_ptr<PageTier> NewRocksDbPageTier(RocksDbTier* db);

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_PAGE_TIER_H_
