#include "storage/tiered_store.h"

#include <sys/statvfs.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "kernels/checksum.h"
#include "storage/internal/read_admission.h"
#include "storage/internal/write_back_queue.h"

namespace qaqkv::storage {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

using base::AsAbsl;

}  // namespace

absl::StatusOr<std::unique_ptr<TieredStore>> TieredStore::Open(const TieredStoreOptions& options) {
  RocksDbTierOptions disk_options;
  disk_options.path = options.memory_only ? "/qaqkv-memory" : options.data_dir;
  disk_options.in_memory = options.memory_only;
  disk_options.sync = options.sync;
  disk_options.separate_pages = options.separate_pages;
  disk_options.segment_lanes = options.segment_lanes;
  disk_options.segment_direct_io = options.segment_direct_io;
  size_t dram_bytes = options.memory_bytes;
  if (!options.memory_only) {
    // RocksDB's memtables and block cache are caches too: they come out of
    // the same budget, so --memory-bytes bounds the process's cache memory
    // rather than only the DRAM tier's (docs/performance.md has the peak
    // RSS with the two on top of it).
    const uint64_t each = std::min<uint64_t>(uint64_t{64} << 20, options.memory_bytes / 8);
    disk_options.write_buffer_bytes = std::max<uint64_t>(each, 1);
    disk_options.block_cache_bytes = std::max<uint64_t>(each, 1);
    dram_bytes -= 2 * each;
  }
  if (!options.memory_only && options.data_dir.empty()) {
    return absl::InvalidArgumentError("store.data_dir: empty (or choose memory_only)");
  }
  if (options.write_back_bytes > 0) {
    // Unwritten pages are held beside the DRAM tier's copies (which it may
    // evict), so they come out of the same budget.
    if (options.memory_only) {
      return absl::InvalidArgumentError(
          "store.write_back_bytes: needs a disk to write back to (not memory_only)");
    }
    if (options.write_back_bytes > options.memory_bytes / 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "store.write_back_bytes: ", options.write_back_bytes,
          " is more than a quarter of memory_bytes (", options.memory_bytes, ")"));
    }
    dram_bytes -= options.write_back_bytes;
  }
  QAQKV_ASSIGN_OR_RETURN(std::unique_ptr<RocksDbTier> records, RocksDbTier::Open(disk_options));
  QAQKV_ASSIGN_OR_RETURN(std::unique_ptr<DramTier> dram,
                         DramTier::Create({dram_bytes, options.dram_shards}));
  std::vector<std::unique_ptr<PageTier>> tiers;
  tiers.push_back(NewDramPageTier(std::move(dram)));
  if (!options.memory_only) tiers.push_back(NewRocksDbPageTier(records.get()));
  auto store =
      std::make_unique<TieredStore>(Token(), options, std::move(records), std::move(tiers));
  store->dram_budget_ = dram_bytes;
  if (!options.memory_only && !options.promote_on_first_read) {
    // Remember about as many first reads as the DRAM tier holds pages of
    // 64 KiB (a small page of a long context), and never fewer than 4096.
    store->read_admission_ =
        std::make_unique<internal::ReadAdmission>(std::max<size_t>(dram_bytes >> 16, 4096));
  }

  // Usage is derived from the records, so it matches the data after any
  // crash.
  QAQKV_RETURN_IF_ERROR(
      store->metadata_.ForEachBlock([&](std::string_view key, BlockRecord record) {
        store->AddUsage(KeyTenant(key), static_cast<int64_t>(record.bytes), 1);
        base::MutexLock lock(&store->index_mu_);
        store->total_bytes_ += record.bytes;
        store->IndexSet(key, {std::move(record), false});
      }));
  if (options.maintenance_interval_ms > 0) {
    TieredStore* self = store.get();
    store->maintenance_ = std::thread([self] { self->MaintenanceLoop(); });
  }
  if (options.write_back_bytes > 0) {
    store->write_back_ = std::make_unique<internal::WriteBackQueue>(options.write_back_bytes);
    TieredStore* self = store.get();
    store->write_back_thread_ = std::thread([self] { self->WriteBackLoop(); });
  }
  return store;
}

TieredStore::TieredStore(Token, TieredStoreOptions options, std::unique_ptr<RocksDbTier> records,
                         std::vector<std::unique_ptr<PageTier>> tiers)
    : options_(std::move(options)),
      records_(std::move(records)),
      metadata_(records_.get()),
      tiers_(std::move(tiers)) {}

TieredStore::~TieredStore() {
  {
    base::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  stop_cv_.SignalAll();
  if (maintenance_.joinable()) maintenance_.join();
  // What write-back still holds is written before the database closes.
  if (write_back_ != nullptr) {
    write_back_->Close();
    if (write_back_thread_.joinable()) write_back_thread_.join();
  }
}

namespace {

struct FsSpace {
  uint64_t free = 0, size = 0;
};

absl::StatusOr<FsSpace> SpaceOf(const std::string& dir) {
  struct statvfs v;
  if (statvfs(dir.c_str(), &v) != 0) {
    return absl::UnavailableError(
        absl::StrCat("disk: cannot stat the filesystem of ", dir, ": ", std::strerror(errno)));
  }
  return FsSpace{uint64_t(v.f_bavail) * v.f_frsize, uint64_t(v.f_blocks) * v.f_frsize};
}

struct DirUse {
  uint64_t allocated = 0;  // what `du` says: holes and sparse tails not counted
  uint64_t wal = 0;        // RocksDB's write-ahead logs: *.log at the top
};

DirUse WalkDir(const std::string& dir) {
  DirUse use;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    use.allocated += uint64_t(st.st_blocks) * 512;
    if (it.depth() == 0 && it->path().extension() == ".log") use.wal += uint64_t(st.st_size);
  }
  return use;
}

}  // namespace

TieredStore::DiskUse TieredStore::RefreshedDiskUse(bool walk) const {
  // A statvfs at most every second (puts check the floor) and a walk of
  // the directory at most every 5 s (every scrape and GetStats asks).
  constexpr int64_t kStatMs = 1000, kWalkMs = 5000;
  const int64_t now = NowMs();
  {
    base::MutexLock lock(&disk_use_mu_);
    if (disk_use_.stat_ms == 0 || now - disk_use_.stat_ms >= kStatMs) {
      disk_use_.stat_ms = now;
      absl::StatusOr<FsSpace> space = SpaceOf(options_.data_dir);
      disk_use_.fs_status = space.status();
      if (space.ok()) {
        disk_use_.fs_free_bytes = space->free;
        disk_use_.fs_size_bytes = space->size;
      }
    }
    walk = walk && (disk_use_.walk_ms == 0 || now - disk_use_.walk_ms >= kWalkMs);
    if (!walk) return disk_use_;
    disk_use_.walk_ms = now;  // this caller walks; others use the last walk
  }
  // Outside the lock: a put checking the floor never waits for a walk.
  const DirUse use = WalkDir(options_.data_dir);
  base::MutexLock lock(&disk_use_mu_);
  disk_use_.data_dir_bytes = use.allocated;
  disk_use_.wal_bytes = use.wal;
  return disk_use_;
}

