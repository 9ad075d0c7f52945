#include "storage/keys.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

namespace qaqkv::storage {
namespace {

BlockKey Key(uint8_t fill) {
  BlockKey k;
  k.fill(fill);
  return k;
}

TEST(KeysTest, PageKeyLayoutIsExact) {
  const std::string k = PageKey("acme", Key(0xab), 0x01020304u);
  ASSERT_EQ(k.size(), 1u + 1 + 4 + 16 + 4);
  EXPECT_EQ(k[0], 'P');
  EXPECT_EQ(static_cast<uint8_t>(k[1]), 4);
  EXPECT_EQ(k.substr(2, 4), "acme");
  for (int i = 0; i < 16; ++i) EXPECT_EQ(static_cast<uint8_t>(k[6 + i]), 0xab);
  EXPECT_EQ(static_cast<uint8_t>(k[22]), 1);  // layer big-endian
  EXPECT_EQ(static_cast<uint8_t>(k[25]), 4);
}

TEST(KeysTest, ParseRoundTrips) {
  BlockKey b;
  for (int i = 0; i < 16; ++i) b[i] = static_cast<uint8_t>(i * 17);
  auto p = ParsePageKey(PageKey("t", b, 31));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->tenant, "t");
  EXPECT_EQ(p->block, b);
  EXPECT_EQ(p->layer, 31u);
  EXPECT_EQ(ParsePageKey("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParsePageKey(BlockRecordKey("t", b)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string truncated = PageKey("t", b, 1);
  truncated.pop_back();
  EXPECT_EQ(ParsePageKey(truncated).status().code(), absl::StatusCode::kInvalidArgument);
}

// A block's pages sort by layer and form one contiguous range; another
// tenant whose name extends this one never falls inside it.
TEST(KeysTest, RangesAreContiguousAndOrdered) {
  std::vector<std::string> keys;
  for (uint32_t layer : {0u, 1u, 2u, 255u, 256u, 70000u}) keys.push_back(PageKey("ab", Key(1), layer));
  keys.push_back(PageKey("ab", Key(2), 0));
  keys.push_back(PageKey("abc", Key(1), 0));
  keys.push_back(PageKey("a", Key(1), 0));
  std::sort(keys.begin(), keys.end());
  const std::string prefix = BlockPagesPrefix("ab", Key(1));
  std::vector<uint32_t> layers;
  bool inside = false, left = false;
  for (const auto& k : keys) {
    const bool in = k.compare(0, prefix.size(), prefix) == 0;
    if (in) {
      EXPECT_FALSE(left) << "block range is not contiguous";
      inside = true;
      layers.push_back(ParsePageKey(k)->layer);
    } else if (inside) {
      left = true;
    }
  }
  EXPECT_EQ(layers, (std::vector<uint32_t>{0, 1, 2, 255, 256, 70000}));
  // Tenant prefixes are length-prefixed: "ab" does not cover "abc".
  EXPECT_NE(PageKey("abc", Key(1), 0).compare(0, TenantPrefix('P', "ab").size(),
                                              TenantPrefix('P', "ab")),
            0);
}

TEST(KeysTest, TenantValidation) {
  EXPECT_TRUE(ValidateTenant("tenant-1").ok());
  EXPECT_EQ(ValidateTenant("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTenant(std::string(256, 'a')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateTenant(std::string(255, 'a')).ok());
  EXPECT_EQ(ValidateTenant("has space").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTenant(std::string("nul\0x", 5)).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KeysTest, BlockKeyHex) {
  BlockKey b{};
  b[0] = 0x0f;
  b[15] = 0xa0;
  EXPECT_EQ(BlockKeyHex(b), "0f0000000000000000000000000000a0");
}

}  // namespace
}  // namespace qaqkv::storage
