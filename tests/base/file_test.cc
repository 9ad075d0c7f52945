#include "base/file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "qaqkv-file-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileTest, ReadsWhatWasWrittenAtomically) {
  const std::string path = dir_ + "/port";
  ASSERT_TRUE(WriteFileAtomically(path, std::string("7070\n\0x", 7), "--port-file").ok());
  auto got = ReadFile(path, "--port-file");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::string("7070\n\0x", 7));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  ASSERT_TRUE(WriteFileAtomically(path, "8080\n", "--port-file").ok());
  EXPECT_EQ(*ReadFile(path, "--port-file"), "8080\n");
}

TEST_F(FileTest, ErrorsNameTheFieldThePathAndTheReason) {
  auto missing = ReadFile(dir_ + "/nope", "--tls-cert");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("--tls-cert: cannot read " + dir_ + "/nope"),
            absl::string_view::npos)
      << missing.status();
  EXPECT_EQ(ReadFile(dir_, "--config").status().code(), absl::StatusCode::kInvalidArgument);
  const absl::Status no_dir = WriteFileAtomically(dir_ + "/a/b/port", "1", "--port-file");
  EXPECT_EQ(no_dir.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(no_dir.message().find("--port-file: cannot write"), absl::string_view::npos) << no_dir;
}

TEST_F(FileTest, UnreadableFileIsPermissionDenied) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads any file";
  const std::string path = dir_ + "/secret";
  std::ofstream(path) << "x";
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  EXPECT_EQ(ReadFile(path, "--auth-tokens").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(TempDirTest, RemovedWithItsContentsUnlessKeptAndMovesOwnership) {
  std::string removed, kept, moved_to;
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("qaqkv-tempdir-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    removed = dir->path();
    EXPECT_NE(removed.find("/qaqkv-tempdir-test-"), std::string::npos) << removed;
    ASSERT_TRUE(std::filesystem::is_directory(removed));
    std::filesystem::create_directories(removed + "/sub");
    std::ofstream(removed + "/sub/file") << "x";
  }
  EXPECT_FALSE(std::filesystem::exists(removed));
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("qaqkv-tempdir-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    kept = dir->path();
    dir->Keep();
  }
  EXPECT_TRUE(std::filesystem::is_directory(kept));
  std::filesystem::remove_all(kept);
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("qaqkv-tempdir-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    TempDir owner(std::move(*dir));
    moved_to = owner.path();
    dir = absl::UnknownError("the moved-from one goes first");  // must not remove it
    EXPECT_TRUE(std::filesystem::is_directory(moved_to));
  }
  EXPECT_FALSE(std::filesystem::exists(moved_to));
}

// Tests take write permission away to provoke errors (the directory itself
// or one inside, with entries); the directory still goes. Root ignores the
// permissions, so there this only checks that removal works.
TEST(TempDirTest, RemovesDirectoriesLeftWithoutWritePermission) {
  namespace fs = std::filesystem;
  std::string path;
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("qaqkv-tempdir-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    path = dir->path();
    fs::create_directories(path + "/ro/deeper");
    std::ofstream(path + "/ro/deeper/file") << "x";
    std::ofstream(path + "/ro/file") << "x";
    fs::create_directory_symlink(path + "/ro", path + "/link");
    fs::permissions(path + "/ro/deeper", fs::perms::owner_read | fs::perms::owner_exec);
    fs::permissions(path + "/ro", fs::perms::owner_read | fs::perms::owner_exec);
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_exec);
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(TempDirTest, AnUnusableParentIsAnErrorNamingIt) {
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  setenv("TMPDIR", "/proc/qaqkv-no-such-dir", 1);
  absl::StatusOr<TempDir> dir = TempDir::Create("x");
  if (old) {
    setenv("TMPDIR", saved.c_str(), 1);
  } else {
    unsetenv("TMPDIR");
  }
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("temporary directory"), absl::string_view::npos)
      << dir.status();
}

}  // namespace
// The probe answers for an ordinary directory (every file system CI runs
// on has O_DIRECT), creates a missing one, leaves nothing behind, and names
// the field when the directory cannot be made.
TEST(DirectIoSupportedTest, ProbesAndCleansUp) {
  auto dir = TempDir::Create("qaqkv-direct-probe");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string sub = dir->path() + "/a/b";
  absl::StatusOr<bool> ok = DirectIoSupported(sub, "--data-dir");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(*ok);
  EXPECT_TRUE(std::filesystem::is_directory(sub));
  EXPECT_TRUE(std::filesystem::is_empty(sub));
  absl::StatusOr<bool> bad = DirectIoSupported("/proc/qaqkv-no/segments", "--data-dir");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("--data-dir"));
}

}  // namespace qaqkv::base
