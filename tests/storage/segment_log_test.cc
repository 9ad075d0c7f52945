#include "storage/segment_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qaqkv::storage {
namespace {

std::string Bytes(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 31 + (i >> 7));
  return s;
}

struct Fixture {
  base::TempDir dir = *base::TempDir::Create("qaqkv-segment-test");
  SegmentLogOptions Options(uint64_t segment_bytes = 1 << 20, bool sync = false) const {
    return {dir.path() + "/segments", segment_bytes, sync};
  }
};

TEST(SegmentLog, AppendedValuesReadBack) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options());
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<SegmentLocation> locs;
  for (int i = 0; i < 20; ++i) {
    auto loc = (*log)->Append("key-" + std::to_string(i), Bytes(1000 + i * 37, char(i)));
    ASSERT_TRUE(loc.ok()) << loc.status();
    locs.push_back(*loc);
  }
  for (int i = 19; i >= 0; --i) {
    auto v = (*log)->Read(locs[i], "key-" + std::to_string(i));
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v, Bytes(1000 + i * 37, char(i)));
  }
  // Records follow each other: header (24), key, value.
  EXPECT_EQ(locs[1].offset, locs[0].offset + 24 + 5 + 1000);
  const SegmentLogStats st = (*log)->Stats();
  EXPECT_EQ(st.appends, 20u);
  EXPECT_EQ(st.live_bytes, st.file_bytes);
  EXPECT_EQ(st.syncs, 0u);
}

TEST(SegmentLog, LocationsEncodeInTwentyBytesThatNoPageStartsWith) {
  const SegmentLocation loc{7, (uint64_t{1} << 40) + 3, 262144};
  const std::string e = loc.Encode();
  ASSERT_EQ(e.size(), 20u);
  EXPECT_EQ(SegmentLocation::Decode(e), loc);
  EXPECT_FALSE(SegmentLocation::Decode(e.substr(0, 19)).has_value());
  std::string page = e;
  page.replace(0, 4, "QAQP");  // a page's magic
  EXPECT_FALSE(SegmentLocation::Decode(page).has_value());
}

TEST(SegmentLog, WrongKeyOrDamagedRecordIsDataLoss) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options());
  ASSERT_TRUE(log.ok());
  auto a = (*log)->Append("a", Bytes(4096, 1));
  auto b = (*log)->Append("b", Bytes(4096, 2));
  ASSERT_TRUE(a.ok() && b.ok());
  auto other = (*log)->Read(*a, "b");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kDataLoss) << other.status();
  // A location into the middle of a record.
  SegmentLocation inside = *b;
  inside.offset += 10;
  EXPECT_EQ((*log)->Read(inside, "b").status().code(), absl::StatusCode::kDataLoss);
  // A location past the end of the file.
  SegmentLocation past = *b;
  past.length += 100;
  EXPECT_EQ((*log)->Read(past, "b").status().code(), absl::StatusCode::kDataLoss);
  // A flipped bit in b's header (its value length).
  const int fd = ::open((f.dir.path() + "/segments/00000000.seg").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const char x = 0x40;
  ASSERT_EQ(::pwrite(fd, &x, 1, static_cast<off_t>(b->offset + 9)), 1);
  ::close(fd);
  EXPECT_EQ((*log)->Read(*b, "b").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE((*log)->Read(*a, "a").ok());
}

TEST(SegmentLog, SegmentsRollOverWhenFull) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options(1 << 20));
  ASSERT_TRUE(log.ok());
  std::vector<SegmentLocation> locs;
  for (int i = 0; i < 10; ++i) {
    auto loc = (*log)->Append("k" + std::to_string(i), Bytes(300 << 10, char(i)));
    ASSERT_TRUE(loc.ok());
    locs.push_back(*loc);
  }
  // Three 300 KiB records fit in 1 MiB, a fourth does not.
  EXPECT_EQ(locs[2].segment, 0u);
  EXPECT_EQ(locs[3].segment, 1u);
  EXPECT_EQ(locs[3].offset, 0u);
  EXPECT_EQ(locs[9].segment, 3u);
  EXPECT_EQ((*log)->Stats().segments, 4u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(*(*log)->Read(locs[i], "k" + std::to_string(i)), Bytes(300 << 10, char(i)));
}

