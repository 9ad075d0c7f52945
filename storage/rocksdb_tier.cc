#include "storage/rocksdb_tier.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "kernels/checksum.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "storage/internal/rocksdb_status.h"

namespace qaqkv::storage {
namespace {

constexpr const char* kColumnNames[] = {"pages", "blocks", "sessions"};

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

// Under ThreadSanitizer only: Debian's RocksDB is not instrumented, so the
// synchronization inside it (write groups where a leader appends the
// followers' batches, the memtable's lock-free skiplist that readers copy
// values out of) is invisible to TSan, which then reports races that are
// not there. In that build every foreground call into RocksDB runs one at a
// time, so TSan keeps checking our own code without false reports.
#if defined(__SANITIZE_THREAD__)
std::mutex tsan_rocksdb_mu;
#define QAQKV_TSAN_SERIALIZE_ROCKSDB() std::lock_guard<std::mutex> tsan_lock(tsan_rocksdb_mu)
#else
#define QAQKV_TSAN_SERIALIZE_ROCKSDB() \
  do {                                \
  } while (0)
#endif

}  // namespace

RocksDbTier::RocksDbTier(Token, RocksDbTierOptions options) : options_(std::move(options)) {}

RocksDbTier::~RocksDbTier() {
  if (collector_.joinable()) {
    {
      base::MutexLock lock(&collector_mu_);
      collector_stop_ = true;
    }
    collector_cv_.SignalAll();
    collector_.join();
  }
  if (db_ == nullptr) return;
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  db_->Close();
}

absl::StatusOr<std::unique_ptr<RocksDbTier>> RocksDbTier::Open(const RocksDbTierOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("rocksdb.path: empty");
  if (!options.in_memory) {
    std::error_code ec;
    std::filesystem::create_directories(options.path, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("rocksdb.path: cannot create ", options.path, ": ", ec.message()));
    }
  }
  auto tier = std::make_unique<RocksDbTier>(Token(), options);

  rocksdb::DBOptions db_options;
  if (options.in_memory) {
    tier->env_.reset(rocksdb::NewMemEnv(rocksdb::Env::Default()));
    db_options.env = tier->env_.get();
  }
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // A torn tail after a crash loses only unacknowledged writes; anything in
  // the middle of the WAL is corruption and must stop the open.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db_options.max_background_jobs = 2;
  // Compactions (and blob garbage collection) run at a lower CPU priority
  // (nice 19, set by each thread of the pool at its next job) than the
  // threads serving requests: a resume should not wait
  // behind the compaction of what earlier offloads wrote. Measured with
  // `qaqkv demo`, QAQ's resume right after its offload went from 97-120 ms
  // to 70-77 ms on 2 cores (docs/performance.md). Flushes keep the normal
  // priority: writers stall on full memtables until a flush frees one, so
  // starving them would stall puts. The pool is process-wide, so this holds
  // for every store opened.
  (void)rocksdb::Env::Default()->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW,
                                                             rocksdb::CpuPriority::kLow);
  // Page values wait in memtables until a flush moves them to blob files;
  // cap all memtables together so the server's memory stays within its
  // budget (docs/performance.md reports peak RSS against it). The total
  // alone only triggers flushes: the memtable being flushed plus the one
  // filling meanwhile held twice it under sustained puts. So each page
  // memtable is half the cap and there are at most two: RocksDB stalls
  // writers until a flush frees one.
  // (A WriteBufferManager with allow_stall hung writers at small budgets.)
  db_options.db_write_buffer_size = options.write_buffer_bytes;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  rocksdb::ColumnFamilyOptions records;
  records.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::ColumnFamilyOptions pages = records;
  pages.write_buffer_size = std::max<size_t>(options.write_buffer_bytes / 2, 64 << 10);
  pages.max_write_buffer_number = 2;
  pages.enable_blob_files = true;
  pages.min_blob_size = options.min_blob_size;
  pages.enable_blob_garbage_collection = true;

  std::vector<rocksdb::ColumnFamilyDescriptor> columns = {
      {rocksdb::kDefaultColumnFamilyName, records},
      {kColumnNames[0], pages},
      {kColumnNames[1], records},
      {kColumnNames[2], records},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s = rocksdb::DB::Open(db_options, options.path, columns, &handles, &raw);
  if (!s.ok()) return internal::FromRocksDb(s, absl::StrCat("open ", options.path));
  tier->db_.reset(raw);
  // The default family is unused; keep the handles in Column order.
  tier->db_->DestroyColumnFamilyHandle(handles[0]);
  tier->handles_.assign(handles.begin() + 1, handles.end());
  // The segment log is opened whenever it exists, so pages written with
  // separate_pages stay readable (and deletable) without it.
  const std::string segments = options.path + "/segments";
  std::error_code ec;
  if (!options.in_memory && (options.separate_pages || std::filesystem::exists(segments, ec))) {
    QAQKV_ASSIGN_OR_RETURN(tier->log_,
                           SegmentLog::Open({segments, options.segment_bytes, options.sync,
                                             options.segment_lanes, options.segment_direct_io}));
    // Live bytes: what the recorded locations name.
    QAQKV_RETURN_IF_ERROR(
        tier->Scan(Column::kPages, "", [&](std::string_view key, std::string_view value) {
          if (auto loc = SegmentLocation::Decode(value)) tier->log_->AddLive(*loc, key.size());
          return true;
        }));
    tier->collector_ = std::thread([t = tier.get()] { t->CollectorLoop(); });
  }
  return tier;
}

