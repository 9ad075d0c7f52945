#include "base/aligned_buffer.h"

#include <cstdint>
#include <cstring>
#include <utility>

#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

TEST(AlignedBuffer, SizeRoundsUpAndTheAddressIsAligned) {
  for (const size_t alignment : {size_t{64}, size_t{512}, size_t{4096}}) {
    for (const size_t bytes : {size_t{1}, alignment - 1, alignment, alignment + 1, size_t{300000}}) {
      AlignedBuffer b = AlignedBuffer::Allocate(bytes, alignment);
      ASSERT_FALSE(b.empty());
      EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % alignment, 0u) << bytes;
      EXPECT_EQ(b.size() % alignment, 0u) << bytes;
      EXPECT_GE(b.size(), bytes);
      EXPECT_LT(b.size(), bytes + alignment);
      std::memset(b.data(), 0x5a, b.size());  // the whole size is usable (ASan checks)
    }
  }
}

TEST(AlignedBuffer, MovesOwnershipAndDefaultsEmpty) {
  AlignedBuffer none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.size(), 0u);
  AlignedBuffer a = AlignedBuffer::Allocate(5000, 4096);
  char* const p = a.data();
  AlignedBuffer b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), 8192u);
  EXPECT_EQ(AlignedBuffer::Allocate(0, 4096).size(), 0u);
}

}  // namespace
}  // namespace qaqkv::base
