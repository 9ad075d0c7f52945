// Crash safety of the tiered store: a child process writes pages from
// several threads and reports every acknowledged write over a pipe; the
// parent kills it with SIGKILL at a random moment, reopens the store and
// checks that every acknowledged page reads back byte-identical (with
// write-back: that what was lost fits in its bound), that no incomplete
// block is visible, and that usage counters match the data.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "storage/tiered_store.h"
#include "xxhash.h"

namespace qaqkv::storage {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kLayers = 4;

BlockKey BlockFor(uint32_t round, uint32_t index) {
  BlockKey k{};
  std::memcpy(k.data(), &round, 4);
  std::memcpy(k.data() + 4, &index, 4);
  k[15] = 0xc7;
  return k;
}

// Deterministic page bytes for (round, block, layer), with their checksum.
std::string PageFor(uint32_t round, uint32_t index, uint32_t layer) {
  std::mt19937 rng(round * 1000003u + index * 131u + layer);
  std::string p(1000 + rng() % 20000, '\0');
  for (size_t i = 0; i + 8 < p.size(); ++i) p[i] = static_cast<char>(rng());
  const uint64_t h = XXH3_64bits(p.data(), p.size() - 8);
  std::memcpy(p.data() + p.size() - 8, &h, 8);
  return p;
}

struct Ack {
  uint32_t round, index, layer;
};

// Where page bytes go (segment files, the default, or RocksDB) and whether
// each write is fsynced: set by each test before it forks, so the writer
// and the checker agree.
struct Mode {
  bool separate_pages;
  bool sync;
  uint64_t write_back_bytes = 0;
  bool direct_io = false;  // segment appends with O_DIRECT
  // Each writer stores whole blocks of its own with one PutPages each (one
  // segment write and one batch), instead of single pages of shared blocks.
  bool batched = false;
};
Mode mode = {true, false};

TieredStoreOptions Options(const std::string& dir) {
  TieredStoreOptions o;
  o.data_dir = dir;
  o.separate_pages = mode.separate_pages;
  o.sync = mode.sync;
  o.write_back_bytes = mode.write_back_bytes;
  o.segment_direct_io = mode.direct_io;
  o.memory_bytes = 16 << 20;
  o.dram_shards = 4;
  return o;
}

// The child: 4 writer threads, each taking the next (block, layer) of its
// share and reporting it once PutPage returned OK. Never returns.
[[noreturn]] void RunWriter(const std::string& dir, uint32_t round, int ack_fd) {
  auto store = TieredStore::Open(Options(dir));
  if (!store.ok()) _exit(3);
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(round * 17 + w);
      for (uint32_t i = 0; mode.batched; ++i) {
        const uint32_t index = i * 4 + w;
        std::vector<std::string> pages;
        std::vector<PutPageRequest> reqs;
        for (uint32_t layer = 0; layer < kLayers; ++layer) pages.push_back(PageFor(round, index, layer));
        for (uint32_t layer = 0; layer < kLayers; ++layer) {
          reqs.push_back({"crash-tenant", BlockFor(round, index), layer, kLayers, "geo", pages[layer]});
        }
        std::vector<PutPageResult> results;
        if (!(*store)->PutPages(reqs, &results).ok() || results.size() != kLayers) _exit(4);
        for (uint32_t layer = 0; layer < kLayers; ++layer) {
          const Ack ack{round, index, layer};
          if (write(ack_fd, &ack, sizeof(ack)) != sizeof(ack)) _exit(5);
        }
      }
      for (uint32_t i = 0;; ++i) {
        // Threads share blocks: thread w writes layer (w + i) % 4 of block i / 2,
        // so blocks commit only when several streams have delivered.
        const uint32_t index = i / 2, layer = (w + i) % kLayers;
        const std::string page = PageFor(round, index, layer);
        auto r = (*store)->PutPage({"crash-tenant", BlockFor(round, index), layer, kLayers, "geo", page});
        if (!r.ok()) _exit(4);
        const Ack ack{round, index, layer};
        if (write(ack_fd, &ack, sizeof(ack)) != sizeof(ack)) _exit(5);
      }
    });
  }
  for (auto& t : threads) t.join();
  _exit(0);
}

class CrashTest : public testing::TestWithParam<Mode> {
 protected:
  void SetUp() override { mode = GetParam(); }
};