absl::Status TieredStore::CheckFreeSpace() {
  if (options_.min_free_disk_bytes == 0) return absl::OkStatus();
  const DiskUse use = RefreshedDiskUse(/*walk=*/false);
  if (!use.fs_status.ok()) return use.fs_status;
  if (use.fs_free_bytes < options_.min_free_disk_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("disk: ", use.fs_free_bytes, " bytes free on the filesystem of ",
                     options_.data_dir, ", under the floor of ", options_.min_free_disk_bytes,
                     " (min_free_disk_bytes); page puts are refused"));
  }
  return absl::OkStatus();
}

absl::Status TieredStore::DiskHealth() {
  if (options_.memory_only) return absl::OkStatus();
  QAQKV_RETURN_IF_ERROR(CheckFreeSpace());
  QAQKV_RETURN_IF_ERROR(records_->Health());
  if (write_back_ != nullptr) QAQKV_RETURN_IF_ERROR(write_back_->WriteError());
  return absl::OkStatus();
}

absl::Status TieredStore::Flush() {
  if (write_back_ != nullptr) QAQKV_RETURN_IF_ERROR(write_back_->WaitDrained());
  return records_->Flush();
}

absl::Status TieredStore::WriteBackBlockLocked(std::string_view record_key) {
  const std::vector<internal::WriteBackEntry> entries = write_back_->BlockEntries(record_key);
  if (entries.empty()) return absl::OkStatus();
  // In arrival order, each page with the record as it stood after it: the
  // last record written is the newest, and a crash within the batch leaves
  // nothing of it (one atomic batch).
  RecordBatch batch;
  for (const internal::WriteBackEntry& e : entries) {
    batch.PutNewPage(e.page_key, *e.page);  // queued pages were never stored
    batch.PutBlock(e.record_key, e.record);
  }
  QAQKV_RETURN_IF_ERROR(metadata_.Commit(batch));
  for (const internal::WriteBackEntry& e : entries) {
    write_back_->Remove(e.page_key, e.seq, /*written=*/true);
  }
  return absl::OkStatus();
}

void TieredStore::WriteBackLoop() {
  int failures = 0;
  while (std::optional<internal::WriteBackEntry> oldest = write_back_->WaitOldest()) {
    absl::Status st;
    {
      base::MutexLock lock(&stripes_.For(oldest->record_key));
      st = WriteBackBlockLocked(oldest->record_key);
    }
    if (st.ok()) {
      failures = 0;
      continue;
    }
    // Acknowledged pages stay queued (and readable) and are retried; puts
    // get the error instead of waiting for room meanwhile.
    write_back_->SetWriteError(st);
    BackgroundError("write-back of a block", st);
    ++failures;
    // Closed: the store is closing and waits for this thread.
    if (write_back_->closed() && failures >= 3) {
      // Shutting down and the disk refuses: what is left cannot be kept.
      base::LogError("write-back: pages lost at shutdown, the disk refused them",
                     {{"component", "storage"},
                      {"pages", absl::StrCat(write_back_->Stats().dirty_pages)},
                      {"error", st.ToString()}});
      write_back_->DropBlock(oldest->record_key);
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(1000, 50 << std::min(failures, 5))));
  }
}

void TieredStore::MaintenanceLoop() {
  for (;;) {
    {
      base::MutexLock lock(&stop_mu_);
      if (stop_cv_.WaitFor(&stop_mu_, std::chrono::milliseconds(options_.maintenance_interval_ms),
                           [this] {
                             stop_mu_.AssertHeld();
                             return stopping_;
                           })) {
        return;
      }
    }
    // A failed pass leaves the store usable; the next pass retries.
    if (absl::StatusOr<MaintenanceReport> r = RunMaintenance(NowMs()); !r.ok()) {
      BackgroundError("maintenance pass", r.status());
    }
  }
}

void TieredStore::BackgroundError(std::string_view what, const absl::Status& status) {
  background_errors_.fetch_add(1, std::memory_order_relaxed);
  base::LogWarning("storage background work failed",
                   {{"component", "storage"}, {"work", AsAbsl(what)},
                    {"error", status.ToString()}});
}

StoreStats TieredStore::Stats() const {
  StoreStats s;
  {
    base::MutexLock lock(&index_mu_);
    s.total_bytes = total_bytes_;
    s.blocks = index_.size();
  }
  for (size_t i = 0; i < tiers_.size(); ++i) {
    const PageTier& tier = *tiers_[i];
    const PageTierStats t = tier.Stats();
    TierStats out{std::string(tier.name()), t.hits, t.misses, t.evictions, t.bytes, t.entries, 0};
    if (i == 0) out.budget_bytes = dram_budget_;
    if (i + 1 == tiers_.size() && tier.InRecordDatabase()) {
      // The RocksDB tier does not count its pages; the records do: what it
      // holds, its budget, and whole blocks evicted under that budget.
      out.bytes = s.total_bytes;
      out.entries = s.blocks;
      out.evictions = blocks_evicted_.load(std::memory_order_relaxed);
      out.budget_bytes = options_.disk_bytes;
    }
    s.tiers.push_back(std::move(out));
  }
  s.blocks_evicted = blocks_evicted_.load(std::memory_order_relaxed);
  s.blocks_dropped = blocks_dropped_.load(std::memory_order_relaxed);
  s.pages_promoted = pages_promoted_.load(std::memory_order_relaxed);
  s.tenant_quota_bytes = options_.tenant_quota_bytes;
  const RocksDbTierStats db = records_->Stats();
  s.checksum_failures = db.checksum_failures;
  if (!options_.memory_only) s.disk_file_bytes = records_->DiskBytes();
  s.segment_file_bytes = db.segment_file_bytes;
  s.segment_live_bytes = db.segment_live_bytes;
  s.segment_writes = db.segment_writes;
  s.segment_syncs = db.segment_syncs;
  s.segments_collected = db.collected_segments;
  s.segment_bytes_copied = db.collector_copied_bytes;
  s.blob_garbage_bytes = db.blob_garbage_bytes;
  if (!options_.memory_only) {
    const DiskUse use = RefreshedDiskUse(/*walk=*/true);
    s.data_dir_bytes = use.data_dir_bytes;
    s.wal_bytes = use.wal_bytes;
    s.fs_free_bytes = use.fs_free_bytes;
    s.fs_size_bytes = use.fs_size_bytes;
  }
  if (write_back_ != nullptr) {
    const internal::WriteBackStats wb = write_back_->Stats();
    s.write_back_limit_bytes = write_back_->limit();
    s.write_back_dirty_bytes = wb.dirty_bytes;
    s.write_back_dirty_pages = wb.dirty_pages;
    s.write_back_written_pages = wb.written_pages;
    s.write_back_stalls = wb.stalls;
  }
  s.background_errors = background_errors_.load(std::memory_order_relaxed);
  return s;
}

