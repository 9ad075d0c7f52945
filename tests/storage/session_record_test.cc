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
  const std::string bytes = EncodeSessionRecord(r);
  auto d = DecodeSessionRecord(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->token_count, 4096u);
  EXPECT_EQ(d->blocks, r.blocks);
  EXPECT_EQ(d->tail, "tail-bytes");
  EXPECT_EQ(d->ttl_ms, 3);
  EXPECT_EQ(d->descriptor, "format");
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(DecodeSessionRecord(bytes.substr(0, n)).status().code(),
              absl::StatusCode::kDataLoss);
  }
  EXPECT_EQ(DecodeSessionRecord(bytes + "x").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.ExpiredAt(5));
  EXPECT_FALSE(r.ExpiredAt(4));
}

// Version 1 records (before the descriptor) still decode, with no descriptor.
TEST(SessionRecordTest, DecodesVersionOne) {
  SessionRecord r;
  r.token_count = 7;
  r.blocks.resize(1);
  r.tail = "t";
  // A version 2 record without its trailing descriptor length is the
  // version 1 layout.
  const std::string v2 = EncodeSessionRecord(r);
  std::string bytes = v2.substr(0, v2.size() - sizeof(uint32_t));
  bytes[0] = 1;
  auto d = DecodeSessionRecord(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->token_count, 7u);
  EXPECT_EQ(d->tail, "t");
  EXPECT_EQ(d->descriptor, "");
  bytes[0] = 3;
  EXPECT_EQ(DecodeSessionRecord(bytes).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace qaqkv::storage
