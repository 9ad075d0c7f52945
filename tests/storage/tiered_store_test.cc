#include "storage/tiered_store.h"

#include <cstring>
#include <filesystem>
#include <random>
#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/storage/test_util.h"
#include "xxhash.h"

namespace qaqkv::storage {
namespace {

namespace fs = std::filesystem;
using testing::FakePage;
using testing::MakeTempDir;



BlockKey Block(uint8_t id) {
  BlockKey k{};
  k[0] = id;
  k[15] = 0x5a;
  return k;
}

std::unique_ptr<TieredStore> OpenStore(const std::string& dir, uint64_t quota = 0,
                                       bool memory_only = false) {
  TieredStoreOptions o;
  o.data_dir = dir;
  o.memory_only = memory_only;
  o.memory_bytes = 8 << 20;
  o.dram_shards = 4;
  o.tenant_quota_bytes = quota;
  o.maintenance_interval_ms = 0;  // tests run maintenance themselves
  auto s = TieredStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

PutPageRequest Req(std::string_view tenant, uint8_t block, uint32_t layer, uint32_t layers,
                   const std::string& page, std::string_view descriptor = "geo") {
  return PutPageRequest{tenant, Block(block), layer, layers, descriptor, page};
}

TEST(TieredStoreTest, BlockBecomesVisibleOnlyWhenComplete) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  const std::string p0 = FakePage(1000, 0), p1 = FakePage(1000, 1), p2 = FakePage(1000, 2);
  // Layers arrive out of order.
  auto r = s->PutPage(Req("t", 1, 2, 3, p2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->committed);
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 3, p0)).ok());
  const BlockKey chain[] = {Block(1)};
  EXPECT_EQ(*s->Lookup("t", chain), 0u);
  EXPECT_EQ(s->GetPage("t", Block(1), 0).status().code(), absl::StatusCode::kNotFound);
  r = s->PutPage(Req("t", 1, 1, 3, p1));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->committed);
  EXPECT_FALSE(r->already_committed);
  EXPECT_EQ(*s->Lookup("t", chain), 1u);
  EXPECT_EQ(**s->GetPage("t", Block(1), 2), p2);
  // Writing a committed block again is an idempotent success.
  r = s->PutPage(Req("t", 1, 0, 3, p0));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->already_committed);
  EXPECT_EQ(s->Usage("t").bytes, p0.size() + p1.size() + p2.size());
  EXPECT_EQ(s->Usage("t").blocks, 1u);
}

TEST(TieredStoreTest, LookupCountsTheLongestCommittedPrefix) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  const std::string p = FakePage(100, 3);
  for (uint8_t b : {1, 2, 4}) ASSERT_TRUE(s->PutPage(Req("t", b, 0, 1, p)).ok());
  const BlockKey chain[] = {Block(1), Block(2), Block(3), Block(4)};
  EXPECT_EQ(*s->Lookup("t", chain), 2u);
  // With a descriptor, only blocks written under it count.
  EXPECT_EQ(*s->Lookup("t", chain, "geo"), 2u);
  EXPECT_EQ(*s->Lookup("t", chain, "other"), 0u);
  // Another tenant sees nothing, with the same answer as a miss.
  EXPECT_EQ(*s->Lookup("u", chain), 0u);
  EXPECT_EQ(s->GetPage("u", Block(1), 0).status().code(), absl::StatusCode::kNotFound);
}

TEST(TieredStoreTest, BadRequestsStoreNothing) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  const std::string p = FakePage(100, 4);
  auto code = [&](const PutPageRequest& r) { return s->PutPage(r).status().code(); };
  EXPECT_EQ(code(Req("", 1, 0, 2, p)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Req("t", 1, 2, 2, p)), absl::StatusCode::kInvalidArgument);   // layer
  EXPECT_EQ(code(Req("t", 1, 0, 0, p)), absl::StatusCode::kInvalidArgument);   // num_layers
  EXPECT_EQ(code(Req("t", 1, 0, limits::kMaxLayers + 1, p)), absl::StatusCode::kInvalidArgument);
  std::string corrupt = p;
  corrupt[3] ^= 1;
  EXPECT_EQ(code(Req("t", 1, 0, 2, corrupt)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->GetBlock("t", Block(1)).status().code(), absl::StatusCode::kNotFound);
  // Pages of one block must agree on geometry.
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 2, p)).ok());
  EXPECT_EQ(code(Req("t", 1, 1, 3, p)), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(Req("t", 1, 1, 2, p, "other")), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s->GetBlock("t", Block(1))->LayersPresent(), 1u);
  EXPECT_EQ(s->Usage("t").bytes, p.size());
}

