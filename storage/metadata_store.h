// The store's metadata: block records (which layers of a block are stored,
// its bytes, whether it is committed) and session records, kept apart from
// the page tiers that hold page bytes (page_tier.h).
//
// Records live in the record database's `blocks` and `sessions` columns
// (RocksDB, on disk, or on RocksDB's in-memory Env for a memory-only store).
// A block's record is the commit point of its pages: when the home page tier
// keeps its pages in the same database (PageTier::InRecordDatabase), a
// RecordBatch carries the page writes and the record change together and
// Commit applies them as one WAL record, so a crash leaves both or neither.
//
// Keys are the record keys of storage/keys.h (BlockRecordKey, SessionKey).
// A record that does not decode is kDataLoss naming its key; the store
// never serves from one.
//
// Thread-safety: every method may be called concurrently; ordering between
// writers of one key is the caller's (the tiered store's per-block locks).
#ifndef QAQKV_STORAGE_METADATA_STORE_H_
#define QAQKV_STORAGE_METADATA_STORE_H_

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/block_record.h"
#include "storage/rocksdb_tier.h"
#include "storage/session_record.h"

namespace qaqkv::storage {

// Changes applied together by MetadataStore::Commit, in the order given.
class RecordBatch {
 public:
  void PutBlock(std::string_view key, const BlockRecord& record);
  void EraseBlock(std::string_view key);
  // Page writes of a home tier in the record database. `page` is not
  // copied: it must stay valid until Commit returns.
  void PutPage(std::string_view key, std::string_view page);
  // PutPage of a page the caller knows is not stored (its block's record
  // lacks the layer): no previous copy is looked up.
  void PutNewPage(std::string_view key, std::string_view page);
  void ErasePage(std::string_view key);

  bool empty() const { return mutations_.empty(); }
  size_t size() const { return mutations_.size(); }

 private:
  friend class MetadataStore;
  std::string_view Keep(std::string value);

  std::deque<std::string> owned_;  // keys and encoded records; a deque never moves them
  std::vector<Mutation> mutations_;
};

class MetadataStore {
 public:
  // `db` holds the columns and must outlive the store.
  explicit MetadataStore(RocksDbTier* db) : db_(db) {}
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;

  // Calls fn for every block record, in key order (how the store rebuilds its
  // index at open). kDataLoss naming the key's tenant for a record that does
  // not decode; fn is not called for it or anything after it.
  absl::Status ForEachBlock(
      absl::FunctionRef<void(std::string_view key, BlockRecord record)> fn);
  absl::Status PutBlock(std::string_view key, const BlockRecord& record);

  // All of the batch or none of it, in one write. An empty batch is OK and
  // writes nothing.
  absl::Status Commit(const RecordBatch& batch);

  // kNotFound when there is none; kDataLoss when it does not decode.
  absl::StatusOr<SessionRecord> GetSession(std::string_view key);
  absl::Status PutSession(std::string_view key, const SessionRecord& record);
  // Deleting a session that is not there is OK.
  absl::Status DeleteSession(std::string_view key);
  // Calls fn(key, record) for the sessions whose keys start with `prefix`, in
  // key order, until fn returns false. A record that does not decode comes
  // as its kDataLoss status, so a caller can skip it or remove it. fn must
  // not call back into the store.
  // `start_after`: from the first key after prefix + start_after (a
  // cursor; empty: from the start).
  absl::Status ScanSessions(
      std::string_view prefix, std::string_view start_after,
      absl::FunctionRef<bool(std::string_view key, absl::StatusOr<SessionRecord> record)>
          fn);

 private:
  RocksDbTier* const db_;
};

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_METADATA_STORE_H_
