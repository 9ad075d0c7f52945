// The RocksDB tier: the durable copy of every page, block record and session
// record (docs/design.md: writes are acknowledged once RocksDB has them).
//
// Three column families: `pages`, `blocks` and `sessions` (small records).
// A page's bytes are stored one of two ways, and both are read:
// - with `separate_pages`, appended to the segment log in <path>/segments
//   (storage/segment_log.h), the `pages` family holding only its 20-byte
//   location: key-value separation, so a page is written once, without
//   RocksDB's WAL, memtable and blob-file copies;
// - otherwise (and always in memory) as the value itself, a BlobDB blob
//   from `min_blob_size` up.
// The WAL is always on; with `sync` every write is also fsynced (the
// segments first) before it returns.
//
// A page put appends its bytes before the batch that records their location
// is written, so no location ever names bytes that are not there; a crash
// in between leaves unreferenced bytes, which the collector reclaims. The
// collector (a background thread) rewrites segments whose live share fell
// below `segment_live_fraction` and deletes them.
//
// Every page read back is checked against the XXH3-64 trailer it carries
// (docs/page-format.md): a mismatch is kDataLoss, is counted, and the page is
// deleted rather than ever served.
//
// Thread-safety: all methods are safe to call concurrently (RocksDB's own
// guarantees); Open/close are not concurrent with anything.
#ifndef QAQKV_STORAGE_ROCKSDB_TIER_H_
#define QAQKV_STORAGE_ROCKSDB_TIER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "storage/segment_log.h"

namespace rocksdb {
class DB;
class Env;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace qaqkv::storage {

struct RocksDbTierOptions {
  std::string path;             // created if missing (ignored in memory)
  // Keep the whole database in memory (RocksDB's in-memory Env): the same
  // semantics without a disk, for memory-only caches and tests.
  bool in_memory = false;
  bool sync = false;            // fsync each write before acknowledging
  uint64_t min_blob_size = 4096;
  uint64_t block_cache_bytes = 64ull << 20;
  // Cap of all memtables together: page values wait there until a flush
  // moves them to blob files.
  uint64_t write_buffer_bytes = 64ull << 20;
  // Page bytes in the segment log (ignored in memory).
  bool separate_pages = false;
  uint64_t segment_bytes = 256ull << 20;
  int segment_lanes = 4;  // segment files appended to at once (segment_log.h)
  bool segment_direct_io = false;  // segment appends with O_DIRECT (segment_log.h)
  // A sealed segment with less than this share of live bytes is rewritten.
  double segment_live_fraction = 0.5;
};

enum class Column : uint8_t { kPages = 0, kBlocks = 1, kSessions = 2 };

// One write of an atomic batch; `erase` deletes `key` instead.
struct Mutation {
  Column column = Column::kPages;
  std::string_view key;
  std::string_view value;
  bool erase = false;
  // The caller knows `key` holds nothing now (a page its block's record
  // does not list), so a separated page put need not look up a previous
  // location to release. Wrong only costs space: bytes it did replace
  // would stay counted live.
  bool absent = false;
};

struct RocksDbTierStats {
  uint64_t checksum_failures = 0;
  // Segment log (separate_pages): files, live bytes, and what the collector
  // copied and freed.
  uint64_t segment_file_bytes = 0;
  uint64_t segment_live_bytes = 0;
  uint64_t segment_writes = 0;  // write calls, each of one or more pages
  uint64_t segment_syncs = 0;   // fdatasync calls of segment files
  uint64_t collected_segments = 0;
  uint64_t collector_copied_bytes = 0;
  // Blob bytes no page references any more (BlobDB garbage, reclaimed by
  // its garbage collection).
  uint64_t blob_garbage_bytes = 0;
};

class RocksDbTier {
 public:
  // kInvalidArgument for an empty path; kUnavailable (or kResourceExhausted
  // when the disk is full) when the directory cannot be created or opened,
  // with RocksDB's reason in the message; kDataLoss for a corrupted database.
  static absl::StatusOr<std::unique_ptr<RocksDbTier>> Open(const RocksDbTierOptions& options);
  ~RocksDbTier();
  RocksDbTier(const RocksDbTier&) = delete;
  RocksDbTier& operator=(const RocksDbTier&) = delete;