TEST(TieredStoreTest, QuotaIsEnforcedPerTenant) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(1000, 5);
  auto s = OpenStore(dir.path(), /*quota=*/2 * p.size());
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 1, p)).ok());
  ASSERT_TRUE(s->PutPage(Req("t", 2, 0, 1, p)).ok());
  EXPECT_EQ(s->PutPage(Req("t", 3, 0, 1, p)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s->GetBlock("t", Block(3)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->PutPage(Req("other", 3, 0, 1, p)).ok());  // its own quota
  ASSERT_TRUE(s->DeleteBlock("t", Block(1)).ok());
  EXPECT_TRUE(s->PutPage(Req("t", 3, 0, 1, p)).ok());
}

// A message's pages go to PutPages: each run of one block's pages is one
// segment write and one RocksDB batch, all or none, with each page's result
// as if they had come one at a time.
TEST(TieredStoreTest, PutPagesStoresARunOfABlocksPagesInOneWrite) {
  base::TempDir dir = MakeTempDir();
  const std::string p0 = FakePage(5000, 0), p1 = FakePage(6000, 1), p2 = FakePage(7000, 2);
  const std::string q = FakePage(3000, 3);
  {
    auto s = OpenStore(dir.path(), /*quota=*/40000);
    ASSERT_TRUE(s->PutPage(Req("t", 1, 1, 3, p1)).ok());  // one layer before
    const uint64_t writes = s->Stats().segment_writes;
    EXPECT_EQ(writes, 1u);
    // Block 1: layer 0, layer 1 again (stored already), layer 2 completing
    // it, layer 0 again (the block is committed by then); then block 2.
    const PutPageRequest reqs[] = {Req("t", 1, 0, 3, p0), Req("t", 1, 1, 3, p1),
                                   Req("t", 1, 2, 3, p2), Req("t", 1, 0, 3, p0),
                                   Req("t", 2, 0, 2, q), Req("t", 2, 1, 2, q)};
    std::vector<PutPageResult> results;
    ASSERT_TRUE(s->PutPages(reqs, &results).ok());
    ASSERT_EQ(results.size(), 6u);
    auto eq = [](const PutPageResult& r, bool committed, bool already, bool stored) {
      return r.committed == committed && r.already_committed == already && r.stored == stored;
    };
    EXPECT_TRUE(eq(results[0], false, false, true));
    EXPECT_TRUE(eq(results[1], false, false, false));
    EXPECT_TRUE(eq(results[2], true, false, true));
    EXPECT_TRUE(eq(results[3], true, true, false));
    EXPECT_TRUE(eq(results[4], false, false, true));
    EXPECT_TRUE(eq(results[5], true, false, true));
    EXPECT_EQ(s->Stats().segment_writes, writes + 2);  // one per block
    EXPECT_EQ(s->Usage("t").bytes, p0.size() + p1.size() + p2.size() + 2 * q.size());
    EXPECT_EQ(s->Usage("t").blocks, 2u);

    // A run the quota cannot take stores none of its pages; the runs before
    // it stay, and `results` lists only their pages.
    const std::string big = FakePage(9000, 4);
    const PutPageRequest over[] = {Req("t", 3, 0, 1, q), Req("t", 4, 0, 2, big),
                                   Req("t", 4, 1, 2, big)};
    results.clear();
    EXPECT_EQ(s->PutPages(over, &results).code(), absl::StatusCode::kResourceExhausted);
    ASSERT_EQ(results.size(), 1u);
    EXPECT_TRUE(results[0].committed);
    EXPECT_EQ(s->GetBlock("t", Block(4)).status().code(), absl::StatusCode::kNotFound);
    // A bad page anywhere in a run refuses the run.
    std::string corrupt = q;
    corrupt[3] ^= 1;
    const PutPageRequest bad[] = {Req("t", 5, 0, 2, q), Req("t", 5, 1, 2, corrupt)};
    results.clear();
    EXPECT_EQ(s->PutPages(bad, &results).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(results.empty());
    EXPECT_EQ(s->GetBlock("t", Block(5)).status().code(), absl::StatusCode::kNotFound);
  }
  // Everything stored survives a reopen, and reads back.
  auto s = OpenStore(dir.path());
  const BlockKey chain[] = {Block(1), Block(2), Block(3)};
  EXPECT_EQ(*s->Lookup("t", chain), 3u);
  EXPECT_EQ(**s->GetPage("t", Block(1), 0), p0);
  EXPECT_EQ(**s->GetPage("t", Block(1), 2), p2);
  EXPECT_EQ(**s->GetPage("t", Block(2), 1), q);
  EXPECT_EQ(s->Usage("t").bytes, p0.size() + p1.size() + p2.size() + 3 * q.size());
}

TEST(TieredStoreTest, PagesAndUsageSurviveReopen) {
  base::TempDir dir = MakeTempDir();
  const std::string p0 = FakePage(70000, 6), p1 = FakePage(5000, 7);
  {
    auto s = OpenStore(dir.path());
    ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 2, p0)).ok());
    ASSERT_TRUE(s->PutPage(Req("t", 1, 1, 2, p1)).ok());
    ASSERT_TRUE(s->PutPage(Req("t", 2, 0, 2, p0)).ok());  // never completed
  }
  auto s = OpenStore(dir.path());
  EXPECT_EQ(**s->GetPage("t", Block(1), 0), p0);  // from disk
  EXPECT_EQ(**s->GetPage("t", Block(1), 1), p1);
  EXPECT_EQ(**s->GetPage("t", Block(1), 0), p0);  // from disk, copied into DRAM
  EXPECT_EQ(s->Stats().tiers[0].hits, 0u);
  EXPECT_EQ(**s->GetPage("t", Block(1), 0), p0);
  EXPECT_EQ(s->Stats().tiers[0].hits, 1u);
  const BlockKey chain[] = {Block(1), Block(2)};
  EXPECT_EQ(*s->Lookup("t", chain), 1u);
  EXPECT_EQ(s->Usage("t").bytes, 2 * p0.size() + p1.size());
  EXPECT_EQ(s->Usage("t").blocks, 2u);
}

TEST(TieredStoreTest, DeleteRemovesPagesEverywhere) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  const std::string p = FakePage(300, 8);
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 1, p)).ok());
  ASSERT_TRUE(s->GetPage("t", Block(1), 0).ok());
  ASSERT_TRUE(s->DeleteBlock("t", Block(1)).ok());
  EXPECT_EQ(s->GetPage("t", Block(1), 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->DeleteBlock("t", Block(1)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Usage("t").bytes, 0u);
  EXPECT_EQ(s->Stats().tiers[0].entries, 0u);
  EXPECT_TRUE(s->records().Keys(Column::kPages, "")->empty());
}

TEST(TieredStoreTest, MemoryOnlyModeWorksWithoutADirectory) {
  auto s = OpenStore("", 0, /*memory_only=*/true);
  ASSERT_NE(s, nullptr);
  const std::string p = FakePage(2000, 9);
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 1, p)).ok());
  EXPECT_EQ(**s->GetPage("t", Block(1), 0), p);
}

