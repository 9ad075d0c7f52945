#include "base/reloading_files.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

// The loader reads both files; it refuses a first file that says "bad".
absl::StatusOr<std::shared_ptr<const std::string>> LoadBoth(const std::string& a,
                                                            const std::string& b) {
  QAQKV_ASSIGN_OR_RETURN(const std::string x, ReadFile(a, "a"));
  QAQKV_ASSIGN_OR_RETURN(const std::string y, ReadFile(b, "b"));
  if (x == "bad") return absl::InvalidArgumentError("a: bad");
  return std::make_shared<const std::string>(x + "+" + y);
}

// Writes by renaming a new file in, as a Secret volume or cert-manager
// does: a new inode, so a new version whatever the clock's resolution.
void Put(const std::string& path, const std::string& contents) {
  ASSERT_TRUE(WriteFileAtomically(path, contents, "test").ok());
}

TEST(ReloadingFiles, ChangesLoadAndRefusedOnesKeepTheValueBefore) {
  TempDir dir = *TempDir::Create("qaqkv-reloading");
  const std::string a = dir.path() + "/a", b = dir.path() + "/b";
  Put(a, "one");
  Put(b, "x");
  int loads = 0;
  auto files = ReloadingFiles<std::string>::Open({a, b}, [&] {
    ++loads;
    return LoadBoth(a, b);
  });
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*(*files)->Get(), "one+x");
  EXPECT_EQ(*(*files)->Reload(), false);  // nothing changed: not loaded again
  EXPECT_EQ(loads, 1);

  std::shared_ptr<const std::string> before = (*files)->Get();
  Put(b, "y");  // the second file alone
  EXPECT_EQ(*(*files)->Reload(), true);
  EXPECT_EQ(*(*files)->Get(), "one+y");
  EXPECT_EQ(*before, "one+x");  // a value handed out stays as it was

  Put(a, "bad");
  const absl::StatusOr<bool> refused = (*files)->Reload();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*(*files)->Get(), "one+y");
  const int after_refusal = loads;
  EXPECT_EQ(*(*files)->Reload(), false);  // the refused version is not tried again
  EXPECT_EQ(loads, after_refusal);

  Put(a, "two");
  EXPECT_EQ(*(*files)->Reload(), true);
  EXPECT_EQ(*(*files)->Get(), "two+y");
}

TEST(ReloadingFiles, AFirstLoadThatFailsIsTheError) {
  TempDir dir = *TempDir::Create("qaqkv-reloading");
  const std::string a = dir.path() + "/a", b = dir.path() + "/missing";
  Put(a, "one");
  auto files = ReloadingFiles<std::string>::Open({a, b}, [&] { return LoadBoth(a, b); });
  EXPECT_FALSE(files.ok());
  EXPECT_NE(files.status().message().find("missing"), std::string_view::npos) << files.status();
}

}  // namespace
}  // namespace qaqkv::base
