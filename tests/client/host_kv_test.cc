// The client's private slicing and validation helpers (client/internal/host_kv.h).
#include "client/internal/host_kv.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qaqkv/limits.h"

namespace qaqkv::client::internal {
namespace {

using ::testing::HasSubstr;

constexpr int kHeads = 3, kDim = 5;

// Value of (token t, head h, channel d): unique, so any misplaced copy shows.
uint16_t Value(int64_t t, int h, int d) { return static_cast<uint16_t>(t * 100 + h * 10 + d); }

std::vector<uint16_t> Buffer(Layout layout, int64_t tokens) {
  std::vector<uint16_t> b(tokens * kHeads * kDim);
  for (int64_t t = 0; t < tokens; ++t)
    for (int h = 0; h < kHeads; ++h)
      for (int d = 0; d < kDim; ++d) {
        const int64_t i = layout == Layout::kNHD ? (t * kHeads + h) * kDim + d
                                                 : (h * tokens + t) * kDim + d;
        b[i] = Value(t, h, d);
      }
  return b;
}

class CopyRowsTest : public ::testing::TestWithParam<Layout> {};

TEST_P(CopyRowsTest, GathersRowsAsNhd) {
  const int64_t tokens = 13, row0 = 4, rows = 7;
  const std::vector<uint16_t> src = Buffer(GetParam(), tokens);
  std::vector<uint16_t> page(rows * kHeads * kDim);
  CopyRowsToNhd(src.data(), GetParam(), tokens, row0, rows, kHeads, kDim, 2, page.data());
  for (int64_t t = 0; t < rows; ++t)
    for (int h = 0; h < kHeads; ++h)
      for (int d = 0; d < kDim; ++d)
        ASSERT_EQ(page[(t * kHeads + h) * kDim + d], Value(row0 + t, h, d))
            << "t " << t << " h " << h << " d " << d;
}

TEST_P(CopyRowsTest, ScattersNhdRowsAndTouchesNothingElse) {
  const int64_t tokens = 13, row0 = 6, rows = 5;
  const std::vector<uint16_t> full = Buffer(GetParam(), tokens);
  std::vector<uint16_t> page(rows * kHeads * kDim);
  CopyRowsToNhd(full.data(), GetParam(), tokens, row0, rows, kHeads, kDim, 2, page.data());
  std::vector<uint16_t> dst(full.size(), 0xffff);
  CopyRowsFromNhd(page.data(), dst.data(), GetParam(), tokens, row0, rows, kHeads, kDim, 2);
  for (size_t i = 0; i < dst.size(); ++i) {
    const int64_t t = GetParam() == Layout::kNHD ? i / (kHeads * kDim) : (i / kDim) % tokens;
    if (t >= row0 && t < row0 + rows) {
      ASSERT_EQ(dst[i], full[i]) << "index " << i;
    } else {
      ASSERT_EQ(dst[i], 0xffff) << "index " << i << " outside the rows was written";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CopyRowsTest, ::testing::Values(Layout::kNHD, Layout::kHND));

Geometry Good() { return Geometry{4, 2, 8, 16, DType::kF16, 32}; }

TEST(ValidateGeometryTest, AcceptsGoodGeometry) {
  EXPECT_TRUE(ValidateGeometry(Good(), "geometry").ok());
}

TEST(ValidateGeometryTest, NamesTheField) {
  struct Case {
    Geometry g;
    const char* field;
  };
  Geometry layers = Good(), heads = Good(), q = Good(), dim = Good(), dtype = Good(), bt = Good();
  layers.num_layers = 0;
  heads.num_kv_heads = 1025;
  q.num_q_heads = 7;
  dim.head_dim = 0;
  dtype.dtype = DType::kF32;
  bt.block_tokens = 65537;
  for (const Case& c : {Case{layers, "geometry.num_layers"}, Case{heads, "geometry.num_kv_heads"},
                        Case{q, "geometry.num_q_heads"}, Case{dim, "geometry.head_dim"},
                        Case{dtype, "geometry.dtype"}, Case{bt, "geometry.block_tokens"}}) {
    const absl::Status s = ValidateGeometry(c.g, "geometry");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.field));
  }
}

TEST(ValidateKvTest, ReturnsTheBufferExtent) {
  HostKv kv;
  std::vector<uint16_t> mem(1);
  kv.k.assign(4, mem.data());
  kv.v.assign(4, mem.data());
  kv.first_token = 32;
  absl::StatusOr<int64_t> extent = ValidateKv(View(kv), Good(), 64, 0, 4, "kv");
  ASSERT_TRUE(extent.ok()) << extent.status();
  EXPECT_EQ(*extent, 96);
  kv.tokens = 200;
  EXPECT_EQ(*ValidateKv(View(kv), Good(), 64, 0, 4, "kv"), 200);
  kv.tokens = 95;
  absl::StatusOr<int64_t> small = ValidateKv(View(kv), Good(), 64, 0, 4, "kv");
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(small.status().message()), HasSubstr("kv.tokens"));
}

TEST(ValidateKvTest, NullOutsideTheLayerRangeIsFine) {
  MutableHostKv kv;
  std::vector<uint16_t> mem(1);
  kv.k = {nullptr, mem.data(), mem.data(), nullptr};
  kv.v = kv.k;
  EXPECT_TRUE(ValidateKv(View(kv), Good(), 32, 1, 3, "kv").ok());
  const absl::Status s = ValidateKv(View(kv), Good(), 32, 0, 3, "kv").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("kv.k[0]: null"));
}

TEST(ValidateSessionIdTest, PrintableAsciiWithoutSpaces) {
  EXPECT_TRUE(ValidateSessionId("chat-42_user:7").ok());
  EXPECT_EQ(ValidateSessionId("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateSessionId("a b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateSessionId("tab\there").code(), absl::StatusCode::kInvalidArgument);
  // The contract's limit, the same the server applies (a 256-byte cap here
  // once kept workers from resuming sessions other clients had stored).
  EXPECT_EQ(ValidateSessionId(std::string(limits::kMaxSessionIdBytes + 1, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateSessionId(std::string(limits::kMaxSessionIdBytes, 'x')).ok());
}

}  // namespace
}  // namespace qaqkv::client::internal
