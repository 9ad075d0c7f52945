// The tiered PageStore: block and session records in the metadata store
// (metadata_store.h: RocksDB column families `blocks` and `sessions`), and
// page bytes in an ordered list of page tiers (page_tier.h). On disk the list is the DRAM
// tier in front of the RocksDB tier (the record database's `pages` column);
// memory-only it is the DRAM tier alone.
//
// The last tier is the pages' home. A write goes to the home tier first and
// then, as a cache, to the tiers in front of it; reads try the tiers in
// order and copy what a lower tier had into the ones above it (on its
// second read in a while, unless promote_on_first_read). The block's
// record is the commit point: when the home tier keeps its pages in the
// record database (the RocksDB tier), the page and the record are one atomic
// batch, so a crash leaves both or neither; memory-only, the record lives in
// the index alone. (A durable home tier with its own files, the next disk
// tier, will write the page first and the record after it, with an empty
// record before a block's first page so that a crash in between leaves a
// block the abandoned-block reclaim removes, not a page no record names.)
//
// Every block's record is also kept in memory (an index loaded at open), so
// the hot paths (PutPage, GetBlock, Lookup) read no RocksDB record.
//
// Memory-only mode is a pure cache, bounded by the DRAM budget: pages live
// only in the DRAM tier, block records only in the index, and sessions in
// RocksDB on an in-memory Env (nothing touches the disk). When the DRAM
// tier evicts a page, its whole block is dropped, so Lookup never counts a
// block it cannot serve (a reader racing with the drop gets kNotFound from
// GetPage).
#ifndef QAQKV_STORAGE_TIERED_STORE_H_
#define QAQKV_STORAGE_TIERED_STORE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/mutex.h"
#include "storage/block_record.h"
#include "storage/metadata_store.h"
#include "storage/page_store.h"
#include "storage/page_tier.h"
#include "storage/rocksdb_tier.h"