// Memory-only: the DRAM tier is the only copy, so when it evicts a page the
// whole block goes, and Lookup never counts a block it could not serve.
TEST(TieredStoreTest, MemoryOnlyEvictionDropsWholeBlocks) {
  TieredStoreOptions o;
  o.memory_only = true;
  o.memory_bytes = 64 << 10;  // one shard of 64 KiB: about 7 pages of 8 KiB
  o.dram_shards = 1;
  o.maintenance_interval_ms = 0;
  auto s = TieredStore::Open(o);
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string p0 = FakePage(8000, 1), p1 = FakePage(8000, 2);
  constexpr int kBlocks = 10;
  for (int b = 0; b < kBlocks; ++b) {
    ASSERT_TRUE((*s)->PutPage(Req("t", static_cast<uint8_t>(b), 0, 2, p0)).ok());
    ASSERT_TRUE((*s)->PutPage(Req("t", static_cast<uint8_t>(b), 1, 2, p1)).ok());
  }
  // Only the most recent blocks fit; the older ones were dropped whole.
  EXPECT_GT((*s)->BlocksDropped(), 0u);
  EXPECT_LE((*s)->Stats().tiers[0].bytes, size_t{64} << 10);
  int complete = 0;
  for (int b = 0; b < kBlocks; ++b) {
    const BlockKey chain[] = {Block(static_cast<uint8_t>(b))};
    const size_t n = *(*s)->Lookup("t", chain);
    if (n == 1) {
      ++complete;
      EXPECT_EQ(**(*s)->GetPage("t", Block(static_cast<uint8_t>(b)), 0), p0);
      EXPECT_EQ(**(*s)->GetPage("t", Block(static_cast<uint8_t>(b)), 1), p1);
    } else {
      EXPECT_EQ((*s)->GetBlock("t", Block(static_cast<uint8_t>(b))).status().code(),
                absl::StatusCode::kNotFound);
    }
  }
  EXPECT_EQ(complete + static_cast<int>((*s)->BlocksDropped()), kBlocks);
  EXPECT_GE(complete, 2);
  // Usage follows the drops: only the surviving blocks count.
  EXPECT_EQ((*s)->Usage("t").blocks, static_cast<uint64_t>(complete));
  EXPECT_EQ((*s)->Usage("t").bytes, static_cast<uint64_t>(complete) * (p0.size() + p1.size()));
  // A page larger than a shard cannot be cached, so it is not stored.
  const std::string huge = FakePage(100 << 10, 3);
  EXPECT_EQ((*s)->PutPage(Req("t", 200, 0, 1, huge)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*s)->GetBlock("t", Block(200)).status().code(), absl::StatusCode::kNotFound);
}

