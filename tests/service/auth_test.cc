// Unit tests of service/auth.h: the token file and the bearer header that
// decide every call's tenant. No server: the parser and the lookup are
// called directly, so every malformed line and every way a header can be
// wrong is checked for its code, for naming the line, and for never echoing
// a token (messages end up in logs and in the client's status).
#include "service/auth.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qaqkv/limits.h"

namespace qaqkv::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::StatusCode kOk = absl::StatusCode::kOk;
constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
constexpr absl::StatusCode kUnauthenticated = absl::StatusCode::kUnauthenticated;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// Distinctive tokens, so a message that echoes one is caught.
constexpr char kTokA[] = "s3cr3t-alice-Zq9";
constexpr char kTokB[] = "s3cr3t-bob-Xk2";

struct ParseCase {
  std::string name;
  std::string text;
  absl::StatusCode code;
  std::string message;  // substring; with kOk, unused
  size_t tokens = 0;    // with kOk: size()
};

TEST(TokenMapTest, Parse) {
  const std::string a = kTokA, b = kTokB;
  const std::string long_tenant(limits::kMaxTenantBytes, 't');
  const std::vector<ParseCase> cases = {
      {"one pair", a + " alice\n", kOk, "", 1},
      {"no final newline", a + " alice", kOk, "", 1},
      {"comments and blank lines", "# tokens\n\n   \n\t\n" + a + " alice\n  # indented\n" + b +
                                       " bob\n#last",
       kOk, "", 2},
      {"CRLF line ends", a + " alice\r\n" + b + " bob\r\n", kOk, "", 2},
      {"tab and repeated separators", a + "\t \talice\n  " + b + "   bob  \n", kOk, "", 2},
      {"tenant of the maximum length", a + " " + long_tenant + "\n", kOk, "", 1},
      {"two tokens of one tenant", a + " alice\n" + b + " alice\n", kOk, "", 2},

      {"empty file", "", kInvalid, "tokens.txt: no tokens"},
      {"only comments and blanks", "# a\n\n# b\n", kInvalid, "tokens.txt: no tokens"},
      {"token without tenant", a + " alice\n" + b + "\n", kInvalid,
       "tokens.txt:2: want `<token> <tenant>`, found 1 fields"},
      {"three fields, line 4", "# c\n\n" + a + " alice\n" + b + " bob extra\n", kInvalid,
       "tokens.txt:4: want `<token> <tenant>`, found 3 fields"},
      {"trailing comment is not a comment", a + " alice # ops\n", kInvalid,
       "tokens.txt:1: want `<token> <tenant>`, found 4 fields"},
      {"tenant too long", "\n" + a + " " + long_tenant + "x\n", kInvalid,
       "tokens.txt:2: tenant: 256 bytes, must be 1..255"},
      {"tenant with a control byte", a + " al\x01ice\n", kInvalid,
       "tokens.txt:1: tenant: byte 2 (0x01)"},
      {"tenant with DEL", a + " alice\x7f\n", kInvalid, "tokens.txt:1: tenant: byte 5 (0x7f)"},
      {"tenant with a non-ASCII byte", a + " \xc3\xa9t\xc3\xa9\n", kInvalid,
       "tokens.txt:1: tenant: byte 0 (0xc3)"},
      {"token given twice, other tenant", a + " alice\n" + b + " bob\n" + a + " carol\n",
       kInvalid, "tokens.txt:3: token given twice"},
      {"token given twice, same tenant", "# x\n" + a + " alice\n" + a + " alice\n", kInvalid,
       "tokens.txt:3: token given twice"},
  };
  for (const ParseCase& c : cases) {
    SCOPED_TRACE(c.name);
    const auto got = TokenMap::Parse(c.text, "tokens.txt");
    EXPECT_EQ(got.status().code(), c.code) << got.status();
    if (c.code == kOk) {
      if (got.ok()) {
        EXPECT_EQ(got->size(), c.tokens);
      }
      continue;
    }
    EXPECT_THAT(Msg(got.status()), HasSubstr(c.message));
    // The file is a secret: no message quotes a token.
    EXPECT_THAT(Msg(got.status()), Not(HasSubstr("s3cr3t")));
  }
}