namespace qaqkv::storage {
namespace internal {
class ReadAdmission;
class WriteBackQueue;
}  // namespace internal

struct TieredStoreOptions {
  std::string data_dir;            // RocksDB directory (unused when memory_only)
  bool memory_only = false;
  bool sync = false;               // fsync every acknowledged write
  // Page bytes in segment files, RocksDB holding their locations
  // (storage/rocksdb_tier.h); false: page bytes in RocksDB.
  bool separate_pages = true;
  // Segment files appended to at once: writers in separate files copy in
  // parallel instead of queueing on one file's inode lock.
  int segment_lanes = 4;
  // Segment appends with O_DIRECT, records padded to 4 KiB: page bytes do
  // not pass through (and are not kept twice in) the page cache
  // (storage/segment_log.h).
  bool segment_direct_io = false;
  // Write-back (on disk only; 0: off). A page put is acknowledged once it
  // is in memory and a background writer stores it; at most this many
  // bytes of acknowledged pages wait unwritten, and a put past that waits
  // for room. Those bytes are all a crash can lose, and never part of a
  // block: each page is written with the block's record as it stood once
  // that page arrived. They come out of the DRAM tier's share of
  // memory_bytes, and may be at most a quarter of memory_bytes.
  uint64_t write_back_bytes = 0;
  // On disk: below this many free bytes on data_dir's filesystem page puts
  // are refused (kResourceExhausted) and DiskHealth reports it, before
  // RocksDB and the segments run out of room mid-write. 0: no floor.
  uint64_t min_free_disk_bytes = 256ull << 20;
  // Memory budget: the DRAM tier, and on disk also RocksDB's memtables and
  // block cache, which take min(64 MiB, memory_bytes / 8) each out of it
  // (so one number bounds the server's caches).
  size_t memory_bytes = size_t{1} << 30;
  int dram_shards = 16;
  // On disk: a page read from the disk tier is copied into the DRAM tier
  // on its second read within a window of recent reads, so a resume's
  // one sweep over a session does not push out what is read again
  // (storage/internal/read_admission.h). True: on every read.
  bool promote_on_first_read = false;
  uint64_t tenant_quota_bytes = 0;  // 0: no quota
  // Bytes of pages all tenants may keep; past it the least recently used
  // whole blocks are evicted, those no live session references first.
  // 0: no budget.
  uint64_t disk_bytes = 0;
  // An incomplete block untouched for this long is reclaimed.
  int64_t abandoned_block_ms = 10 * 60 * 1000;
  // A committed block no session references, unread for this long, expires.
  // 0: never.
  int64_t block_ttl_ms = 0;
  // How long a deleted session's tombstone is kept: longer than a server
  // can be away and come back with an older copy (a rebalance after its
  // return removes such copies).
  int64_t session_tombstone_ms = 7 * 24 * 3600 * 1000LL;
  // Period of the background maintenance thread (session expiry, abandoned
  // and expired blocks, budget, access times). 0: no thread; call
  // RunMaintenance yourself.
  int64_t maintenance_interval_ms = 1000;
};

// What one tier holds and did since open, by the tier's name ("dram",
// "disk"): the one set of figures GetStats and /metrics both report.
struct TierStats {
  std::string name;
  uint64_t hits = 0;       // page reads it served
  uint64_t misses = 0;     // page reads that reached it and did not find the page
  uint64_t evictions = 0;  // DRAM: entries evicted; disk: whole blocks evicted
  uint64_t bytes = 0;      // bytes it holds (DRAM: charged bytes; disk: page bytes)
  uint64_t entries = 0;    // pages (DRAM) or blocks (disk) it holds
  uint64_t budget_bytes = 0;  // its byte budget; 0: none
};

struct StoreStats {
  std::vector<TierStats> tiers;  // in read order: "dram", then "disk" unless memory-only
  uint64_t total_bytes = 0;      // page bytes of every tenant's blocks
  uint64_t blocks = 0;           // blocks, committed or not
  uint64_t blocks_evicted = 0;   // whole blocks evicted under the disk budget
  // Blocks dropped because a page was lost: memory-only, evicted; on
  // disk, damaged (it failed its checksum).
  uint64_t blocks_dropped = 0;
  // Pages read from a lower tier and copied into the one above: on their
  // second read in a while, unless promote_on_first_read (a disk-tier hit
  // not counted here was a first read, left where it was).
  uint64_t pages_promoted = 0;
  uint64_t tenant_quota_bytes = 0;  // each tenant's quota (0: none)
  uint64_t checksum_failures = 0;  // stored pages that failed their checksum
  // Failures of background work (maintenance passes, scans), each logged.
  uint64_t background_errors = 0;
  // The disk tier's files: RocksDB's SST and blob files plus the segment
  // files, and of the segments what is live and what the collector did.
  uint64_t disk_file_bytes = 0;
  uint64_t segment_file_bytes = 0;
  uint64_t segment_live_bytes = 0;
  uint64_t segment_writes = 0;  // write calls (a block's pages of one message share one)
  uint64_t segment_syncs = 0;   // their fdatasync calls (sync mode)
  uint64_t segments_collected = 0;
  uint64_t segment_bytes_copied = 0;
  // Write-back: its limit, what waits unwritten now, and since open the
  // pages written and the puts that waited for room.
  uint64_t write_back_limit_bytes = 0;
  uint64_t write_back_dirty_bytes = 0;
  uint64_t write_back_dirty_pages = 0;
  uint64_t write_back_written_pages = 0;
  uint64_t write_back_stalls = 0;
  // The data directory on its filesystem (on disk only): what its files
  // take (allocated blocks, so the WAL, SSTs, blob files and segments, all
  // garbage included), RocksDB's logs and blob garbage among them, and the
  // filesystem's free and total bytes.
  uint64_t data_dir_bytes = 0;
  uint64_t wal_bytes = 0;
  uint64_t blob_garbage_bytes = 0;
  uint64_t fs_free_bytes = 0;
  uint64_t fs_size_bytes = 0;
};

struct MaintenanceReport {
  size_t sessions_expired = 0;
  size_t session_access_written = 0;
  size_t abandoned_reclaimed = 0;
  size_t blocks_expired = 0;
  size_t blocks_evicted = 0;
};

class TieredStore final : public PageStore {
 public:
  // Opens (or creates) the store and recomputes every tenant's usage from
  // the block records on disk. Errors as RocksDbTier::Open and
  // DramTier::Create, plus kDataLoss for an unreadable block record.
  static absl::StatusOr<std::unique_ptr<TieredStore>> Open(const TieredStoreOptions& options);

