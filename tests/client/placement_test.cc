// Rendezvous placement: deterministic, balanced, and adding a server moves
// only the keys it takes (about 1/N of them), never between old servers.
#include "client/internal/placement.h"

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace qaqkv::client::internal {
namespace {

std::string Key(uint64_t i) {
  std::string k(16, '\0');
  std::memcpy(k.data(), &i, 8);
  return k;
}

std::vector<uint64_t> Hashes(int n) {
  std::vector<uint64_t> h;
  for (int i = 0; i < n; ++i) h.push_back(EndpointHash(absl::StrCat("qaqkv-", i, ".qaqkv:7070")));
  return h;
}

TEST(PlacementTest, RankingIsDeterministicAndIndependentOfEndpointOrder) {
  const std::vector<uint64_t> h = Hashes(5);
  std::vector<uint64_t> reversed(h.rbegin(), h.rend());
  for (uint64_t i = 0; i < 200; ++i) {
    const auto a = RankEndpoints(Key(i), h, 5);
    const auto b = RankEndpoints(Key(i), reversed, 5);
    ASSERT_EQ(a.size(), 5u);
    for (size_t r = 0; r < 5; ++r) EXPECT_EQ(h[a[r]], reversed[b[r]]);
    EXPECT_EQ(a, RankEndpoints(Key(i), h, 5));
  }
  EXPECT_EQ(RankEndpoints(Key(1), h, 2).size(), 2u);
  EXPECT_EQ(RankEndpoints(Key(1), h, 9).size(), 5u);
  EXPECT_TRUE(RankEndpoints(Key(1), {}, 2).empty());
}

TEST(PlacementTest, KeysSpreadEvenly) {
  const std::vector<uint64_t> h = Hashes(3);
  std::map<size_t, int> first;
  constexpr int kKeys = 30000;
  for (uint64_t i = 0; i < kKeys; ++i) ++first[RankEndpoints(Key(i), h, 1)[0]];
  for (const auto& [server, n] : first) {
    EXPECT_NEAR(n, kKeys / 3, kKeys / 30) << "server " << server;  // within 10%
  }
}

// Three servers, R = 2, then a fourth: a key's replica set changes only by
// the new server entering it (in the top 2 of about 2/4 of the keys, taking
// one replica's place); every other key keeps both replicas.
TEST(PlacementTest, AddingAServerMovesOnlyWhatItTakes) {
  const std::vector<uint64_t> three = Hashes(3), four = Hashes(4);
  constexpr int kKeys = 20000;
  int primary_moved = 0, sets_changed = 0;
  for (uint64_t i = 0; i < kKeys; ++i) {
    const auto before = RankEndpoints(Key(i), three, 2);
    const auto after = RankEndpoints(Key(i), four, 2);
    // Indices 0..2 mean the same servers in both lists.
    const bool has_new = after[0] == 3 || after[1] == 3;
    if (!has_new) {
      EXPECT_EQ(before, after) << "key " << i << " moved between old servers";
    } else {
      ++sets_changed;
      // The old server that stays is one of the key's old replicas.
      const size_t kept = after[0] == 3 ? after[1] : after[0];
      EXPECT_TRUE(kept == before[0] || kept == before[1]) << "key " << i;
    }
    if (after[0] != before[0]) {
      ++primary_moved;
      EXPECT_EQ(after[0], 3u) << "a primary moved to an old server";
    }
  }
  // The new server is primary for about 1/4 of the keys and a replica of
  // about 2/4.
  EXPECT_NEAR(primary_moved, kKeys / 4, kKeys / 40);
  EXPECT_NEAR(sets_changed, kKeys / 2, kKeys / 20);
}

}  // namespace
}  // namespace qaqkv::client::internal