TEST(TokenMapTest, ParsedTenantsAreTheSecondField) {
  const auto map = TokenMap::Parse(
      std::string("# ops\n") + kTokA + " alice\r\n\n" + kTokB + "\tbob \n", "t");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->TenantFor(std::string("Bearer ") + kTokA).value_or("?"), "alice");
  EXPECT_EQ(map->TenantFor(std::string("Bearer ") + kTokB).value_or("?"), "bob");
}

class TokenMapFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = ::testing::TempDir() + "/auth_test_" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const std::string& p : paths_) std::remove(p.c_str());
  }
  std::vector<std::string> paths_;
};

TEST_F(TokenMapFileTest, LoadParsesTheFileNamedByItsPath) {
  const std::string path =
      Write("ok", std::string("# ops\n") + kTokA + " alice\n\n" + kTokB + " bob\n");
  const auto map = TokenMap::Load(path);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->size(), 2u);
  EXPECT_EQ(map->TenantFor(std::string("Bearer ") + kTokB).value_or("?"), "bob");
  EXPECT_THAT(map->Tenants(), ElementsAre("alice", "bob"));
}

TEST_F(TokenMapFileTest, LoadErrorsNameThePathAndLine) {
  const std::string bad = Write("bad", std::string(kTokA) + " alice\n\n" + kTokB + "\n");
  const auto got = TokenMap::Load(bad);
  EXPECT_EQ(got.status().code(), kInvalid) << got.status();
  EXPECT_THAT(Msg(got.status()), HasSubstr(bad + ":3: "));
  EXPECT_THAT(Msg(got.status()), Not(HasSubstr("s3cr3t")));

  const std::string empty = Write("empty", "");
  const auto none = TokenMap::Load(empty);
  EXPECT_EQ(none.status().code(), kInvalid) << none.status();
  EXPECT_THAT(Msg(none.status()), HasSubstr(empty + ": no tokens"));
}

TEST_F(TokenMapFileTest, LoadMissingFileIsNotFound) {
  const std::string path = ::testing::TempDir() + "/auth_test_no_such_file";
  std::remove(path.c_str());
  const auto got = TokenMap::Load(path);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
  EXPECT_THAT(Msg(got.status()), HasSubstr(path));
}

TEST_F(TokenMapFileTest, LoadUnreadableFileIsNotFoundOrPermissionDenied) {
  const std::string path = Write("unreadable", std::string(kTokA) + " alice\n");
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  if (access(path.c_str(), R_OK) == 0) {
    GTEST_SKIP() << "running with privileges that read a mode-000 file (root)";
  }
  const auto got = TokenMap::Load(path);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kPermissionDenied) << got.status();
  EXPECT_THAT(Msg(got.status()), HasSubstr(path));
}

TEST_F(TokenMapFileTest, LoadDirectoryFails) {
  // A directory opens as a stream on Linux but reads nothing: it must not
  // load as a map (whatever the code, the server must refuse to start).
  const auto got = TokenMap::Load(::testing::TempDir());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
  EXPECT_THAT(Msg(got.status()), HasSubstr(::testing::TempDir()));
}

struct HeaderCase {
  std::string name;
  std::string authorization;
  absl::StatusCode code;
  std::string want;  // tenant with kOk, message substring otherwise
};