// Several streams deliver the layers of the same blocks at once: every block
// commits exactly once, no layer is lost, and usage adds up. Run under TSan.
TEST(TieredStoreTest, ConcurrentStreamsCommitEachBlockOnce) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  constexpr int kBlocks = 12, kLayers = 8, kThreads = 4;
  std::vector<std::string> pages;
  for (int l = 0; l < kLayers; ++l) pages.push_back(FakePage(512, 100 + l));
  std::atomic<int> commits{0}, errors{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w) {
    threads.emplace_back([&, w] {
      // Each thread writes every layer of every block, in its own order.
      std::mt19937 rng(w);
      std::vector<std::pair<int, int>> work;
      for (int b = 0; b < kBlocks; ++b)
        for (int l = 0; l < kLayers; ++l) work.push_back({b, l});
      std::shuffle(work.begin(), work.end(), rng);
      for (auto [b, l] : work) {
        auto r = s->PutPage(Req("t", static_cast<uint8_t>(b), l, kLayers, pages[l]));
        if (!r.ok()) ++errors;
        else if (r->committed && !r->already_committed) ++commits;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(commits.load(), kBlocks);
  std::vector<BlockKey> chain;
  for (int b = 0; b < kBlocks; ++b) chain.push_back(Block(static_cast<uint8_t>(b)));
  EXPECT_EQ(*s->Lookup("t", chain), static_cast<size_t>(kBlocks));
  EXPECT_EQ(s->Usage("t").bytes, uint64_t{kBlocks} * kLayers * pages[0].size());
}

}  // namespace
}  // namespace qaqkv::storage

namespace qaqkv::storage {
namespace {

SessionRecord Session(std::initializer_list<uint8_t> blocks, uint64_t tokens, int64_t ttl_ms = 0) {
  SessionRecord r;
  for (uint8_t b : blocks) r.blocks.push_back(Block(b));
  r.token_count = tokens;
  r.ttl_ms = ttl_ms;
  return r;
}

TEST(TieredStoreSessionsTest, PutGetListDeleteAndSurviveReopen) {
  base::TempDir dir = MakeTempDir();
  const std::string tail = FakePage(300, 11);
  {
    auto s = OpenStore(dir.path());
    SessionRecord r = Session({1, 2, 3}, 900);
    r.tail = tail;
    ASSERT_TRUE(s->PutSession("t", "chat-1", r).ok());
    ASSERT_TRUE(s->PutSession("t", "chat-2", Session({1}, 10)).ok());
    ASSERT_TRUE(s->PutSession("u", "chat-9", Session({7}, 5)).ok());
  }
  auto s = OpenStore(dir.path());
  auto got = s->GetSession("t", "chat-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->blocks, (std::vector<BlockKey>{Block(1), Block(2), Block(3)}));
  EXPECT_EQ(got->token_count, 900u);
  EXPECT_EQ(got->tail, tail);
  EXPECT_GT(got->created_ms, 0);
  EXPECT_EQ(*s->ListSessions("t", 100), (std::vector<std::string>{"chat-1", "chat-2"}));
  EXPECT_EQ(s->ListSessions("t", 1)->size(), 1u);
  // Tenants never see each other's sessions.
  EXPECT_EQ(s->GetSession("u", "chat-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*s->ListSessions("u", 100), (std::vector<std::string>{"chat-9"}));
  ASSERT_TRUE(s->DeleteSession("t", "chat-1").ok());
  EXPECT_EQ(s->GetSession("t", "chat-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->DeleteSession("t", "chat-1").code(), absl::StatusCode::kNotFound);
}

TEST(TieredStoreSessionsTest, ReplaceKeepsCreationTime) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  ASSERT_TRUE(s->PutSession("t", "c", Session({1}, 10)).ok());
  const int64_t created = s->GetSession("t", "c")->created_ms;
  ASSERT_TRUE(s->PutSession("t", "c", Session({1, 2}, 20)).ok());
  auto got = s->GetSession("t", "c");
  EXPECT_EQ(got->created_ms, created);
  EXPECT_EQ(got->token_count, 20u);
  EXPECT_EQ(got->blocks.size(), 2u);
}

TEST(TieredStoreSessionsTest, ExpiryRemovesOnlyStaleSessions) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  ASSERT_TRUE(s->PutSession("t", "short", Session({1}, 1, /*ttl_ms=*/60000)).ok());
  ASSERT_TRUE(s->PutSession("t", "forever", Session({1}, 1)).ok());
  const int64_t accessed = s->GetSession("t", "short")->accessed_ms;
  EXPECT_EQ(*s->ExpireSessions(accessed + 59999), 0u);
  EXPECT_EQ(*s->ExpireSessions(accessed + 60000), 1u);
  EXPECT_EQ(s->GetSession("t", "short").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->GetSession("t", "forever").ok());
  EXPECT_TRUE(s->TouchSession("t", "forever").ok());
  EXPECT_EQ(s->TouchSession("t", "short").code(), absl::StatusCode::kNotFound);
}

TEST(TieredStoreSessionsTest, EveryReadRenewsTheTtlAndMaintenanceWritesItBack) {
  base::TempDir dir = MakeTempDir();
  int64_t read_at = 0;
  {
    auto s = OpenStore(dir.path());
    ASSERT_TRUE(s->PutSession("t", "s", Session({1}, 1, /*ttl_ms=*/60000)).ok());
    const int64_t put_at = s->GetSession("t", "s")->accessed_ms;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    read_at = s->GetSession("t", "s")->accessed_ms;
    ASSERT_GT(read_at, put_at);
    // The renewal counts before it is written back...
    EXPECT_EQ(*s->ExpireSessions(put_at + 60000), 0u);
    auto report = s->RunMaintenance(read_at);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->session_access_written, 1u);
    // ...and once written, nothing is pending.
    EXPECT_EQ(s->RunMaintenance(read_at)->session_access_written, 0u);
  }
  auto s = OpenStore(dir.path());  // the renewal survives a reopen
  EXPECT_EQ(*s->ExpireSessions(read_at + 59999), 0u);
  EXPECT_EQ(*s->ExpireSessions(read_at + 60000), 1u);
}

TEST(TieredStoreTest, TiersAreReportedInReadOrderAndLowerHitsMoveUp) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(3000, 7);
  {
    auto s = OpenStore(dir.path());
    ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 1, p)).ok());
  }
  auto s = OpenStore(dir.path());  // the DRAM tier starts empty
  StoreStats st = s->Stats();
  ASSERT_EQ(st.tiers.size(), 2u);
  EXPECT_EQ(st.tiers[0].name, "dram");
  EXPECT_EQ(st.tiers[1].name, "disk");
  EXPECT_EQ(st.tiers[1].bytes, p.size());
  EXPECT_EQ(st.tiers[1].entries, 1u);
  ASSERT_TRUE(s->GetPage("t", Block(1), 0).ok());  // from disk, once: not copied up
  ASSERT_TRUE(s->GetPage("t", Block(1), 0).ok());  // from disk again: copied up
  ASSERT_TRUE(s->GetPage("t", Block(1), 0).ok());  // from DRAM
  st = s->Stats();
  EXPECT_EQ(st.tiers[0].misses, 2u);
  EXPECT_EQ(st.tiers[0].hits, 1u);
  EXPECT_EQ(st.tiers[1].hits, 2u);
  EXPECT_EQ(st.tiers[1].misses, 0u);
  // Memory-only, the DRAM tier is the pages' home and the only tier.
  base::TempDir mem = MakeTempDir();
  auto m = OpenStore(mem.path(), 0, /*memory_only=*/true);
  ASSERT_EQ(m->Stats().tiers.size(), 1u);
  EXPECT_EQ(m->Stats().tiers[0].name, "dram");
}

// A sweep that reads each page once (a resume) leaves the DRAM tier as it
// was; promote_on_first_read copies every page read into it.
TEST(TieredStoreTest, ASweepOfFirstReadsIsNotCopiedIntoDram) {
  base::TempDir dir = MakeTempDir();
  const int kPages = 12;
  std::vector<std::string> pages;
  {
    auto s = OpenStore(dir.path());
    for (int i = 0; i < kPages; ++i) {
      pages.push_back(FakePage(4000 + i, static_cast<uint8_t>(i)));
      ASSERT_TRUE(s->PutPage(Req("t", static_cast<uint8_t>(i), 0, 1, pages.back())).ok());
    }
  }
  for (const bool promote : {false, true}) {
    TieredStoreOptions o;
    o.data_dir = dir.path();
    o.memory_bytes = 8 << 20;
    o.maintenance_interval_ms = 0;
    o.promote_on_first_read = promote;
    auto s = TieredStore::Open(o);
    ASSERT_TRUE(s.ok()) << s.status();
    for (int i = 0; i < kPages; ++i) {
      auto p = (*s)->GetPage("t", Block(static_cast<uint8_t>(i)), 0);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_EQ(**p, pages[i]);
    }
    StoreStats st = (*s)->Stats();
    EXPECT_EQ(st.tiers[0].entries, promote ? size_t{kPages} : 0u) << "promote=" << promote;
    EXPECT_EQ(st.tiers[1].hits, uint64_t{kPages});
    EXPECT_EQ(st.pages_promoted, promote ? uint64_t{kPages} : 0u);
    // The second sweep copies every page up (or finds it there).
    for (int i = 0; i < kPages; ++i) {
      ASSERT_TRUE((*s)->GetPage("t", Block(static_cast<uint8_t>(i)), 0).ok());
    }
    st = (*s)->Stats();
    EXPECT_EQ(st.tiers[0].entries, size_t{kPages});
    EXPECT_EQ(st.tiers[0].hits, promote ? uint64_t{kPages} : 0u);
    EXPECT_EQ(st.tiers[1].hits, promote ? uint64_t{kPages} : uint64_t{2 * kPages});
    EXPECT_EQ(st.pages_promoted, uint64_t{kPages});
  }
}

TEST(TieredStoreTest, RevertPageTakesBackLayersOfUncommittedBlocksOnly) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  const std::string p0 = FakePage(1000, 0), p1 = FakePage(1500, 1);
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 3, p0)).ok());
  ASSERT_TRUE(s->PutPage(Req("t", 1, 1, 3, p1)).ok());
  EXPECT_EQ(s->Usage("t").bytes, p0.size() + p1.size());
  ASSERT_TRUE(s->RevertPage("t", Block(1), 1, p1.size()).ok());
  EXPECT_EQ(s->Usage("t").bytes, p0.size());
  EXPECT_FALSE(s->GetBlock("t", Block(1))->HasLayer(1));
  EXPECT_TRUE(s->RevertPage("t", Block(1), 2, 10).ok());  // a layer it lacks: no change
  EXPECT_EQ(s->Usage("t").bytes, p0.size());
  // The last layer taken back removes the block.
  ASSERT_TRUE(s->RevertPage("t", Block(1), 0, p0.size()).ok());
  EXPECT_EQ(s->GetBlock("t", Block(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Usage("t").blocks, 0u);
  EXPECT_EQ(s->Stats().total_bytes, 0u);
  // A committed block keeps every layer.
  for (uint32_t l = 0; l < 3; ++l) ASSERT_TRUE(s->PutPage(Req("t", 2, l, 3, p0)).ok());
  ASSERT_TRUE(s->RevertPage("t", Block(2), 1, p0.size()).ok());
  EXPECT_TRUE(s->GetPage("t", Block(2), 1).ok());
  EXPECT_EQ(s->Usage("t").bytes, 3 * p0.size());
  // Taken back on disk too: after a reopen the usage is what is left.
  s.reset();
  s = OpenStore(dir.path());
  EXPECT_EQ(s->Usage("t").bytes, 3 * p0.size());
  EXPECT_EQ(s->Usage("t").blocks, 1u);
}

TEST(TieredStoreSessionsTest, BadSessionRequestsStoreNothing) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  EXPECT_EQ(s->PutSession("t", "", Session({1}, 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->PutSession("t", "has space", Session({1}, 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->PutSession("t", std::string(limits::kMaxSessionIdBytes + 1, 'x'), Session({1}, 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->PutSession("", "c", Session({1}, 1)).code(), absl::StatusCode::kInvalidArgument);
  SessionRecord bad_tail = Session({1}, 1);
  bad_tail.tail = "not a page";
  EXPECT_EQ(s->PutSession("t", "c", bad_tail).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->PutSession("t", "c", Session({1}, 1, -5)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(s->ListSessions("t", 10)->empty());
}

// A delete leaves a tombstone: the session reads as gone, the deletion's
// time is known, a listing with versions shows it, and a repair copy older
// than the deletion is refused while a new put replaces it.
TEST(TieredStoreSessionsTest, DeletesLeaveTombstonesThatRefuseOlderCopies) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  ASSERT_TRUE(s->PutSession("t", "chat", Session({1}, 10)).ok());
  const SessionRecord put = *s->GetSession("t", "chat");
  EXPECT_GT(put.updated_ms, 0);
  ASSERT_TRUE(s->DeleteSession("t", "chat").ok());
  EXPECT_EQ(s->GetSession("t", "chat").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->DeleteSession("t", "chat").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->TouchSession("t", "chat").code(), absl::StatusCode::kNotFound);
  const absl::StatusOr<int64_t> deleted = s->SessionDeletedAt("t", "chat");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_GT(*deleted, put.updated_ms);
  EXPECT_TRUE(s->ListSessions("t", 10)->empty());
  const auto versions = s->ListSessionVersions("t", "", 10);
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 1u);
  EXPECT_EQ((*versions)[0].session_id, "chat");
  EXPECT_EQ((*versions)[0].deleted_ms, *deleted);

  // The copy a server that missed the delete still holds comes back as a
  // repair, and is refused: nothing changes.
  SessionRecord stale = put;
  EXPECT_EQ(s->RepairSession("t", "chat", stale).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s->GetSession("t", "chat").status().code(), absl::StatusCode::kNotFound);
  // A newer version (put after the deletion elsewhere) is taken as it is.
  SessionRecord newer = Session({2}, 20);
  newer.created_ms = 5;
  newer.updated_ms = *deleted + 100;
  ASSERT_TRUE(s->RepairSession("t", "chat", newer).ok());
  SessionRecord got = *s->GetSession("t", "chat");
  EXPECT_EQ(got.updated_ms, newer.updated_ms);
  EXPECT_EQ(got.created_ms, 5);
  EXPECT_EQ(got.blocks, newer.blocks);
  // ... and the same version again is not rewritten.
  EXPECT_EQ(s->RepairSession("t", "chat", newer).code(), absl::StatusCode::kAlreadyExists);
  // A repair names a live version.
  SessionRecord bad = newer;
  bad.updated_ms = 0;
  EXPECT_EQ(s->RepairSession("t", "other", bad).code(), absl::StatusCode::kInvalidArgument);
  bad.updated_ms = 1;
  bad.deleted_ms = 2;
  EXPECT_EQ(s->RepairSession("t", "other", bad).code(), absl::StatusCode::kInvalidArgument);

  // A worker's put over a tombstone is a new session, newer than it.
  ASSERT_TRUE(s->DeleteSession("t", "chat").ok());
  const int64_t deleted_again = *s->SessionDeletedAt("t", "chat");
  ASSERT_TRUE(s->PutSession("t", "chat", Session({3}, 30)).ok());
  got = *s->GetSession("t", "chat");
  EXPECT_GT(got.updated_ms, deleted_again);
  EXPECT_EQ(got.blocks, Session({3}, 30).blocks);
  EXPECT_EQ(s->SessionDeletedAt("t", "chat").status().code(), absl::StatusCode::kNotFound);
}

// Forget removes a copy, live or tombstone, and leaves nothing behind.
TEST(TieredStoreSessionsTest, ForgetLeavesNoTombstone) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  ASSERT_TRUE(s->PutSession("t", "a", Session({1}, 10)).ok());
  ASSERT_TRUE(s->PutSession("t", "b", Session({1}, 10)).ok());
  ASSERT_TRUE(s->DeleteSession("t", "b").ok());
  ASSERT_TRUE(s->ForgetSession("t", "a").ok());
  ASSERT_TRUE(s->ForgetSession("t", "b").ok());
  EXPECT_EQ(s->ForgetSession("t", "a").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->ListSessionVersions("t", "", 10)->empty());
  // With no tombstone, any copy may come back (it belongs here again).
  SessionRecord copy = Session({1}, 10);
  copy.updated_ms = 1;
  EXPECT_TRUE(s->RepairSession("t", "b", copy).ok());
}

// Tombstones are kept for session_tombstone_ms, then maintenance removes them.
TEST(TieredStoreSessionsTest, TombstonesExpireAfterTheirKeepingTime) {
  base::TempDir dir = MakeTempDir();
  TieredStoreOptions o;
  o.data_dir = dir.path();
  o.memory_bytes = 8 << 20;
  o.maintenance_interval_ms = 0;
  o.session_tombstone_ms = 60000;
  auto s = TieredStore::Open(o);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->PutSession("t", "a", Session({1}, 10)).ok());
  ASSERT_TRUE((*s)->DeleteSession("t", "a").ok());
  const int64_t deleted = *(*s)->SessionDeletedAt("t", "a");
  EXPECT_EQ(*(*s)->ExpireSessions(deleted + 59999), 0u);
  EXPECT_TRUE((*s)->SessionDeletedAt("t", "a").ok());
  EXPECT_EQ(*(*s)->ExpireSessions(deleted + 60000), 1u);
  EXPECT_EQ((*s)->SessionDeletedAt("t", "a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*s)->ListSessionVersions("t", "", 10)->empty());
}

// Session versions page by cursor in key order, tenant by tenant.
TEST(TieredStoreSessionsTest, VersionsPageByCursor) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  for (const char* id : {"d", "a", "c", "b"}) {
    ASSERT_TRUE(s->PutSession("t", id, Session({1}, 10)).ok());
  }
  ASSERT_TRUE(s->PutSession("u", "a0", Session({1}, 10)).ok());
  auto page = s->ListSessionVersions("t", "", 2);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].session_id, "a");
  EXPECT_EQ((*page)[1].session_id, "b");
  page = s->ListSessionVersions("t", "b", 10);
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].session_id, "c");
  EXPECT_EQ((*page)[1].session_id, "d");
  EXPECT_TRUE(s->ListSessionVersions("t", "d", 10)->empty());
}

// A page damaged on disk fails its checksum once (DATA_LOSS) and takes its
// block with it: the server stops counting a block it cannot serve whole,
// so a reader's repair (or a rebalance) stores it again.
TEST(TieredStoreTest, APageDamagedOnDiskDropsItsBlock) {
  base::TempDir dir = MakeTempDir();
  const std::string p0 = FakePage(50000, 31), p1 = FakePage(50000, 32), other = FakePage(50000, 33);
  {
    auto s = OpenStore(dir.path());
    ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 2, p0)).ok());
    ASSERT_TRUE(s->PutPage(Req("t", 1, 1, 2, p1)).ok());
    ASSERT_TRUE(s->PutPage(Req("t", 2, 0, 1, other)).ok());
  }
  // Flip a byte in the middle of layer 1's bytes wherever a segment holds them.
  size_t flipped = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir.path())) {
    if (!e.is_regular_file() || e.path().extension() != ".seg") continue;
    std::string bytes = base::ReadFile(e.path().string(), "segment").value();
    const size_t at = bytes.find(p1.substr(0, 4096));
    if (at == std::string::npos) continue;
    bytes[at + 25000] ^= 0x40;
    ASSERT_TRUE(base::WriteFileAtomically(e.path().string(), bytes, "segment").ok());
    ++flipped;
  }
  ASSERT_EQ(flipped, 1u);
  auto s = OpenStore(dir.path());  // an empty DRAM tier: reads reach the disk
  const BlockKey chain[] = {Block(1)};
  ASSERT_EQ(*s->Lookup("t", chain), 1u);
  EXPECT_EQ(**s->GetPage("t", Block(1), 0), p0);
  EXPECT_EQ(s->GetPage("t", Block(1), 1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*s->Lookup("t", chain), 0u);
  EXPECT_EQ(s->GetBlock("t", Block(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Stats().blocks_dropped, 1u);
  EXPECT_EQ(s->Usage("t").bytes, other.size());
  // The other block is untouched, and a repair stores the block again.
  EXPECT_EQ(**s->GetPage("t", Block(2), 0), other);
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 2, p0)).ok());
  const absl::StatusOr<PutPageResult> again = s->PutPage(Req("t", 1, 1, 2, p1));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->committed);
  const absl::StatusOr<PageBuffer> repaired = s->GetPage("t", Block(1), 1);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_EQ(**repaired, p1);
}

