#include "kernels/half.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace qaqkv::internal {
namespace {

// Independent decoder of an fp16 bit pattern (ldexp instead of bit shuffling).
double HalfValue(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? std::nan("") : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST(FloatToHalf, HandPickedValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(-65504.0f), 0xfbff);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);  // just below the tie to inf
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // tie between 65504 and 65536: inf
  EXPECT_EQ(FloatToHalf(-65520.0f), 0xfc00);
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  // A signalling-looking NaN whose payload lives only in the low bits stays NaN.
  EXPECT_NE(FloatToHalf(BitsFloat(0x7f800001u)) & 0x03ff, 0);
  // Smallest normal and subnormals.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even (zero)
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -25)), 0x8000);
  EXPECT_EQ(FloatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -24)), 0x0002);  // tie 1|2 -> 2
  EXPECT_EQ(FloatToHalf(std::ldexp(2.5f, -24)), 0x0002);  // tie 2|3 -> 2
  EXPECT_EQ(FloatToHalf(std::ldexp(3.5f, -24)), 0x0004);  // tie 3|4 -> 4
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.5f, -24)), 0x0400);  // largest subnormal tie -> normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1022.5f, -24)), 0x03fe);
  // Ties between normals: 1 + 2^-11 lies halfway between 0x3c00 and 0x3c01.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + std::ldexp(1.0f, -11), 0.0f)), 0x3c00);
  EXPECT_EQ(FloatToHalf(2049.0f), 0x6800);  // 2048|2050 tie -> 2048 (even)
  EXPECT_EQ(FloatToHalf(2051.0f), 0x6802);  // 2050|2052 tie -> 2052 (even)
}

TEST(HalfToFloat, AllPatternsExactAndRoundTrip) {
  for (uint32_t u = 0; u < 65536; ++u) {
    const uint16_t h = static_cast<uint16_t>(u);
    const float f = HalfToFloat(h);
    const bool is_nan = ((h & 0x7c00) == 0x7c00) && (h & 0x3ff);
    if (is_nan) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << u;
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << std::hex << u;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), HalfValue(h)) << std::hex << u;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << u;
    ASSERT_EQ(FloatToHalf(f), h) << std::hex << u;
    EXPECT_EQ(FloatToHalfDown(f), h) << std::hex << u;
    EXPECT_EQ(FloatToHalfUp(f), h) << std::hex << u;
  }
}

TEST(FloatToHalf, NearestAgainstNeighbours) {
  // For random floats in fp16 range, the chosen half is at least as close as
  // both neighbours (and on a tie, its mantissa is even).
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> mag(-26.0f, 16.0f);
  for (int i = 0; i < 200000; ++i) {
    float f = std::exp2(mag(rng)) * ((rng() & 1) ? -1.0f : 1.0f);
    if (std::fabs(f) > 65504.0f) continue;
    const uint16_t h = FloatToHalf(f);
    const double d = std::fabs(HalfValue(h) - f);
    const uint16_t up = HalfNextUp(h), down = HalfNextDown(h);
    const double du = std::fabs(HalfValue(up) - f), dd = std::fabs(HalfValue(down) - f);
    ASSERT_LE(d, du) << f;
    ASSERT_LE(d, dd) << f;
    if (d == du || d == dd) {
      ASSERT_EQ(h & 1, 0) << f;
    }
  }
}

TEST(FloatToHalfDirected, BracketsInput) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> mag(-28.0f, 15.99f);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::exp2(mag(rng)) * ((rng() & 1) ? -1.0f : 1.0f);
    const uint16_t lo = FloatToHalfDown(f), hi = FloatToHalfUp(f);
    ASSERT_LE(HalfToFloat(lo), f) << f;
    ASSERT_GE(HalfToFloat(hi), f) << f;
    if (HalfToFloat(lo) == f) {
      ASSERT_EQ(HalfToFloat(hi), f);
    } else {
      // Adjacent halves: nothing representable strictly between them.
      ASSERT_EQ(HalfToFloat(HalfNextUp(lo)), HalfToFloat(hi)) << f;
    }
  }
  EXPECT_EQ(FloatToHalfDown(0.1f), 0x2e66);  // 0.0999755859375
  EXPECT_EQ(FloatToHalfUp(0.1f), 0x2e67);    // 0.10003662109375
  EXPECT_EQ(FloatToHalfDown(-0.1f), 0xae67);
  EXPECT_EQ(FloatToHalfUp(-0.1f), 0xae66);
  EXPECT_EQ(FloatToHalfUp(std::ldexp(1.0f, -30)), 0x0001);
  EXPECT_EQ(FloatToHalfDown(-std::ldexp(1.0f, -30)), 0x8001);
  EXPECT_EQ(FloatToHalfUp(65504.5f), 0x7c00);  // beyond max: rounds up to inf
  EXPECT_EQ(FloatToHalfDown(65504.5f), 0x7bff);
}

TEST(HalfNext, Neighbours) {
  EXPECT_EQ(HalfNextUp(0x3c00), 0x3c01);
  EXPECT_EQ(HalfNextDown(0x3c00), 0x3bff);
  EXPECT_EQ(HalfNextUp(0xbc00), 0xbbff);
  EXPECT_EQ(HalfNextDown(0xbc00), 0xbc01);
  EXPECT_EQ(HalfNextUp(0x0000), 0x0001);
  EXPECT_EQ(HalfNextDown(0x0000), 0x8001);
  EXPECT_EQ(HalfNextUp(0x8000), 0x0001);
  EXPECT_EQ(HalfNextDown(0x8000), 0x8001);
  EXPECT_EQ(HalfNextUp(0x8001), 0x8000);
  EXPECT_EQ(HalfNextUp(0x7bff), 0x7c00);
}

TEST(Bf16, Conversions) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBf16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  // 1 + 2^-8 is the tie between 0x3f80 and 0x3f81 -> even.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(FloatToBf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to inf
  EXPECT_EQ(FloatToBf16(100000.0f), 0x47c3);  // 99840 (0x47c3) vs 100352: nearer 99840
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(BitsFloat(0x7f800001u)))));
  for (uint32_t u = 0; u < 65536; ++u) {
    const uint16_t b = static_cast<uint16_t>(u);
    const float f = Bf16ToFloat(b);
    ASSERT_EQ(FloatBits(f), u << 16);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(f))));
    } else {
      ASSERT_EQ(FloatToBf16(f), b) << std::hex << u;
    }
  }
}

}  // namespace
}  // namespace qaqkv::internal