uint64_t TieredStore::TotalBytes() const {
  base::MutexLock lock(&index_mu_);
  return total_bytes_;
}

void TieredStore::AddUsage(std::string_view tenant, int64_t bytes, int64_t blocks) {
  base::MutexLock lock(&usage_mu_);
  TenantUsage& u = usage_[AsAbsl(tenant)];
  u.bytes = static_cast<uint64_t>(static_cast<int64_t>(u.bytes) + bytes);
  u.blocks = static_cast<uint64_t>(static_cast<int64_t>(u.blocks) + blocks);
}

bool TieredStore::ReserveUsage(std::string_view tenant, uint64_t bytes, int64_t blocks) {
  base::MutexLock lock(&usage_mu_);
  TenantUsage& u = usage_[AsAbsl(tenant)];
  if (options_.tenant_quota_bytes > 0 && u.bytes + bytes > options_.tenant_quota_bytes) {
    return false;
  }
  u.bytes += bytes;
  u.blocks = static_cast<uint64_t>(static_cast<int64_t>(u.blocks) + blocks);
  return true;
}

bool TieredStore::ReserveTotal(uint64_t bytes) {
  base::MutexLock lock(&index_mu_);
  if (options_.disk_bytes > 0 && total_bytes_ + bytes > options_.disk_bytes) return false;
  total_bytes_ += bytes;
  return true;
}

void TieredStore::ReleaseTotal(uint64_t bytes) {
  base::MutexLock lock(&index_mu_);
  total_bytes_ -= bytes;
}

TenantUsage TieredStore::Usage(std::string_view tenant) const {
  base::MutexLock lock(&usage_mu_);
  auto it = usage_.find(AsAbsl(tenant));
  return it == usage_.end() ? TenantUsage{} : it->second;
}

absl::StatusOr<PutPageResult> TieredStore::PutPage(const PutPageRequest& req) {
  std::vector<PutPageResult> results;
  QAQKV_RETURN_IF_ERROR(PutBlockPages(std::span<const PutPageRequest>(&req, 1), &results));
  return results.front();
}

absl::Status TieredStore::PutPages(std::span<const PutPageRequest> requests,
                                   std::vector<PutPageResult>* results) {
  // Runs of pages of one block go together: one segment write and one
  // RocksDB batch for all of them. Memory-only, each page goes alone: a
  // page the DRAM tier cannot hold must fail without taking the block's
  // other pages with it.
  size_t i = 0;
  while (i < requests.size()) {
    size_t j = i + 1;
    if (home().InRecordDatabase()) {
      while (j < requests.size() && requests[j].tenant == requests[i].tenant &&
             requests[j].block == requests[i].block) {
        ++j;
      }
    }
    QAQKV_RETURN_IF_ERROR(PutBlockPages(requests.subspan(i, j - i), results));
    i = j;
  }
  return absl::OkStatus();
}

bool TieredStore::StoresRunsTogether() const { return home().InRecordDatabase(); }