rocksdb::ColumnFamilyHandle* RocksDbTier::Handle(Column c) const {
  return handles_[static_cast<size_t>(c)];
}

absl::Status RocksDbTier::PutPage(std::string_view key, std::string_view page) {
  if (!PageChecksumOk(page)) {
    return absl::InvalidArgumentError("page: checksum does not match its contents");
  }
  return Put(Column::kPages, key, page);
}

absl::StatusOr<std::string> RocksDbTier::GetPage(std::string_view key) {
  absl::StatusOr<std::string> stored = GetFromDb(Column::kPages, key);
  if (stored.status().code() == absl::StatusCode::kDataLoss) {
    checksum_failures_.fetch_add(1, std::memory_order_relaxed);
    (void)Delete(Column::kPages, key);
    return stored.status();
  }
  QAQKV_RETURN_IF_ERROR(stored.status());
  absl::StatusOr<std::string> value = ResolvePage(key, &*stored);
  if (value.status().code() == absl::StatusCode::kDataLoss) {
    // Its segment bytes are gone or damaged: as for a checksum mismatch.
    checksum_failures_.fetch_add(1, std::memory_order_relaxed);
    DropPage(key, *stored);
    return value.status();
  }
  QAQKV_RETURN_IF_ERROR(value.status());
  if (!PageChecksumOk(*value)) {
    checksum_failures_.fetch_add(1, std::memory_order_relaxed);
    // Never served, and not left to fail again: the copy is gone.
    DropPage(key, stored->empty() ? *value : *stored);
    return absl::DataLossError("page: stored bytes fail their checksum; dropped");
  }
  return std::move(*value);
}

void RocksDbTier::DropPage(std::string_view key, const std::string& stored) {
  base::MutexLock lock(&stripes_.For(key));
  absl::StatusOr<std::string> now = GetFromDb(Column::kPages, key);
  // A page put or moved since it was read is another copy: not this one's
  // to drop.
  if (!now.ok() || *now != stored) return;
  if (!WriteToDb({{Column::kPages, key, {}, /*erase=*/true}}).ok()) return;
  if (log_ == nullptr) return;
  if (auto loc = SegmentLocation::Decode(stored)) {
    log_->Release(*loc, key.size());
    WakeCollector();
  }
}

