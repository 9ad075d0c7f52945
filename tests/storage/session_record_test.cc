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
  const std::string bytes = EncodeSessionRecord(r);
  auto d = DecodeSessionRecord(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->token_count, 4096u);
  EXPECT_EQ(d->blocks, r.blocks);
  EXPECT_EQ(d->tail, "tail-bytes");
  EXPECT_EQ(d->ttl_ms, 3);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(DecodeSessionRecord(bytes.substr(0, n)).status().code(),
              absl::StatusCode::kDataLoss);
  }
  EXPECT_EQ(DecodeSessionRecord(bytes + "x").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.ExpiredAt(5));
  EXPECT_FALSE(r.ExpiredAt(4));
}

}  // namespace
}  // namespace qaqkv::storage