TEST(SegmentLog, ReopenReadsOldSegmentsAndAppendsToANewOne) {
  Fixture f;
  SegmentLocation old;
  {
    auto log = SegmentLog::Open(f.Options());
    ASSERT_TRUE(log.ok());
    old = *(*log)->Append("old", Bytes(5000, 3));
  }
  auto log = SegmentLog::Open(f.Options());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(*(*log)->Read(old, "old"), Bytes(5000, 3));
  auto fresh = (*log)->Append("new", Bytes(10, 4));
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->segment, old.segment + 1);
  EXPECT_EQ(fresh->offset, 0u);
  // Nothing of the old segment is live until its owner says so.
  const SegmentLogStats st = (*log)->Stats();
  EXPECT_EQ(st.segments, 2u);
  EXPECT_EQ(st.live_bytes, fresh->RecordBytes(3));
  (*log)->AddLive(old, 3);
  EXPECT_EQ((*log)->Stats().live_bytes, fresh->RecordBytes(3) + old.RecordBytes(3));
}

TEST(SegmentLog, OpensThatWriteNothingLeaveNoEmptySegments) {
  Fixture f;
  for (int i = 0; i < 3; ++i) {
    auto log = SegmentLog::Open(f.Options());
    ASSERT_TRUE(log.ok());
  }
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(f.dir.path() + "/segments")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);  // the last open's, still empty
  auto log = SegmentLog::Open(f.Options());
  ASSERT_TRUE(log.ok());
  EXPECT_EQ((*log)->Stats().segments, 1u);
}

TEST(SegmentLog, ReleasedSpaceMakesSealedSegmentsReclaimable) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options(1 << 20));
  ASSERT_TRUE(log.ok());
  std::vector<SegmentLocation> locs;
  for (int i = 0; i < 7; ++i) locs.push_back(*(*log)->Append("k" + std::to_string(i), Bytes(300 << 10, 1)));
  // Segments 0 and 1 are sealed and full; 2 is being appended to.
  EXPECT_TRUE((*log)->Reclaimable(0.5).empty());
  (*log)->Release(locs[0], 2);
  (*log)->Release(locs[1], 2);   // segment 0: one third live
  (*log)->Release(locs[3], 2);   // segment 1: two thirds live
  (*log)->Release(locs[6], 2);   // the current segment never is a candidate
  EXPECT_EQ((*log)->Reclaimable(0.5), std::vector<uint32_t>{0});
  EXPECT_EQ((*log)->Reclaimable(0.9), (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ((*log)->RemoveSegment(2).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*log)->RemoveSegment(9).code(), absl::StatusCode::kNotFound);
  const uint64_t before = (*log)->Stats().file_bytes;
  ASSERT_TRUE((*log)->RemoveSegment(0).ok());
  EXPECT_EQ((*log)->Stats().file_bytes, before - 3 * locs[0].RecordBytes(2));
  EXPECT_EQ((*log)->Read(locs[2], "k2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(::access((f.dir.path() + "/segments/00000000.seg").c_str(), F_OK) == 0);
  EXPECT_TRUE((*log)->Read(locs[4], "k4").ok());
}

void AppendFromThreads(SegmentLog& log, int threads, int each) {
  std::vector<std::thread> pool;
  std::vector<std::vector<SegmentLocation>> locs(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < each; ++i) {
        auto loc = log.Append("t" + std::to_string(t) + "-" + std::to_string(i), Bytes(20000 + i, char(t)));
        ASSERT_TRUE(loc.ok()) << loc.status();
        locs[t].push_back(*loc);
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < each; ++i) {
      auto v = log.Read(locs[t][i], "t" + std::to_string(t) + "-" + std::to_string(i));
      ASSERT_TRUE(v.ok()) << v.status();
      ASSERT_EQ(*v, Bytes(20000 + i, char(t)));
    }
}

TEST(SegmentLog, ConcurrentAppendsAllReadBack) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options(1 << 20));
  ASSERT_TRUE(log.ok());
  AppendFromThreads(**log, 4, 100);
  const SegmentLogStats st = (*log)->Stats();
  EXPECT_EQ(st.appends, 400u);
  EXPECT_EQ(st.live_bytes, st.file_bytes);
}