TEST(TokenMapTest, TenantFor) {
  const std::string a = kTokA, b = kTokB;
  const auto map = TokenMap::Parse(a + " alice\n" + b + " bob\n", "t");
  ASSERT_TRUE(map.ok()) << map.status();
  const std::vector<HeaderCase> cases = {
      {"Bearer", "Bearer " + a, kOk, "alice"},
      {"other token", "Bearer " + b, kOk, "bob"},
      {"lower-case scheme", "bearer " + a, kOk, "alice"},
      {"upper-case scheme", "BEARER " + b, kOk, "bob"},
      {"mixed-case scheme", "bEaReR " + a, kOk, "alice"},
      {"surrounding whitespace of the token", "Bearer   " + a + " \t", kOk, "alice"},

      {"missing", "", kUnauthenticated, "authorization: missing bearer token"},
      {"scheme only", "Bearer", kUnauthenticated, "authorization: not a bearer token"},
      {"scheme and space only", "Bearer ", kUnauthenticated, "authorization: unknown token"},
      {"scheme and spaces only", "Bearer    ", kUnauthenticated, "authorization: unknown token"},
      {"no scheme", a, kUnauthenticated, "authorization: not a bearer token"},
      {"no space after scheme", "Bearer" + a, kUnauthenticated,
       "authorization: not a bearer token"},
      {"tab after scheme", "Bearer\t" + a, kUnauthenticated,
       "authorization: not a bearer token"},
      {"other scheme", "Basic " + a, kUnauthenticated, "authorization: not a bearer token"},
      {"scheme misspelled", "Bearar " + a, kUnauthenticated,
       "authorization: not a bearer token"},
      {"extra part", "Bearer " + a + " extra", kUnauthenticated, "authorization: unknown token"},
      {"two tokens", "Bearer " + a + " " + b, kUnauthenticated, "authorization: unknown token"},
      {"two tokens, comma", "Bearer " + a + "," + b, kUnauthenticated,
       "authorization: unknown token"},
      {"scheme twice", "Bearer Bearer " + a, kUnauthenticated, "authorization: unknown token"},
      {"unknown token", "Bearer s3cr3t-mallory", kUnauthenticated,
       "authorization: unknown token"},
      {"token is case-sensitive", "Bearer S3CR3T-ALICE-ZQ9", kUnauthenticated,
       "authorization: unknown token"},
      {"prefix of a token", "Bearer " + a.substr(0, a.size() - 1), kUnauthenticated,
       "authorization: unknown token"},
      {"token plus a byte", "Bearer " + a + "x", kUnauthenticated,
       "authorization: unknown token"},
      {"tenant instead of token", "Bearer alice", kUnauthenticated,
       "authorization: unknown token"},
      {"NUL inside", "Bearer " + a + std::string(1, '\0'), kUnauthenticated,
       "authorization: unknown token"},
  };
  for (const HeaderCase& c : cases) {
    SCOPED_TRACE(c.name);
    const auto got = map->TenantFor(c.authorization);
    EXPECT_EQ(got.status().code(), c.code) << got.status();
    if (c.code == kOk) {
      if (got.ok()) {
        EXPECT_EQ(*got, c.want);
      }
      continue;
    }
    EXPECT_THAT(Msg(got.status()), HasSubstr(c.want));
    // Neither the presented credential nor a known token is echoed.
    EXPECT_THAT(Msg(got.status()), Not(HasSubstr("s3cr3t")));
    EXPECT_THAT(Msg(got.status()), Not(HasSubstr("S3CR3T")));
  }
}

TEST(TokenMapTest, DefaultConstructedMapKnowsNoToken) {
  const TokenMap empty;
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_TRUE(empty.Tenants().empty());
  EXPECT_EQ(empty.TenantFor("Bearer anything").status().code(), kUnauthenticated);
}

TEST(TokenMapTest, TenantsSortedWithoutDuplicates) {
  const auto map = TokenMap::Parse(
      "t1 zed\n"
      "t2 alice\n"
      "t3 mallory\n"
      "t4 alice\n"
      "t5 Bob\n"
      "t6 zed\n"
      "t7 alice\n",
      "t");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->size(), 7u);  // tokens, not tenants
  // Byte order: upper case sorts first.
  EXPECT_THAT(map->Tenants(), ElementsAre("Bob", "alice", "mallory", "zed"));
  using Tokens = std::vector<std::string>;
  const auto by_tenant = map->TokensByTenant();
  ASSERT_EQ(by_tenant.size(), 4u);
  EXPECT_EQ(by_tenant[0].first, "Bob");
  EXPECT_EQ(by_tenant[1].first, "alice");
  EXPECT_EQ(by_tenant[1].second, (Tokens{"t2", "t4", "t7"}));
  EXPECT_EQ(by_tenant[3].second, (Tokens{"t1", "t6"}));
}

TEST(TokenMapTest, DefaultTenantIsAValidTenantName) {
  const auto map = TokenMap::Parse(std::string("tok ") + std::string(kDefaultTenant), "t");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_THAT(map->Tenants(), ElementsAre(std::string(kDefaultTenant)));
}

}  // namespace
}  // namespace qaqkv::service