  absl::StatusOr<PutPageResult> PutPage(const PutPageRequest& request) override;
  // Pages of one block that follow each other are stored together: on disk
  // one segment write and one RocksDB batch (one flush of each with sync)
  // for all of them, all or none.
  absl::Status PutPages(std::span<const PutPageRequest> requests,
                        std::vector<PutPageResult>* results) override;
  // With a disk tier; memory-only stores page by page (PutPages).
  bool StoresRunsTogether() const override;
  absl::StatusOr<PageBuffer> GetPage(std::string_view tenant, const BlockKey& block,
                                     uint32_t layer) override;
  absl::StatusOr<size_t> Lookup(std::string_view tenant, std::span<const BlockKey> chain,
                                std::string_view descriptor = {}) override;
  // GetPage without reading the block record first, for a caller that has
  // just checked the block is committed and the layer below its count (the
  // service's GetPages, once per stream rather than once per page). A block
  // deleted or evicted since reads as kNotFound.
  absl::StatusOr<PageBuffer> ReadPage(std::string_view tenant, const BlockKey& block,
                                      uint32_t layer);
  absl::StatusOr<BlockRecord> GetBlock(std::string_view tenant, const BlockKey& block) override;
  absl::Status DeleteBlock(std::string_view tenant, const BlockKey& block) override;
  absl::Status RevertPage(std::string_view tenant, const BlockKey& block, uint32_t layer,
                          uint64_t bytes) override;
  TenantUsage Usage(std::string_view tenant) const override;
  absl::StatusOr<std::vector<BlockInfo>> ListBlocks(std::string_view tenant,
                                                    const BlockKey* start_after,
                                                    size_t limit) override;
  absl::Status PutSession(std::string_view tenant, std::string_view session_id,
                          SessionRecord record) override;
  absl::Status RepairSession(std::string_view tenant, std::string_view session_id,
                             SessionRecord record) override;
  absl::StatusOr<SessionRecord> GetSession(std::string_view tenant,
                                           std::string_view session_id) override;
  absl::StatusOr<int64_t> SessionDeletedAt(std::string_view tenant,
                                           std::string_view session_id) override;
  absl::StatusOr<std::vector<std::string>> ListSessions(std::string_view tenant,
                                                        size_t limit) override;
  absl::StatusOr<std::vector<SessionVersion>> ListSessionVersions(std::string_view tenant,
                                                                  std::string_view start_after,
                                                                  size_t limit) override;
  absl::Status DeleteSession(std::string_view tenant, std::string_view session_id) override;
  absl::Status ForgetSession(std::string_view tenant, std::string_view session_id) override;
  absl::Status TouchSession(std::string_view tenant, std::string_view session_id) override;
  absl::StatusOr<size_t> ExpireSessions(int64_t now_ms) override;

  // Whether the disk takes writes: OK, or kResourceExhausted (free space
  // under min_free_disk_bytes) or the error writes last failed with (a
  // failed fdatasync, a write error, write-back failing). OK memory-only.
  // What a server's readiness reports.
  absl::Status DiskHealth();

  // Writes out what write-back holds unwritten (waiting for it), then
  // RocksDB's memtables: what a draining server does before it exits.
  absl::Status Flush();

  // One maintenance pass at time `now_ms` (what the background thread runs).
  absl::StatusOr<MaintenanceReport> RunMaintenance(int64_t now_ms);
  // Page bytes of every tenant together.
  uint64_t TotalBytes() const;
  ~TieredStore() override;

  StoreStats Stats() const;
  // What the DRAM tier got of options.memory_bytes.
  size_t DramBudget() const { return dram_budget_; }
  // Whole blocks evicted under the disk budget since open.
  uint64_t BlocksEvicted() const { return blocks_evicted_.load(std::memory_order_relaxed); }
  // Memory-only: blocks dropped because the DRAM tier evicted one of their
  // pages (it held the only copy).
  uint64_t BlocksDropped() const { return blocks_dropped_.load(std::memory_order_relaxed); }
  // The record database under the metadata store (and, on disk, the RocksDB
  // tier's pages column), for flushing at shutdown and for tests.
  RocksDbTier& records() { return *records_; }