absl::Status TieredStore::PutBlockPages(std::span<const PutPageRequest> group,
                                        std::vector<PutPageResult>* results) {
  if (!options_.memory_only) QAQKV_RETURN_IF_ERROR(CheckFreeSpace());
  uint64_t bytes = 0;
  for (const PutPageRequest& req : group) bytes += req.page.size();
  std::vector<std::string> evicted;
  std::vector<PutPageResult> out;
  bool no_room = false;
  uint64_t queued = 0;
  // Write-back: room among the unwritten bytes first, waiting for the
  // writer if need be; never under a block's lock, which the writer takes.
  if (write_back_ != nullptr) QAQKV_RETURN_IF_ERROR(write_back_->Reserve(bytes));
  absl::Status st = PutBlockPagesLocked(group, &out, &evicted, &no_room, &queued);
  // Concurrent writers can fill the room this write's eviction made before
  // it takes its block's lock: evict again (no lock held) and retry, a few
  // times; a budget that live sessions really fill stays refused.
  for (int attempt = 0; no_room && attempt < 16; ++attempt) {
    const uint64_t headroom = std::max<uint64_t>(bytes, options_.disk_bytes / 32);
    EvictTo(options_.disk_bytes - std::min(headroom, options_.disk_bytes),
            BlockRecordKey(group.front().tenant, group.front().block));
    no_room = false;
    st = PutBlockPagesLocked(group, &out, &evicted, &no_room, &queued);
  }
  if (write_back_ != nullptr && queued < bytes) write_back_->Unreserve(bytes - queued);
  // Memory-only: the DRAM tier holds the only copy of a page, so a block
  // that lost a page to eviction is incomplete and goes as a whole. Done
  // here, with no block lock held (deleting takes the victim's lock).
  for (const std::string& page_key : evicted) {
    auto parsed = ParsePageKey(page_key);
    if (!parsed.ok()) continue;
    if (DeleteBlockByRecordKey(BlockRecordKey(parsed->tenant, parsed->block)).ok()) {
      blocks_dropped_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (st.ok()) results->insert(results->end(), out.begin(), out.end());
  return st;
}

absl::Status TieredStore::PutBlockPagesLocked(std::span<const PutPageRequest> group,
                                              std::vector<PutPageResult>* out,
                                              std::vector<std::string>* evicted, bool* no_room,
                                              uint64_t* queued) {
  const PutPageRequest& first = group.front();
  QAQKV_RETURN_IF_ERROR(ValidateTenant(first.tenant));
  uint64_t bytes = 0, largest = 0;
  for (const PutPageRequest& req : group) {
    if (req.num_layers == 0 || req.num_layers > limits::kMaxLayers) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_layers: ", req.num_layers, " not in [1, ", limits::kMaxLayers, "]"));
    }
    if (req.layer >= req.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer: ", req.layer, " not below num_layers ", req.num_layers));
    }
    if (!req.checksum_verified && !PageChecksumOk(req.page)) {
      return absl::InvalidArgumentError("page: checksum does not match its contents");
    }
    bytes += req.page.size();
    largest = std::max<uint64_t>(largest, req.page.size());
  }
  const std::string record_key = BlockRecordKey(first.tenant, first.block);
  if (options_.disk_bytes > 0) {
    // Make room before taking this block's lock (eviction takes others').
    if (largest > options_.disk_bytes) {
      return absl::ResourceExhaustedError("page: larger than the whole disk budget");
    }
    if (TotalBytes() + bytes > options_.disk_bytes) {
      // Down to a low-water mark (1/32 of the budget below it), not just
      // these pages' room: concurrent writers then find room between this
      // eviction and their own budget check, and eviction runs in batches.
      const uint64_t headroom = std::max<uint64_t>(bytes, options_.disk_bytes / 32);
      EvictTo(options_.disk_bytes - std::min(headroom, options_.disk_bytes), record_key);
    }
  }
  base::MutexLock lock(&stripes_.For(record_key));

  // The index changes only under this block's lock, held here: the record
  // read now is the one this write replaces.
  BlockRecord record;
  bool existed = false;
  if (auto found = IndexedRecord(record_key)) {
    record = std::move(*found);
    existed = true;
  } else {
    record = NewBlockRecord(first.num_layers, first.descriptor, NowMs());
  }
  for (const PutPageRequest& req : group) {
    if (record.num_layers != req.num_layers) {
      return absl::FailedPreconditionError(absl::StrCat(
          "num_layers: ", req.num_layers, " but the block has ", record.num_layers));
    }
    if (record.descriptor != req.descriptor) {
      return absl::FailedPreconditionError(
          "descriptor: geometry or codec differ from the block's earlier pages");
    }
  }
  // Each page's result as if the pages came one at a time; `records[k]` is
  // the block's record once the k-th new page is stored (write-back queues
  // each page with it; the other modes store the final record only).
  out->assign(group.size(), PutPageResult{});
  std::vector<size_t> fresh;
  std::vector<BlockRecord> records;
  uint64_t fresh_bytes = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    if (record.committed) {
      (*out)[i] = PutPageResult{true, true, false};
    } else if (!record.HasLayer(group[i].layer)) {
      // A layer the block already has (a retried stream) is durable already.
      record.SetLayer(group[i].layer);
      record.bytes += group[i].page.size();
      record.committed = record.LayersPresent() == record.num_layers;
      (*out)[i] = PutPageResult{record.committed, false, true};
      fresh.push_back(i);
      if (write_back_ != nullptr) records.push_back(record);
      fresh_bytes += group[i].page.size();
    }
  }
  if (fresh.empty()) return absl::OkStatus();
  // Check and reserve the budget in one step: writers of other blocks hold
  // other locks, and a check apart from the reservation lets two of them
  // slip under the last free bytes together.
  if (!ReserveTotal(fresh_bytes)) {
    *no_room = true;
    return absl::ResourceExhaustedError(absl::StrCat(
        "disk budget of ", options_.disk_bytes,
        " bytes is full (what is left is held by live sessions or blocks being written)"));
  }
  // Likewise for the tenant's quota.
  if (!ReserveUsage(first.tenant, fresh_bytes, existed ? 0 : 1)) {
    ReleaseTotal(fresh_bytes);
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant quota of ", options_.tenant_quota_bytes, " bytes exceeded"));
  }
  std::vector<std::string> page_keys;
  std::vector<PageBuffer> buffers;
  page_keys.reserve(fresh.size());  // the batch below points into them
  for (size_t i : fresh) {
    const PutPageRequest& req = group[i];
    page_keys.push_back(PageKey(req.tenant, req.block, req.layer));
    buffers.push_back(req.owned && req.owned->data() == req.page.data() &&
                              req.owned->size() == req.page.size()
                          ? req.owned
                          : std::make_shared<const std::string>(req.page));
  }
  absl::Status stored;
  if (write_back_ != nullptr) {
    // Acknowledged from memory; the writer stores pages and records later,
    // each page with the record as it stands once that page is stored.
    for (size_t k = 0; k < fresh.size(); ++k) {
      write_back_->Add(page_keys[k], record_key, buffers[k], records[k]);
      *queued += group[fresh[k]].page.size();
    }
  } else if (home().InRecordDatabase()) {
    // Pages and record in one WAL record: a crash leaves all or none.
    RecordBatch batch;
    for (size_t k = 0; k < fresh.size(); ++k) {
      batch.PutNewPage(page_keys[k], group[fresh[k]].page);  // the record lacked the layer
    }
    batch.PutBlock(record_key, record);
    stored = metadata_.Commit(batch);
  } else {
    // Memory-only (one page at a time, PutPages): the home tier holds the
    // page's only copy and the index the record. A page it cannot hold is
    // never recorded as stored; pages it pushed out go back to PutPage,
    // which drops their blocks.
    for (size_t k = 0; k < fresh.size() && stored.ok(); ++k) {
      stored = home().Put(page_keys[k], buffers[k], evicted);
    }
  }
  if (!stored.ok()) {
    AddUsage(first.tenant, -static_cast<int64_t>(fresh_bytes), existed ? 0 : -1);
    ReleaseTotal(fresh_bytes);
    return stored;
  }
  record.accessed_ms = NowMs();
  {
    base::MutexLock index_lock(&index_mu_);
    IndexSet(record_key, {std::move(record), false});
  }
  for (size_t k = 0; k < fresh.size(); ++k) CacheAbove(tiers_.size() - 1, page_keys[k], buffers[k]);
  return absl::OkStatus();
}

std::optional<BlockRecord> TieredStore::IndexedRecord(std::string_view record_key) const {
  base::MutexLock lock(&index_mu_);
  auto it = index_.find(AsAbsl(record_key));
  if (it == index_.end()) return std::nullopt;
  return it->second.record;
}