absl::StatusOr<std::string> RocksDbTier::ResolvePage(std::string_view key, std::string* stored) {
  // A reader does not lock the key: a writer may replace its page, and the
  // collector move its record and delete the segment, between the read of
  // the location and the read of the bytes. The segment is then gone
  // (kNotFound), and the key holds a newer location. Only a location that
  // is still the key's after its segment went is a lost page.
  constexpr int kMaxMoves = 32;
  for (int attempt = 0;; ++attempt) {
    const std::optional<SegmentLocation> loc = SegmentLocation::Decode(*stored);
    if (!loc.has_value()) return std::exchange(*stored, std::string());  // the page itself
    if (log_ == nullptr) return absl::DataLossError("page: its segment log is not there");
    absl::StatusOr<std::string> bytes = log_->Read(*loc, key);
    if (bytes.ok()) return bytes;
    if (bytes.status().code() != absl::StatusCode::kNotFound) return bytes.status();
    QAQKV_ASSIGN_OR_RETURN(std::string now, GetFromDb(Column::kPages, key));
    if (now == *stored) return absl::DataLossError(absl::StrCat("page: ", bytes.status().message()));
    if (attempt == kMaxMoves) {
      return absl::UnavailableError(
          absl::StrCat("page: moved ", kMaxMoves, " times while being read; try again"));
    }
    *stored = std::move(now);
  }
}

absl::Status RocksDbTier::Put(Column column, std::string_view key, std::string_view value) {
  return Write({{column, key, value}});
}

absl::Status RocksDbTier::Write(const std::vector<Mutation>& batch) {
  if (log_ != nullptr) {
    for (const Mutation& m : batch) {
      if (m.column == Column::kPages) return WriteSeparated(batch);
    }
  }
  return WriteToDb(batch);
}

absl::Status RocksDbTier::WriteSeparated(const std::vector<Mutation>& batch) {
  std::vector<size_t> which;
  for (const Mutation& m : batch) {
    if (m.column == Column::kPages) which.push_back(decltype(stripes_)::IndexOf(m.key));
  }
  decltype(stripes_)::Locks locks(stripes_, std::move(which));
  // The pages' bytes go to the log first, all in one write; the batch then
  // records their locations. The locations it replaces or erases are
  // released once it is written, the new ones if it is not.
  std::vector<Mutation> out = batch;
  std::vector<std::string> encoded;
  encoded.reserve(batch.size());  // out[i].value points into it
  std::vector<std::pair<SegmentLocation, size_t>> replaced, appended;
  std::vector<SegmentRecord> records;
  std::vector<size_t> record_of;  // the mutation each record is for
  absl::Status st;
  for (size_t i = 0; i < out.size() && st.ok(); ++i) {
    const Mutation& m = out[i];
    if (m.column != Column::kPages) continue;
    if (!m.absent) {
      absl::StatusOr<std::string> prev = GetFromDb(Column::kPages, m.key);
      if (prev.ok()) {
        if (auto loc = SegmentLocation::Decode(*prev)) replaced.emplace_back(*loc, m.key.size());
      } else if (prev.status().code() != absl::StatusCode::kNotFound) {
        st = prev.status();
      }
    }
    if (m.erase || !options_.separate_pages) continue;
    records.push_back({m.key, m.value});
    record_of.push_back(i);
  }
  if (st.ok() && !records.empty()) {
    absl::StatusOr<std::vector<SegmentLocation>> locs = log_->AppendUnsettled(records);
    if (!locs.ok()) {
      st = locs.status();
      NoteWrite(st);
    } else {
      for (size_t r = 0; r < records.size(); ++r) {
        appended.emplace_back((*locs)[r], records[r].key.size());
        encoded.push_back((*locs)[r].Encode());
        out[record_of[r]].value = encoded.back();
      }
    }
  }
  if (st.ok()) st = WriteToDb(out);
  for (const auto& [loc, key_size] : st.ok() ? replaced : appended) log_->Release(loc, key_size);
  for (const auto& [loc, key_size] : appended) log_->Settle(loc);
  if (st.ok() && !replaced.empty()) WakeCollector();
  return st;
}

// Every write to RocksDB goes through here: one place for the sync policy
// and the TSan serialization.
absl::Status RocksDbTier::WriteToDb(const std::vector<Mutation>& batch) {
  rocksdb::WriteBatch wb;
  for (const Mutation& m : batch) {
    const rocksdb::Status s = m.erase ? wb.Delete(Handle(m.column), ToSlice(m.key))
                                      : wb.Put(Handle(m.column), ToSlice(m.key), ToSlice(m.value));
    if (!s.ok()) return internal::FromRocksDb(s, "batch");
  }
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  // In memory nothing survives the process, so a log would only cost time.
  wo.disableWAL = options_.in_memory;
  absl::Status st;
  {
    QAQKV_TSAN_SERIALIZE_ROCKSDB();
    st = internal::FromRocksDb(db_->Write(wo, &wb), "write");
  }
  NoteWrite(st);
  return st;
}

