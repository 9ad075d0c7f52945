#include "storage/internal/write_back_queue.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace qaqkv::storage::internal {

using base::AsAbsl;

absl::Status WriteBackQueue::Reserve(uint64_t bytes) {
  base::MutexLock lock(&mu_);
  auto fits = [&] {
    mu_.AssertHeld();
    return reserved_ == 0 || reserved_ + bytes <= limit_;
  };
  if (!fits()) {
    ++stats_.stalls;
    changed_.Wait(&mu_, [&] {
      mu_.AssertHeld();
      return fits() || !write_error_.ok() || closed_;
    });
  }
  if (!fits()) {
    if (!write_error_.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "write-back: pages cannot be written to disk, so no more are accepted: ",
          write_error_.message()));
    }
    return absl::UnavailableError("write-back: the store is closing");
  }
  reserved_ += bytes;
  return absl::OkStatus();
}

void WriteBackQueue::Unreserve(uint64_t bytes) {
  {
    base::MutexLock lock(&mu_);
    reserved_ -= std::min(bytes, reserved_);
  }
  changed_.SignalAll();
}

uint64_t WriteBackQueue::Add(std::string page_key, std::string record_key, PageBuffer page,
                             BlockRecord record) {
  uint64_t seq;
  {
    base::MutexLock lock(&mu_);
    seq = next_seq_++;
    by_page_[AsAbsl(page_key)] = seq;
    by_block_[AsAbsl(record_key)].push_back(seq);
    stats_.dirty_bytes += page->size();
    ++stats_.dirty_pages;
    by_seq_.emplace(seq, WriteBackEntry{seq, std::move(page_key), std::move(record_key),
                                        std::move(page), std::move(record)});
  }
  changed_.SignalAll();
  return seq;
}

PageBuffer WriteBackQueue::Find(std::string_view page_key) const {
  base::MutexLock lock(&mu_);
  auto it = by_page_.find(AsAbsl(page_key));
  if (it == by_page_.end()) return nullptr;
  return by_seq_.at(it->second).page;
}

bool WriteBackQueue::HasBlock(std::string_view record_key) const {
  base::MutexLock lock(&mu_);
  return by_block_.contains(AsAbsl(record_key));
}

std::vector<WriteBackEntry> WriteBackQueue::BlockEntries(std::string_view record_key) const {
  base::MutexLock lock(&mu_);
  std::vector<WriteBackEntry> out;
  auto it = by_block_.find(AsAbsl(record_key));
  if (it == by_block_.end()) return out;
  for (uint64_t seq : it->second) out.push_back(by_seq_.at(seq));  // in arrival order
  return out;
}

std::optional<WriteBackEntry> WriteBackQueue::WaitOldest() {
  base::MutexLock lock(&mu_);
  changed_.Wait(&mu_, [&] {
    mu_.AssertHeld();
    return !by_seq_.empty() || closed_;
  });
  if (by_seq_.empty()) return std::nullopt;
  return by_seq_.begin()->second;
}

void WriteBackQueue::RemoveLocked(std::map<uint64_t, WriteBackEntry>::iterator it,
                                  bool written) {
  const WriteBackEntry& e = it->second;
  by_page_.erase(AsAbsl(e.page_key));
  auto block = by_block_.find(AsAbsl(e.record_key));
  std::vector<uint64_t>& seqs = block->second;
  seqs.erase(std::find(seqs.begin(), seqs.end(), e.seq));
  if (seqs.empty()) by_block_.erase(block);
  const uint64_t bytes = e.page->size();
  stats_.dirty_bytes -= bytes;
  --stats_.dirty_pages;
  if (written) ++stats_.written_pages;
  reserved_ -= std::min(bytes, reserved_);
  by_seq_.erase(it);
}

bool WriteBackQueue::Remove(std::string_view page_key, uint64_t seq, bool written) {
  {
    base::MutexLock lock(&mu_);
    auto page = by_page_.find(AsAbsl(page_key));
    if (page == by_page_.end() || page->second != seq) return false;
    RemoveLocked(by_seq_.find(seq), written);
    if (written) write_error_ = absl::OkStatus();
  }
  changed_.SignalAll();
  return true;
}

void WriteBackQueue::DropBlock(std::string_view record_key) {
  {
    base::MutexLock lock(&mu_);
    auto block = by_block_.find(AsAbsl(record_key));
    if (block == by_block_.end()) return;
    const std::vector<uint64_t> seqs = block->second;
    for (uint64_t seq : seqs) RemoveLocked(by_seq_.find(seq), /*written=*/false);
  }
  changed_.SignalAll();
}

absl::Status WriteBackQueue::WaitDrained() {
  base::MutexLock lock(&mu_);
  const uint64_t target = next_seq_;
  changed_.Wait(&mu_, [&] {
    mu_.AssertHeld();
    return by_seq_.empty() || by_seq_.begin()->first >= target || !write_error_.ok();
  });
  if (by_seq_.empty() || by_seq_.begin()->first >= target) return absl::OkStatus();
  return write_error_;
}

void WriteBackQueue::SetWriteError(absl::Status status) {
  {
    base::MutexLock lock(&mu_);
    write_error_ = std::move(status);
  }
  changed_.SignalAll();
}

absl::Status WriteBackQueue::WriteError() const {
  base::MutexLock lock(&mu_);
  return write_error_;
}

void WriteBackQueue::Close() {
  {
    base::MutexLock lock(&mu_);
    closed_ = true;
  }
  changed_.SignalAll();
}

bool WriteBackQueue::closed() const {
  base::MutexLock lock(&mu_);
  return closed_;
}

WriteBackStats WriteBackQueue::Stats() const {
  base::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace qaqkv::storage::internal
