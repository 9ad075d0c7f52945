#include "storage/page_tier.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "storage/rocksdb_tier.h"
#include "tests/storage/test_util.h"

namespace qaqkv::storage {
namespace {

using testing::FakePage;
using testing::MakeTempDir;

PageBuffer Buffer(const std::string& bytes) { return std::make_shared<const std::string>(bytes); }

TEST(PageTierTest, DramTierKeepsEvictsAndRefusesByItsBudget) {
  auto dram = DramTier::Create({/*capacity_bytes=*/3 * 1200, /*shards=*/1});
  ASSERT_TRUE(dram.ok());
  std::unique_ptr<PageTier> tier = NewDramPageTier(std::move(*dram));
  EXPECT_EQ(tier->name(), "dram");
  EXPECT_FALSE(tier->InRecordDatabase());
  std::vector<std::string> evicted;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(tier->Put("k" + std::to_string(i), Buffer(FakePage(900, i)), &evicted).ok());
  }
  EXPECT_EQ(evicted, std::vector<std::string>{"k0"});  // least recently used
  EXPECT_EQ(tier->Get("k0").status().code(), absl::StatusCode::kNotFound);
  auto hit = tier->Get("k3");
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(**hit, FakePage(900, 3));
  // A page larger than the shard's budget is refused and nothing is kept.
  EXPECT_EQ(tier->Put("big", Buffer(FakePage(5000, 9)), nullptr).code(),
            absl::StatusCode::kResourceExhausted);
  const std::string gone[] = {"k3", "missing"};
  ASSERT_TRUE(tier->Erase(gone).ok());
  EXPECT_EQ(tier->Get("k3").status().code(), absl::StatusCode::kNotFound);
  const PageTierStats s = tier->Stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(s.entries, 2u);
}

TEST(PageTierTest, RocksDbTierChecksEveryPageItReadsBack) {
  base::TempDir dir = MakeTempDir();
  auto db = RocksDbTier::Open({.path = dir.path()});
  ASSERT_TRUE(db.ok()) << db.status();
  std::unique_ptr<PageTier> tier = NewRocksDbPageTier(db->get());
  EXPECT_EQ(tier->name(), "disk");
  EXPECT_TRUE(tier->InRecordDatabase());
  ASSERT_TRUE(tier->Put("p1", Buffer(FakePage(4000, 1)), nullptr).ok());
  auto got = tier->Get("p1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(**got, FakePage(4000, 1));
  EXPECT_EQ(tier->Get("p2").status().code(), absl::StatusCode::kNotFound);
  // Bytes that fail their checksum are never served, and are dropped.
  std::string bad = FakePage(4000, 2);
  bad[10] ^= 1;
  ASSERT_TRUE((*db)->Put(Column::kPages, "p2", bad).ok());
  EXPECT_EQ(tier->Get("p2").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(tier->Get("p2").status().code(), absl::StatusCode::kNotFound);
  const std::string keys[] = {"p1"};
  ASSERT_TRUE(tier->Erase(keys).ok());
  EXPECT_EQ(tier->Get("p1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tier->Stats().hits, 1u);
  EXPECT_EQ(tier->Stats().misses, 4u);
}

}  // namespace
}  // namespace qaqkv::storage