// ListBlocks: every block of the tenant, committed or not, in key order,
// paged by cursor; other tenants' blocks never appear.
TEST(TieredStoreTest, ListBlocksPagesInKeyOrder) {
  base::TempDir dir = MakeTempDir();
  auto s = OpenStore(dir.path());
  const std::string p = FakePage(100, 3);
  for (uint8_t b : {9, 3, 7, 1, 5}) ASSERT_TRUE(s->PutPage(Req("t", b, 0, 1, p)).ok());
  ASSERT_TRUE(s->PutPage(Req("t", 4, 0, 2, p)).ok());  // not committed
  ASSERT_TRUE(s->PutPage(Req("u", 2, 0, 1, p)).ok());
  std::vector<uint8_t> seen;
  std::vector<bool> committed;
  const BlockKey* after = nullptr;
  BlockKey cursor{};
  for (;;) {
    auto page = s->ListBlocks("t", after, 2);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const BlockInfo& b : *page) {
      seen.push_back(b.block[0]);
      committed.push_back(b.committed);
      EXPECT_EQ(b.bytes, p.size());
    }
    if (page->size() < 2) break;
    cursor = page->back().block;
    after = &cursor;
  }
  EXPECT_EQ(seen, (std::vector<uint8_t>{1, 3, 4, 5, 7, 9}));
  EXPECT_EQ(committed, (std::vector<bool>{true, true, false, true, true, true}));
  EXPECT_TRUE(s->ListBlocks("t", nullptr, 0)->empty());
  EXPECT_EQ(s->ListBlocks("", nullptr, 10).status().code(), absl::StatusCode::kInvalidArgument);
}