absl::StatusOr<std::vector<BlockInfo>> TieredStore::ListBlocks(std::string_view tenant,
                                                               const BlockKey* start_after,
                                                               size_t limit) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  const std::string prefix = TenantPrefix('B', tenant);
  const std::string after = start_after != nullptr ? BlockRecordKey(tenant, *start_after) : "";
  std::vector<BlockInfo> out;
  if (limit == 0) return out;
  base::MutexLock lock(&index_mu_);
  auto it = after.empty() ? ordered_.lower_bound(std::string_view(prefix))
                          : ordered_.upper_bound(std::string_view(after));
  for (; it != ordered_.end() && out.size() < limit; ++it) {
    const IndexNode& e = **it;
    if (!absl::StartsWith(e.first, prefix)) break;
    BlockInfo info;
    std::memcpy(info.block.data(), e.first.data() + prefix.size(), info.block.size());
    info.committed = e.second.record.committed;
    info.bytes = e.second.record.bytes;
    info.accessed_ms = e.second.record.accessed_ms;
    out.push_back(info);
  }
  return out;
}

void TieredStore::IndexSet(std::string_view record_key, IndexEntry entry) {
  auto [it, inserted] = index_.try_emplace(AsAbsl(record_key));
  it->second = std::move(entry);
  if (inserted) ordered_.insert(&*it);
}

std::optional<uint64_t> TieredStore::IndexErase(std::string_view record_key) {
  auto it = index_.find(AsAbsl(record_key));
  if (it == index_.end()) return std::nullopt;
  const uint64_t bytes = it->second.record.bytes;
  ordered_.erase(&*it);  // before the node it points at goes
  index_.erase(it);
  return bytes;
}

absl::StatusOr<BlockRecord> TieredStore::GetBlock(std::string_view tenant, const BlockKey& block) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  auto record = IndexedRecord(BlockRecordKey(tenant, block));
  if (!record.has_value()) return absl::NotFoundError("block: not found");
  return std::move(*record);
}

absl::StatusOr<PageBuffer> TieredStore::GetPage(std::string_view tenant, const BlockKey& block,
                                                uint32_t layer) {
  QAQKV_ASSIGN_OR_RETURN(const BlockRecord record, GetBlock(tenant, block));
  if (!record.committed || layer >= record.num_layers) {
    return absl::NotFoundError("block: not found");
  }
  return ReadPage(tenant, block, layer);
}

void TieredStore::CacheAbove(size_t tier, std::string_view page_key, const PageBuffer& buffer) {
  for (size_t i = 0; i < tier; ++i) (void)tiers_[i]->Put(page_key, buffer, nullptr);
}

absl::Status TieredStore::ErasePages(std::span<const std::string> page_keys,
                                     RecordBatch records) {
  if (home().InRecordDatabase()) {
    // The block's pages and its record go in one batch, as they came.
    for (const std::string& k : page_keys) records.ErasePage(k);
  } else {
    QAQKV_RETURN_IF_ERROR(home().Erase(page_keys));
  }
  QAQKV_RETURN_IF_ERROR(metadata_.Commit(records));
  for (size_t i = 0; i + 1 < tiers_.size(); ++i) (void)tiers_[i]->Erase(page_keys);
  return absl::OkStatus();
}

absl::StatusOr<PageBuffer> TieredStore::ReadPage(std::string_view tenant, const BlockKey& block,
                                                 uint32_t layer) {
  const std::string page_key = PageKey(tenant, block, layer);
  const std::string record_key = BlockRecordKey(tenant, block);
  const int64_t touched = NowMs();
  {
    // Recency for eviction; written back to the record by maintenance.
    base::MutexLock index_lock(&index_mu_);
    if (auto it = index_.find(AsAbsl(record_key)); it != index_.end()) {
      it->second.record.accessed_ms = touched;
      it->second.access_dirty = !options_.memory_only;
    }
  }
  if (write_back_ != nullptr) {
    // Unwritten pages are read from the queue: the DRAM tier may have
    // evicted its copy, and the disk does not have one yet.
    if (PageBuffer queued = write_back_->Find(page_key)) return queued;
  }
  for (size_t i = 0; i < tiers_.size(); ++i) {
    absl::StatusOr<PageBuffer> page = tiers_[i]->Get(page_key);
    if (absl::IsNotFound(page.status())) continue;
    if (absl::IsDataLoss(page.status())) {
      // The tier dropped the bad copy: the block cannot be served whole.
      DropLostBlock(record_key, touched);
      return page.status();
    }
    QAQKV_RETURN_IF_ERROR(page.status());
    if (i > 0 && (read_admission_ == nullptr || read_admission_->Admit(page_key))) {
      CacheAbove(i, page_key, *page);
      pages_promoted_.fetch_add(1, std::memory_order_relaxed);
    }
    return page;
  }
  // Memory-only, the page was evicted and its block is being dropped. On
  // disk, the block was deleted or evicted since its record was read, or
  // the page was lost (dropped by an earlier read that found it damaged).
  if (!options_.memory_only) DropLostBlock(record_key, touched);
  return absl::NotFoundError("block: not found");
}

void TieredStore::DropLostBlock(const std::string& record_key, int64_t touched_ms) {
  // A block with a page gone must not stay committed: Lookup would keep
  // counting it here, read repair would never copy it back, and a
  // rebalance would take this server for one of its copies. Unless it was
  // used since this read (a writer stored it again, or evicted and wrote
  // it anew).
  if (DeleteBlockByRecordKey(record_key, touched_ms).ok()) {
    blocks_dropped_.fetch_add(1, std::memory_order_relaxed);
    base::LogWarning("dropped a block that lost a page; read repair or a rebalance copies it back",
                     {{"component", "storage"}});
  }
}

absl::StatusOr<size_t> TieredStore::Lookup(std::string_view tenant,
                                           std::span<const BlockKey> chain,
                                           std::string_view descriptor) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  size_t n = 0;
  for (const BlockKey& block : chain) {
    auto record = GetBlock(tenant, block);
    if (!record.ok()) {
      if (record.status().code() == absl::StatusCode::kNotFound) break;
      return record.status();
    }
    if (!record->committed) break;
    if (!descriptor.empty() && record->descriptor != descriptor) break;
    ++n;
  }
  // A hit is a use: the blocks a worker was just told are there are the
  // last the disk budget evicts (and not evicted between its Lookup and its
  // GetPages, which EvictTo checks).
  if (n > 0) {
    const int64_t now = NowMs();
    base::MutexLock index_lock(&index_mu_);
    for (size_t i = 0; i < n; ++i) {
      if (auto it = index_.find(AsAbsl(BlockRecordKey(tenant, chain[i]))); it != index_.end()) {
        it->second.record.accessed_ms = now;
        it->second.access_dirty = !options_.memory_only;
      }
    }
  }
  return n;
}

absl::Status TieredStore::DeleteBlock(std::string_view tenant, const BlockKey& block) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  return DeleteBlockByRecordKey(BlockRecordKey(tenant, block));
}

