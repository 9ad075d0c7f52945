// The RocksDB tier with page bytes in the segment log (separate_pages):
// what is stored where, space released and collected, mixed databases, and
// damage. Real RocksDB and real files in a temporary directory.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "storage/rocksdb_tier.h"
#include "storage/segment_log.h"
#include "tests/storage/test_util.h"

namespace qaqkv::storage {
namespace {

using testing::FakePage;
using testing::MakeTempDir;

RocksDbTierOptions Separated(const std::string& path, uint64_t segment_bytes = 1 << 20) {
  RocksDbTierOptions o;
  o.path = path;
  o.separate_pages = true;
  o.segment_bytes = segment_bytes;
  return o;
}

std::unique_ptr<RocksDbTier> MustOpen(const RocksDbTierOptions& o) {
  auto t = RocksDbTier::Open(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::string Key(int i) { return "P" + std::to_string(i); }

// What the pages column itself holds for `key` (a location or a page).
std::string StoredValue(RocksDbTier& t, std::string_view key) {
  std::string out;
  EXPECT_TRUE(t.Scan(Column::kPages, key, [&](std::string_view, std::string_view v) {
                 out = std::string(v);
                 return false;
               }).ok());
  return out;
}

TEST(SeparatedPages, BytesLiveInSegmentsAndRocksDbHoldsLocations) {
  base::TempDir dir = MakeTempDir();
  const std::string db = dir.path() + "/db";
  {
    auto t = MustOpen(Separated(db));
    ASSERT_NE(t, nullptr);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(t->PutPage(Key(i), FakePage(256 << 10, i)).ok());
    size_t records = 0;
    ASSERT_TRUE(t->Scan(Column::kPages, "", [&](std::string_view, std::string_view v) {
                   EXPECT_TRUE(SegmentLocation::Decode(v).has_value());
                   ++records;
                   return true;
                 }).ok());
    EXPECT_EQ(records, 10u);
    const RocksDbTierStats st = t->Stats();
    EXPECT_GE(st.segment_file_bytes, 10u * (256 << 10));
    EXPECT_EQ(st.segment_live_bytes, st.segment_file_bytes);
    EXPECT_GE(t->DiskBytes(), st.segment_file_bytes);
    // Raw access through the pages column sees the page, not its location.
    EXPECT_EQ(*t->Get(Column::kPages, Key(3)), FakePage(256 << 10, 3));
  }
  auto t = MustOpen(Separated(db));
  ASSERT_NE(t, nullptr);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(*t->GetPage(Key(i)), FakePage(256 << 10, i)) << i;
  // After the reopen, live bytes are rebuilt from the locations.
  const RocksDbTierStats st = t->Stats();
  EXPECT_EQ(st.segment_live_bytes, st.segment_file_bytes);
}

TEST(SeparatedPages, DeletedSpaceIsCollectedAndTheRestStillReads) {
  base::TempDir dir = MakeTempDir();
  auto t = MustOpen(Separated(dir.path() + "/db"));
  ASSERT_NE(t, nullptr);
  constexpr int kPages = 13;  // 300 KiB each, three per 1 MiB segment
  for (int i = 0; i < kPages; ++i) ASSERT_TRUE(t->PutPage(Key(i), FakePage(300 << 10, i)).ok());
  const uint64_t before = t->Stats().segment_file_bytes;
  // Two of every three pages go, and one is replaced.
  for (int i = 0; i < kPages; ++i) {
    if (i % 3 != 0) {
      ASSERT_TRUE(t->Delete(Column::kPages, Key(i)).ok());
    }
  }
  ASSERT_TRUE(t->PutPage(Key(0), FakePage(300 << 10, 100)).ok());
  ASSERT_TRUE(t->CollectSegments().ok());
  const RocksDbTierStats st = t->Stats();
  EXPECT_GE(st.collected_segments, 3u);
  EXPECT_LT(st.segment_file_bytes, before / 2);
  // Only live pages were copied: at most one in three.
  EXPECT_LE(st.collector_copied_bytes, uint64_t{kPages / 3 + 1} * (300 << 10));
  EXPECT_EQ(*t->GetPage(Key(0)), FakePage(300 << 10, 100));
  for (int i = 3; i < kPages; i += 3) EXPECT_EQ(*t->GetPage(Key(i)), FakePage(300 << 10, i)) << i;
  for (int i = 1; i < kPages; i += 3) {
    EXPECT_EQ(t->GetPage(Key(i)).status().code(), absl::StatusCode::kNotFound);
  }
}

TEST(SeparatedPages, ADatabaseReopenedWithoutSeparationStillReadsAndDeletes) {
  base::TempDir dir = MakeTempDir();
  const std::string db = dir.path() + "/db";
  {
    auto t = MustOpen(Separated(db));
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(t->PutPage("old", FakePage(100000, 1)).ok());
  }
  RocksDbTierOptions plain;
  plain.path = db;
  auto t = MustOpen(plain);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(*t->GetPage("old"), FakePage(100000, 1));
  ASSERT_TRUE(t->PutPage("new", FakePage(100000, 2)).ok());
  EXPECT_EQ(StoredValue(*t, "new"), FakePage(100000, 2));  // stored inline again
  ASSERT_TRUE(t->Delete(Column::kPages, "old").ok());
  EXPECT_EQ(t->Stats().segment_live_bytes, 0u);
  EXPECT_EQ(t->GetPage("old").status().code(), absl::StatusCode::kNotFound);
}

TEST(SeparatedPages, DamagedSegmentBytesAreDataLossAndDropped) {
  base::TempDir dir = MakeTempDir();
  const std::string db = dir.path() + "/db";
  auto t = MustOpen(Separated(db));
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->PutPage("a", FakePage(50000, 1)).ok());
  ASSERT_TRUE(t->PutPage("b", FakePage(50000, 2)).ok());
  // A flipped byte in the middle of b's page, then one in a's record header.
  const std::string seg = db + "/segments/00000000.seg";
  const int fd = ::open(seg.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const SegmentLocation b = *SegmentLocation::Decode(StoredValue(*t, "b"));
  char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(b.offset + 24 + 1 + 20000)), 1);
  c ^= 1;
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(b.offset + 24 + 1 + 20000)), 1);
  ASSERT_EQ(::pread(fd, &c, 1, 5), 1);
  c ^= 1;
  ASSERT_EQ(::pwrite(fd, &c, 1, 5), 1);
  ::close(fd);
  EXPECT_EQ(t->GetPage("b").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(t->GetPage("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t->GetPage("a").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(t->GetPage("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t->Stats().checksum_failures, 2u);
}

// Writers replacing and deleting pages, a reader and the collector at once;
// `direct_io` appends the page bytes with O_DIRECT.
void ChurnLosesNothing(bool direct_io) {
  base::TempDir dir = MakeTempDir();
  RocksDbTierOptions o = Separated(dir.path() + "/db");
  o.segment_direct_io = direct_io;
  auto t = MustOpen(o);
  ASSERT_NE(t, nullptr);
  constexpr int kKeys = 24;
  // version[k]: the seed of the page key k holds (or -1 while deleted).
  std::vector<std::atomic<int>> version(kKeys);
  for (int k = 0; k < kKeys; ++k) {
    ASSERT_TRUE(t->PutPage(Key(k), FakePage(120000, k * 1000)).ok());
    version[k] = k * 1000;
  }
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::mutex first_mu;
  std::string first_bad;  // what went wrong first, for the failure message
  auto note = [&](std::string what) {
    ++bad;
    std::lock_guard<std::mutex> lock(first_mu);
    if (first_bad.empty()) first_bad = std::move(what);
  };
  std::vector<std::thread> threads;
  // Writers own disjoint keys, so each knows what its keys hold.
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 1; round < 60; ++round) {
        for (int k = w; k < kKeys; k += 2) {
          if ((k + round) % 5 == 0) {
            if (absl::Status st = t->Delete(Column::kPages, Key(k)); !st.ok()) {
              note("delete: " + st.ToString());
            }
            version[k] = -1;
          } else {
            const int seed = k * 1000 + round;
            if (absl::Status st = t->PutPage(Key(k), FakePage(120000, seed)); !st.ok()) {
              note("put: " + st.ToString());
            }
            version[k] = seed;
          }
        }
      }
    });
  }
  threads.emplace_back([&] {
    while (!stop) {
      if (absl::Status st = t->CollectSegments(); !st.ok()) note("collect: " + st.ToString());
    }
  });
  threads.emplace_back([&] {
    while (!stop) {
      for (int k = 0; k < kKeys; ++k) {
        auto p = t->GetPage(Key(k));
        // Whatever it reads must be some complete page of this key.
        if (p.ok() && p->size() != FakePage(120000, 0).size()) note("read: a page cut short");
        if (!p.ok() && p.status().code() != absl::StatusCode::kNotFound) {
          note("read: " + p.status().ToString());
        }
      }
    }
  });
  threads[0].join();
  threads[1].join();
  stop = true;
  threads[2].join();
  threads[3].join();
  EXPECT_EQ(bad.load(), 0) << first_bad;
  ASSERT_TRUE(t->CollectSegments().ok());
  for (int k = 0; k < kKeys; ++k) {
    auto p = t->GetPage(Key(k));
    if (version[k] < 0) {
      EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound) << k;
    } else {
      ASSERT_TRUE(p.ok()) << k << ": " << p.status();
      EXPECT_EQ(*p, FakePage(120000, version[k])) << k;
    }
  }
  const RocksDbTierStats st = t->Stats();
  EXPECT_GT(st.collected_segments, 0u);
  EXPECT_EQ(st.checksum_failures, 0u);
  // Space stays bounded: the live pages plus at most about one segment of
  // garbage per live fraction.
  EXPECT_LT(st.segment_file_bytes, 2 * st.segment_live_bytes + 3 * (1 << 20));
}