// Writers in lanes of their own leave several files partly filled; every
// record still reads back after a reopen, live bytes are all counted
// again, and the reopened log appends to a file newer than all of them.
TEST(SegmentLog, LanesOfConcurrentWritersReopenWhole) {
  Fixture f;
  std::vector<std::pair<std::string, SegmentLocation>> written;
  uint32_t highest = 0;
  {
    SegmentLogOptions o = f.Options(1 << 20);
    o.lanes = 8;
    auto log = SegmentLog::Open(o);
    ASSERT_TRUE(log.ok());
    std::mutex mu;
    std::vector<std::thread> pool;
    for (int t = 0; t < 8; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < 40; ++i) {
          const std::string key = "k" + std::to_string(t) + "-" + std::to_string(i);
          auto loc = (*log)->Append(key, Bytes(30000 + 7 * i, char(t)));
          ASSERT_TRUE(loc.ok()) << loc.status();
          std::lock_guard<std::mutex> lock(mu);
          written.emplace_back(key, *loc);
        }
      });
    }
    for (auto& th : pool) th.join();
    EXPECT_EQ((*log)->Stats().appends, 320u);
  }
  for (const auto& [key, loc] : written) highest = std::max(highest, loc.segment);
  auto log = SegmentLog::Open(f.Options(1 << 20));
  ASSERT_TRUE(log.ok());
  for (const auto& [key, loc] : written) {
    (*log)->AddLive(loc, key.size());
    auto v = (*log)->Read(loc, key);
    ASSERT_TRUE(v.ok()) << key << ": " << v.status();
    const int t = key[1] - '0';
    const int i = std::stoi(key.substr(key.find('-') + 1));
    ASSERT_EQ(*v, Bytes(30000 + 7 * i, char(t))) << key;
  }
  const SegmentLogStats st = (*log)->Stats();
  EXPECT_EQ(st.live_bytes, st.file_bytes);
  auto fresh = (*log)->Append("after", "reopen");
  ASSERT_TRUE(fresh.ok());
  EXPECT_GT(fresh->segment, highest);
}

// Once every record is released, every segment but the first lane's open
// one can be collected: lanes that bursts of concurrent writers opened are
// sealed by Reclaimable rather than kept open, dead bytes and all.
TEST(SegmentLog, IdleLanesAreSealedForCollection) {
  Fixture f;
  SegmentLogOptions o = f.Options(1 << 20);
  o.lanes = 8;
  auto log = SegmentLog::Open(o);
  ASSERT_TRUE(log.ok());
  std::mutex mu;
  std::vector<std::pair<std::string, SegmentLocation>> written;
  std::vector<std::thread> pool;
  for (int t = 0; t < 8; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const std::string key = "k" + std::to_string(t) + "-" + std::to_string(i);
        auto loc = (*log)->Append(key, Bytes(200000, char(t + i)));
        ASSERT_TRUE(loc.ok()) << loc.status();
        std::lock_guard<std::mutex> lock(mu);
        written.emplace_back(key, *loc);
      }
    });
  }
  for (auto& th : pool) th.join();
  for (const auto& [key, loc] : written) (*log)->Release(loc, key.size());
  for (const uint32_t id : (*log)->Reclaimable(0.5)) ASSERT_TRUE((*log)->RemoveSegment(id).ok()) << id;
  const SegmentLogStats st = (*log)->Stats();
  EXPECT_EQ(st.segments, 1u);
  EXPECT_EQ(st.live_bytes, 0u);
  // Writers start new files where they need them.
  AppendFromThreads(**log, 4, 10);
}