void RocksDbTier::NoteWrite(const absl::Status& st) {
  base::MutexLock lock(&health_mu_);
  last_write_error_ = st;
}

absl::Status RocksDbTier::Health() const {
  if (log_ != nullptr) QAQKV_RETURN_IF_ERROR(log_->SyncError());
  base::MutexLock lock(&health_mu_);
  return last_write_error_;
}

absl::StatusOr<std::string> RocksDbTier::Get(Column column, std::string_view key) {
  QAQKV_ASSIGN_OR_RETURN(std::string value, GetFromDb(column, key));
  if (column == Column::kPages) return ResolvePage(key, &value);
  return value;
}

absl::StatusOr<std::string> RocksDbTier::GetFromDb(Column column, std::string_view key) {
  std::string value;
  rocksdb::Status s;
  {
    QAQKV_TSAN_SERIALIZE_ROCKSDB();
    s = db_->Get(rocksdb::ReadOptions(), Handle(column), ToSlice(key), &value);
  }
  if (s.IsNotFound()) return absl::NotFoundError("no such key");
  if (!s.ok()) return internal::FromRocksDb(s, "get");
  return value;
}

absl::Status RocksDbTier::Delete(Column column, std::string_view key) {
  return Write({{column, key, {}, /*erase=*/true}});
}

absl::Status RocksDbTier::DeletePrefix(Column column, std::string_view prefix) {
  QAQKV_ASSIGN_OR_RETURN(const std::vector<std::string> keys, Keys(column, prefix));
  if (keys.empty()) return absl::OkStatus();
  std::vector<Mutation> batch;
  batch.reserve(keys.size());
  for (const std::string& k : keys) batch.push_back({column, k, {}, /*erase=*/true});
  return Write(batch);
}

absl::Status RocksDbTier::Scan(
    Column column, std::string_view prefix, std::string_view start_after,
    absl::FunctionRef<bool(std::string_view key, std::string_view value)> fn) {
  QAQKV_TSAN_SERIALIZE_ROCKSDB();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), Handle(column)));
  std::string from(prefix);
  from.append(start_after);
  for (it->Seek(ToSlice(from)); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    if (!k.starts_with(ToSlice(prefix))) break;
    if (!start_after.empty() && k == ToSlice(from)) continue;  // after the cursor, not at it
    const rocksdb::Slice v = it->value();
    if (!fn(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()))) break;
  }
  return internal::FromRocksDb(it->status(), "scan");
}

absl::StatusOr<std::vector<std::string>> RocksDbTier::Keys(Column column, std::string_view prefix,
                                                           size_t limit) {
  std::vector<std::string> out;
  QAQKV_RETURN_IF_ERROR(Scan(column, prefix, [&](std::string_view key, std::string_view) {
    if (out.size() >= limit) return false;
    out.emplace_back(key);
    return true;
  }));
  return out;
}

absl::Status RocksDbTier::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  std::vector<rocksdb::ColumnFamilyHandle*> all(handles_.begin(), handles_.end());
  QAQKV_TSAN_SERIALIZE_ROCKSDB();
  return internal::FromRocksDb(db_->Flush(fo, all), "flush");
}

uint64_t RocksDbTier::DiskBytes() const {
  uint64_t total = 0;
  for (auto* h : handles_) {
    uint64_t sst = 0, blob = 0;
    db_->GetIntProperty(h, rocksdb::DB::Properties::kTotalSstFilesSize, &sst);
    db_->GetIntProperty(h, rocksdb::DB::Properties::kTotalBlobFileSize, &blob);
    total += sst + blob;
  }
  if (log_ != nullptr) total += log_->Stats().file_bytes;
  return total;
}