absl::Status TieredStore::DeleteBlockByRecordKey(const std::string& record_key,
                                                 std::optional<int64_t> unless_used_since) {
  QAQKV_ASSIGN_OR_RETURN(const ParsedBlockRecordKey parsed, ParseBlockRecordKey(record_key));
  const std::string_view tenant = parsed.tenant;
  const BlockKey& block = parsed.block;
  base::MutexLock lock(&stripes_.For(record_key));
  auto record = IndexedRecord(record_key);
  if (!record.has_value()) return absl::NotFoundError("block: not found");
  if (unless_used_since.has_value() && record->accessed_ms != *unless_used_since) {
    return absl::FailedPreconditionError("block: used since it was chosen for eviction");
  }
  std::vector<std::string> page_keys;
  for (uint32_t layer = 0; layer < record->num_layers; ++layer) {
    if (record->HasLayer(layer)) page_keys.push_back(PageKey(tenant, block, layer));
  }
  // Memory-only, block records live in the index alone.
  RecordBatch erase_record;
  if (!options_.memory_only) erase_record.EraseBlock(record_key);
  QAQKV_RETURN_IF_ERROR(ErasePages(page_keys, std::move(erase_record)));
  if (write_back_ != nullptr) write_back_->DropBlock(record_key);  // never to be written
  AddUsage(tenant, -static_cast<int64_t>(record->bytes), -1);
  base::MutexLock index_lock(&index_mu_);
  if (const std::optional<uint64_t> bytes = IndexErase(record_key)) total_bytes_ -= *bytes;
  return absl::OkStatus();
}

absl::Status TieredStore::RevertPage(std::string_view tenant, const BlockKey& block,
                                     uint32_t layer, uint64_t bytes) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  const std::string record_key = BlockRecordKey(tenant, block);
  base::MutexLock lock(&stripes_.For(record_key));
  std::optional<BlockRecord> record = IndexedRecord(record_key);
  if (!record.has_value() || record->committed || layer >= record->num_layers ||
      !record->HasLayer(layer) || bytes > record->bytes) {
    return absl::OkStatus();
  }
  // The record written below must name only stored pages: store the
  // block's queued ones first.
  if (write_back_ != nullptr) QAQKV_RETURN_IF_ERROR(WriteBackBlockLocked(record_key));
  record->ClearLayer(layer);
  record->bytes -= bytes;
  const bool last = record->LayersPresent() == 0;
  const std::string page_key = PageKey(tenant, block, layer);
  RecordBatch update_record;
  if (!options_.memory_only) {
    if (last) {
      update_record.EraseBlock(record_key);
    } else {
      update_record.PutBlock(record_key, *record);
    }
  }
  QAQKV_RETURN_IF_ERROR(ErasePages({&page_key, 1}, std::move(update_record)));
  AddUsage(tenant, -static_cast<int64_t>(bytes), last ? -1 : 0);
  base::MutexLock index_lock(&index_mu_);
  total_bytes_ -= bytes;
  if (last) {
    IndexErase(record_key);
  } else {
    IndexSet(record_key, {std::move(*record), false});
  }
  return absl::OkStatus();
}

absl::flat_hash_set<std::string> TieredStore::ReferencedBlocks(int64_t now_ms) {
  absl::flat_hash_set<std::string> referenced;
  // A failed scan leaves fewer blocks protected; eviction still works.
  absl::Status scanned = metadata_.ScanSessions(
      "", {}, [&](std::string_view key, absl::StatusOr<SessionRecord> session) {
        if (!session.ok()) return true;
        session->accessed_ms = LastAccess(key, *session);
        if (session->ExpiredAt(now_ms)) return true;
        const std::string_view tenant = KeyTenant(key);
        for (const BlockKey& b : session->blocks) referenced.insert(BlockRecordKey(tenant, b));
        return true;
      });
  if (!scanned.ok()) BackgroundError("scan of sessions for referenced blocks", scanned);
  return referenced;
}

size_t TieredStore::EvictTo(uint64_t target, std::string_view keep) {
  base::MutexLock eviction_lock(&eviction_mu_);
  // Blocks that live sessions reference go last.
  const absl::flat_hash_set<std::string> referenced = ReferencedBlocks(NowMs());
  struct Candidate {
    bool referenced;
    int64_t accessed_ms;
    int64_t created_ms;
    std::string key;
  };
  std::vector<Candidate> order;
  {
    base::MutexLock lock(&index_mu_);
    if (total_bytes_ <= target) return 0;
    for (const auto& [key, entry] : index_) {
      if (key == AsAbsl(keep)) continue;
      order.push_back({referenced.contains(key), entry.record.accessed_ms,
                       entry.record.created_ms, key});
    }
  }
  std::sort(order.begin(), order.end(), [](const Candidate& a, const Candidate& b) {
    // Unreferenced first, then least recently used; older first on ties
    // (millisecond clocks tie often).
    if (a.referenced != b.referenced) return !a.referenced;
    if (a.accessed_ms != b.accessed_ms) return a.accessed_ms < b.accessed_ms;
    return a.created_ms < b.created_ms;
  });
  size_t evicted = 0;
  for (const Candidate& c : order) {
    if (TotalBytes() <= target) break;
    if (DeleteBlockByRecordKey(c.key, c.accessed_ms).ok()) ++evicted;
  }
  blocks_evicted_.fetch_add(evicted, std::memory_order_relaxed);
  return evicted;
}

