// The RocksDB tier: the durable copy of every page, block record and session
// record (docs/design.md: writes are acknowledged once RocksDB has them).
//
// Three column families: `pages` (page bytes, stored as BlobDB blobs from
// `min_blob_size` up, so large values stay out of the LSM's compactions),
// `blocks` and `sessions` (small records). The WAL is always on; with
// `sync` every write is also fsynced before it returns.
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
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

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
};

enum class Column : uint8_t { kPages = 0, kBlocks = 1, kSessions = 2 };

// One write of an atomic batch; `erase` deletes `key` instead.
struct Mutation {
  Column column = Column::kPages;
  std::string_view key;
  std::string_view value;
  bool erase = false;
};

struct RocksDbTierStats {
  uint64_t checksum_failures = 0;
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
                    absl::FunctionRef<bool(std::string_view key, std::string_view value)> fn);
  // Keys of `column` starting with `prefix`, in order (at most `limit`).
  absl::StatusOr<std::vector<std::string>> Keys(Column column, std::string_view prefix,
                                                size_t limit = SIZE_MAX);
  // Writes the memtables out (page values into blob files). The WAL already
  // makes every acknowledged write durable; this bounds recovery time and is
  // what a draining server does before it exits.
  absl::Status Flush();
  // Bytes on disk: SST files plus blob files.
  uint64_t DiskBytes() const;

  RocksDbTierStats Stats() const;
  const RocksDbTierOptions& options() const { return options_; }

  class Token {
    friend class RocksDbTier;
    Token() = default;
  };
  RocksDbTier(Token, RocksDbTierOptions options);

 private:
  rocksdb::ColumnFamilyHandle* Handle(Column c) const;

  RocksDbTierOptions options_;
  std::unique_ptr<rocksdb::Env> env_;  // in-memory mode only; outlives db_
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned by db_, destroyed first
  std::atomic<uint64_t> checksum_failures_{0};
};

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_ROCKSDB_TIER_H_