  // Stores a page; returns once it is in the WAL (fsynced with `sync`).
  // kInvalidArgument if `page` is too short to carry a checksum or the
  // checksum does not match (nothing is written).
  absl::Status PutPage(std::string_view key, std::string_view page);
  // kNotFound on a miss; kDataLoss (and the page deleted) on a checksum
  // mismatch.
  absl::StatusOr<std::string> GetPage(std::string_view key);

  // Small records of the blocks and sessions columns (and raw page access
  // for tests and tools through Column::kPages).
  absl::Status Put(Column column, std::string_view key, std::string_view value);
  // All or nothing, in one WAL record.
  absl::Status Write(const std::vector<Mutation>& batch);
  absl::StatusOr<std::string> Get(Column column, std::string_view key);
  absl::Status Delete(Column column, std::string_view key);
  // Deletes every key of `column` starting with `prefix`.
  absl::Status DeletePrefix(Column column, std::string_view prefix);
  // Calls fn(key, value) for the entries of `column` starting with `prefix`,
  // in key order, until fn returns false. One pass over an iterator, not a
  // lookup per key. fn must not call back into this tier.
  absl::Status Scan(Column column, std::string_view prefix,
                    absl::FunctionRef<bool(std::string_view key, std::string_view value)> fn) {
    return Scan(column, prefix, {}, fn);
  }
  // The same from the first key after prefix + `start_after` (a cursor;
  // empty: from the start of the prefix).
  absl::Status Scan(Column column, std::string_view prefix, std::string_view start_after,
                    absl::FunctionRef<bool(std::string_view key, std::string_view value)> fn);
  // Keys of `column` starting with `prefix`, in order (at most `limit`).
  absl::StatusOr<std::vector<std::string>> Keys(Column column, std::string_view prefix,
                                                size_t limit = SIZE_MAX);
  // Writes the memtables out (page values into blob files). The WAL already
  // makes every acknowledged write durable; this bounds recovery time and is
  // what a draining server does before it exits.
  absl::Status Flush();
  // Bytes on disk: SST files plus blob files plus segment files.
  uint64_t DiskBytes() const;
  // One pass of the segment collector now (it also runs by itself after
  // deletes); OK without separate_pages.
  absl::Status CollectSegments();

  // OK while writes work. Otherwise why not: the segment log's failed
  // fdatasync (for good: restart on a healthy disk), or the last write's
  // error until a write succeeds again.
  absl::Status Health() const;

  RocksDbTierStats Stats() const;
  const RocksDbTierOptions& options() const { return options_; }

  class Token {
    friend class RocksDbTier;
    Token() = default;
  };
  RocksDbTier(Token, RocksDbTierOptions options);

 private:
  rocksdb::ColumnFamilyHandle* Handle(Column c) const;
  absl::Status WriteToDb(const std::vector<Mutation>& batch);
  absl::StatusOr<std::string> GetFromDb(Column column, std::string_view key);
  // The page bytes a stored `pages` value stands for (itself, or what its
  // location names); retries when the record was moved meanwhile. `stored`
  // ends as the location last tried (empty when it was the page itself).
  absl::StatusOr<std::string> ResolvePage(std::string_view key, std::string* stored);
  // Deletes the page of `key` if the key still holds `stored`.
  void DropPage(std::string_view key, const std::string& stored);
  absl::Status WriteSeparated(const std::vector<Mutation>& batch);
  // Remembers a write's outcome for Health.
  void NoteWrite(const absl::Status& st);
  void WakeCollector();
  void CollectorLoop();

  RocksDbTierOptions options_;
  std::unique_ptr<rocksdb::Env> env_;  // in-memory mode only; outlives db_
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned by db_, destroyed first
  std::atomic<uint64_t> checksum_failures_{0};
  mutable base::Mutex health_mu_;
  absl::Status last_write_error_ ABSL_GUARDED_BY(health_mu_);
  // separate_pages only: the log, and per-key locks that keep a page's
  // "read old location, append, record new location" (puts, deletes, the
  // collector's moves) from interleaving with another on the same key.
  std::unique_ptr<SegmentLog> log_;
  base::StripedMutex<64> stripes_;
  base::Mutex collector_mu_;
  base::CondVar collector_cv_;
  bool collector_stop_ ABSL_GUARDED_BY(collector_mu_) = false;
  bool collector_wanted_ ABSL_GUARDED_BY(collector_mu_) = false;
  std::atomic<uint64_t> collected_segments_{0};
  std::atomic<uint64_t> collector_copied_bytes_{0};
  std::thread collector_;  // joined by the destructor before the database closes
};

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_ROCKSDB_TIER_H_
