// qaq-ec: QAQ's bounds with an entropy-coded scalar quantizer (page format
// version 2, kernels/internal/entropy_codec.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/checksum.h"
#include "kernels/codec.h"
#include "kernels/half.h"

namespace qaqkv {
namespace {

using ::testing::HasSubstr;

std::vector<float> Normal(const PageShape& s, uint32_t seed, float mean = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(mean, 1);
  std::vector<float> x(s.values());
  for (float& v : x) v = n(rng);
  return x;
}

// The page the tests that alter bytes start from: one head of 64 channels,
// 64 tokens, the geometry KStreamAt and the tests' byte offsets assume.
constexpr PageShape kSmallPage{64, 1, 64};

// kSmallPage holding k and v (NHD fp32), encoded under `config`.
absl::StatusOr<std::vector<uint8_t>> SmallEcPage(const std::vector<float>& k,
                                                 const std::vector<float>& v,
                                                 const char* config) {
  return EncodePage(*ParseCodecConfig(config), kSmallPage,
                    {k.data(), DType::kF32, Layout::kNHD},
                    {v.data(), DType::kF32, Layout::kNHD});
}

// kSmallPage with K drawn from Normal(seed_k) and V from Normal(seed_v).
absl::StatusOr<std::vector<uint8_t>> NormalEcPage(uint32_t seed_k, uint32_t seed_v,
                                                  const char* config) {
  return SmallEcPage(Normal(kSmallPage, seed_k), Normal(kSmallPage, seed_v), config);
}

// Where the K section's value stream starts in a page of 64 channels and one
// head without exact groups: after the header, the exact-group count, 64
// centres, 64 spreads, the step model, the step stream with its 4-byte size,
// the model family and shift and the stream's 4-byte size.
size_t KStreamAt(const std::vector<uint8_t>& page) {
  const size_t step_len_at = 32 + 4 + 64 * 2 + 64 + 1;
  uint32_t step_len;
  std::memcpy(&step_len, page.data() + step_len_at, 4);
  return step_len_at + 4 + step_len + 2 + 4;
}

// Rewrites the page's XXH3 trailer, so an altered page passes its checksum.
void Resign(std::vector<uint8_t>& page) {
  const uint64_t sum = PageChecksum(page.data(), page.size() - 8);
  std::memcpy(page.data() + page.size() - 8, &sum, 8);
}

// Decodes an altered page with both backends: the same verdict, and the
// same values when it decodes. Returns the verdict.
absl::Status DecodeBoth(const std::vector<uint8_t>& page, const PageShape& s) {
  std::vector<float> kf(s.values()), vf(s.values()), kr(s.values()), vr(s.values());
  const absl::Status fast = DecodePage(page, {kf.data(), DType::kF32}, {vf.data(), DType::kF32});
  const absl::Status ref = DecodePage(page, {kr.data(), DType::kF32}, {vr.data(), DType::kF32},
                                      nullptr, Backend::kReference);
  EXPECT_EQ(fast.code(), ref.code());
  if (fast.ok()) {
    EXPECT_EQ(0, std::memcmp(kf.data(), kr.data(), kf.size() * 4));
    EXPECT_EQ(0, std::memcmp(vf.data(), vr.data(), vf.size() * 4));
  }
  return fast;
}

struct Decoded {
  std::vector<float> k, v;  // NHD
};
Decoded Decode(const std::vector<uint8_t>& page, const PageShape& s,
               Backend backend = Backend::kAuto) {
  Decoded d{std::vector<float>(s.values()), std::vector<float>(s.values())};
  EXPECT_EQ(DecodePage(page, {d.k.data(), DType::kF32, Layout::kNHD},
                       {d.v.data(), DType::kF32, Layout::kNHD}, &s, backend),
            absl::OkStatus());
  return d;
}

// Without side inputs every value token has attention 1: its step is at most
// sqrt(12) sigma_X / sqrt(T), and every value lands within half of it.
TEST(EntropyCoded, EveryValueWithinHalfItsStep) {
  const PageShape s{64, 2, 96};
  const std::vector<float> k = Normal(s, 1, 3.0f), v = Normal(s, 2, -1.0f);
  for (const char* name : {"qaq-ec:s=1e-3,x=1e-2,o=0", "qaq-ec-rh:s=1e-3,x=1e-2,o=0"}) {
    SCOPED_TRACE(name);
    const CodecConfig cfg = *ParseCodecConfig(name);
    auto page = EncodePage(cfg, s, {k.data(), DType::kF32, Layout::kNHD},
                           {v.data(), DType::kF32, Layout::kNHD});
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(InspectPage(*page)->version, 2);
    ASSERT_TRUE(VerifyPage(*page, &cfg, &s).ok());
    const Decoded d = Decode(*page, s);
    const double half_step = 0.5 * std::sqrt(12.0) * 1e-2 / std::sqrt(64.0);
    if (!cfg.rotate) {
      for (size_t i = 0; i < v.size(); ++i) ASSERT_LE(std::fabs(d.v[i] - v[i]), half_step * 1.0001) << i;
    } else {
      // Rotated: the bound holds per row in L2 (the rotation keeps it).
      for (int r = 0; r < s.tokens * s.kv_heads; ++r) {
        double e = 0;
        for (int j = 0; j < s.head_dim; ++j) {
          const double a = d.v[r * s.head_dim + j] - v[r * s.head_dim + j];
          e += a * a;
        }
        ASSERT_LE(std::sqrt(e), half_step * std::sqrt(double(s.head_dim)) * 1.0001) << r;
      }
    }
  }
}

// Tokens no query attends (a = 0) have no error bound: they decode to their
// channels' page means and cost no codes, so the V section holds little
// more than the centres.
TEST(EntropyCoded, UnattendedTokensDecodeToTheirCentresForAlmostNothing) {
  const PageShape s{128, 1, 64};
  const std::vector<float> k = Normal(s, 3), v = Normal(s, 4, 2.0f);
  std::vector<float> attention(s.tokens, 0.0f), q2(1, 1.0f);
  attention[5] = 1.0f;  // one attended token
  const QaqSideInputs side{attention, q2, 0};
  const CodecConfig cfg = *ParseCodecConfig("qaq-ec:s=1e-3,x=1e-3,o=0");
  auto page = EncodePage(cfg, s, {k.data(), DType::kF32, Layout::kNHD},
                         {v.data(), DType::kF32, Layout::kNHD}, side);
  ASSERT_TRUE(page.ok());
  const Decoded d = Decode(*page, s);
  std::vector<double> mean(s.head_dim, 0);
  for (int t = 0; t < s.tokens; ++t)
    for (int j = 0; j < s.head_dim; ++j) mean[j] += v[t * s.head_dim + j] / s.tokens;
  for (int t = 0; t < s.tokens; ++t) {
    if (t == 5) continue;
    for (int j = 0; j < s.head_dim; ++j) {
      ASSERT_EQ(d.v[t * s.head_dim + j], HalfToFloat(FloatToHalf(float(mean[j])))) << t << " " << j;
    }
  }
  // The attended token is coded to its bound.
  for (int j = 0; j < s.head_dim; ++j) EXPECT_NEAR(d.v[5 * s.head_dim + j], v[5 * s.head_dim + j], 0.01);
  // V is the centres and spreads (3 bytes a channel), a step byte a token,
  // one token's codes and the fixed parts: against every token attended,
  // a small fraction.
  std::vector<float> all(s.tokens, 1.0f);
  auto attended = EncodePage(cfg, s, {k.data(), DType::kF32, Layout::kNHD},
                             {v.data(), DType::kF32, Layout::kNHD}, {all, q2, 0});
  ASSERT_TRUE(attended.ok());
  uint32_t v_bytes, v_bytes_all;
  std::memcpy(&v_bytes, page->data() + 28, 4);
  std::memcpy(&v_bytes_all, attended->data() + 28, 4);
  EXPECT_LT(v_bytes, 3u * 64 + 128 + 4 + 4 + 32 + 300);
  EXPECT_LT(v_bytes * 20, v_bytes_all) << v_bytes << " vs " << v_bytes_all;
}

// b_min > 0: no token coarser than a b_min-bit min-max group of its row,
// even one no query attends.
TEST(EntropyCoded, BMinFloorsThePrecisionOfUnattendedTokens) {
  const PageShape s{32, 1, 64};
  const std::vector<float> k = Normal(s, 8), v = Normal(s, 9);
  std::vector<float> attention(s.tokens, 0.0f), q2(1, 1.0f);
  const QaqSideInputs side{attention, q2, 0};
  for (int b : {0, 3}) {
    SCOPED_TRACE(b);
    CodecConfig cfg = *ParseCodecConfig("qaq-ec:s=1e-3,x=1e-3,o=0");
    cfg.b_min = b;
    auto page = EncodePage(cfg, s, {k.data(), DType::kF32, Layout::kNHD},
                           {v.data(), DType::kF32, Layout::kNHD}, side);
    ASSERT_TRUE(page.ok()) << page.status();
    const Decoded d = Decode(*page, s);
    // Rows are quantized after each channel's mean is taken out.
    std::vector<float> mean(s.head_dim, 0.0f);
    for (int t = 0; t < s.tokens; ++t)
      for (int j = 0; j < s.head_dim; ++j) mean[j] += v[t * s.head_dim + j] / s.tokens;
    for (int t = 0; t < s.tokens; ++t) {
      float lo = 1e30f, hi = -1e30f, worst = 0;
      for (int j = 0; j < s.head_dim; ++j) {
        lo = std::min(lo, v[t * s.head_dim + j] - mean[j]);
        hi = std::max(hi, v[t * s.head_dim + j] - mean[j]);
      }
      for (int j = 0; j < s.head_dim; ++j) {
        worst = std::max(worst, std::fabs(d.v[t * s.head_dim + j] - v[t * s.head_dim + j]));
      }
      if (b == 0) {
        EXPECT_GT(worst, (hi - lo) / 8) << t;  // decoded to the centres
      } else {
        // Half a step of at most range / 8, with slack for the fp16 centre.
        ASSERT_LE(worst, (hi - lo) / 16 * 1.001f + 1e-3f) << t;
      }
    }
  }
}

TEST(EntropyCoded, NonFiniteValuesStayWhereTheyWere) {
  const PageShape s{8, 2, 64};
  std::vector<float> k = Normal(s, 5);
  k[3 * 128 + 64 + 9] = std::numeric_limits<float>::quiet_NaN();
  k[6 * 128 + 63] = -std::numeric_limits<float>::infinity();
  for (const char* name : {"qaq-ec:o=0", "qaq-ec-rh:o=0"}) {
    SCOPED_TRACE(name);
    auto page = EncodePage(*ParseCodecConfig(name), s, {k.data(), DType::kF32, Layout::kNHD},
                           {k.data(), DType::kF32, Layout::kNHD});
    ASSERT_TRUE(page.ok());
    const Decoded d = Decode(*page, s);
    for (size_t i = 0; i < k.size(); ++i) {
      if (std::isnan(k[i])) {
        EXPECT_TRUE(std::isnan(d.k[i]));
      } else if (std::isinf(k[i])) {
        EXPECT_EQ(d.k[i], k[i]);
      } else {
        ASSERT_TRUE(std::isfinite(d.k[i])) << i;
        ASSERT_NEAR(d.k[i], k[i], 0.5) << i;
      }
    }
  }
}

// Every code can be written under every model: a spike in a channel that is
// otherwise almost constant lands in the lowest context (step far above the
// channel's spread) with a code in the thousands, and must still encode,
// through a token with raw bits, and decode within half its step. Both
// decoders agree on it.
TEST(EntropyCoded, SpikesInQuietChannelsEncode) {
  const PageShape s{64, 2, 64};
  std::vector<float> k(s.values(), 0.0f);
  std::mt19937 rng(8);
  std::normal_distribution<float> n(0, 1e-3f);
  for (float& x : k) x = n(rng);
  // Channel 5 of head 1 at token 17, and channel 40 of head 0 at token 60.
  k[(17 * 2 + 1) * 64 + 5] = 50.0f;
  k[(60 * 2 + 0) * 64 + 40] = -3000.0f;
  for (const char* name : {"qaq-ec:s=1e-3,x=1e-3,o=0", "qaq-ec:s=1e-6,x=1e-6,o=0"}) {
    SCOPED_TRACE(name);
    auto page = EncodePage(*ParseCodecConfig(name), s, {k.data(), DType::kF32, Layout::kNHD},
                           {k.data(), DType::kF32, Layout::kNHD});
    ASSERT_TRUE(page.ok()) << page.status();
    const Decoded d = Decode(*page, s);
    EXPECT_NEAR(d.k[(17 * 2 + 1) * 64 + 5], 50.0f, 0.5f);
    EXPECT_NEAR(d.k[(60 * 2 + 0) * 64 + 40], -3000.0f, 2.0f);
    EXPECT_EQ(0, std::memcmp(Decode(*page, s, Backend::kReference).k.data(), d.k.data(),
                             d.k.size() * 4));
  }
}

// The lowest model (a step far above its channel's spread) must take codes
// far out in its tail too: channel 7 of the values is zero but for one
// token, a few steps out (4-10 here), so its spread over the 256 coded
// tokens is a sixteenth of that.
TEST(EntropyCoded, TheLowestModelTakesLargeCodes) {
  const PageShape s{256, 1, 64};
  std::vector<float> v = Normal(s, 9);
  for (int t = 0; t < 256; ++t) v[t * 64 + 7] = 0.0f;
  v[100 * 64 + 7] = 1.0f;
  for (double x = 0.5; x <= 1.2; x += 0.05) {
    SCOPED_TRACE(x);
    CodecConfig cfg = *ParseCodecConfig("qaq-ec:s=1e-3,o=0");
    cfg.sigma_x = x;
    auto page = EncodePage(cfg, s, {v.data(), DType::kF32, Layout::kNHD},
                           {v.data(), DType::kF32, Layout::kNHD});
    ASSERT_TRUE(page.ok()) << page.status();
    const Decoded d = Decode(*page, s);
    EXPECT_NEAR(d.v[100 * 64 + 7], 1.0f, 0.15f);
  }
}

// A stream altered under a valid checksum is refused by every reader that
// could otherwise serve it: VerifyPage (what the server runs), DecodePage
// and ComputePageStats.
TEST(EntropyCoded, AlteredStreamsAreDataLoss) {
  const PageShape s = kSmallPage;
  auto page = NormalEcPage(6, 7, "qaq-ec:s=1e-3,x=1e-3,o=0");
  ASSERT_TRUE(page.ok());
  int refused = 0, tried = 0;
  const size_t stream = KStreamAt(*page);
  for (size_t at = stream; at < stream + 200; ++at) {
    std::vector<uint8_t> bad = *page;
    bad[at] ^= 0x24;
    Resign(bad);
    ++tried;
    const absl::Status verify = VerifyPage(bad).status();
    std::vector<float> ko(s.values()), vo(s.values());
    const absl::Status decode = DecodePage(bad, {ko.data(), DType::kF32}, {vo.data(), DType::kF32});
    EXPECT_EQ(verify.code(), decode.code()) << at;
    // The vectorized decoder and the reference agree on every damaged
    // stream: the same verdict, the same values when both decode, and a
    // refused tensor is zeros, not half of one.
    std::vector<float> kr(s.values(), 7.0f), vr(s.values(), 7.0f);
    const absl::Status ref = DecodePage(bad, {kr.data(), DType::kF32}, {vr.data(), DType::kF32},
                                        nullptr, Backend::kReference);
    EXPECT_EQ(ref.code(), decode.code()) << at;
    if (decode.ok()) {
      EXPECT_EQ(0, std::memcmp(ko.data(), kr.data(), ko.size() * 4)) << at;
    } else {
      EXPECT_TRUE(std::all_of(ko.begin(), ko.end(), [](float x) { return x == 0.0f; })) << at;
    }
    EXPECT_EQ(ComputePageStats(bad).status().code(), decode.code()) << at;
    if (!verify.ok()) {
      EXPECT_EQ(verify.code(), absl::StatusCode::kDataLoss) << verify;
      ++refused;
    }
  }
  EXPECT_GT(refused, tried * 9 / 10);
}

// The model shift (one byte before the stream size) is read as a signed
// byte within +-8, and the family (the byte before it) below 3; beyond that
// the page is refused before anything decodes. A different shift in range
// decodes other tokens: DATA_LOSS, or the same values in both decoders.
TEST(EntropyCoded, ModelOutOfRangeIsDataLoss) {
  const PageShape s = kSmallPage;
  auto page = NormalEcPage(16, 17, "qaq-ec:s=1e-3,x=1e-3,o=0");
  ASSERT_TRUE(page.ok());
  const size_t shift_at = KStreamAt(*page) - 5;
  const int8_t chosen = static_cast<int8_t>((*page)[shift_at]);
  EXPECT_GE(chosen, -8);
  EXPECT_LE(chosen, 8);
  for (int bad : {9, -9, 127, -128}) {
    std::vector<uint8_t> p = *page;
    p[shift_at] = static_cast<uint8_t>(static_cast<int8_t>(bad));
    Resign(p);
    const absl::Status st = VerifyPage(p).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << bad;
    EXPECT_THAT(std::string(st.message()), HasSubstr("model shift")) << bad;
    std::vector<float> ko(s.values()), vo(s.values());
    EXPECT_EQ(DecodePage(p, {ko.data(), DType::kF32}, {vo.data(), DType::kF32}).code(),
              absl::StatusCode::kDataLoss);
  }
  for (int family : {3, 255}) {
    std::vector<uint8_t> p = *page;
    p[shift_at - 1] = static_cast<uint8_t>(family);
    Resign(p);
    const absl::Status st = VerifyPage(p).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << family;
    EXPECT_THAT(std::string(st.message()), HasSubstr("model family")) << family;
  }
  std::vector<uint8_t> p = *page;
  p[shift_at] = static_cast<uint8_t>(chosen == 8 ? 7 : chosen + 1);
  Resign(p);
  // A neighbouring shift decodes other tokens: refused, or the same values.
  const absl::Status st = DecodeBoth(p, s);
  EXPECT_TRUE(st.ok() || st.code() == absl::StatusCode::kDataLoss) << st;
}

// Step codes are coded per head against the head's last one: keys whose
// step is the same for every token cost a few bytes for all their steps,
// and values with zero-width tokens (every value within half a step of its
// centre) and steps that vary with each token's range (b=3) decode to
// values within half their steps.
TEST(EntropyCoded, StepCodesRoundTrip) {
  const PageShape s{256, 1, 64};
  const std::vector<float> k = Normal(s, 18);
  std::vector<float> v = Normal(s, 19);
  // Every 5th value token is zero; the others vary in scale, with each
  // channel's mean taken out, so the zero tokens sit on their centres.
  for (int d = 0; d < 64; ++d) {
    float mean = 0;
    for (int t = 0; t < 256; ++t) {
      float& x = v[t * 64 + d];
      x = t % 5 == 0 ? 0.0f : x * (1.0f + float(t % 7));
      mean += t % 5 == 0 ? 0.0f : x / 204;
    }
    for (int t = 0; t < 256; ++t) v[t * 64 + d] -= t % 5 == 0 ? 0.0f : mean;
  }
  // Without a precision floor every key token of the head has one step, and
  // the zero value tokens are zero-width.
  auto page = EncodePage(*ParseCodecConfig("qaq-ec:s=1e-3,x=1e-3,o=0"), s,
                         {k.data(), DType::kF32, Layout::kNHD}, {v.data(), DType::kF32, Layout::kNHD});
  ASSERT_TRUE(page.ok()) << page.status();
  const size_t model_at = 32 + 4 + 64 * 2 + 64;
  uint32_t step_len;
  std::memcpy(&step_len, page->data() + model_at + 1, 4);
  EXPECT_LE(step_len, 16u);  // one lane's state and a few words, not 256 bytes
  EXPECT_EQ((*page)[model_at] & 0x80, 0);  // no zero-width key token
  const Decoded z = Decode(*page, s);
  for (int t = 0; t < 256; t += 5)
    for (int c = 0; c < 64; ++c) ASSERT_LE(std::fabs(z.v[t * 64 + c]), 1e-3f) << t;
  page = EncodePage(*ParseCodecConfig("qaq-ec:s=1e-3,x=1e3,o=0,b=3-8"), s,
                    {k.data(), DType::kF32, Layout::kNHD}, {v.data(), DType::kF32, Layout::kNHD});
  ASSERT_TRUE(page.ok()) << page.status();
  const Decoded d = Decode(*page, s);
  std::vector<float> centre(64, 0.0f);
  for (int t = 0; t < 256; ++t)
    for (int c = 0; c < 64; ++c) centre[c] += v[t * 64 + c] / 256;
  for (int t = 0; t < 256; ++t) {
    float lo = v[t * 64] - centre[0], hi = lo, worst = 0;
    for (int c = 0; c < 64; ++c) {
      lo = std::min(lo, v[t * 64 + c] - centre[c]);
      hi = std::max(hi, v[t * 64 + c] - centre[c]);
      worst = std::max(worst, std::fabs(d.v[t * 64 + c] - v[t * 64 + c]));
    }
    // b=3: a step of at most the centred range / 8 (the fp16 centres and
    // the step rounding add a little).
    ASSERT_LE(worst, (hi - lo) / 16 * 1.001f + 1e-3f) << t;
  }
  EXPECT_EQ(0, std::memcmp(Decode(*page, s, Backend::kReference).v.data(), d.v.data(),
                           d.v.size() * 4));
}

// A step stream altered under a valid checksum is DATA_LOSS for every reader,
// or decodes the same way in both decoders.
TEST(EntropyCoded, AlteredStepStreamsAreDataLoss) {
  const PageShape s = kSmallPage;
  std::vector<float> k = Normal(s, 20);
  for (int t = 0; t < 64; ++t)
    for (int d = 0; d < 64; ++d) k[t * 64 + d] *= 1.0f + float(t % 9);
  auto page = SmallEcPage(k, Normal(s, 21), "qaq-ec:s=1e-3,x=1e-3,o=0,b=3-8");
  ASSERT_TRUE(page.ok());
  const size_t model_at = 32 + 4 + 64 * 2 + 64;
  const size_t end = KStreamAt(*page) - 6;  // the step stream ends where the family starts
  int refused = 0;
  for (size_t at = model_at; at < end; ++at) {
    std::vector<uint8_t> bad = *page;
    bad[at] ^= 0x41;
    Resign(bad);
    const absl::Status verify = VerifyPage(bad).status();
    EXPECT_EQ(verify.code(), DecodeBoth(bad, s).code()) << at;
    if (!verify.ok()) {
      EXPECT_EQ(verify.code(), absl::StatusCode::kDataLoss) << verify;
      ++refused;
    }
  }
  EXPECT_GT(refused, static_cast<int>(end - model_at) / 2);
}

TEST(EntropyCoded, ConfigAndHeaderRules) {
  for (const char* bad : {"int4-ec", "qaq-ec", "qaq-layer-ec:o=0", "qaq-cc-ec:o=0",
                          "qaq-cs-ec:o=0", "qaq-ec:o=0,b=2-6"}) {
    // plain "qaq-ec" keeps the default 1% outliers, which -ec does not take
    EXPECT_EQ(ParseCodecConfig(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(std::string(ParseCodecConfig("qaq-ec").status().message()),
              HasSubstr("config.outlier_ratio"));
  EXPECT_TRUE(ParseCodecConfig("qaq-ec:o=0,b=3-8").ok());
  auto cfg = ParseCodecConfig("qaq-ec-rh:s=3e-4,x=7e-4,o=0");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->Name(), "qaq-ec-rh:s=0.0003,x=0.0007,o=0,b=0-8");
  EXPECT_EQ(ParseCodecConfig(cfg->Name())->Name(), cfg->Name());
  // A page that claims entropy coding with outliers is refused.
  const PageShape s{4, 1, 16};
  std::vector<float> x(s.values(), 1.0f);
  auto page = EncodePage(*cfg, s, {x.data(), DType::kF32}, {x.data(), DType::kF32});
  ASSERT_TRUE(page.ok());
  std::vector<uint8_t> bad = *page;
  const uint16_t outliers = 1;
  std::memcpy(bad.data() + 16, &outliers, 2);
  Resign(bad);
  EXPECT_EQ(InspectPage(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qaqkv