TEST(SegmentLog, PaddedLocationsCarryTheirOwnMagic) {
  const SegmentLocation loc{3, 8192, 1, /*padded=*/true};
  const std::string e = loc.Encode();
  ASSERT_EQ(e.size(), 20u);
  EXPECT_EQ(e.substr(0, 4), "QSLA");
  EXPECT_EQ(SegmentLocation::Decode(e), loc);
  EXPECT_EQ(loc.RecordBytes(5), kSegmentDirectAlign);  // 24 + 5 + 1, padded
  SegmentLocation plain = loc;
  plain.padded = false;
  EXPECT_EQ(plain.Encode().substr(0, 4), "QSLC");
  EXPECT_EQ(plain.RecordBytes(5), 30u);
}

// Direct appends: every record starts on a 4 KiB boundary and takes whole
// blocks, the padding counts as the record's (so a segment of live records
// is wholly live, before and after a reopen without direct I/O), and every
// value reads back through the page cache.
TEST(SegmentLog, DirectAppendsArePaddedAndReadBack) {
  Fixture f;
  SegmentLogOptions o = f.Options(4 << 20);
  o.direct_io = true;
  std::vector<std::pair<std::string, SegmentLocation>> written;
  // Exactly a block, one byte over, one byte, and values of no round size.
  const std::vector<size_t> sizes = {4096 - 24 - 5, 4096 - 24 - 5 + 1, 1, 100000, 300 << 10, 65536};
  uint64_t total = 0;
  {
    auto log = SegmentLog::Open(o);
    ASSERT_TRUE(log.ok()) << log.status();
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string key = "key-" + std::to_string(i);
      auto loc = (*log)->Append(key, Bytes(sizes[i], char(i)));
      ASSERT_TRUE(loc.ok()) << loc.status();
      EXPECT_TRUE(loc->padded);
      EXPECT_EQ(loc->offset % kSegmentDirectAlign, 0u) << i;
      EXPECT_EQ(loc->offset, total) << i;
      EXPECT_EQ(loc->RecordBytes(key.size()) % kSegmentDirectAlign, 0u) << i;
      total += loc->RecordBytes(key.size());
      written.emplace_back(key, *loc);
    }
    EXPECT_EQ(written[0].second.RecordBytes(5), 4096u);
    EXPECT_EQ(written[1].second.RecordBytes(5), 8192u);
    for (size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_EQ(*(*log)->Read(written[i].second, written[i].first), Bytes(sizes[i], char(i)));
    }
    const SegmentLogStats st = (*log)->Stats();
    EXPECT_EQ(st.file_bytes, total);
    EXPECT_EQ(st.live_bytes, total);
    EXPECT_EQ(st.appended_bytes, total);
    EXPECT_EQ(std::filesystem::file_size(f.dir.path() + "/segments/00000000.seg"), total);
  }
  auto log = SegmentLog::Open(f.Options(4 << 20));  // buffered now
  ASSERT_TRUE(log.ok()) << log.status();
  for (const auto& [key, loc] : written) (*log)->AddLive(loc, key.size());
  EXPECT_EQ((*log)->Stats().live_bytes, total);
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(*(*log)->Read(written[i].second, written[i].first), Bytes(sizes[i], char(i)));
  }
  auto fresh = (*log)->Append("new", "buffered");
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->padded);
  for (const auto& [key, loc] : written) (*log)->Release(loc, key.size());
  EXPECT_EQ((*log)->Stats().live_bytes, fresh->RecordBytes(3));
  EXPECT_EQ((*log)->Reclaimable(0.5), std::vector<uint32_t>{0});
}

