#include "kernels/internal/group_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/half.h"
#include "kernels/internal/reference.h"

namespace qaqkv::internal {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(BitWidthFor, HandComputed) {
  // range <= e * 2^B, smallest such B.
  EXPECT_EQ(BitWidthFor(1.0f, 1.0f, 0, 8), 0);
  EXPECT_EQ(BitWidthFor(1.0f, 0.5f, 0, 8), 1);
  EXPECT_EQ(BitWidthFor(1.0f, 0.25f, 0, 8), 2);   // exactly on the 2^2 boundary
  EXPECT_EQ(BitWidthFor(std::nextafter(1.0f, 2.0f), 0.25f, 0, 8), 3);  // just above it
  EXPECT_EQ(BitWidthFor(1.0f, 1.0f / 256, 0, 8), 8);
  EXPECT_EQ(BitWidthFor(3.0f, 1.0f, 0, 8), 2);    // 3 > 2, 3 <= 4
  // sigma with sqrt(12)*sigma*2^B == range exactly: B itself.
  const float e = 0.125f;
  EXPECT_EQ(BitWidthFor(e * 32, e, 0, 8), 5);
  EXPECT_EQ(BitWidthFor(std::nextafter(e * 32, 0.0f), e, 0, 8), 5);
  EXPECT_EQ(BitWidthFor(e * 16, e, 0, 8), 4);
}

TEST(BitWidthFor, Clamps) {
  EXPECT_EQ(BitWidthFor(1000.0f, 1e-6f, 0, 8), 8);  // b_max clamp
  EXPECT_EQ(BitWidthFor(1000.0f, 1e-6f, 2, 5), 5);
  EXPECT_EQ(BitWidthFor(0.0f, 1.0f, 3, 8), 3);      // b_min clamp
  EXPECT_EQ(BitWidthFor(1.0f, 1.0f, 2, 8), 2);
  // b_min pre-scales the cap: range 4, e 1, b_min 1 -> cap 2 -> B = 2.
  EXPECT_EQ(BitWidthFor(4.0f, 1.0f, 1, 8), 2);
  EXPECT_EQ(BitWidthFor(1.0f, 1.0f, 8, 8), 8);
  EXPECT_EQ(BitWidthFor(1.0f, 1.0f, 4, 4), 4);
}

TEST(BitWidthFor, SpecialE) {
  EXPECT_EQ(BitWidthFor(1e30f, kInf, 0, 8), 0);  // no constraint -> b_min
  EXPECT_EQ(BitWidthFor(1e30f, kInf, 3, 8), 3);
  EXPECT_EQ(BitWidthFor(0.0f, kInf, 0, 8), 0);
  // e < 0 can never be met by a non-negative range -> b_max.
  EXPECT_EQ(BitWidthFor(0.0f, -1.0f, 0, 8), 8);
  EXPECT_EQ(BitWidthFor(1.0f, -1.0f, 2, 6), 6);
  // e == 0: only a zero range meets it.
  EXPECT_EQ(BitWidthFor(0.0f, 0.0f, 0, 8), 0);
  EXPECT_EQ(BitWidthFor(1e-30f, 0.0f, 0, 8), 8);
  // NaN range never satisfies the bound.
  EXPECT_EQ(BitWidthFor(kNaN, 1.0f, 0, 8), 8);
}

TEST(ValueE, Cases) {
  EXPECT_EQ(ValueE(2.0f, -1.0f), -1.0f);
  EXPECT_EQ(ValueE(2.0f, -1e-30f), -1.0f);
  EXPECT_EQ(ValueE(2.0f, 0.0f), kInf);
  EXPECT_EQ(ValueE(2.0f, -0.0f), kInf);
  EXPECT_EQ(ValueE(2.0f, 0.5f), 4.0f);
  EXPECT_EQ(ValueE(2.0f, 1.0f), 2.0f);
  EXPECT_EQ(ValueE(3.0f, 0.25f), 12.0f);
}

TEST(MakeGroupParams, ExactInputs) {
  GroupParams p = MakeGroupParams(0.0f, 1.0f, 2);
  EXPECT_EQ(p.bits, 2);
  EXPECT_EQ(p.lo, 0x0000);
  EXPECT_EQ(p.step, 0x3400);  // 0.25
  p = MakeGroupParams(-1.0f, 1.0f, 8);
  EXPECT_EQ(p.lo, 0xbc00);
  EXPECT_EQ(HalfToFloat(p.step), 2.0f / 256);
  // Zero range: step 0 is legal.
  p = MakeGroupParams(1.5f, 1.5f, 4);
  EXPECT_EQ(p.bits, 4);
  EXPECT_EQ(p.lo, FloatToHalf(1.5f));
  EXPECT_EQ(p.step, 0);
  // B = 0 stores range / 1.
  p = MakeGroupParams(2.0f, 3.0f, 0);
  EXPECT_EQ(p.bits, 0);
  EXPECT_EQ(p.lo, FloatToHalf(2.0f));
  EXPECT_EQ(p.step, FloatToHalf(1.0f));
}

TEST(MakeGroupParams, OffsetRoundsDownStepRoundsUp) {
  GroupParams p = MakeGroupParams(0.1f, 1.1f, 8);
  EXPECT_EQ(p.bits, 8);
  EXPECT_EQ(p.lo, 0x2e66);  // largest fp16 <= 0.1
  const float lo16 = HalfToFloat(p.lo);
  const float want = (1.1f - lo16) / 256.0f;
  EXPECT_GE(HalfToFloat(p.step), want);
  EXPECT_LT(HalfToFloat(HalfNextDown(p.step)), want);
  // Negative offset rounds toward -inf.
  p = MakeGroupParams(-0.1f, 0.3f, 3);
  EXPECT_EQ(p.lo, 0xae67);
  EXPECT_LE(HalfToFloat(p.lo), -0.1f);
  const float want2 = (0.3f - HalfToFloat(p.lo)) / 8.0f;
  EXPECT_GE(HalfToFloat(p.step), want2);
  EXPECT_LT(HalfToFloat(HalfNextDown(p.step)), want2);
  // Every value of the group lies within lo + 2^B * step.
  EXPECT_GE(HalfToFloat(p.lo) + 8 * HalfToFloat(p.step), 0.3f);
}

TEST(MakeGroupParams, ExactFallbackBeyondFp16) {
  // 65505 / 1 rounds up past 65504 -> inf: kept exact.
  GroupParams p = MakeGroupParams(-1.0f, 65504.0f, 0);
  EXPECT_EQ(p.bits, kExactWidth);
  EXPECT_EQ(p.lo, 0);
  EXPECT_EQ(p.step, 0);
  p = MakeGroupParams(-65504.0f, 65504.0f, 0);
  EXPECT_EQ(p.bits, kExactWidth);
  // Same range with one bit: step 65504 fits.
  p = MakeGroupParams(-65504.0f, 65504.0f, 1);
  EXPECT_EQ(p.bits, 1);
  EXPECT_EQ(p.lo, 0xfbff);
  EXPECT_EQ(p.step, 0x7bff);
  p = MakeGroupParams(-65504.0f, 65504.0f, 8);
  EXPECT_EQ(p.bits, 8);
  EXPECT_EQ(HalfToFloat(p.step), 511.75f);
  // An offset below -65504 rounds down to -inf.
  p = MakeGroupParams(-65505.0f, 0.0f, 8);
  EXPECT_EQ(p.bits, kExactWidth);
  p = MakeGroupParams(-kInf, 0.0f, 8);
  EXPECT_EQ(p.bits, kExactWidth);
}

TEST(InverseStep, Cases) {
  EXPECT_EQ(InverseStep(0.5f), 2.0f);
  EXPECT_EQ(InverseStep(0.0f), 0.0f);
  EXPECT_EQ(InverseStep(-1.0f), 0.0f);
  EXPECT_EQ(InverseStep(kNaN), 0.0f);
  EXPECT_EQ(InverseStep(3.0f), 1.0f / 3.0f);
}

// QuantizeValue takes the fp32 reciprocal of the step (InverseStep).
uint32_t Q(float x, float lo, float step, int bits) {
  return QuantizeValue(x, lo, InverseStep(step), bits);
}

TEST(QuantizeValue, HandCases) {
  EXPECT_EQ(Q(1.7f, 0.0f, 0.0f, 8), 0u);   // step 0 -> 0
  EXPECT_EQ(Q(1.7f, 0.0f, -1.0f, 8), 0u);  // non-positive step -> 0
  EXPECT_EQ(Q(-5.0f, 0.0f, 1.0f, 8), 0u);  // below lo
  EXPECT_EQ(Q(0.0f, 0.0f, 1.0f, 8), 0u);
  EXPECT_EQ(Q(2.7f, 0.0f, 1.0f, 8), 2u);   // floor
  EXPECT_EQ(Q(3.0f, 1.0f, 0.5f, 4), 4u);   // exact level boundary
  EXPECT_EQ(Q(255.99f, 0.0f, 1.0f, 8), 255u);
  EXPECT_EQ(Q(256.0f, 0.0f, 1.0f, 8), 255u);  // clamp to 2^B - 1
  EXPECT_EQ(Q(1e9f, 0.0f, 1.0f, 2), 3u);
  EXPECT_EQ(Q(1e9f, 0.0f, 1.0f, 1), 1u);
  EXPECT_EQ(Q(kNaN, 0.0f, 1.0f, 8), 0u);
  EXPECT_EQ(Q(kInf, 0.0f, 1.0f, 8), 255u);
  EXPECT_EQ(QuantizeValue(1.7f, 0.0f, 0.0f, 8), 0u);  // inverse 0 -> code 0
}

TEST(DequantizeValue, Midpoints) {
  EXPECT_EQ(DequantizeValue(0, 0.0f, 1.0f), 0.5f);
  EXPECT_EQ(DequantizeValue(2, 1.0f, 0.5f), 2.25f);
  EXPECT_EQ(DequantizeValue(255, -1.0f, 2.0f / 256), 1.0f - 1.0f / 256);
  EXPECT_EQ(DequantizeValue(0, 3.0f, 0.0f), 3.0f);  // step 0 -> offset
  // Fused: (code + 0.5) * step + lo rounded once.
  const float step = 1.0f + std::ldexp(1.0f, -23), lo = -1.5f;
  EXPECT_EQ(DequantizeValue(1, lo, step), std::fma(1.5f, step, lo));
}

TEST(GroupMath, QuantizeWithinHalfStep) {
  // The combined contract: offset down, step up => every value of [lo, hi]
  // decodes within half a step.
  for (int bits = 1; bits <= 8; ++bits) {
    const float lo = -0.37f, hi = 2.11f;
    const GroupParams p = MakeGroupParams(lo, hi, bits);
    const float l = HalfToFloat(p.lo), s = HalfToFloat(p.step);
    for (int i = 0; i <= 1000; ++i) {
      const float x = lo + (hi - lo) * i / 1000.0f;
      const float r = DequantizeValue(Q(x, l, s, bits), l, s);
      ASSERT_LE(std::fabs(r - x), s / 2 * (1 + 1e-5f)) << bits << " " << x;
    }
  }
}

// SelectOutliers picks, by partial sorts, what its definition says: the k
// smallest values (ties: lower index first), then the k largest of the rest
// (same tie rule). Held against that definition written with full stable
// sorts, on groups full of ties and signed zeros.
TEST(SelectOutliers, MatchesItsDefinition) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 300);
    const int k = static_cast<int>(rng() % ((n + 1) / 2));  // 2k < n, as callers keep it
    std::vector<float> v(n);
    for (float& x : v) {
      const int r = static_cast<int>(rng() % 9) - 4;
      x = r == 0 ? (rng() % 2 ? -0.0f : 0.0f) : static_cast<float>(r) * 0.5f;
    }
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] < v[b]; });
    std::vector<int> want(order.begin(), order.begin() + k);
    std::vector<int> rest(order.begin() + k, order.end());
    std::stable_sort(rest.begin(), rest.end(), [&](int a, int b) {
      return v[a] > v[b] || (v[a] == v[b] && a < b);
    });
    want.insert(want.end(), rest.begin(), rest.begin() + k);
    std::sort(want.begin(), want.end());
    ASSERT_EQ(SelectOutliers(v, k), want) << "n " << n << " k " << k;
  }
}

}  // namespace
}  // namespace qaqkv::internal