// The key order ListBlocks pages in follows every change of the index:
// deletes (the cursor's own block included), a reverted last layer, a
// reopen, and a tenant whose name starts with another's.
TEST(TieredStoreTest, ListBlocksFollowsDeletesRevertsAndReopen) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(100, 3);
  auto list = [](TieredStore& s, std::string_view tenant, size_t limit) {
    std::vector<uint8_t> seen;
    BlockKey cursor{};
    const BlockKey* after = nullptr;
    for (;;) {
      auto page = s.ListBlocks(tenant, after, limit);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) return seen;
      for (const BlockInfo& b : *page) seen.push_back(b.block[0]);
      if (page->size() < limit) return seen;
      cursor = page->back().block;
      after = &cursor;
    }
  };
  {
    auto s = OpenStore(dir.path());
    for (uint8_t b = 1; b <= 20; ++b) ASSERT_TRUE(s->PutPage(Req("t", b, 0, 1, p)).ok());
    ASSERT_TRUE(s->PutPage(Req("t", 30, 0, 2, p)).ok());  // not committed
    for (uint8_t b : {2, 40}) ASSERT_TRUE(s->PutPage(Req("tt", b, 0, 1, p)).ok());
    for (uint8_t b : {1, 4, 5, 20}) ASSERT_TRUE(s->DeleteBlock("t", Block(b)).ok());
    ASSERT_TRUE(s->RevertPage("t", Block(30), 0, p.size()).ok());  // its only layer
    // A cursor whose block was deleted since still pages on after it.
    const BlockKey gone = Block(4);
    auto page = s->ListBlocks("t", &gone, 3);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_EQ(page->size(), 3u);
    EXPECT_EQ((*page)[0].block[0], 6);
    EXPECT_EQ((*page)[2].block[0], 8);
  }
  auto s = OpenStore(dir.path());
  std::vector<uint8_t> want;
  for (uint8_t b = 2; b <= 19; ++b) {
    if (b != 4 && b != 5) want.push_back(b);
  }
  EXPECT_EQ(list(*s, "t", 4), want);
  EXPECT_EQ(list(*s, "tt", 1), (std::vector<uint8_t>{2, 40}));
  ASSERT_TRUE(s->PutPage(Req("t", 4, 0, 1, p)).ok());
  want.insert(want.begin() + 2, 4);
  EXPECT_EQ(list(*s, "t", 100), want);
  EXPECT_TRUE(list(*s, "u", 5).empty());
}

}  // namespace
}  // namespace qaqkv::storage

