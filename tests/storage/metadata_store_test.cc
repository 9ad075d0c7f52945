#include "storage/metadata_store.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/keys.h"
#include "storage/rocksdb_tier.h"
#include "tests/storage/test_util.h"

namespace qaqkv::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

BlockKey Block(uint8_t b) {
  BlockKey k{};
  k[0] = b;
  return k;
}

class MetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    metadata_.reset();
    db_.reset();
    auto db = RocksDbTier::Open({.path = dir_.path()});
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    metadata_ = std::make_unique<MetadataStore>(db_.get());
  }

  std::vector<std::string> BlockKeys() {
    std::vector<std::string> keys;
    EXPECT_TRUE(metadata_
                    ->ForEachBlock([&](std::string_view key, BlockRecord) {
                      keys.emplace_back(key);
                    })
                    .ok());
    return keys;
  }

  base::TempDir dir_ = testing::MakeTempDir();
  std::unique_ptr<RocksDbTier> db_;
  std::unique_ptr<MetadataStore> metadata_;
};

TEST_F(MetadataStoreTest, BlockRecordsRoundTripInKeyOrderAcrossAReopen) {
  BlockRecord a = NewBlockRecord(3, "fmt", 10);
  a.SetLayer(1);
  a.bytes = 77;
  ASSERT_TRUE(metadata_->PutBlock(BlockRecordKey("t", Block(2)), a).ok());
  ASSERT_TRUE(
      metadata_->PutBlock(BlockRecordKey("t", Block(1)), NewBlockRecord(1, "", 5)).ok());
  Reopen();
  std::vector<std::pair<std::string, BlockRecord>> seen;
  ASSERT_TRUE(metadata_
                  ->ForEachBlock([&](std::string_view key, BlockRecord r) {
                    seen.emplace_back(std::string(key), std::move(r));
                  })
                  .ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].first, BlockRecordKey("t", Block(1)));
  EXPECT_EQ(seen[1].first, BlockRecordKey("t", Block(2)));
  EXPECT_EQ(seen[1].second.num_layers, 3u);
  EXPECT_TRUE(seen[1].second.HasLayer(1));
  EXPECT_FALSE(seen[1].second.HasLayer(0));
  EXPECT_EQ(seen[1].second.bytes, 77u);
  EXPECT_EQ(seen[1].second.descriptor, "fmt");
}

TEST_F(MetadataStoreTest, AnUndecodableBlockRecordIsDataLossNamingItsTenant) {
  ASSERT_TRUE(
      metadata_->PutBlock(BlockRecordKey("good", Block(1)), NewBlockRecord(1, "", 0))
          .ok());
  ASSERT_TRUE(db_->Put(Column::kBlocks, BlockRecordKey("junk", Block(1)), "junk").ok());
  std::vector<std::string> called;
  const absl::Status s = metadata_->ForEachBlock(
      [&](std::string_view key, BlockRecord) { called.emplace_back(KeyTenant(key)); });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("tenant junk"));
  EXPECT_THAT(called, ElementsAre("good"));  // and nothing for the bad record (keys sort
                                             // by tenant length, then name)
}

