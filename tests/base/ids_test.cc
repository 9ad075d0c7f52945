#include "base/ids.h"

#include <string>

#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

TEST(IdsTest, AcceptsPrintableAsciiUpToTheLimit) {
  EXPECT_TRUE(ValidatePrintableId("session_id", "a", 4).ok());
  EXPECT_TRUE(ValidatePrintableId("session_id", "!~az", 4).ok());
  EXPECT_TRUE(ValidatePrintableId("session_id", std::string(1024, 'x'), 1024).ok());
}

TEST(IdsTest, RefusesEmptyLongAndUnprintableNamingTheField) {
  struct Case {
    std::string value;
    std::string message;
  };
  const Case cases[] = {
      {"", "session_id: 0 bytes, must be 1..4"},
      {"abcde", "session_id: 5 bytes, must be 1..4"},
      {"a b", "session_id: byte 1 (0x20) is not printable ASCII without spaces"},
      {"\x7f", "session_id: byte 0 (0x7f) is not printable ASCII without spaces"},
      {std::string("a\0", 2), "session_id: byte 1 (0x00) is not printable ASCII without spaces"},
      {"\xc3\xa9", "session_id: byte 0 (0xc3) is not printable ASCII without spaces"},
  };
  for (const Case& c : cases) {
    const absl::Status s = ValidatePrintableId("session_id", c.value, 4);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(s.message(), c.message);
  }
}

}  // namespace
}  // namespace qaqkv::base
