#include "storage/dram_tier.h"

#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace qaqkv::storage {
namespace {

PageBuffer Bytes(size_t n, char fill) { return std::make_shared<const std::string>(n, fill); }

std::unique_ptr<DramTier> Make(size_t capacity, int shards = 1) {
  auto t = DramTier::Create({capacity, shards});
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

constexpr size_t kOverhead = DramTier::kEntryOverheadBytes;

TEST(DramTierTest, RejectsBadOptions) {
  EXPECT_EQ(DramTier::Create({0, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DramTier::Create({1024, 0}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DramTier::Create({1024, 1025}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DramTierTest, HitReturnsTheSameBufferWithoutCopying) {
  auto t = Make(1 << 20);
  const PageBuffer page = Bytes(1000, 'x');
  ASSERT_TRUE(t->Put("k", page));
  const PageBuffer got = t->Get("k");
  EXPECT_EQ(got.get(), page.get());  // same object: no copy
  EXPECT_EQ(t->Get("missing"), nullptr);
  const DramTierStats s = t->Stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.charged_bytes, 1000u + 1 + kOverhead);
}

TEST(DramTierTest, EvictsLeastRecentlyUsedWithinBudget) {
  // Room for exactly three 1000-byte entries with one-byte keys.
  const size_t entry = 1000 + 1 + kOverhead;
  auto t = Make(3 * entry);
  ASSERT_TRUE(t->Put("a", Bytes(1000, 'a')));
  ASSERT_TRUE(t->Put("b", Bytes(1000, 'b')));
  ASSERT_TRUE(t->Put("c", Bytes(1000, 'c')));
  ASSERT_NE(t->Get("a"), nullptr);  // a is now the most recent; b the least
  ASSERT_TRUE(t->Put("d", Bytes(1000, 'd')));
  EXPECT_EQ(t->Get("b"), nullptr);
  EXPECT_NE(t->Get("a"), nullptr);
  EXPECT_NE(t->Get("c"), nullptr);
  EXPECT_NE(t->Get("d"), nullptr);
  const DramTierStats s = t->Stats();
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(s.evicted_bytes, entry);
  EXPECT_EQ(s.charged_bytes, 3 * entry);
}

TEST(DramTierTest, ReplacingAKeyRechargesIt) {
  auto t = Make(1 << 20);
  ASSERT_TRUE(t->Put("k", Bytes(100, 'a')));
  ASSERT_TRUE(t->Put("k", Bytes(300, 'b')));
  EXPECT_EQ(t->Stats().entries, 1u);
  EXPECT_EQ(t->Stats().charged_bytes, 300u + 1 + kOverhead);
  EXPECT_EQ(*t->Get("k"), std::string(300, 'b'));
}

TEST(DramTierTest, TooLargeOrNullValuesAreNotCached) {
  auto t = Make(1000);
  ASSERT_TRUE(t->Put("small", Bytes(10, 's')));
  EXPECT_FALSE(t->Put("big", Bytes(1000, 'b')));
  EXPECT_FALSE(t->Put("null", nullptr));
  EXPECT_EQ(t->Get("big"), nullptr);
  EXPECT_NE(t->Get("small"), nullptr);  // nothing was evicted for it
  EXPECT_EQ(t->Stats().rejected, 1u);
}

TEST(DramTierTest, EvictedBufferStaysValidForItsReader) {
  auto t = Make(1000 + 1 + kOverhead);
  ASSERT_TRUE(t->Put("a", Bytes(1000, 'a')));
  const PageBuffer held = t->Get("a");
  ASSERT_TRUE(t->Put("b", Bytes(1000, 'b')));  // evicts a
  EXPECT_EQ(t->Get("a"), nullptr);
  EXPECT_EQ(*held, std::string(1000, 'a'));
}

TEST(DramTierTest, EraseAndErasePrefix) {
  auto t = Make(1 << 20, 4);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(t->Put(absl::StrCat("blockA/", i), Bytes(10, 'a')));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(t->Put(absl::StrCat("blockB/", i), Bytes(10, 'b')));
  EXPECT_TRUE(t->Erase("blockB/0"));
  EXPECT_FALSE(t->Erase("blockB/0"));
  EXPECT_EQ(t->ErasePrefix("blockA/"), 10u);
  EXPECT_EQ(t->Stats().entries, 4u);
  EXPECT_EQ(t->Stats().charged_bytes, 4 * (10 + 8 + kOverhead));
}

// Many threads putting, getting and erasing: the budget holds at every
// moment we look and the counters add up. Run under TSan in CI.
TEST(DramTierTest, ConcurrentUseStaysWithinBudget) {
  const size_t capacity = 256 * 1024;
  auto t = Make(capacity, 8);
  std::atomic<bool> over{false};
  std::atomic<uint64_t> gets{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 8; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(w);
      for (int i = 0; i < 4000; ++i) {
        const std::string key = absl::StrCat("k", rng() % 400);
        switch (rng() % 4) {
          case 0:
          case 1:
            t->Put(key, Bytes(1 + rng() % 4000, static_cast<char>('a' + w)));
            break;
          case 2:
            if (auto p = t->Get(key)) {
              if (p->empty()) over = true;
            }
            ++gets;
            break;
          case 3:
            t->Erase(key);
            break;
        }
        if (i % 256 == 0 && t->Stats().charged_bytes > capacity) over = true;
      }
    });
  }
  for (auto& th : threads) th.join();
  const DramTierStats s = t->Stats();
  EXPECT_FALSE(over.load());
  EXPECT_LE(s.charged_bytes, capacity);
  EXPECT_EQ(s.hits + s.misses, gets.load());
}

}  // namespace
}  // namespace qaqkv::storage
