#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "xxhash.h"

namespace qaqkv::client {
namespace {

std::vector<int32_t> Tokens(size_t n, int32_t first = 1) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(BlockKeysTest, OnlyFullBlocksGetKeys) {
  const std::vector<int32_t> tokens = Tokens(10);
  EXPECT_EQ(Client::ComputeBlockKeys("m", "qaq", tokens, 4).size(), 2u);
  EXPECT_EQ(Client::ComputeBlockKeys("m", "qaq", tokens, 10).size(), 1u);
  EXPECT_EQ(Client::ComputeBlockKeys("m", "qaq", tokens, 11).size(), 0u);
  EXPECT_EQ(Client::ComputeBlockKeys("m", "qaq", tokens, 0).size(), 0u);
  EXPECT_EQ(Client::ComputeBlockKeys("m", "qaq", {}, 4).size(), 0u);
}

TEST(BlockKeysTest, Deterministic) {
  const std::vector<int32_t> tokens = Tokens(64);
  EXPECT_EQ(Client::ComputeBlockKeys("llama", "qaq", tokens, 16),
            Client::ComputeBlockKeys("llama", "qaq", tokens, 16));
}

TEST(BlockKeysTest, PrefixKeysAreTheLeadingKeysOfTheLongerSequence) {
  const std::vector<int32_t> tokens = Tokens(5 * 16 + 7);
  const std::vector<BlockKey> all = Client::ComputeBlockKeys("llama", "qaq", tokens, 16);
  ASSERT_EQ(all.size(), 5u);
  const std::vector<BlockKey> prefix = Client::ComputeBlockKeys(
      "llama", "qaq", std::span<const int32_t>(tokens).first(3 * 16 + 5), 16);
  ASSERT_EQ(prefix.size(), 3u);
  for (size_t i = 0; i < prefix.size(); ++i) EXPECT_EQ(prefix[i], all[i]) << "block " << i;
}

TEST(BlockKeysTest, ChangedTokenChangesItsBlockAndEveryLaterOne) {
  std::vector<int32_t> tokens = Tokens(6 * 8);
  const std::vector<BlockKey> before = Client::ComputeBlockKeys("m", "qaq", tokens, 8);
  tokens[2 * 8 + 3] += 1;  // block 2
  const std::vector<BlockKey> after = Client::ComputeBlockKeys("m", "qaq", tokens, 8);
  ASSERT_EQ(before.size(), 6u);
  ASSERT_EQ(after.size(), 6u);
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(after[1], before[1]);
  for (size_t i = 2; i < 6; ++i) EXPECT_NE(after[i], before[i]) << "block " << i;
}

TEST(BlockKeysTest, FingerprintAndCodecAreLengthPrefixed) {
  const std::vector<int32_t> tokens = Tokens(8);
  const BlockKey base = Client::ComputeBlockKeys("ab", "c", tokens, 8)[0];
  // Same concatenated bytes "abc", split differently: must differ.
  EXPECT_NE(Client::ComputeBlockKeys("a", "bc", tokens, 8)[0], base);
  EXPECT_NE(Client::ComputeBlockKeys("ab", "int8", tokens, 8)[0], base);
  EXPECT_NE(Client::ComputeBlockKeys("ab2", "c", tokens, 8)[0], base);
}

TEST(BlockKeysTest, SameTokensInDifferentPositionsGetDifferentKeys) {
  const std::vector<int32_t> tokens(4 * 8, 7);  // every block identical
  const std::vector<BlockKey> keys = Client::ComputeBlockKeys("m", "qaq", tokens, 8);
  ASSERT_EQ(keys.size(), 4u);
  for (size_t i = 1; i < keys.size(); ++i) EXPECT_NE(keys[i], keys[i - 1]);
}

// The documented construction, rebuilt here directly on XXH3_128bits.
BlockKey Reference(const BlockKey& prev, const std::string& model, const std::string& codec,
                   const std::vector<int32_t>& block) {
  std::string msg(reinterpret_cast<const char*>(prev.data()), prev.size());
  auto u32 = [&msg](uint32_t v) {
    for (int i = 0; i < 4; ++i) msg.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  u32(static_cast<uint32_t>(model.size()));
  msg += model;
  u32(static_cast<uint32_t>(codec.size()));
  msg += codec;
  for (int32_t t : block) u32(static_cast<uint32_t>(t));
  const XXH128_hash_t h = XXH3_128bits(msg.data(), msg.size());
  BlockKey key;
  for (int i = 0; i < 8; ++i) {
    key[i] = static_cast<uint8_t>(h.low64 >> (8 * i));
    key[8 + i] = static_cast<uint8_t>(h.high64 >> (8 * i));
  }
  return key;
}

TEST(BlockKeysTest, MatchesTheDocumentedConstruction) {
  const std::vector<int32_t> tokens = {1, -2, 300000, 4, 5, 6, 7, 2147483647, -2147483647 - 1};
  const std::vector<BlockKey> keys = Client::ComputeBlockKeys("tinylm-v1", "fp16", tokens, 3);
  ASSERT_EQ(keys.size(), 3u);
  BlockKey prev{};
  for (size_t b = 0; b < 3; ++b) {
    const std::vector<int32_t> block(tokens.begin() + 3 * b, tokens.begin() + 3 * b + 3);
    const BlockKey expected = Reference(prev, "tinylm-v1", "fp16", block);
    EXPECT_EQ(keys[b], expected) << "block " << b;
    prev = expected;
  }
}

TEST(BlockKeysTest, FixedKnownValue) {
  // Pins the bytes: a change here breaks every stored cache.
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const BlockKey key = Client::ComputeBlockKeys("m", "qaq", tokens, 4)[0];
  // 16 zero bytes | 01 00 00 00 'm' | 03 00 00 00 'q' 'a' 'q' | 1, 2, 3, 4 as int32 LE
  const unsigned char message[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                   1, 0, 0, 0, 'm', 3, 0, 0, 0, 'q', 'a', 'q',
                                   1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0};
  const XXH128_hash_t h = XXH3_128bits(message, sizeof(message));
  uint64_t low = 0, high = 0;
  std::memcpy(&low, key.data(), 8);  // little-endian host (x86-64)
  std::memcpy(&high, key.data() + 8, 8);
  EXPECT_EQ(low, h.low64);
  EXPECT_EQ(high, h.high64);
  // And the literal bytes (XXH3 output is stable since xxHash 0.8.0).
  const BlockKey golden = {0x0d, 0xbc, 0xc3, 0x12, 0x66, 0x7c, 0xc0, 0x00,
                           0xc6, 0x64, 0x83, 0xcf, 0x05, 0xb5, 0x60, 0x55};
  EXPECT_EQ(key, golden);
}

}  // namespace
}  // namespace qaqkv::client