// Concurrent direct appends in lanes, some rolling over into new segments
// (whose O_DIRECT descriptors are closed once sealed), with group-committed
// fdatasync: all read back, and live bytes are the files' bytes.
TEST(SegmentLog, ConcurrentDirectAppendsAllReadBack) {
  for (const bool sync : {false, true}) {
    Fixture f;
    SegmentLogOptions o = f.Options(1 << 20, sync);
    o.direct_io = true;
    auto log = SegmentLog::Open(o);
    ASSERT_TRUE(log.ok()) << log.status();
    AppendFromThreads(**log, 4, 60);
    const SegmentLogStats st = (*log)->Stats();
    EXPECT_EQ(st.appends, 240u);
    EXPECT_GT(st.segments, 4u);
    EXPECT_EQ(st.live_bytes, st.file_bytes);
    EXPECT_EQ(st.file_bytes % kSegmentDirectAlign, 0u);
    EXPECT_EQ(st.syncs > 0, sync);
  }
}

// A log reopened in direct mode reads what a buffered run wrote (records
// at any offset, a file ending mid-block) with O_DIRECT, and still finds
// locations that do not name a record.
TEST(SegmentLog, BufferedSegmentsReadBackInDirectMode) {
  Fixture f;
  std::vector<SegmentLocation> locs;
  {
    auto log = SegmentLog::Open(f.Options());
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 12; ++i) {
      locs.push_back(*(*log)->Append("key-" + std::to_string(i), Bytes(777 * i + 1, char(i))));
    }
  }
  SegmentLogOptions o = f.Options();
  o.direct_io = true;
  auto log = SegmentLog::Open(o);
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 11; i >= 0; --i) {
    auto v = (*log)->Read(locs[i], "key-" + std::to_string(i));
    ASSERT_TRUE(v.ok()) << i << ": " << v.status();
    EXPECT_EQ(*v, Bytes(777 * i + 1, char(i)));
  }
  EXPECT_NE(locs[11].offset % kSegmentDirectAlign, 0u);
  SegmentLocation inside = locs[5];
  inside.offset += 10;
  EXPECT_EQ((*log)->Read(inside, "key-5").status().code(), absl::StatusCode::kDataLoss);
  SegmentLocation past = locs[11];
  past.length += 100;
  EXPECT_EQ((*log)->Read(past, "key-11").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ((*log)->Read(locs[3], "key-4").status().code(), absl::StatusCode::kDataLoss);
  // New appends are padded, and both kinds read.
  auto fresh = (*log)->Append("new", Bytes(5000, 9));
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->padded);
  EXPECT_EQ(*(*log)->Read(*fresh, "new"), Bytes(5000, 9));
}

// A record whose location is not yet recorded by its owner keeps its
// segment from the collector: otherwise a collector scanning the owner's
// index in between would not move it, and would delete it with the segment.
TEST(SegmentLog, UnsettledRecordsHoldTheirSegment) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options(1 << 20));
  ASSERT_TRUE(log.ok());
  auto held = (*log)->AppendUnsettled("held", Bytes(300 << 10, 1));
  ASSERT_TRUE(held.ok()) << held.status();
  std::vector<SegmentLocation> locs;
  for (int i = 0; i < 5; ++i) locs.push_back(*(*log)->Append("k" + std::to_string(i), Bytes(300 << 10, 2)));
  ASSERT_EQ(held->segment, 0u);
  ASSERT_EQ(locs[2].segment, 1u);  // segment 0 is sealed
  (*log)->Release(*held, 4);
  (*log)->Release(locs[0], 2);
  (*log)->Release(locs[1], 2);  // segment 0 holds nothing live
  EXPECT_TRUE((*log)->Reclaimable(0.5).empty());
  EXPECT_EQ((*log)->RemoveSegment(0).code(), absl::StatusCode::kFailedPrecondition);
  (*log)->Settle(*held);
  EXPECT_EQ((*log)->Reclaimable(0.5), std::vector<uint32_t>{0});
  EXPECT_TRUE((*log)->RemoveSegment(0).ok());
}

