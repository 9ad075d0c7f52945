// The pages a write-back store has acknowledged but not yet written to its
// disk tier (tiered_store.h, TieredStoreOptions::write_back_bytes): what a
// crash can lose, bounded in bytes.
//
// Each entry carries the block's record as it stands once that page is
// stored. Entries are written oldest first and a block's entries in the
// order they came, so the record written with each page lists exactly the
// pages written so far: a crash leaves a shorter block, never a record
// naming a page that is not there.
//
// The queue only keeps entries; the store writes them, under each block's
// lock, and removes what it wrote.
//
// Thread-safety: every method may be called concurrently.
#ifndef QAQKV_STORAGE_INTERNAL_WRITE_BACK_QUEUE_H_
#define QAQKV_STORAGE_INTERNAL_WRITE_BACK_QUEUE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "base/mutex.h"
#include "storage/block_record.h"
#include "storage/dram_tier.h"

namespace qaqkv::storage::internal {

struct WriteBackEntry {
  uint64_t seq = 0;  // order of arrival
  std::string page_key;
  std::string record_key;
  PageBuffer page;
  BlockRecord record;  // the block's record once this page is stored
};

struct WriteBackStats {
  uint64_t dirty_bytes = 0;    // acknowledged, not yet written
  uint64_t dirty_pages = 0;
  uint64_t written_pages = 0;  // entries written and removed since start
  uint64_t stalls = 0;         // Reserve calls that had to wait for room
};

class WriteBackQueue {
 public:
  explicit WriteBackQueue(uint64_t limit_bytes) : limit_(limit_bytes) {}
  WriteBackQueue(const WriteBackQueue&) = delete;
  WriteBackQueue& operator=(const WriteBackQueue&) = delete;

  // Waits until `bytes` more fit under the limit (a page larger than the
  // whole limit waits for an empty queue) and reserves them for an Add or
  // an Unreserve. While background writes fail (SetWriteError) it returns
  // that error instead of waiting: the queue would not drain.
  absl::Status Reserve(uint64_t bytes);
  void Unreserve(uint64_t bytes);
  // Queues a page whose bytes were reserved; returns its seq.
  uint64_t Add(std::string page_key, std::string record_key, PageBuffer page,
               BlockRecord record);

  // The queued copy of a page, or null.
  PageBuffer Find(std::string_view page_key) const;
  bool HasBlock(std::string_view record_key) const;
  // The block's entries, oldest first (copies; they stay queued).
  std::vector<WriteBackEntry> BlockEntries(std::string_view record_key) const;
  // The oldest entry, waiting for one while the queue is empty and not
  // closed; nullopt once closed and empty. The entry stays queued.
  std::optional<WriteBackEntry> WaitOldest();
  // Removes the page's entry if it is still number `seq` (written, or its
  // block deleted), releasing its bytes; false if it was already gone.
  bool Remove(std::string_view page_key, uint64_t seq, bool written);
  // Removes every entry of the block (it is being deleted).
  void DropBlock(std::string_view record_key);
  // Blocks until every entry queued so far is gone, or `error` (the
  // status of the last failed write) while writes keep failing.
  absl::Status WaitDrained();

  // Background writes failed (OK: they work again).
  void SetWriteError(absl::Status status);
  absl::Status WriteError() const;
  // Wakes every waiter: WaitOldest returns what is left and then nullopt.
  void Close();
  bool closed() const;

  WriteBackStats Stats() const;
  uint64_t limit() const { return limit_; }

 private:
  void RemoveLocked(std::map<uint64_t, WriteBackEntry>::iterator it, bool written)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t limit_;
  mutable base::Mutex mu_;
  base::CondVar changed_;  // an entry added or removed, an error, closed
  std::map<uint64_t, WriteBackEntry> by_seq_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> by_page_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<uint64_t>> by_block_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;  // queued bytes plus reservations
  absl::Status write_error_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  WriteBackStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qaqkv::storage::internal

#endif  // QAQKV_STORAGE_INTERNAL_WRITE_BACK_QUEUE_H_