absl::StatusOr<MaintenanceReport> TieredStore::RunMaintenance(int64_t now_ms) {
  MaintenanceReport report;
  report.session_access_written = WriteBackSessionAccess();
  QAQKV_ASSIGN_OR_RETURN(report.sessions_expired, ExpireSessions(now_ms));

  // Write back access times, and pick abandoned and expired blocks.
  std::vector<std::string> dirty;
  std::vector<std::string> abandoned, stale;
  {
    base::MutexLock lock(&index_mu_);
    for (auto& [key, entry] : index_) {
      const BlockRecord& r = entry.record;
      if (!r.committed && now_ms - r.accessed_ms >= options_.abandoned_block_ms) {
        abandoned.push_back(key);
      } else if (r.committed && options_.block_ttl_ms > 0 &&
                 now_ms - r.accessed_ms >= options_.block_ttl_ms) {
        stale.push_back(key);
      }
      // A block with queued pages keeps its access time in memory until
      // they are written: the indexed record names pages not stored yet.
      if (entry.access_dirty && (write_back_ == nullptr || !write_back_->HasBlock(key))) {
        dirty.push_back(key);
        entry.access_dirty = false;
      }
    }
  }
  for (const std::string& key : dirty) {
    // Under the block's lock the index and the stored record agree but for
    // the access time, so the indexed record is what to write back.
    base::MutexLock lock(&stripes_.For(key));
    auto record = IndexedRecord(key);
    if (!record.has_value()) continue;
    if (absl::Status s = metadata_.PutBlock(key, *record); !s.ok()) {
      BackgroundError("block access-time write-back", s);
    }
  }
  for (const std::string& key : abandoned) {
    if (DeleteBlockByRecordKey(key).ok()) ++report.abandoned_reclaimed;
  }
  if (!stale.empty()) {
    // Only blocks no live session references expire.
    const absl::flat_hash_set<std::string> referenced = ReferencedBlocks(now_ms);
    for (const std::string& key : stale) {
      if (referenced.contains(key)) continue;
      if (DeleteBlockByRecordKey(key).ok()) ++report.blocks_expired;
    }
  }
  if (options_.disk_bytes > 0) report.blocks_evicted = EvictTo(options_.disk_bytes, "");
  return report;
}

}  // namespace qaqkv::storage

namespace qaqkv::storage {
namespace {

absl::Status ValidateSessionRequest(std::string_view tenant, std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  return ValidateSessionId(session_id);
}

}  // namespace

int64_t TieredStore::LastAccess(std::string_view key, const SessionRecord& record) const {
  base::MutexLock lock(&access_mu_);
  auto it = session_access_.find(AsAbsl(key));
  return it == session_access_.end() ? record.accessed_ms
                                     : std::max(record.accessed_ms, it->second);
}

void TieredStore::NoteAccess(std::string_view key, int64_t now_ms) {
  base::MutexLock lock(&access_mu_);
  int64_t& t = session_access_[AsAbsl(key)];
  t = std::max(t, now_ms);
}

void TieredStore::ForgetAccess(std::string_view key) {
  base::MutexLock lock(&access_mu_);
  session_access_.erase(AsAbsl(key));
}

absl::StatusOr<SessionRecord> TieredStore::ReadSession(const std::string& key, int64_t now_ms,
                                                       bool* expired) {
  QAQKV_ASSIGN_OR_RETURN(SessionRecord record, metadata_.GetSession(key));
  record.accessed_ms = LastAccess(key, record);
  *expired = record.ExpiredAt(now_ms);
  return record;
}

namespace {

absl::Status ValidateSessionRecord(const SessionRecord& record) {
  if (record.blocks.size() > limits::kMaxSessionBlocks) {
    return absl::InvalidArgumentError(absl::StrCat("blocks: ", record.blocks.size(),
                                                   " exceeds ", limits::kMaxSessionBlocks));
  }
  if (!record.tail.empty() && !PageChecksumOk(record.tail)) {
    return absl::InvalidArgumentError("tail: checksum does not match its contents");
  }
  if (record.ttl_ms < 0) return absl::InvalidArgumentError("ttl_ms: must be >= 0");
  return absl::OkStatus();
}

}  // namespace

absl::Status TieredStore::PutSession(std::string_view tenant, std::string_view session_id,
                                     SessionRecord record) {
  QAQKV_RETURN_IF_ERROR(ValidateSessionRequest(tenant, session_id));
  QAQKV_RETURN_IF_ERROR(ValidateSessionRecord(record));
  const std::string key = SessionKey(tenant, session_id);
  base::MutexLock lock(&stripes_.For(key));
  const int64_t now = NowMs();
  record.created_ms = now;
  int64_t newest = 0;  // the stored copy's version
  if (absl::StatusOr<SessionRecord> old = metadata_.GetSession(key); old.ok()) {
    if (!old->deleted()) record.created_ms = old->created_ms;
    newest = old->version_ms();
  }
  // Versions order copies across servers: a put supersedes what is stored
  // even when the clock reads the same millisecond (or stepped back).
  record.updated_ms = std::max(now, newest + 1);
  record.accessed_ms = now;
  record.deleted_ms = 0;
  QAQKV_RETURN_IF_ERROR(metadata_.PutSession(key, record));
  ForgetAccess(key);  // the record itself holds the newest access now
  return absl::OkStatus();
}

absl::Status TieredStore::RepairSession(std::string_view tenant, std::string_view session_id,
                                        SessionRecord record) {
  QAQKV_RETURN_IF_ERROR(ValidateSessionRequest(tenant, session_id));
  QAQKV_RETURN_IF_ERROR(ValidateSessionRecord(record));
  if (record.deleted()) return absl::InvalidArgumentError("deleted_ms: a repair copies live sessions");
  if (record.updated_ms <= 0) {
    return absl::InvalidArgumentError("updated_ms: a repair needs the copy's version");
  }
  const std::string key = SessionKey(tenant, session_id);
  base::MutexLock lock(&stripes_.For(key));
  if (absl::StatusOr<SessionRecord> old = metadata_.GetSession(key); old.ok()) {
    if (old->version_ms() >= record.updated_ms) {
      return absl::AlreadyExistsError(absl::StrCat(
          "session: this server has ", old->deleted() ? "a deletion" : "a version", " at ",
          old->version_ms(), " ms, not older than the copy's ", record.updated_ms));
    }
  } else if (!absl::IsNotFound(old.status()) && !absl::IsDataLoss(old.status())) {
    return old.status();
  }
  record.accessed_ms = std::max(record.accessed_ms, record.updated_ms);
  QAQKV_RETURN_IF_ERROR(metadata_.PutSession(key, record));
  ForgetAccess(key);
  return absl::OkStatus();
}

absl::StatusOr<SessionRecord> TieredStore::GetSession(std::string_view tenant,
                                                      std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(ValidateSessionRequest(tenant, session_id));
  const std::string key = SessionKey(tenant, session_id);
  base::MutexLock lock(&stripes_.For(key));
  const int64_t now = NowMs();
  bool expired = false;
  QAQKV_ASSIGN_OR_RETURN(SessionRecord record, ReadSession(key, now, &expired));
  if (record.deleted()) return absl::NotFoundError("session: not found (deleted)");
  if (expired) {
    if (absl::Status s = metadata_.DeleteSession(key); s.ok()) ForgetAccess(key);
    return absl::NotFoundError("session: not found");
  }
  // Every access renews the TTL (kvcache.proto, Session.ttl_ms).
  NoteAccess(key, now);
  record.accessed_ms = now;
  return record;
}

absl::StatusOr<int64_t> TieredStore::SessionDeletedAt(std::string_view tenant,
                                                      std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(ValidateSessionRequest(tenant, session_id));
  QAQKV_ASSIGN_OR_RETURN(const SessionRecord record,
                         metadata_.GetSession(SessionKey(tenant, session_id)));
  if (!record.deleted()) return absl::NotFoundError("session: not deleted");
  return record.deleted_ms;
}

absl::StatusOr<std::vector<std::string>> TieredStore::ListSessions(std::string_view tenant,
                                                                   size_t limit) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  const std::string prefix = TenantPrefix('S', tenant);
  std::vector<std::string> out;
  const int64_t now = NowMs();
  QAQKV_RETURN_IF_ERROR(metadata_.ScanSessions(
      prefix, {}, [&](std::string_view key, absl::StatusOr<SessionRecord> record) {
        if (out.size() >= limit) return false;
        if (!record.ok() || record->deleted()) return true;
        record->accessed_ms = LastAccess(key, *record);
        if (!record->ExpiredAt(now)) out.emplace_back(key.substr(prefix.size()));
        return true;
      }));
  return out;
}

