#include "base/endian.h"

#include <array>
#include <cstdint>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

using ::testing::ElementsAre;

// The bytes are spelled out rather than computed: they are what the on-disk
// formats contain, whatever host wrote them.
TEST(EndianTest, StoresLeastSignificantByteFirst) {
  std::array<uint8_t, 8> b{};
  StoreLe16(b.data(), 0x0102);
  EXPECT_THAT(b, ElementsAre(0x02, 0x01, 0, 0, 0, 0, 0, 0));
  b = {};
  StoreLe32(b.data(), 0x31475351u);  // the segment log's record magic, "QSG1"
  EXPECT_THAT(b, ElementsAre('Q', 'S', 'G', '1', 0, 0, 0, 0));
  b = {};
  StoreLe64(b.data(), 0x0102030405060708u);
  EXPECT_THAT(b, ElementsAre(0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01));
  StoreLe64(b.data(), static_cast<uint64_t>(int64_t{-2}));
  EXPECT_THAT(b, ElementsAre(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
}

TEST(EndianTest, LoadsLeastSignificantByteFirst) {
  const uint8_t b[8] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x81};
  EXPECT_EQ(LoadLe16(b), 0x0708u);
  EXPECT_EQ(LoadLe32(b), 0x05060708u);
  EXPECT_EQ(LoadLe64(b), 0x8102030405060708u);
  EXPECT_EQ(LoadLe32("QSLC"), 0x434c5351u);  // the segment log's location magic
}

TEST(EndianTest, WritesOnlyItsOwnBytesAtAnyAlignment) {
  for (size_t at = 0; at < 8; ++at) {
    std::array<uint8_t, 16> b;
    b.fill(0xaa);
    StoreLe32(b.data() + at, 0xddccbbeeu);
    std::array<uint8_t, 16> want;
    want.fill(0xaa);
    want[at] = 0xee;
    want[at + 1] = 0xbb;
    want[at + 2] = 0xcc;
    want[at + 3] = 0xdd;
    EXPECT_EQ(b, want) << "offset " << at;
    EXPECT_EQ(LoadLe32(b.data() + at), 0xddccbbeeu);
    StoreLe16(b.data() + at, 0xfedc);
    EXPECT_EQ(LoadLe16(b.data() + at), 0xfedcu);
    StoreLe64(b.data() + at, 0x0123456789abcdefu);
    EXPECT_EQ(LoadLe64(b.data() + at), 0x0123456789abcdefu);
  }
}

// The swap a big-endian host applies; checked here because the test hosts
// are little-endian and never run it through the stores and loads.
TEST(EndianTest, ByteSwapReversesTheBytes) {
  static_assert(endian_internal::ByteSwap(uint16_t{0x0102}) == 0x0201);
  static_assert(endian_internal::ByteSwap(uint32_t{0x01020304}) == 0x04030201);
  static_assert(endian_internal::ByteSwap(uint64_t{0x0102030405060708}) ==
                0x0807060504030201);
  static_assert(endian_internal::ByteSwap(uint32_t{0xff000080}) == 0x800000ff);
}

}  // namespace
}  // namespace qaqkv::base