TEST_F(MetadataStoreTest, ABatchCommitsPagesAndRecordsTogether) {
  const std::string page_key = PageKey("t", Block(1), 0);
  const std::string record_key = BlockRecordKey("t", Block(1));
  const std::string page = testing::FakePage(100, 1);
  BlockRecord record = NewBlockRecord(1, "", 0);
  record.SetLayer(0);
  record.committed = true;
  {
    RecordBatch batch;
    batch.PutPage(page_key, page);
    batch.PutBlock(record_key, record);
    EXPECT_EQ(batch.size(), 2u);
    ASSERT_TRUE(metadata_->Commit(batch).ok());
  }
  Reopen();
  EXPECT_THAT(BlockKeys(), ElementsAre(record_key));
  EXPECT_EQ(*db_->GetPage(page_key), page);

  RecordBatch erase;
  erase.ErasePage(page_key);
  erase.EraseBlock(record_key);
  ASSERT_TRUE(metadata_->Commit(erase).ok());
  Reopen();
  EXPECT_TRUE(BlockKeys().empty());
  EXPECT_EQ(db_->GetPage(page_key).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(MetadataStoreTest, AnEmptyBatchWritesNothing) {
  RecordBatch batch;
  EXPECT_TRUE(batch.empty());
  EXPECT_TRUE(metadata_->Commit(batch).ok());
  EXPECT_TRUE(BlockKeys().empty());
}

TEST_F(MetadataStoreTest, SessionsRoundTripAndScanByPrefixUntilTold) {
  EXPECT_EQ(metadata_->GetSession(SessionKey("t", "s")).status().code(),
            absl::StatusCode::kNotFound);
  SessionRecord r;
  r.token_count = 12;
  r.blocks = {Block(1), Block(2)};
  r.ttl_ms = 99;
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(metadata_->PutSession(SessionKey("t", id), r).ok());
  }
  ASSERT_TRUE(metadata_->PutSession(SessionKey("u", "a"), r).ok());
  Reopen();
  absl::StatusOr<SessionRecord> got = metadata_->GetSession(SessionKey("t", "b"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->token_count, 12u);
  EXPECT_EQ(got->blocks, r.blocks);
  EXPECT_EQ(got->ttl_ms, 99);

  std::vector<std::string> ids;
  const std::string prefix = TenantPrefix('S', "t");
  ASSERT_TRUE(
      metadata_
          ->ScanSessions(prefix, {},
                         [&](std::string_view key, absl::StatusOr<SessionRecord> record) {
                           EXPECT_TRUE(record.ok());
                           ids.emplace_back(key.substr(prefix.size()));
                           return ids.size() < 2;
                         })
          .ok());
  EXPECT_THAT(ids, ElementsAre("a", "b"));
  ids.clear();
  ASSERT_TRUE(metadata_
                  ->ScanSessions(prefix, "a",
                                 [&](std::string_view key, absl::StatusOr<SessionRecord>) {
                                   ids.emplace_back(key.substr(prefix.size()));
                                   return true;
                                 })
                  .ok());
  EXPECT_EQ(ids.front(), "b");  // after the cursor, not at it

  ASSERT_TRUE(metadata_->DeleteSession(SessionKey("t", "b")).ok());
  EXPECT_TRUE(metadata_->DeleteSession(SessionKey("t", "never")).ok());
  EXPECT_EQ(metadata_->GetSession(SessionKey("t", "b")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(MetadataStoreTest, AnUndecodableSessionIsDataLossToGetAndToScan) {
  ASSERT_TRUE(db_->Put(Column::kSessions, SessionKey("t", "bad"), "junk").ok());
  const absl::StatusOr<SessionRecord> got = metadata_->GetSession(SessionKey("t", "bad"));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(got.status().message(), HasSubstr("tenant t"));
  std::vector<absl::StatusCode> codes;
  ASSERT_TRUE(
      metadata_
          ->ScanSessions("", {},
                         [&](std::string_view, absl::StatusOr<SessionRecord> record) {
                           codes.push_back(record.status().code());
                           return true;
                         })
          .ok());
  EXPECT_THAT(codes, ElementsAre(absl::StatusCode::kDataLoss));
}

TEST(RecordKeysTest, BlockRecordKeysParseBackAndOthersAreRefused) {
  const BlockKey block = Block(7);
  absl::StatusOr<ParsedBlockRecordKey> parsed =
      ParseBlockRecordKey(BlockRecordKey("tenant", block));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->tenant, "tenant");
  EXPECT_EQ(parsed->block, block);
  for (const std::string& bad :
       {std::string(), std::string("B"), PageKey("tenant", block, 0),
        SessionKey("tenant", "s"), BlockRecordKey("tenant", block) + "x"}) {
    EXPECT_EQ(ParseBlockRecordKey(bad).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(KeyTenant(BlockRecordKey("abc", block)), "abc");
  EXPECT_EQ(KeyTenant(SessionKey("xy", "s")), "xy");
  EXPECT_EQ(KeyTenant(PageKey("p", block, 3)), "p");
  EXPECT_EQ(KeyTenant("B"), "");
  EXPECT_EQ(KeyTenant(std::string("B\x05") + "ab"), "");  // claims more than it holds
}

}  // namespace
}  // namespace qaqkv::storage