  class Token {
    friend class TieredStore;
    Token() = default;
  };
  TieredStore(Token, TieredStoreOptions options, std::unique_ptr<RocksDbTier> records,
              std::vector<std::unique_ptr<PageTier>> tiers);

 private:
  // A block's record as it stands, kept in memory for every block so that
  // PutPage, GetBlock, Lookup and eviction never read RocksDB for it. On
  // disk it mirrors the `blocks` column (loaded at open, changed together
  // with it under the block's lock); memory-only, it is the only copy.
  struct IndexEntry {
    BlockRecord record;  // accessed_ms is the live access time
    bool access_dirty = false;  // accessed_ms not yet written back (disk only)
  };
  using IndexNode = std::pair<const std::string, IndexEntry>;
  // Orders index nodes by record key, and finds them by a key.
  struct ByRecordKey {
    using is_transparent = void;
    bool operator()(const IndexNode* a, const IndexNode* b) const { return a->first < b->first; }
    bool operator()(const IndexNode* a, std::string_view b) const { return a->first < b; }
    bool operator()(std::string_view a, const IndexNode* b) const { return a < b->first; }
  };

  // Evicts least recently used blocks (unreferenced ones first, never
  // `keep`) until the total is at most `target` bytes; returns how many.
  size_t EvictTo(uint64_t target, std::string_view keep);
  // Pages of one block (a run of PutPages, or PutPage's one), all or none.
  absl::Status PutBlockPages(std::span<const PutPageRequest> group,
                             std::vector<PutPageResult>* results);
  // PutBlockPages under the block's lock: sets `out` to one result per
  // page, collects the DRAM keys it evicted, and sets `no_room` when the
  // disk budget had no room for the pages. `queued`: the bytes write-back
  // took (reserved beforehand).
  absl::Status PutBlockPagesLocked(std::span<const PutPageRequest> group,
                                   std::vector<PutPageResult>* out,
                                   std::vector<std::string>* evicted, bool* no_room,
                                   uint64_t* queued);
  // Write-back: stores the block's queued pages with their records, in one
  // batch, and dequeues them. Under the block's lock.
  absl::Status WriteBackBlockLocked(std::string_view record_key);
  void WriteBackLoop();
  // kResourceExhausted while data_dir's filesystem has less free space than
  // min_free_disk_bytes; looked up at most once a second.
  absl::Status CheckFreeSpace();
  // With `unless_used_since`: only if the block's access time is still
  // that (eviction's snapshot), else kFailedPrecondition: a block read or
  // looked up since the eviction order was drawn up is not evicted.
  absl::Status DeleteBlockByRecordKey(const std::string& record_key,
                                      std::optional<int64_t> unless_used_since = std::nullopt);
  void IndexSet(std::string_view record_key, IndexEntry entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // The erased record's bytes; nullopt when the key had none.
  std::optional<uint64_t> IndexErase(std::string_view record_key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // A copy of the block's indexed record; nullopt when there is none.
  std::optional<BlockRecord> IndexedRecord(std::string_view record_key) const;
  // Record keys of the blocks that sessions alive at `now_ms` reference.
  absl::flat_hash_set<std::string> ReferencedBlocks(int64_t now_ms);
  // The session's record and whether it has expired by `now_ms`, counting
  // accesses not yet written back. kNotFound when there is none.
  absl::StatusOr<SessionRecord> ReadSession(const std::string& key, int64_t now_ms,
                                            bool* expired);
  // The record's access time with accesses since it was written.
  int64_t LastAccess(std::string_view key, const SessionRecord& record) const;
  // Removes a block that lost a page (damaged on disk, or dropped by an
  // earlier read), unless it was used after `touched_ms`; counted in
  // blocks_dropped.
  void DropLostBlock(const std::string& record_key, int64_t touched_ms);
  // An expired session, or a tombstone kept long enough: maintenance
  // removes it.
  bool Gone(const SessionRecord& record, int64_t now_ms) const;
  void NoteAccess(std::string_view key, int64_t now_ms);
  void ForgetAccess(std::string_view key);
  // Writes the access times GetSession and TouchSession renewed into the
  // records (maintenance); returns how many it wrote.
  size_t WriteBackSessionAccess();
  // Logs a failure of background work and counts it (StoreStats).
  void BackgroundError(std::string_view what, const absl::Status& status);
  void MaintenanceLoop();
  void AddUsage(std::string_view tenant, int64_t bytes, int64_t blocks);
  // Adds to the tenant's usage unless that would pass its quota.
  bool ReserveUsage(std::string_view tenant, uint64_t bytes, int64_t blocks);
  // Adds to the stored total unless that would pass the disk budget; the
  // bytes of a page being written count from here on, so the total is the
  // indexed records plus writes in flight.
  bool ReserveTotal(uint64_t bytes);
  void ReleaseTotal(uint64_t bytes);

  PageTier& home() { return *tiers_.back(); }
  const PageTier& home() const { return *tiers_.back(); }
  // Puts `buffer` into every tier in front of the home tier (caches; a
  // cache that cannot take it simply does not have it).
  void CacheAbove(size_t tier, std::string_view page_key, const PageBuffer& buffer);
  // Erases page keys from every tier, and from the home tier in the same
  // batch as `records` when it lives in the record database.
  absl::Status ErasePages(std::span<const std::string> page_keys, RecordBatch records);

  const TieredStoreOptions options_;
  // Declared before the metadata store and the tiers: both refer to it.
  std::unique_ptr<RocksDbTier> records_;
  MetadataStore metadata_;
  std::vector<std::unique_ptr<PageTier>> tiers_;  // read order; the last is home
  size_t dram_budget_ = 0;
  // Serializes the read-modify-write of one block's record across streams.
  base::StripedMutex<64> stripes_;
  mutable base::Mutex usage_mu_;
  absl::flat_hash_map<std::string, TenantUsage> usage_ ABSL_GUARDED_BY(usage_mu_);
  mutable base::Mutex index_mu_;
  // By record key. Nodes stay where they are, so `ordered_` can point at
  // them: ListBlocks pages through a tenant's blocks in key order without
  // passing over the whole index under the lock. Changed only through
  // IndexSet and IndexErase, which keep the two in step.
  absl::node_hash_map<std::string, IndexEntry> index_ ABSL_GUARDED_BY(index_mu_);
  absl::btree_set<const IndexNode*, ByRecordKey> ordered_ ABSL_GUARDED_BY(index_mu_);
  uint64_t total_bytes_ ABSL_GUARDED_BY(index_mu_) = 0;
  base::Mutex eviction_mu_;  // one evictor at a time
  std::atomic<uint64_t> blocks_evicted_{0};
  std::atomic<uint64_t> blocks_dropped_{0};
  std::atomic<uint64_t> pages_promoted_{0};
  std::atomic<uint64_t> background_errors_{0};
  // Session access times newer than their stored records': a GetSession or
  // TouchSession renews the TTL here instead of rewriting a record whose tail
  // may be megabytes, and maintenance writes it back (a crash loses at most
  // one maintenance interval of renewal). By session key.
  mutable base::Mutex access_mu_;
  absl::flat_hash_map<std::string, int64_t> session_access_ ABSL_GUARDED_BY(access_mu_);

  // Which reads from the disk tier are copied into the DRAM tier (null:
  // every read, memory-only or promote_on_first_read).
  std::unique_ptr<internal::ReadAdmission> read_admission_;

  // Write-back only (else null): acknowledged pages not yet written, and
  // the thread writing them.
  std::unique_ptr<internal::WriteBackQueue> write_back_;
  std::thread write_back_thread_;

  // What the filesystem says about the data directory; one cache for the
  // free-space floor and for Stats.
  struct DiskUse {
    int64_t stat_ms = 0, walk_ms = 0;
    absl::Status fs_status;
    uint64_t fs_free_bytes = 0, fs_size_bytes = 0, data_dir_bytes = 0, wal_bytes = 0;
  };
  // `walk`: also the directory's bytes (Stats; the put path needs only
  // the free space).
  DiskUse RefreshedDiskUse(bool walk) const;
  mutable base::Mutex disk_use_mu_;
  mutable DiskUse disk_use_ ABSL_GUARDED_BY(disk_use_mu_);

  base::Mutex stop_mu_;
  base::CondVar stop_cv_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread maintenance_;
};

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_TIERED_STORE_H_