TEST_P(CrashTest, SigkillLosesNoAcknowledgedPage) {
  std::string tmpl = (fs::temp_directory_path() / "qaqkv-crash-XXXXXX").string();
  const std::string dir = mkdtemp(tmpl.data());
  std::mt19937 rng(std::random_device{}());
  std::set<std::tuple<uint32_t, uint32_t, uint32_t>> acked;
  constexpr uint32_t kRounds = 10;
  for (uint32_t round = 0; round < kRounds; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunWriter(dir, round, fds[1]);
    }
    close(fds[1]);
    // Let the writer get going (opening RocksDB takes a while, far longer
    // under sanitizers): wait for a few acknowledgements, then kill it at a
    // random moment within the next 200 ms.
    Ack ack;
    int round_acks = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (round_acks < 8 && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fds[0], POLLIN, 0};
      if (poll(&p, 1, 100) == 1 && read(fds[0], &ack, sizeof(ack)) == sizeof(ack)) {
        acked.insert({ack.round, ack.index, ack.layer});
        ++round_acks;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited early with " << WEXITSTATUS(status);
    // Acks are written whole (smaller than PIPE_BUF): read the rest.
    while (read(fds[0], &ack, sizeof(ack)) == sizeof(ack)) acked.insert({ack.round, ack.index, ack.layer});
    close(fds[0]);
  }
  ASSERT_GT(acked.size(), 40u) << "the writers acknowledged too little to test anything";

  auto store = TieredStore::Open(Options(dir));
  ASSERT_TRUE(store.ok()) << store.status();
  uint64_t bytes = 0, blocks = 0;
  // Write-back: acknowledged bytes each round lost (the kill takes what was
  // still queued).
  std::vector<uint64_t> lost(kRounds, 0);
  uint64_t lost_pages = 0;
  auto records = (*store)->records().Keys(Column::kBlocks, "");
  ASSERT_TRUE(records.ok());
  for (uint32_t round = 0; round < kRounds; ++round) {
    for (uint32_t index = 0, misses = 0;; ++index) {
      auto record = (*store)->GetBlock("crash-tenant", BlockFor(round, index));
      if (!record.ok()) {
        ASSERT_EQ(record.status().code(), absl::StatusCode::kNotFound);
        // Blocks are written in index order, give or take the threads' lag:
        // a long enough run of missing ones is the end.
        if (++misses > 256) break;
        continue;
      }
      misses = 0;
      ++blocks;
      bytes += record->bytes;
      uint64_t page_bytes = 0;
      for (uint32_t layer = 0; layer < kLayers; ++layer) {
        const bool was_acked = acked.count({round, index, layer}) > 0;
        const std::string key = PageKey("crash-tenant", BlockFor(round, index), layer);
        auto raw = (*store)->records().Get(Column::kPages, key);
        EXPECT_EQ(raw.ok(), record->HasLayer(layer)) << "page and record disagree";
        if (was_acked && !record->HasLayer(layer)) {
          ASSERT_GT(mode.write_back_bytes, 0u) << "acknowledged page lost: round " << round
                                               << " block " << index << " layer " << layer;
          lost[round] += PageFor(round, index, layer).size();
          ++lost_pages;
        }
        if (raw.ok()) {
          EXPECT_EQ(*raw, PageFor(round, index, layer));
          page_bytes += raw->size();
        }
      }
      EXPECT_EQ(page_bytes, record->bytes);
      const BlockKey chain[] = {BlockFor(round, index)};
      const size_t visible = *(*store)->Lookup("crash-tenant", chain);
      EXPECT_EQ(visible == 1, record->committed);
      EXPECT_EQ(record->committed, record->LayersPresent() == kLayers);
      // A block's run is stored all or none: no kill leaves part of one.
      if (mode.batched && mode.write_back_bytes == 0) {
        EXPECT_TRUE(record->committed) << "round " << round << " block " << index;
      }
      if (!record->committed) {
        EXPECT_EQ((*store)->GetPage("crash-tenant", BlockFor(round, index), 0).status().code(),
                  absl::StatusCode::kNotFound);
      } else {
        auto page = (*store)->GetPage("crash-tenant", BlockFor(round, index), 3);
        ASSERT_TRUE(page.ok()) << page.status();
        EXPECT_EQ(**page, PageFor(round, index, 3));
      }
    }
  }
  // Blocks with no page written at all have no record: their acknowledged
  // pages count as lost too.
  for (const auto& [round, index, layer] : acked) {
    if (!(*store)->GetBlock("crash-tenant", BlockFor(round, index)).ok()) {
      ASSERT_GT(mode.write_back_bytes, 0u) << "acknowledged block lost: round " << round
                                           << " block " << index;
      lost[round] += PageFor(round, index, layer).size();
      ++lost_pages;
    }
  }
  for (uint32_t round = 0; round < kRounds; ++round) {
    EXPECT_LE(lost[round], mode.write_back_bytes) << "round " << round;
  }
  if (mode.write_back_bytes > 0) {
    std::printf("write-back: %llu acknowledged pages lost over %u kills (bound %llu bytes)\n",
                static_cast<unsigned long long>(lost_pages), kRounds,
                static_cast<unsigned long long>(mode.write_back_bytes));
  }
  EXPECT_EQ(blocks, records->size());
  EXPECT_EQ((*store)->Usage("crash-tenant").bytes, bytes);
  EXPECT_EQ((*store)->Usage("crash-tenant").blocks, blocks);
  store->reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

INSTANTIATE_TEST_SUITE_P(Modes, CrashTest,
                         testing::Values(Mode{true, false}, Mode{false, false}, Mode{true, true},
                                         Mode{true, false, 256 << 10},
                                         Mode{true, false, 0, /*direct_io=*/true},
                                         Mode{true, false, 0, false, /*batched=*/true},
                                         Mode{true, true, 0, true, /*batched=*/true}),
                         [](const testing::TestParamInfo<Mode>& p) {
                           return std::string(p.param.separate_pages ? "InSegments" : "InRocksDb") +
                                  (p.param.sync ? "Fsync" : "") +
                                  (p.param.write_back_bytes > 0 ? "WriteBack" : "") +
                                  (p.param.direct_io ? "DirectIo" : "") +
                                  (p.param.batched ? "Batched" : "");
                         });

}  // namespace
}  // namespace qaqkv::storage
