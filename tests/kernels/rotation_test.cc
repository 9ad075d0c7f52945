// The row rotation of format version 2 (`-rh`): the transform itself, and
// what rotated pages promise (docs/page-format.md).
#include "kernels/internal/rotation.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/checksum.h"
#include "kernels/codec.h"
#include "kernels/half.h"

namespace qaqkv {
namespace {

using ::testing::HasSubstr;

std::vector<float> RecordedSigns() { return {-1.0f, -1.0f, 1.0f, -1.0f, 1.0f, 1.0f, 1.0f, -1.0f}; }

double Norm(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += double(v) * v;
  return std::sqrt(s);
}

TEST(RotateRow, IsOrthogonalAndUndoneByItsInverse) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0, 1);
  for (int D : {1, 2, 7, 40, 64, 96, 128, 257, 1024}) {
    SCOPED_TRACE(D);
    std::vector<float> x(D);
    for (float& v : x) v = n(rng);
    std::vector<float> y = x;
    internal::RotateRow(y.data(), D, false);
    EXPECT_NEAR(Norm(y), Norm(x), 1e-5 * Norm(x));
    if (D >= 2) {
      EXPECT_NE(y, x);
    }
    internal::RotateRow(y.data(), D, true);
    for (int d = 0; d < D; ++d) ASSERT_NEAR(y[d], x[d], 1e-5f) << d;
  }
}

TEST(RotateRow, SpreadsOneLargeChannelOverItsBlock) {
  std::vector<float> x(128, 0.0f);
  x[17] = 64.0f;
  internal::RotateRow(x.data(), 128, false);
  // 64 / sqrt(128) in every channel, with the signs of the Hadamard row.
  for (float v : x) EXPECT_NEAR(std::fabs(v), 64.0f / std::sqrt(128.0f), 1e-4f);
}

TEST(RotateRow, SignsAreFixed) {
  // The signs are part of format version 2: pages written today must decode
  // the same way forever.
  int minus = 0;
  for (int d = 0; d < 1024; ++d) minus += internal::RotationSign(d) < 0;
  EXPECT_GT(minus, 450);
  EXPECT_LT(minus, 574);
  const float first[8] = {internal::RotationSign(0), internal::RotationSign(1),
                          internal::RotationSign(2), internal::RotationSign(3),
                          internal::RotationSign(4), internal::RotationSign(5),
                          internal::RotationSign(6), internal::RotationSign(7)};
  std::vector<float> got(first, first + 8);
  // Recorded when version 2 was defined.
  const std::vector<float> want = RecordedSigns();
  EXPECT_EQ(got, want);
}

// Keys with one channel 20x larger than the others, as LLaMA-family keys have.
std::vector<float> OutlierChannelKeys(const PageShape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(s.values());
  for (int t = 0; t < s.tokens; ++t)
    for (int h = 0; h < s.kv_heads; ++h)
      for (int d = 0; d < s.head_dim; ++d)
        x[(size_t(t) * s.kv_heads + h) * s.head_dim + d] = n(rng) * (d == 5 ? 20.0f : 1.0f);
  return x;
}

double SquaredError(const std::vector<float>& nhd, const std::vector<float>& hnd_out,
                    const PageShape& s) {
  double e = 0;
  for (int t = 0; t < s.tokens; ++t)
    for (int h = 0; h < s.kv_heads; ++h)
      for (int d = 0; d < s.head_dim; ++d) {
        const double a = nhd[(size_t(t) * s.kv_heads + h) * s.head_dim + d];
        const double b = hnd_out[(size_t(h) * s.tokens + t) * s.head_dim + d];
        e += (a - b) * (a - b);
      }
  return e;
}

struct Decoded {
  std::vector<float> k, v;
};
Decoded Decode(const std::vector<uint8_t>& page, const PageShape& s, Backend b) {
  Decoded out{std::vector<float>(s.values()), std::vector<float>(s.values())};
  EXPECT_EQ(DecodePage(page, {out.k.data(), DType::kF32, Layout::kHND},
                       {out.v.data(), DType::kF32, Layout::kHND}, &s, b),
            absl::OkStatus());
  return out;
}

