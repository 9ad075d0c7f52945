#include "storage/block_record.h"

#include "gtest/gtest.h"

namespace qaqkv::storage {
namespace {

TEST(BlockRecordTest, RoundTripsEveryField) {
  BlockRecord r = NewBlockRecord(10, "llama3-8b/qaq", 1234);
  r.SetLayer(0);
  r.SetLayer(9);
  r.bytes = 777;
  r.accessed_ms = 5678;
  auto d = DecodeBlockRecord(EncodeBlockRecord(r));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_layers, 10u);
  EXPECT_EQ(d->descriptor, "llama3-8b/qaq");
  EXPECT_EQ(d->bytes, 777u);
  EXPECT_EQ(d->created_ms, 1234);
  EXPECT_EQ(d->accessed_ms, 5678);
  EXPECT_TRUE(d->HasLayer(0));
  EXPECT_TRUE(d->HasLayer(9));
  EXPECT_FALSE(d->HasLayer(5));
  EXPECT_EQ(d->LayersPresent(), 2u);
  EXPECT_FALSE(d->committed);
}

TEST(BlockRecordTest, CommittedMeansAllLayers) {
  BlockRecord r = NewBlockRecord(3, "", 0);
  for (uint32_t l = 0; l < 3; ++l) r.SetLayer(l);
  r.committed = true;
  ASSERT_TRUE(DecodeBlockRecord(EncodeBlockRecord(r)).ok());
  r.committed = false;  // all layers but not committed: a lie
  EXPECT_EQ(DecodeBlockRecord(EncodeBlockRecord(r)).status().code(), absl::StatusCode::kDataLoss);
}

TEST(BlockRecordTest, MalformedBytesAreDataLoss) {
  const std::string good = EncodeBlockRecord(NewBlockRecord(9, "d", 1));
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_EQ(DecodeBlockRecord(good.substr(0, n)).status().code(), absl::StatusCode::kDataLoss)
        << n;
  }
  std::string bad = good;
  bad[0] = 2;  // version
  EXPECT_EQ(DecodeBlockRecord(bad).status().code(), absl::StatusCode::kDataLoss);
  bad = good;
  bad.back() = static_cast<char>(0x80);  // bit past layer 8 of 9
  EXPECT_EQ(DecodeBlockRecord(bad).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeBlockRecord(good + "x").status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace qaqkv::storage
