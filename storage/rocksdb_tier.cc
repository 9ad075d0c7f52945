#include "storage/rocksdb_tier.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "absl/strings/str_cat.h"
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
  QAQKV_ASSIGN_OR_RETURN(std::string value, Get(Column::kPages, key));
  if (!PageChecksumOk(value)) {
    checksum_failures_.fetch_add(1, std::memory_order_relaxed);
    // Never served, and not left to fail again: the copy is gone.
    (void)Delete(Column::kPages, key);
    return absl::DataLossError("page: stored bytes fail their checksum; dropped");
  }
  return value;
}

absl::Status RocksDbTier::Put(Column column, std::string_view key, std::string_view value) {
  return Write({{column, key, value}});
}

// Every write goes through here: one place for the sync policy and the TSan
// serialization.
absl::Status RocksDbTier::Write(const std::vector<Mutation>& batch) {
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
  QAQKV_TSAN_SERIALIZE_ROCKSDB();
  return internal::FromRocksDb(db_->Write(wo, &wb), "write");
}

absl::StatusOr<std::string> RocksDbTier::Get(Column column, std::string_view key) {
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
    Column column, std::string_view prefix,
    absl::FunctionRef<bool(std::string_view key, std::string_view value)> fn) {
  QAQKV_TSAN_SERIALIZE_ROCKSDB();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), Handle(column)));
  for (it->Seek(ToSlice(prefix)); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    if (!k.starts_with(ToSlice(prefix))) break;
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
  return total;
}

RocksDbTierStats RocksDbTier::Stats() const {
  RocksDbTierStats s;
  s.checksum_failures = checksum_failures_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace qaqkv::storage