TEST(RotatedPages, AreVersion2AndQuantizeOutlierChannelsBetter) {
  const PageShape s{64, 2, 96};  // 96 = 64 + 32: two blocks
  const std::vector<float> k = OutlierChannelKeys(s, 1), v = OutlierChannelKeys(s, 2);
  const TensorView kv{k.data(), DType::kF32, Layout::kNHD}, vv{v.data(), DType::kF32, Layout::kNHD};
  // QAQ configs with values nearly free (x=10), so the keys' widths decide
  // the size, and below b_max, so that narrower rows can show.
  for (const char* pair : {"int4", "int8", "qaq:s=2e-2,x=10,o=0", "qaq-layer:s=2e-2,x=10,o=0",
                           "qaq-cc:s=2e-2,x=10,o=0", "qaq:s=2e-2,x=10,o=0.05"}) {
    SCOPED_TRACE(pair);
    auto plain = ParseCodecConfig(pair);
    ASSERT_TRUE(plain.ok());
    CodecConfig rotated = *plain;
    rotated.rotate = true;
    auto p0 = EncodePage(*plain, s, kv, vv);
    auto p1 = EncodePage(rotated, s, kv, vv);
    ASSERT_TRUE(p0.ok() && p1.ok()) << p1.status();
    EXPECT_EQ(InspectPage(*p0)->version, 1);
    EXPECT_EQ(InspectPage(*p1)->version, 2);
    ASSERT_TRUE(VerifyPage(*p1, &rotated, &s).ok());
    const Decoded d0 = Decode(*p0, s, Backend::kReference), d1 = Decode(*p1, s, Backend::kReference);
    const Decoded f1 = Decode(*p1, s, Backend::kFast);
    EXPECT_EQ(d1.k, f1.k);
    EXPECT_EQ(d1.v, f1.v);
    const double e0 = SquaredError(k, d0.k, s), e1 = SquaredError(k, d1.k, s);
    const auto st0 = ComputePageStats(*p0), st1 = ComputePageStats(*p1);
    ASSERT_TRUE(st0.ok() && st1.ok());
    if (plain->kind != CodecKind::kQaq) {
      // Fixed widths: the same bytes, a smaller error.
      EXPECT_EQ(st1->encoded_bytes, st0->encoded_bytes);
      EXPECT_LT(e1, e0 * 0.5) << "rotated " << e1 << " plain " << e0;
    } else if (plain->outlier_ratio == 0) {
      // QAQ keeps its error bound and spends fewer bits on the narrower rows.
      EXPECT_LT(st1->encoded_bytes, st0->encoded_bytes * 0.8)
          << st1->encoded_bytes << " vs " << st0->encoded_bytes;
    }
    // (With outliers the large channel is already excluded from each row's
    // range; rotating then brings nothing, and is not required to.)
  }
}

TEST(RotatedPages, NonFiniteValuesStayWhereTheyWere) {
  const PageShape s{8, 2, 64};
  std::vector<float> k = OutlierChannelKeys(s, 3);
  const size_t nan_at = (size_t(3) * 2 + 1) * 64 + 9, inf_at = (size_t(6) * 2 + 0) * 64 + 63;
  k[nan_at] = std::numeric_limits<float>::quiet_NaN();
  k[inf_at] = -std::numeric_limits<float>::infinity();
  for (const char* name : {"int4-rh", "qaq-rh", "qaq-layer-cc-rh"}) {
    SCOPED_TRACE(name);
    auto cfg = ParseCodecConfig(name);
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    auto page = EncodePage(*cfg, s, {k.data(), DType::kF32, Layout::kNHD},
                           {k.data(), DType::kF32, Layout::kNHD});
    ASSERT_TRUE(page.ok());
    const Decoded d = Decode(*page, s, Backend::kAuto);
    for (int t = 0; t < s.tokens; ++t)
      for (int h = 0; h < s.kv_heads; ++h)
        for (int dd = 0; dd < s.head_dim; ++dd) {
          const size_t in = (size_t(t) * s.kv_heads + h) * s.head_dim + dd;
          const float out = d.k[(size_t(h) * s.tokens + t) * s.head_dim + dd];
          if (in == nan_at) {
            EXPECT_TRUE(std::isnan(out));
          } else if (in == inf_at) {
            EXPECT_EQ(out, -std::numeric_limits<float>::infinity());
          } else {
            ASSERT_TRUE(std::isfinite(out)) << t << " " << h << " " << dd;
          }
        }
  }
}

TEST(RotatedPages, ConfigAndHeaderRules) {
  for (const char* bad : {"fp16-rh", "kivi2-rh", "qaq-cs-rh", "int4-rh-cs"}) {
    EXPECT_EQ(ParseCodecConfig(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(std::string(ParseCodecConfig("qaq-cs-rh").status().message()),
              HasSubstr("config.rotate"));
  auto cfg = ParseCodecConfig("qaq-layer-cc-rh:s=2e-4,x=1e-2,o=0");
  ASSERT_TRUE(cfg.ok());
  EXPECT_TRUE(cfg->rotate);
  EXPECT_EQ(cfg->Name(), "qaq-layer-cc-rh:s=0.0002,x=0.01,o=0,b=0-8");

  const PageShape s{4, 1, 32};
  std::vector<float> x(s.values(), 0.5f);
  auto rotated = EncodePage(*ParseCodecConfig("int4-rh"), s, {x.data(), DType::kF32},
                            {x.data(), DType::kF32});
  auto plain = EncodePage(*ParseCodecConfig("int4"), s, {x.data(), DType::kF32},
                          {x.data(), DType::kF32});
  ASSERT_TRUE(rotated.ok() && plain.ok());
  // The version must be exactly the one the flags call for.
  auto with_version = [](std::vector<uint8_t> page, uint16_t version) {
    std::memcpy(page.data() + 4, &version, 2);
    const uint64_t sum = PageChecksum(page.data(), page.size() - 8);
    std::memcpy(page.data() + page.size() - 8, &sum, 8);
    return page;
  };
  EXPECT_EQ(InspectPage(with_version(*rotated, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InspectPage(with_version(*plain, 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(InspectPage(with_version(*plain, 3)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A store that expects unrotated int4 refuses a rotated page, naming why.
  const CodecConfig int4 = *ParseCodecConfig("int4");
  const absl::StatusOr<PageInfo> mismatch = VerifyPage(*rotated, &int4, &s);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mismatch.status().message()), HasSubstr("flags"));
}

}  // namespace
}  // namespace qaqkv
