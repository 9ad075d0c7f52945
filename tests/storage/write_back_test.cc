// Write-back: the queue of acknowledged, unwritten pages, and the tiered
// store acknowledging from memory and writing in the background (SIGKILL
// rounds are in crash_test, InSegmentsWriteBack).
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/block_record.h"
#include "storage/internal/write_back_queue.h"
#include "storage/keys.h"
#include "storage/tiered_store.h"
#include "tests/storage/test_util.h"

namespace qaqkv::storage {
namespace {

using internal::WriteBackQueue;
using testing::FakePage;
using testing::MakeTempDir;
using ::testing::HasSubstr;

PageBuffer Bytes(size_t n, char c) { return std::make_shared<const std::string>(n, c); }

BlockRecord RecordWithLayer(uint32_t layer) {
  BlockRecord r = NewBlockRecord(4, "geo", 0);
  r.SetLayer(layer);
  return r;
}

// Whether `f` is still running after a moment (it is waiting).
template <typename T>
bool StillWaiting(std::future<T>& f) {
  return f.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout;
}

TEST(WriteBackQueueTest, ReserveWaitsForRoomThatARemoveMakes) {
  WriteBackQueue q(100);
  ASSERT_TRUE(q.Reserve(60).ok());
  const uint64_t seq = q.Add("p1", "b1", Bytes(60, 'a'), RecordWithLayer(0));
  auto second = std::async(std::launch::async, [&] { return q.Reserve(60); });
  EXPECT_TRUE(StillWaiting(second));
  EXPECT_EQ(q.Stats().dirty_bytes, 60u);
  EXPECT_FALSE(q.Remove("p1", seq + 1, true)) << "a stale seq removes nothing";
  EXPECT_TRUE(q.Remove("p1", seq, /*written=*/true));
  EXPECT_TRUE(second.get().ok());
  const internal::WriteBackStats st = q.Stats();
  EXPECT_EQ(st.dirty_bytes, 0u);
  EXPECT_EQ(st.written_pages, 1u);
  EXPECT_EQ(st.stalls, 1u);
  // A page larger than the whole limit goes in alone, once the queue is empty.
  q.Unreserve(60);
  EXPECT_TRUE(q.Reserve(500).ok());
}

TEST(WriteBackQueueTest, FindsPagesAndListsABlocksEntriesInArrivalOrder) {
  WriteBackQueue q(1 << 20);
  for (uint32_t layer : {2u, 0u, 3u}) {
    ASSERT_TRUE(q.Reserve(10).ok());
    q.Add(absl::StrCat("b1/", layer), "b1", Bytes(10, char('0' + layer)), RecordWithLayer(layer));
  }
  ASSERT_TRUE(q.Reserve(10).ok());
  q.Add("b2/0", "b2", Bytes(10, 'x'), RecordWithLayer(0));
  EXPECT_EQ(*q.Find("b1/3"), std::string(10, '3'));
  EXPECT_EQ(q.Find("b1/1"), nullptr);
  const std::vector<internal::WriteBackEntry> b1 = q.BlockEntries("b1");
  ASSERT_EQ(b1.size(), 3u);
  EXPECT_EQ(b1[0].page_key, "b1/2");
  EXPECT_EQ(b1[1].page_key, "b1/0");
  EXPECT_EQ(b1[2].page_key, "b1/3");
  EXPECT_LT(b1[0].seq, b1[1].seq);
  auto oldest = q.WaitOldest();
  ASSERT_TRUE(oldest.has_value());
  EXPECT_EQ(oldest->page_key, "b1/2");
  q.DropBlock("b1");
  EXPECT_FALSE(q.HasBlock("b1"));
  EXPECT_TRUE(q.HasBlock("b2"));
  EXPECT_EQ(q.Stats().dirty_bytes, 10u);
  EXPECT_EQ(q.Stats().written_pages, 0u) << "dropped pages were not written";
}

TEST(WriteBackQueueTest, WriteErrorsFailWaitingPutsAndDrains) {
  WriteBackQueue q(10);
  ASSERT_TRUE(q.Reserve(10).ok());
  const uint64_t seq = q.Add("p", "b", Bytes(10, 'a'), RecordWithLayer(0));
  auto put = std::async(std::launch::async, [&] { return q.Reserve(10); });
  auto drain = std::async(std::launch::async, [&] { return q.WaitDrained(); });
  EXPECT_TRUE(StillWaiting(put));
  EXPECT_TRUE(StillWaiting(drain));
  q.SetWriteError(absl::ResourceExhaustedError("disk full"));
  const absl::Status put_status = put.get();
  EXPECT_EQ(put_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(put_status.message(), HasSubstr("disk full"));
  EXPECT_EQ(drain.get().code(), absl::StatusCode::kResourceExhausted);
  // A successful write clears the error; the queue then drains.
  EXPECT_TRUE(q.Remove("p", seq, /*written=*/true));
  EXPECT_TRUE(q.WaitDrained().ok());
  EXPECT_TRUE(q.Reserve(10).ok());
}

TEST(WriteBackQueueTest, CloseEndsTheWriterOnceEmpty) {
  WriteBackQueue q(100);
  auto writer = std::async(std::launch::async, [&] { return q.WaitOldest(); });
  EXPECT_TRUE(StillWaiting(writer));
  q.Close();
  EXPECT_FALSE(writer.get().has_value());
}

// ---------------------------------------------------------------------------
// The store.

BlockKey Block(uint32_t id) {
  BlockKey k{};
  std::memcpy(k.data(), &id, 4);
  k[15] = 0x3b;
  return k;
}

TieredStoreOptions WriteBackOptions(const std::string& dir, uint64_t write_back_bytes) {
  TieredStoreOptions o;
  o.data_dir = dir;
  o.memory_bytes = 16 << 20;
  o.dram_shards = 4;
  o.write_back_bytes = write_back_bytes;
  o.maintenance_interval_ms = 0;
  return o;
}

std::unique_ptr<TieredStore> Open(const TieredStoreOptions& o) {
  auto s = TieredStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(WriteBackStoreTest, RejectsALimitWithoutADiskOrTooLarge) {
  base::TempDir dir = MakeTempDir();
  TieredStoreOptions o = WriteBackOptions(dir.path(), 1 << 20);
  o.memory_only = true;
  auto s = TieredStore::Open(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("write_back_bytes"));
  o = WriteBackOptions(dir.path(), (16 << 20) / 4 + 1);
  s = TieredStore::Open(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("quarter"));
}

TEST(WriteBackStoreTest, PagesAreServedAtOnceAndStoredByFlushAndClose) {
  base::TempDir dir = MakeTempDir();
  const TieredStoreOptions o = WriteBackOptions(dir.path(), 1 << 20);
  std::vector<std::string> pages;
  for (uint32_t i = 0; i < 12; ++i) pages.push_back(FakePage(20000, i));
  {
    auto s = Open(o);
    ASSERT_NE(s, nullptr);
    for (uint32_t b = 0; b < 3; ++b) {
      for (uint32_t layer = 0; layer < 4; ++layer) {
        auto r = s->PutPage({"t", Block(b), layer, 4, "geo", pages[b * 4 + layer]});
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_EQ(r->committed, layer == 3);
      }
    }
    const BlockKey chain[] = {Block(0), Block(1), Block(2)};
    EXPECT_EQ(*s->Lookup("t", chain), 3u);
    for (uint32_t b = 0; b < 3; ++b) EXPECT_EQ(**s->GetPage("t", Block(b), 2), pages[b * 4 + 2]);
    ASSERT_TRUE(s->Flush().ok());
    StoreStats st = s->Stats();
    EXPECT_EQ(st.write_back_limit_bytes, 1u << 20);
    EXPECT_EQ(st.write_back_dirty_bytes, 0u);
    EXPECT_EQ(st.write_back_written_pages, 12u);
    // On disk, with its record.
    EXPECT_EQ(*s->records().Get(Column::kPages, PageKey("t", Block(1), 3)), pages[7]);
    // Queued at close: the store writes them before it goes.
    ASSERT_TRUE(s->PutPage({"t", Block(9), 0, 1, "geo", pages[0]}).ok());
  }
  auto s = Open(WriteBackOptions(dir.path(), 0));  // reopened write-through
  ASSERT_NE(s, nullptr);
  const BlockKey chain[] = {Block(0), Block(1), Block(2), Block(9)};
  EXPECT_EQ(*s->Lookup("t", chain), 4u);
  for (uint32_t b = 0; b < 3; ++b) {
    for (uint32_t layer = 0; layer < 4; ++layer) {
      EXPECT_EQ(**s->GetPage("t", Block(b), layer), pages[b * 4 + layer]);
    }
  }
  EXPECT_EQ(s->Usage("t").blocks, 4u);
  EXPECT_EQ(s->Usage("t").bytes, 13u * 20008);
}

// PutPages in write-back: each page of a block's run is queued with the
// record as it stands once that page is stored, so the writer stores them
// in order and a reopen finds every block whole.
TEST(WriteBackStoreTest, PutPagesQueuesEachPageOfARun) {
  base::TempDir dir = MakeTempDir();
  std::vector<std::string> pages;
  for (uint32_t i = 0; i < 12; ++i) pages.push_back(FakePage(20000, i));
  {
    auto s = Open(WriteBackOptions(dir.path(), 1 << 20));
    ASSERT_NE(s, nullptr);
    std::vector<PutPageRequest> reqs;
    for (uint32_t b = 0; b < 3; ++b) {
      for (uint32_t layer = 0; layer < 4; ++layer) {
        reqs.push_back({"t", Block(b), layer, 4, "geo", pages[b * 4 + layer]});
      }
    }
    std::vector<PutPageResult> results;
    ASSERT_TRUE(s->PutPages(reqs, &results).ok());
    ASSERT_EQ(results.size(), 12u);
    for (size_t i = 0; i < 12; ++i) {
      EXPECT_EQ(results[i].committed, i % 4 == 3) << i;
      EXPECT_TRUE(results[i].stored) << i;
    }
    const BlockKey chain[] = {Block(0), Block(1), Block(2)};
    EXPECT_EQ(*s->Lookup("t", chain), 3u);
    ASSERT_TRUE(s->Flush().ok());
    EXPECT_EQ(s->Stats().write_back_written_pages, 12u);
  }
  auto s = Open(WriteBackOptions(dir.path(), 0));
  ASSERT_NE(s, nullptr);
  const BlockKey chain[] = {Block(0), Block(1), Block(2)};
  EXPECT_EQ(*s->Lookup("t", chain), 3u);
  for (uint32_t b = 0; b < 3; ++b) {
    for (uint32_t layer = 0; layer < 4; ++layer) {
      EXPECT_EQ(**s->GetPage("t", Block(b), layer), pages[b * 4 + layer]);
    }
  }
  EXPECT_EQ(s->Usage("t").bytes, 12u * 20008);
}

TEST(WriteBackStoreTest, DeletedAndRevertedPagesDoNotComeBack) {
  base::TempDir dir = MakeTempDir();
  const std::string p0 = FakePage(5000, 0), p1 = FakePage(5000, 1), p2 = FakePage(5000, 2);
  {
    auto s = Open(WriteBackOptions(dir.path(), 1 << 20));
    ASSERT_NE(s, nullptr);
    // Deleted right after its puts, written or not by then.
    ASSERT_TRUE(s->PutPage({"t", Block(1), 0, 2, "geo", p0}).ok());
    ASSERT_TRUE(s->PutPage({"t", Block(1), 1, 2, "geo", p1}).ok());
    ASSERT_TRUE(s->DeleteBlock("t", Block(1)).ok());
    EXPECT_EQ(s->GetPage("t", Block(1), 0).status().code(), absl::StatusCode::kNotFound);
    // A failed stream takes back its layer of an incomplete block.
    ASSERT_TRUE(s->PutPage({"t", Block(2), 0, 3, "geo", p0}).ok());
    ASSERT_TRUE(s->PutPage({"t", Block(2), 2, 3, "geo", p2}).ok());
    ASSERT_TRUE(s->RevertPage("t", Block(2), 2, p2.size()).ok());
    ASSERT_TRUE(s->Flush().ok());
    EXPECT_EQ(s->Stats().write_back_dirty_bytes, 0u);
  }
  auto s = Open(WriteBackOptions(dir.path(), 0));
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->GetBlock("t", Block(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->records().Get(Column::kPages, PageKey("t", Block(1), 0)).status().code(),
            absl::StatusCode::kNotFound);
  auto record = s->GetBlock("t", Block(2));
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_TRUE(record->HasLayer(0));
  EXPECT_FALSE(record->HasLayer(2));
  EXPECT_EQ(record->bytes, p0.size());
  EXPECT_EQ(*s->records().Get(Column::kPages, PageKey("t", Block(2), 0)), p0);
  EXPECT_EQ(s->records().Get(Column::kPages, PageKey("t", Block(2), 2)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Usage("t").bytes, p0.size());
}

// Writers faster than the disk: they wait for room, so what is unwritten
// never passes the limit, and everything arrives.
TEST(WriteBackStoreTest, UnwrittenBytesStayWithinTheLimitUnderLoad) {
  base::TempDir dir = MakeTempDir();
  constexpr uint64_t kLimit = 256 << 10;
  auto s = Open(WriteBackOptions(dir.path(), kLimit));
  ASSERT_NE(s, nullptr);
  std::atomic<bool> done{false};
  uint64_t peak = 0;
  std::thread sampler([&] {
    while (!done.load()) {
      peak = std::max(peak, s->Stats().write_back_dirty_bytes);
      std::this_thread::yield();
    }
  });
  constexpr uint32_t kThreads = 4, kBlocksEach = 24;
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (uint32_t w = 0; w < kThreads; ++w) {
    writers.emplace_back([&, w] {
      for (uint32_t i = 0; i < kBlocksEach; ++i) {
        const uint32_t id = w * 1000 + i;
        for (uint32_t layer = 0; layer < 2; ++layer) {
          if (!s->PutPage({"t", Block(id), layer, 2, "geo", FakePage(32 << 10, id * 2 + layer)})
                   .ok()) {
            failures.fetch_add(1);
          }
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  ASSERT_TRUE(s->Flush().ok());
  done = true;
  sampler.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(peak, kLimit);
  EXPECT_GT(peak, 0u);
  const StoreStats st = s->Stats();
  EXPECT_EQ(st.write_back_written_pages, uint64_t{kThreads} * kBlocksEach * 2);
  EXPECT_EQ(st.write_back_dirty_pages, 0u);
  for (uint32_t w = 0; w < kThreads; ++w) {
    const uint32_t id = w * 1000 + kBlocksEach - 1;
    EXPECT_EQ(*s->records().Get(Column::kPages, PageKey("t", Block(id), 1)),
              FakePage(32 << 10, id * 2 + 1));
  }
}

// The free-space floor (not write-back's, but the same question: does the
// disk take writes?): below it puts are refused and DiskHealth says why.
TEST(DiskHealthTest, AFloorAboveTheFreeSpaceRefusesPutsAndReportsIt) {
  base::TempDir dir = MakeTempDir();
  TieredStoreOptions o = WriteBackOptions(dir.path(), 0);
  o.min_free_disk_bytes = ~uint64_t{0};
  auto s = Open(o);
  ASSERT_NE(s, nullptr);
  const absl::Status health = s->DiskHealth();
  EXPECT_EQ(health.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(health.message(), HasSubstr("min_free_disk_bytes"));
  auto put = s->PutPage({"t", Block(1), 0, 1, "geo", FakePage(1000, 1)});
  EXPECT_EQ(put.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s->GetBlock("t", Block(1)).status().code(), absl::StatusCode::kNotFound);
  s.reset();
  o.min_free_disk_bytes = 0;
  s = Open(o);
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->DiskHealth().ok());
  ASSERT_TRUE(s->PutPage({"t", Block(1), 0, 1, "geo", FakePage(1000, 1)}).ok());
  const StoreStats st = s->Stats();
  EXPECT_GT(st.data_dir_bytes, 0u);
  EXPECT_GT(st.wal_bytes, 0u);
  EXPECT_GT(st.fs_size_bytes, 0u);
  EXPECT_LE(st.fs_free_bytes, st.fs_size_bytes);
}

}  // namespace
}  // namespace qaqkv::storage