absl::StatusOr<std::vector<SessionVersion>> TieredStore::ListSessionVersions(
    std::string_view tenant, std::string_view start_after, size_t limit) {
  QAQKV_RETURN_IF_ERROR(ValidateTenant(tenant));
  const std::string prefix = TenantPrefix('S', tenant);
  std::vector<SessionVersion> out;
  const int64_t now = NowMs();
  QAQKV_RETURN_IF_ERROR(metadata_.ScanSessions(
      prefix, start_after, [&](std::string_view key, absl::StatusOr<SessionRecord> record) {
        if (out.size() >= limit) return false;
        if (!record.ok()) return true;  // unreadable: maintenance removes it
        record->accessed_ms = LastAccess(key, *record);
        if (!record->deleted() && record->ExpiredAt(now)) return true;
        out.push_back({std::string(key.substr(prefix.size())), record->updated_ms,
                       record->deleted_ms});
        return true;
      }));
  return out;
}

absl::Status TieredStore::DeleteSession(std::string_view tenant, std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(ValidateSessionRequest(tenant, session_id));
  const std::string key = SessionKey(tenant, session_id);
  base::MutexLock lock(&stripes_.For(key));
  const int64_t now = NowMs();
  bool expired = false;
  QAQKV_ASSIGN_OR_RETURN(const SessionRecord old, ReadSession(key, now, &expired));
  if (old.deleted()) return absl::NotFoundError("session: not found (deleted)");
  if (expired) {
    QAQKV_RETURN_IF_ERROR(metadata_.DeleteSession(key));
    ForgetAccess(key);
    return absl::NotFoundError("session: not found");
  }
  SessionRecord tombstone;
  tombstone.created_ms = old.created_ms;
  tombstone.updated_ms = old.updated_ms;
  tombstone.accessed_ms = now;
  tombstone.deleted_ms = std::max(now, old.updated_ms + 1);
  QAQKV_RETURN_IF_ERROR(metadata_.PutSession(key, tombstone));
  ForgetAccess(key);
  return absl::OkStatus();
}

absl::Status TieredStore::ForgetSession(std::string_view tenant, std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(ValidateSessionRequest(tenant, session_id));
  const std::string key = SessionKey(tenant, session_id);
  base::MutexLock lock(&stripes_.For(key));
  absl::StatusOr<SessionRecord> old = metadata_.GetSession(key);
  if (absl::IsNotFound(old.status())) return old.status();
  QAQKV_RETURN_IF_ERROR(metadata_.DeleteSession(key));
  ForgetAccess(key);
  return absl::OkStatus();
}

absl::Status TieredStore::TouchSession(std::string_view tenant, std::string_view session_id) {
  return GetSession(tenant, session_id).status();
}

size_t TieredStore::WriteBackSessionAccess() {
  std::vector<std::pair<std::string, int64_t>> pending;
  {
    base::MutexLock lock(&access_mu_);
    pending.assign(session_access_.begin(), session_access_.end());
  }
  size_t written = 0;
  for (const auto& [key, accessed] : pending) {
    base::MutexLock lock(&stripes_.For(key));
    absl::StatusOr<SessionRecord> record = metadata_.GetSession(key);
    if (!record.ok()) {
      if (!absl::IsNotFound(record.status())) {
        BackgroundError("session access write-back", record.status());
        continue;
      }
      ForgetAccess(key);  // deleted since
      continue;
    }
    if (record->accessed_ms < accessed) {
      record->accessed_ms = accessed;
      if (absl::Status s = metadata_.PutSession(key, *record); !s.ok()) {
        BackgroundError("session access write-back", s);
        continue;
      }
      ++written;
    }
    // Drop the entry unless a newer access came in meanwhile.
    base::MutexLock access_lock(&access_mu_);
    if (auto it = session_access_.find(AsAbsl(key));
        it != session_access_.end() && it->second <= accessed) {
      session_access_.erase(it);
    }
  }
  return written;
}

bool TieredStore::Gone(const SessionRecord& record, int64_t now_ms) const {
  if (record.deleted()) return now_ms - record.deleted_ms >= options_.session_tombstone_ms;
  return record.ExpiredAt(now_ms);
}

absl::StatusOr<size_t> TieredStore::ExpireSessions(int64_t now_ms) {
  std::vector<std::string> doomed;
  QAQKV_RETURN_IF_ERROR(metadata_.ScanSessions(
      "", {}, [&](std::string_view key, absl::StatusOr<SessionRecord> record) {
        // An unreadable record can never be resumed: it goes too.
        if (!record.ok()) {
          doomed.emplace_back(key);
          return true;
        }
        record->accessed_ms = LastAccess(key, *record);
        if (Gone(*record, now_ms)) doomed.emplace_back(key);
        return true;
      }));
  size_t removed = 0;
  for (const std::string& key : doomed) {
    // Re-check under the session's lock: a PutSession or an access since the
    // scan may have brought it back to life.
    base::MutexLock lock(&stripes_.For(key));
    bool expired = false;
    absl::StatusOr<SessionRecord> record = ReadSession(key, now_ms, &expired);
    if (absl::IsNotFound(record.status())) continue;
    if (record.ok() && !Gone(*record, now_ms)) continue;
    if (absl::Status s = metadata_.DeleteSession(key); !s.ok()) {
      BackgroundError("expiring a session", s);
      continue;
    }
    ForgetAccess(key);
    ++removed;
  }
  return removed;
}

}  // namespace qaqkv::storage