TEST(SegmentLog, SyncedAppendsShareFlushes) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options(1 << 20, /*sync=*/true));
  ASSERT_TRUE(log.ok());
  AppendFromThreads(**log, 4, 50);
  const SegmentLogStats st = (*log)->Stats();
  EXPECT_EQ(st.appends, 200u);
  // Every append was flushed by some fdatasync, never more than one each.
  EXPECT_GT(st.syncs, 0u);
  EXPECT_LE(st.syncs, st.appends + st.segments);
}

// A batch is one contiguous range written by one call (one fdatasync with
// sync), each record where a lone append would have put it: padded records
// stay aligned, and every location reads back, before and after a reopen.
TEST(SegmentLog, BatchesAreOneWriteOfContiguousRecords) {
  for (const bool direct : {false, true}) {
    for (const bool sync : {false, true}) {
      Fixture f;
      SegmentLogOptions o = f.Options(4 << 20, sync);
      o.direct_io = direct;
      std::vector<std::string> keys, values;
      for (int i = 0; i < 9; ++i) {
        keys.push_back("page-" + std::to_string(i));
        values.push_back(Bytes(i == 4 ? 1 : 40000 + 4093 * i, char(i)));
      }
      std::vector<SegmentRecord> records;
      for (int i = 0; i < 9; ++i) records.push_back({keys[i], values[i]});
      std::vector<SegmentLocation> locs;
      {
        auto log = SegmentLog::Open(o);
        ASSERT_TRUE(log.ok()) << log.status();
        ASSERT_TRUE((*log)->Append("first", "x").ok());
        auto got = (*log)->AppendUnsettled(records);
        ASSERT_TRUE(got.ok()) << got.status();
        locs = *got;
        ASSERT_EQ(locs.size(), 9u);
        uint64_t at = direct ? kSegmentDirectAlign : 24 + 5 + 1;
        for (int i = 0; i < 9; ++i) {
          EXPECT_EQ(locs[i].segment, 0u);
          EXPECT_EQ(locs[i].offset, at) << i;
          EXPECT_EQ(locs[i].padded, direct);
          EXPECT_EQ(locs[i].length, values[i].size());
          at += locs[i].RecordBytes(keys[i].size());
          EXPECT_EQ(*(*log)->Read(locs[i], keys[i]), values[i]) << i;
        }
        // Unsettled until each is settled: the segment cannot go meanwhile.
        EXPECT_EQ((*log)->RemoveSegment(0).code(), absl::StatusCode::kFailedPrecondition);
        for (const SegmentLocation& loc : locs) (*log)->Settle(loc);
        const SegmentLogStats st = (*log)->Stats();
        EXPECT_EQ(st.appends, 10u);
        EXPECT_EQ(st.writes, 2u);
        EXPECT_EQ(st.file_bytes, at);
        EXPECT_EQ(st.live_bytes, at);
        EXPECT_EQ(st.syncs, sync ? 2u : 0u);
        EXPECT_TRUE((*log)->AppendUnsettled(std::span<const SegmentRecord>()).ok());
        // A bad record refuses the whole batch before anything is written.
        std::vector<SegmentRecord> bad = records;
        bad[5].key = "";
        EXPECT_EQ((*log)->AppendUnsettled(bad).status().code(),
                  absl::StatusCode::kInvalidArgument);
        EXPECT_EQ((*log)->Stats().file_bytes, at);
      }
      auto log = SegmentLog::Open(o);
      ASSERT_TRUE(log.ok()) << log.status();
      for (int i = 8; i >= 0; --i) EXPECT_EQ(*(*log)->Read(locs[i], keys[i]), values[i]) << i;
    }
  }
}