namespace qaqkv::storage {
namespace {

std::unique_ptr<TieredStore> OpenWith(const std::string& dir, uint64_t disk_bytes,
                                      int64_t block_ttl_ms = 0) {
  TieredStoreOptions o;
  o.data_dir = dir;
  o.memory_bytes = 8 << 20;
  o.dram_shards = 4;
  o.disk_bytes = disk_bytes;
  o.block_ttl_ms = block_ttl_ms;
  o.abandoned_block_ms = 60000;
  o.maintenance_interval_ms = 0;
  auto s = TieredStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Many writers at a full budget: eviction keeps making room for all of them
// (none is refused), and the total never passes the budget.
TEST(TieredStoreBudgetTest, ConcurrentWritersAtAFullBudgetAreNotRefused) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(4000, 21);
  const uint64_t budget = 64 * p.size();
  auto s = OpenWith(dir.path(), budget);
  constexpr int kThreads = 8, kBlocks = 40;
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBlocks; ++b) {
        BlockKey key{};
        key[0] = static_cast<uint8_t>(t);
        key[1] = static_cast<uint8_t>(b);
        for (uint32_t l = 0; l < 2; ++l) {
          if (!s->PutPage(PutPageRequest{"t", key, l, 2, "geo", p}).ok()) ++refused;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(refused.load(), 0);
  EXPECT_LE(s->TotalBytes(), budget);
  EXPECT_EQ(s->Usage("t").bytes, s->TotalBytes());
}

// A full budget evicts least recently used whole blocks, blocks that a live
// session references last, and never part of a block.
TEST(TieredStoreBudgetTest, EvictsLeastRecentlyUsedWholeBlocks) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(10000, 20);
  // Room for six pages: three blocks of two layers.
  auto s = OpenWith(dir.path(), 6 * p.size());
  for (uint8_t b = 1; b <= 3; ++b)
    for (uint32_t l = 0; l < 2; ++l) ASSERT_TRUE(s->PutPage(Req("t", b, l, 2, p)).ok());
  ASSERT_TRUE(s->PutSession("t", "chat", Session({1}, 10)).ok());  // protects block 1
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(s->GetPage("t", Block(2), 0).ok());  // block 2 more recent than 3
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // A fourth block needs room for its two pages: block 3 (least recent,
  // unreferenced) goes whole.
  ASSERT_TRUE(s->PutPage(Req("t", 4, 0, 2, p)).ok());
  EXPECT_EQ(s->GetBlock("t", Block(3)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->GetBlock("t", Block(2)).ok());
  ASSERT_TRUE(s->PutPage(Req("t", 4, 1, 2, p)).ok());
  EXPECT_LE(s->TotalBytes(), 6 * p.size());
  // Then block 2, and only then the session's block 1.
  ASSERT_TRUE(s->PutPage(Req("t", 5, 0, 1, p)).ok());
  EXPECT_EQ(s->GetBlock("t", Block(2)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->GetBlock("t", Block(1)).ok());
  EXPECT_EQ(s->Usage("t").bytes, s->TotalBytes());
  // Every remaining block is whole: records and pages agree.
  for (uint8_t b : {1, 4, 5}) {
    auto r = s->GetBlock("t", Block(b));
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->committed) << int(b);
  }
}

// A Lookup hit is a use: the blocks a worker was just told are there go
// after those nobody asked for, so its GetPages still finds them.
TEST(TieredStoreBudgetTest, LookupHitsAreUsesForEviction) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(10000, 21);
  auto s = OpenWith(dir.path(), 3 * p.size());
  for (uint8_t b = 1; b <= 3; ++b) {
    ASSERT_TRUE(s->PutPage(Req("t", b, 0, 1, p)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const BlockKey chain[] = {Block(1)};
  ASSERT_EQ(*s->Lookup("t", chain), 1u);  // block 1, the oldest, is wanted
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(s->PutPage(Req("t", 4, 0, 1, p)).ok());
  EXPECT_TRUE(s->GetPage("t", Block(1), 0).ok());
  EXPECT_EQ(s->GetBlock("t", Block(2)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->GetBlock("t", Block(3)).ok());
}

TEST(TieredStoreBudgetTest, SessionBlocksGoLastAndOversizedPagesAreRejected) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(10000, 21);
  auto s = OpenWith(dir.path(), 2 * p.size());
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 1, p)).ok());
  ASSERT_TRUE(s->PutPage(Req("t", 2, 0, 1, p)).ok());
  ASSERT_TRUE(s->PutSession("t", "a", Session({1, 2}, 10)).ok());
  // Referenced blocks are evicted last, but still evicted when nothing else
  // is left: the cache keeps serving new writes.
  ASSERT_TRUE(s->PutPage(Req("t", 3, 0, 1, p)).ok());
  EXPECT_LE(s->TotalBytes(), 2 * p.size());
  // A page larger than the whole budget can never fit.
  EXPECT_EQ(s->PutPage(Req("t", 9, 0, 1, FakePage(3 * 10000, 22))).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(TieredStoreMaintenanceTest, ReclaimsAbandonedAndExpiresUnreferencedBlocks) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(500, 23);
  auto s = OpenWith(dir.path(), 0, /*block_ttl_ms=*/120000);
  ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 2, p)).ok());  // never completed
  ASSERT_TRUE(s->PutPage(Req("t", 2, 0, 1, p)).ok());  // committed, unreferenced
  ASSERT_TRUE(s->PutPage(Req("t", 3, 0, 1, p)).ok());  // committed, in a session
  ASSERT_TRUE(s->PutSession("t", "chat", Session({3}, 10)).ok());
  const int64_t now = s->GetBlock("t", Block(2))->created_ms;
  auto r = s->RunMaintenance(now + 1000);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->abandoned_reclaimed, 0u);
  r = s->RunMaintenance(now + 61000);  // past abandoned_block_ms
  EXPECT_EQ(r->abandoned_reclaimed, 1u);
  EXPECT_EQ(s->GetBlock("t", Block(1)).status().code(), absl::StatusCode::kNotFound);
  r = s->RunMaintenance(now + 121000);  // past block_ttl_ms
  EXPECT_EQ(r->blocks_expired, 1u);
  EXPECT_EQ(s->GetBlock("t", Block(2)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->GetBlock("t", Block(3)).ok());  // the session keeps it
  EXPECT_EQ(s->Usage("t").bytes, p.size());
}

