#include "storage/session_record.h"

#include "gtest/gtest.h"

namespace qaqkv::storage {
namespace {

TEST(SessionRecordTest, RoundTripAndMalformedBytes) {
  SessionRecord r;
  r.token_count = 4096;
  r.created_ms = 1;
  r.accessed_ms = 2;
  r.ttl_ms = 3;
  r.blocks.resize(3);
  r.blocks[1][7] = 9;
  r.tail = "tail-bytes";
  r.descriptor = "format";
  r.updated_ms = 5;
  r.deleted_ms = 6;
  const std::string bytes = EncodeSessionRecord(r);
  auto d = DecodeSessionRecord(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->token_count, 4096u);
  EXPECT_EQ(d->blocks, r.blocks);
  EXPECT_EQ(d->tail, "tail-bytes");
  EXPECT_EQ(d->ttl_ms, 3);
  EXPECT_EQ(d->descriptor, "format");
  EXPECT_EQ(d->updated_ms, 5);
  EXPECT_EQ(d->deleted_ms, 6);
  EXPECT_TRUE(d->deleted());
  EXPECT_EQ(d->version_ms(), 6);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(DecodeSessionRecord(bytes.substr(0, n)).status().code(),
              absl::StatusCode::kDataLoss);
  }
  EXPECT_EQ(DecodeSessionRecord(bytes + "x").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.ExpiredAt(5));
  EXPECT_FALSE(r.ExpiredAt(4));
}

// Older records still decode: version 1 without the descriptor, version 2
// without the put and delete times (put at creation, not deleted).
TEST(SessionRecordTest, DecodesVersionsOneAndTwo) {
  SessionRecord r;
  r.token_count = 7;
  r.created_ms = 11;
  r.blocks.resize(1);
  r.tail = "t";
  r.descriptor = "d";
  r.updated_ms = 40;
  r.deleted_ms = 50;
  const std::string v3 = EncodeSessionRecord(r);
  std::string v2 = v3.substr(0, v3.size() - 2 * sizeof(uint64_t));
  v2[0] = 2;
  auto d = DecodeSessionRecord(v2);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->descriptor, "d");
  EXPECT_EQ(d->updated_ms, 11);
  EXPECT_FALSE(d->deleted());

  std::string v1 = v2.substr(0, v2.size() - sizeof(uint32_t) - 1);
  v1[0] = 1;
  d = DecodeSessionRecord(v1);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->token_count, 7u);
  EXPECT_EQ(d->tail, "t");
  EXPECT_EQ(d->descriptor, "");
  EXPECT_EQ(d->updated_ms, 11);
  // A layout read under a newer version number is refused.
  v1[0] = 3;
  EXPECT_EQ(DecodeSessionRecord(v1).status().code(), absl::StatusCode::kDataLoss);
  v1[0] = 4;
  EXPECT_EQ(DecodeSessionRecord(v1).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace qaqkv::storage