void RocksDbTier::WakeCollector() {
  if (!collector_.joinable()) return;
  {
    base::MutexLock lock(&collector_mu_);
    collector_wanted_ = true;
  }
  collector_cv_.Signal();
}

void RocksDbTier::CollectorLoop() {
  for (;;) {
    {
      base::MutexLock lock(&collector_mu_);
      // Woken by deletes; every 10 s anyway, for space a crash left.
      collector_cv_.WaitFor(&collector_mu_, std::chrono::seconds(10), [&] {
        collector_mu_.AssertHeld();
        return collector_stop_ || collector_wanted_;
      });
      if (collector_stop_) return;
      collector_wanted_ = false;
    }
    if (absl::Status st = CollectSegments(); !st.ok()) {
      base::LogWarning("segment collector failed", {{"error", st.ToString()}});
    }
  }
}

absl::Status RocksDbTier::CollectSegments() {
  if (log_ == nullptr) return absl::OkStatus();
  const std::vector<uint32_t> segments = log_->Reclaimable(options_.segment_live_fraction);
  if (segments.empty()) return absl::OkStatus();
  const std::set<uint32_t> wanted(segments.begin(), segments.end());
  std::vector<std::pair<std::string, SegmentLocation>> moves;
  QAQKV_RETURN_IF_ERROR(Scan(Column::kPages, "", [&](std::string_view key, std::string_view value) {
    if (auto loc = SegmentLocation::Decode(value); loc && wanted.count(loc->segment) > 0) {
      moves.emplace_back(std::string(key), *loc);
    }
    return true;
  }));
  for (const auto& [key, loc] : moves) {
    base::MutexLock lock(&stripes_.For(key));
    absl::StatusOr<std::string> now = GetFromDb(Column::kPages, key);
    if (now.status().code() == absl::StatusCode::kNotFound) continue;  // deleted meanwhile
    QAQKV_RETURN_IF_ERROR(now.status());
    if (SegmentLocation::Decode(*now) != loc) continue;  // replaced meanwhile
    absl::StatusOr<std::string> bytes = log_->Read(loc, key);
    if (!bytes.ok()) continue;  // damaged: a read will find it and drop it
    QAQKV_ASSIGN_OR_RETURN(const SegmentLocation moved, log_->AppendUnsettled(key, *bytes));
    const absl::Status written = WriteToDb({{Column::kPages, key, moved.Encode()}});
    if (!written.ok()) log_->Release(moved, key.size());
    log_->Settle(moved);
    QAQKV_RETURN_IF_ERROR(written);
    log_->Release(loc, key.size());
    collector_copied_bytes_.fetch_add(bytes->size(), std::memory_order_relaxed);
  }
  // The copies and their locations reach the disk before the originals go,
  // whatever the sync policy: the collector must not lose what was durable.
  QAQKV_RETURN_IF_ERROR(log_->SyncAll());
  {
    QAQKV_TSAN_SERIALIZE_ROCKSDB();
    QAQKV_RETURN_IF_ERROR(internal::FromRocksDb(db_->FlushWAL(/*sync=*/true), "sync wal"));
  }
  for (uint32_t s : segments) {
    if (log_->RemoveSegment(s).ok()) collected_segments_.fetch_add(1, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

RocksDbTierStats RocksDbTier::Stats() const {
  RocksDbTierStats s;
  s.checksum_failures = checksum_failures_.load(std::memory_order_relaxed);
  if (log_ != nullptr) {
    const SegmentLogStats l = log_->Stats();
    s.segment_file_bytes = l.file_bytes;
    s.segment_live_bytes = l.live_bytes;
    s.segment_writes = l.writes;
    s.segment_syncs = l.syncs;
  }
  s.collected_segments = collected_segments_.load(std::memory_order_relaxed);
  if (!options_.in_memory) {
    uint64_t garbage = 0;
    if (db_->GetIntProperty(Handle(Column::kPages), rocksdb::DB::Properties::kLiveBlobFileGarbageSize,
                            &garbage)) {
      s.blob_garbage_bytes = garbage;
    }
  }
  s.collector_copied_bytes = collector_copied_bytes_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace qaqkv::storage