// Reads move the access time in memory at once and on disk at the next
// maintenance pass: a reopened store sees it (its LRU order survives).
TEST(TieredStoreMaintenanceTest, AccessTimesAreWrittenBack) {
  base::TempDir dir = MakeTempDir();
  const std::string p = FakePage(500, 24);
  int64_t before = 0, read_at = 0;
  {
    auto s = OpenWith(dir.path(), 0);
    ASSERT_TRUE(s->PutPage(Req("t", 1, 0, 1, p)).ok());
    before = s->GetBlock("t", Block(1))->accessed_ms;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(s->GetPage("t", Block(1), 0).ok());
    read_at = s->GetBlock("t", Block(1))->accessed_ms;
    EXPECT_GT(read_at, before);
    ASSERT_TRUE(s->RunMaintenance(before + 10).ok());
  }
  auto s = OpenWith(dir.path(), 0);
  EXPECT_EQ(s->GetBlock("t", Block(1))->accessed_ms, read_at);
}

// Memory-only, block records live only in the store's index: RocksDB (in
// memory, for sessions) gets none, and puts, lookups, reads, eviction order
// and deletes all work from the index.
TEST(TieredStoreTest, MemoryOnlyKeepsBlockRecordsOutOfRocksDb) {
  auto s = OpenStore("", 0, /*memory_only=*/true);
  ASSERT_NE(s, nullptr);
  const std::string p0 = FakePage(3000, 30), p1 = FakePage(3000, 31);
  ASSERT_FALSE(s->PutPage(Req("t", 1, 0, 2, p0))->committed);
  ASSERT_TRUE(s->PutPage(Req("t", 1, 1, 2, p1))->committed);
  EXPECT_TRUE(s->records().Keys(Column::kBlocks, "")->empty());
  EXPECT_TRUE(s->records().Keys(Column::kPages, "")->empty());
  auto record = s->GetBlock("t", Block(1));
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_TRUE(record->committed);
  EXPECT_EQ(record->bytes, p0.size() + p1.size());
  EXPECT_EQ(record->descriptor, "geo");
  const BlockKey chain[] = {Block(1)};
  EXPECT_EQ(*s->Lookup("t", chain), 1u);
  EXPECT_EQ(**s->GetPage("t", Block(1), 1), p1);
  // A page of another format is refused from the indexed record.
  EXPECT_EQ(s->PutPage(Req("t", 1, 0, 2, p0, "other")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(s->RunMaintenance(record->accessed_ms + 10).ok());
  EXPECT_TRUE(s->records().Keys(Column::kBlocks, "")->empty());  // no access write-back
  ASSERT_TRUE(s->DeleteBlock("t", Block(1)).ok());
  EXPECT_EQ(s->GetBlock("t", Block(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*s->Lookup("t", chain), 0u);
  EXPECT_EQ(s->Usage("t").bytes, 0u);
  EXPECT_EQ(s->TotalBytes(), 0u);
  EXPECT_EQ(s->Stats().tiers[0].entries, 0u);
}

}  // namespace
}  // namespace qaqkv::storage

namespace qaqkv::storage {
namespace {

// Writers, readers, deleters, session writers and the background maintenance
// thread all at once, under a tight disk budget that keeps eviction busy.
// Every successful read returns the bytes that were written. Run under TSan.
TEST(TieredStoreStressTest, EverythingAtOnce) {
  base::TempDir dir = MakeTempDir();
  TieredStoreOptions o;
  o.data_dir = dir.path();
  o.memory_bytes = 1 << 20;
  o.dram_shards = 2;
  o.disk_bytes = 40 * 3000;
  o.abandoned_block_ms = 1;
  o.maintenance_interval_ms = 2;
  auto opened = TieredStore::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  TieredStore& s = **opened;
  std::vector<std::string> pages;
  for (int l = 0; l < 3; ++l) pages.push_back(FakePage(2500, 300 + l));
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 6; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(w);
      for (int i = 0; i < 300; ++i) {
        const uint8_t b = static_cast<uint8_t>(rng() % 60);
        switch (rng() % 5) {
          case 0:
          case 1: {
            const uint32_t l = rng() % 3;
            auto r = s.PutPage(Req("t", b, l, 3, pages[l]));
            if (!r.ok() && r.status().code() != absl::StatusCode::kResourceExhausted) ++bad;
            break;
          }
          case 2: {
            const uint32_t l = rng() % 3;
            auto p = s.GetPage("t", Block(b), l);
            if (p.ok() && **p != pages[l]) ++bad;
            if (!p.ok() && p.status().code() != absl::StatusCode::kNotFound) ++bad;
            break;
          }
          case 3: {
            const absl::Status d = s.DeleteBlock("t", Block(b));
            if (!d.ok() && d.code() != absl::StatusCode::kNotFound) ++bad;
            break;
          }
          case 4: {
            const BlockKey chain[] = {Block(b)};
            if (!s.Lookup("t", chain).ok()) ++bad;
            if (!s.PutSession("t", absl::StrCat("s", b), Session({b}, 1, 5)).ok()) ++bad;
            break;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  ASSERT_TRUE(s.RunMaintenance(std::numeric_limits<int64_t>::max() / 2).ok());
  EXPECT_LE(s.TotalBytes(), o.disk_bytes);
  EXPECT_EQ(s.Usage("t").bytes, s.TotalBytes());
}

}  // namespace
}  // namespace qaqkv::storage
