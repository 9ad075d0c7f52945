#include "storage/rocksdb_tier.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "tests/storage/test_util.h"
#include "xxhash.h"

namespace qaqkv::storage {
namespace {

namespace fs = std::filesystem;
using testing::FakePage;
using testing::MakeTempDir;



std::unique_ptr<RocksDbTier> OpenAt(const std::string& path) {
  auto t = RocksDbTier::Open({path});
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(RocksDbTierTest, PutGetAndPersistAcrossReopen) {
  base::TempDir dir = MakeTempDir();
  const std::string page = FakePage(256 * 1024, 1);
  {
    auto t = OpenAt(dir.path() + "/db");
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(t->PutPage("P-key", page).ok());
    ASSERT_TRUE(t->Put(Column::kBlocks, "B-key", "record").ok());
    auto got = t->GetPage("P-key");
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, page);
  }
  auto t = OpenAt(dir.path() + "/db");
  ASSERT_NE(t, nullptr);
  auto got = t->GetPage("P-key");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, page);
  EXPECT_EQ(*t->Get(Column::kBlocks, "B-key"), "record");
  // Columns are separate key spaces.
  EXPECT_EQ(t->Get(Column::kSessions, "B-key").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t->GetPage("missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(RocksDbTierTest, RejectsPagesWhoseChecksumIsWrong) {
  base::TempDir dir = MakeTempDir();
  auto t = OpenAt(dir.path());
  std::string page = FakePage(1000, 2);
  page[10] ^= 1;
  EXPECT_EQ(t->PutPage("k", page).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t->PutPage("k", "short").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t->GetPage("k").status().code(), absl::StatusCode::kNotFound);  // nothing stored
}

// A value corrupted behind the tier's back (here written raw) is detected on
// read, counted, and dropped so it is never served.
TEST(RocksDbTierTest, CorruptStoredPageIsDataLossAndDropped) {
  base::TempDir dir = MakeTempDir();
  auto t = OpenAt(dir.path());
  std::string page = FakePage(5000, 3);
  page[100] ^= 0x40;
  ASSERT_TRUE(t->Put(Column::kPages, "k", page).ok());
  EXPECT_EQ(t->GetPage("k").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(t->Stats().checksum_failures, 1u);
  EXPECT_EQ(t->GetPage("k").status().code(), absl::StatusCode::kNotFound);
}

// Flipping bytes inside the blob files on disk: reads never return the
// flipped bytes as a page (kDataLoss from RocksDB's own checks or ours), and
// the database still reopens.
TEST(RocksDbTierTest, FlippedBlobFileBytesAreNeverServed) {
  base::TempDir dir = MakeTempDir();
  const std::string page = FakePage(64 * 1024, 4);
  {
    auto t = OpenAt(dir.path());
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(t->PutPage("k" + std::to_string(i), page).ok());
    ASSERT_TRUE(t->Flush().ok());
  }
  int flipped = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path().extension() != ".blob") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    const auto size = fs::file_size(e.path());
    for (uint64_t off = 4096; off + 1 < size; off += 8192) {
      f.seekg(off);
      char c;
      f.read(&c, 1);
      c ^= 0x5a;
      f.seekp(off);
      f.write(&c, 1);
      ++flipped;
    }
  }
  ASSERT_GT(flipped, 0) << "no blob files: BlobDB is not on";
  auto t = OpenAt(dir.path());
  ASSERT_NE(t, nullptr);
  int lost = 0;
  for (int i = 0; i < 4; ++i) {
    auto got = t->GetPage("k" + std::to_string(i));
    if (got.ok()) {
      EXPECT_EQ(*got, page);  // an untouched page reads back intact
    } else {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
      ++lost;
    }
  }
  // A byte flipped every 8 KiB hits every 64 KiB page.
  EXPECT_EQ(lost, 4);
}

TEST(RocksDbTierTest, PrefixScansAndDeletes) {
  base::TempDir dir = MakeTempDir();
  auto t = OpenAt(dir.path());
  for (const char* k : {"a/1", "a/2", "a/3", "b/1"}) ASSERT_TRUE(t->Put(Column::kBlocks, k, k).ok());
  auto keys = t->Keys(Column::kBlocks, "a/");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"a/1", "a/2", "a/3"}));
  EXPECT_EQ(t->Keys(Column::kBlocks, "a/", 2)->size(), 2u);
  ASSERT_TRUE(t->DeletePrefix(Column::kBlocks, "a/").ok());
  EXPECT_TRUE(t->Keys(Column::kBlocks, "a/")->empty());
  EXPECT_EQ(*t->Get(Column::kBlocks, "b/1"), "b/1");
}

TEST(RocksDbTierTest, BadDirectoriesGiveClearErrors) {
  EXPECT_EQ(RocksDbTier::Open({""}).status().code(), absl::StatusCode::kInvalidArgument);
  base::TempDir dir = MakeTempDir();
  // A path under a regular file cannot be created.
  const std::string file = dir.path() + "/file";
  std::ofstream(file) << "x";
  auto r = RocksDbTier::Open({file + "/db"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  // A directory without write permission (root ignores permissions, so only
  // check when they apply).
  if (geteuid() != 0) {
    const std::string ro = dir.path() + "/ro";
    fs::create_directory(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_FALSE(RocksDbTier::Open({ro + "/db"}).ok());
  }
  // A missing directory is created.
  auto ok = RocksDbTier::Open({dir.path() + "/new/nested/db"});
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST(RocksDbTierTest, DiskBytesCountBlobs) {
  base::TempDir dir = MakeTempDir();
  auto t = RocksDbTier::Open({dir.path(), /*sync=*/true});
  ASSERT_TRUE(t.ok());
  const std::string page = FakePage(256 * 1024, 5);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE((*t)->PutPage("k" + std::to_string(i), page).ok());
  ASSERT_TRUE((*t)->Flush().ok());
  // The eight pages now sit in blob files (plus a little SST metadata).
  EXPECT_GE((*t)->DiskBytes(), 8u * page.size());
  EXPECT_LT((*t)->DiskBytes(), 8u * page.size() + (1u << 20));
}

}  // namespace
}  // namespace qaqkv::storage

namespace qaqkv::storage {
namespace {

// A data directory nobody may write to, root included: the immutable
// attribute (chattr +i). Opening fails with a clear error, nothing crashes,
// and once the directory is writable again the data is all there.
TEST(RocksDbTierTest, UnwritableDirectoryFailsCleanlyAndRecovers) {
  base::TempDir dir = MakeTempDir();
  const std::string db = dir.path() + "/db";
  const std::string page = FakePage(8000, 6);
  {
    auto t = OpenAt(db);
    ASSERT_TRUE(t->PutPage("k", page).ok());
  }
  if (std::system(("chattr +i " + db + " 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "chattr +i is not available on this filesystem";
  }
  auto r = RocksDbTier::Open({db});
  ASSERT_EQ(std::system(("chattr -i " + db).c_str()), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find(db), std::string::npos) << r.status();
  auto t = OpenAt(db);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(*t->GetPage("k"), page);
}

}  // namespace
}  // namespace qaqkv::storage
