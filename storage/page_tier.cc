#include "storage/page_tier.h"

#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "storage/rocksdb_tier.h"

namespace qaqkv::storage {
namespace {

class DramPageTier final : public PageTier {
 public:
  explicit DramPageTier(std::unique_ptr<DramTier> dram) : dram_(std::move(dram)) {}

  std::string_view name() const override { return "dram"; }

  absl::Status Put(std::string_view key, PageBuffer page,
                   std::vector<std::string>* evicted) override {
    const size_t size = page == nullptr ? 0 : page->size();
    if (!dram_->Put(key, std::move(page), evicted)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "page: ", size, " bytes do not fit a DRAM shard (memory budget / shards)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<PageBuffer> Get(std::string_view key) override {
    if (PageBuffer hit = dram_->Get(key)) return hit;
    return absl::NotFoundError("page: not in the DRAM tier");
  }

  absl::Status Erase(std::span<const std::string> keys) override {
    for (const std::string& k : keys) dram_->Erase(k);
    return absl::OkStatus();
  }

  PageTierStats Stats() const override {
    const DramTierStats d = dram_->Stats();
    return {d.hits, d.misses, d.evictions, d.charged_bytes, d.entries};
  }

 private:
  std::unique_ptr<DramTier> dram_;
};

class RocksDbPageTier final : public PageTier {
 public:
  explicit RocksDbPageTier(RocksDbTier* db) : db_(db) {}

  std::string_view name() const override { return "disk"; }

  absl::Status Put(std::string_view key, PageBuffer page, std::vector<std::string>*) override {
    return db_->PutPage(key, *page);
  }

  absl::StatusOr<PageBuffer> Get(std::string_view key) override {
    absl::StatusOr<std::string> bytes = db_->GetPage(key);
    (bytes.ok() ? hits_ : misses_).fetch_add(1, std::memory_order_relaxed);
    QAQKV_RETURN_IF_ERROR(bytes.status());
    return PageBuffer(std::make_shared<const std::string>(std::move(*bytes)));
  }

  absl::Status Erase(std::span<const std::string> keys) override {
    std::vector<Mutation> batch;
    batch.reserve(keys.size());
    for (const std::string& k : keys) batch.push_back({Column::kPages, k, {}, /*erase=*/true});
    return db_->Write(batch);
  }

  // What the tier holds is counted by the store from its block records.
  PageTierStats Stats() const override {
    return {hits_.load(std::memory_order_relaxed), misses_.load(std::memory_order_relaxed), 0,
            0, 0};
  }

  bool InRecordDatabase() const override { return true; }

 private:
  RocksDbTier* const db_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
};

}  // namespace

std::unique_ptr<PageTier> NewDramPageTier(std::unique_ptr<DramTier> dram) {
  return std::make_unique<DramPageTier>(std::move(dram));
}

std::unique_ptr<PageTier> NewRocksDbPageTier(RocksDbTier* db) {
  return std::make_unique<RocksDbPageTier>(db);
}

}  // namespace qaqkv::storage