// A direct batch larger than the 4 MiB staging buffer goes through it in
// several writes; records straddle the writes' boundaries and read back, also
// after a reopen.
TEST(SegmentLog, DirectBatchesLargerThanTheStagingBufferReadBack) {
  Fixture f;
  SegmentLogOptions o = f.Options(64 << 20);
  o.direct_io = true;
  std::vector<std::string> keys, values;
  for (int i = 0; i < 7; ++i) {
    keys.push_back("page-" + std::to_string(i));
    values.push_back(Bytes((1 << 20) + 12345 * i, char(i)));  // ~7.2 MiB in all
  }
  std::vector<SegmentRecord> records;
  for (int i = 0; i < 7; ++i) records.push_back({keys[i], values[i]});
  std::vector<SegmentLocation> locs;
  {
    auto log = SegmentLog::Open(o);
    ASSERT_TRUE(log.ok()) << log.status();
    auto got = (*log)->AppendUnsettled(records);
    ASSERT_TRUE(got.ok()) << got.status();
    locs = *got;
    uint64_t at = 0;
    for (int i = 0; i < 7; ++i) {
      EXPECT_EQ(locs[i].offset, at) << i;
      at += locs[i].RecordBytes(keys[i].size());
      EXPECT_EQ(*(*log)->Read(locs[i], keys[i]), values[i]) << i;
      (*log)->Settle(locs[i]);
    }
    const SegmentLogStats st = (*log)->Stats();
    EXPECT_EQ(st.writes, (at + (4u << 20) - 1) / (4u << 20));  // 2
    EXPECT_EQ(st.writes, 2u);
    EXPECT_EQ(st.appended_bytes, at);
    EXPECT_EQ(std::filesystem::file_size(f.dir.path() + "/segments/00000000.seg"), at);
  }
  auto log = SegmentLog::Open(o);
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 6; i >= 0; --i) EXPECT_EQ(*(*log)->Read(locs[i], keys[i]), values[i]) << i;
}

// More records than one pwritev takes (IOV_MAX iovecs, three per record).
TEST(SegmentLog, BatchesBeyondOneSystemCallsIovecsReadBack) {
  Fixture f;
  auto log = SegmentLog::Open(f.Options(4 << 20));
  ASSERT_TRUE(log.ok());
  std::vector<std::string> keys, values;
  for (int i = 0; i < 700; ++i) {
    keys.push_back("k" + std::to_string(i));
    values.push_back(Bytes(100 + i, char(i)));
  }
  std::vector<SegmentRecord> records;
  for (int i = 0; i < 700; ++i) records.push_back({keys[i], values[i]});
  auto locs = (*log)->AppendUnsettled(records);
  ASSERT_TRUE(locs.ok()) << locs.status();
  for (int i = 0; i < 700; i += 7) EXPECT_EQ(*(*log)->Read((*locs)[i], keys[i]), values[i]) << i;
  EXPECT_EQ(*(*log)->Read((*locs)[699], keys[699]), values[699]);
}

TEST(SegmentLog, BadArgumentsAreRefused) {
  Fixture f;
  EXPECT_EQ(SegmentLog::Open({"", 1 << 20, false}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SegmentLog::Open(f.Options(4096)).status().code(), absl::StatusCode::kInvalidArgument);
  for (const int lanes : {0, 65}) {
    SegmentLogOptions o = f.Options();
    o.lanes = lanes;
    const absl::Status st = SegmentLog::Open(o).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << lanes;
    EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("segment_log.lanes"));
  }
  auto log = SegmentLog::Open(f.Options());
  ASSERT_TRUE(log.ok());
  EXPECT_EQ((*log)->Append("", "v").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*log)->Stats().appends, 0u);
  // A directory that cannot be created.
  auto blocked = SegmentLog::Open({"/proc/qaqkv-no/segments", 1 << 20, false});
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kUnavailable) << blocked.status();
}

}  // namespace
}  // namespace qaqkv::storage
