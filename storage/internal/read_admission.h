// Which pages a read from a lower tier copies into the tiers above it
// (tiered_store.h). A page is copied up on its second read from below
// within a window of recent first reads, not its first: a resume reads a
// session's pages once, in one sweep, and copying every one of them into
// the DRAM tier would push out what other sessions read again and again
// (the scan resistance of the page cache's inactive list, 2Q, or RocksDB's
// fill_cache=false for scans). It also lets such a read hand its buffer
// back to the allocator as soon as the caller drops it, so the next read
// lands in memory still in the CPU's cache instead of a fresh buffer the
// DRAM tier keeps.
//
// The window is a FIFO of the last `capacity` keys read once (as 64-bit
// hashes: a collision only copies a page up early).
//
// Thread-safety: Admit may be called concurrently.
#ifndef QAQKV_STORAGE_INTERNAL_READ_ADMISSION_H_
#define QAQKV_STORAGE_INTERNAL_READ_ADMISSION_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"

namespace qaqkv::storage::internal {

class ReadAdmission {
 public:
  // `capacity`: first reads remembered (at least 1).
  explicit ReadAdmission(size_t capacity);

  // True when `key` was read from below once already within the window
  // (it is then forgotten: the page is about to be cached above); false on
  // a first read, which is remembered.
  bool Admit(std::string_view key);

  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  base::Mutex mu_;
  // Hash of a key read once -> the sequence number of that read; the ring
  // holds (hash, seq) in arrival order so the oldest is forgotten first,
  // and only if it was not read again since.
  absl::flat_hash_map<uint64_t, uint64_t> seen_ ABSL_GUARDED_BY(mu_);
  struct Slot {
    uint64_t hash = 0;
    uint64_t seq = 0;  // 0: empty
  };
  std::vector<Slot> ring_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace qaqkv::storage::internal

#endif  // QAQKV_STORAGE_INTERNAL_READ_ADMISSION_H_