TEST(SeparatedPages, ConcurrentWritersReadersAndCollectionLoseNothing) { ChurnLosesNothing(false); }

TEST(SeparatedPages, ConcurrentDirectWritersReadersAndCollectionLoseNothing) {
  ChurnLosesNothing(true);
}

TEST(SeparatedPages, SyncedWritesReadBack) {
  for (const bool direct_io : {false, true}) {
    base::TempDir dir = MakeTempDir();
    const std::string db = dir.path() + "/db";
    RocksDbTierOptions o = Separated(db);
    o.sync = true;
    o.segment_direct_io = direct_io;
    {
      auto t = MustOpen(o);
      ASSERT_NE(t, nullptr);
      for (int i = 0; i < 8; ++i) ASSERT_TRUE(t->PutPage(Key(i), FakePage(64000, i)).ok());
      for (int i = 0; i < 8; ++i) EXPECT_EQ(*t->GetPage(Key(i)), FakePage(64000, i));
      EXPECT_EQ(SegmentLocation::Decode(StoredValue(*t, Key(0)))->padded, direct_io);
    }
    // After a reopen (without direct I/O) every page reads, and the live
    // bytes the locations name are the segment files' bytes.
    o.segment_direct_io = false;
    auto t = MustOpen(o);
    ASSERT_NE(t, nullptr);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(*t->GetPage(Key(i)), FakePage(64000, i)) << direct_io;
    EXPECT_EQ(t->Stats().segment_live_bytes, t->Stats().segment_file_bytes) << direct_io;
  }
}

}  // namespace
}  // namespace qaqkv::storage
