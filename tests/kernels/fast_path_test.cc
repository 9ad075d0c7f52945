// The fast CPU backend must write exactly the reference's bytes and decode to
// exactly the reference's values, on random inputs drawn fresh each run.
// Reproduce a failure with QAQKV_TEST_SEED=<printed seed>.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/checksum.h"
#include "kernels/codec.h"
#include "kernels/internal/fast.h"
#include "kernels/half.h"

namespace qaqkv {
namespace {


uint64_t TestSeed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("QAQKV_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(s, nullptr, 0));
    std::random_device rd;
    return (uint64_t{rd()} << 32) | rd();
  }();
  return seed;
}

enum class Fill { kNormal, kTies, kConstantGroups, kNonFinite, kHeavyTails, kCount };

const char* FillName(Fill f) {
  switch (f) {
    case Fill::kNormal: return "normal";
    case Fill::kTies: return "ties";
    case Fill::kConstantGroups: return "constant-groups";
    case Fill::kNonFinite: return "nan-inf";
    case Fill::kHeavyTails: return "heavy-tails";
    case Fill::kCount: break;
  }
  return "?";
}

// Values in NHD order, already representable in fp16 range.
std::vector<float> Values(std::mt19937_64& rng, const PageShape& s, Fill fill) {
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(s.values());
  const float scale = std::exp2(static_cast<float>(static_cast<int>(rng() % 13) - 6));
  switch (fill) {
    case Fill::kNormal:
    case Fill::kNonFinite:
      for (auto& v : x) v = n(rng) * scale;
      break;
    case Fill::kTies: {
      // Both zeros: outlier ties and a group's min or max of 0 keep the
      // sign the reference meets first.
      const float set[] = {-1.0f, -0.5f, 0.0f, -0.0f, 0.5f, 1.0f, 2.0f};
      const int m = 1 + static_cast<int>(rng() % 7);
      for (auto& v : x) v = set[rng() % m] * scale;
      break;
    }
    case Fill::kConstantGroups:
      for (auto& v : x) v = n(rng) * scale;
      // Whole tokens (all heads) and single head rows made constant.
      for (int t = 0; t < s.tokens; ++t) {
        const int r = static_cast<int>(rng() % 4);
        if (r == 0) {
          const float c = n(rng);
          for (int64_t i = int64_t{t} * s.kv_heads * s.head_dim;
               i < int64_t{t + 1} * s.kv_heads * s.head_dim; ++i)
            x[i] = c;
        } else if (r == 1) {
          const int h = static_cast<int>(rng() % s.kv_heads);
          const float c = (rng() & 1) ? 0.0f : n(rng);
          for (int d = 0; d < s.head_dim; ++d) x[(int64_t{t} * s.kv_heads + h) * s.head_dim + d] = c;
        }
      }
      break;
    case Fill::kHeavyTails:
      for (auto& v : x) {
        v = n(rng) * scale;
        if (rng() % 50 == 0) v *= 1000.0f;
        if (std::fabs(v) > 60000.0f) v = std::copysign(60000.0f, v);
      }
      break;
    case Fill::kCount: break;
  }
  if (fill == Fill::kNonFinite) {
    const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
    const int64_t count = 1 + static_cast<int64_t>(rng() % 6);
    for (int64_t i = 0; i < count; ++i) x[rng() % x.size()] = specials[rng() % 3];
  }
  return x;
}

std::vector<uint8_t> ToBytes(const std::vector<float>& nhd, const PageShape& s, DType dt,
                             Layout l) {
  const size_t es = dt == DType::kF32 ? 4 : 2;
  std::vector<uint8_t> out(nhd.size() * es);
  for (int t = 0; t < s.tokens; ++t)
    for (int h = 0; h < s.kv_heads; ++h)
      for (int d = 0; d < s.head_dim; ++d) {
        const float x = nhd[(int64_t{t} * s.kv_heads + h) * s.head_dim + d];
        const int64_t o = l == Layout::kNHD ? (int64_t{t} * s.kv_heads + h) * s.head_dim + d
                                            : (int64_t{h} * s.tokens + t) * s.head_dim + d;
        if (dt == DType::kF32) {
          std::memcpy(out.data() + o * 4, &x, 4);
        } else {
          const uint16_t b = dt == DType::kF16 ? FloatToHalf(x) : ::qaqkv::FloatToBf16(x);
          std::memcpy(out.data() + o * 2, &b, 2);
        }
      }
  return out;
}

struct Case {
  std::string codec;
  PageShape shape;
  DType dtype;
  Layout layout;
  Fill fill;
  int side;  // 0 none, 1 attention + q2, 2 attention with negatives + q2
};

std::string Describe(const Case& c) {
  return c.codec + " " + std::to_string(c.shape.tokens) + "x" + std::to_string(c.shape.kv_heads) +
         "x" + std::to_string(c.shape.head_dim) + " dtype " + std::to_string(int(c.dtype)) +
         " layout " + std::to_string(int(c.layout)) + " fill " + FillName(c.fill) + " side " +
         std::to_string(c.side);
}

void RunCase(std::mt19937_64& rng, const Case& c) {
  SCOPED_TRACE(Describe(c));
  auto cfg = ParseCodecConfig(c.codec);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const PageShape& s = c.shape;
  const auto kx = Values(rng, s, c.fill), vx = Values(rng, s, c.fill);
  const auto kb = ToBytes(kx, s, c.dtype, c.layout), vb = ToBytes(vx, s, c.dtype, c.layout);
  std::vector<float> att, q2;
  QaqSideInputs side;
  if (c.side > 0) {
    std::uniform_real_distribution<float> u(0, 1);
    att.resize(size_t(s.tokens) * s.kv_heads);
    for (auto& a : att) {
      const float r = u(rng);
      a = r < 0.1f ? 0.0f : r < 0.3f ? std::pow(10.0f, -8 * u(rng)) : u(rng);
      if (c.side == 2 && rng() % 5 == 0) a = -1.0f;
    }
    q2.resize(s.kv_heads);
    for (auto& q : q2) q = std::pow(10.0f, 4 * u(rng) - 2);
    side.attention = att;
    side.q2 = q2;
    if (rng() % 3 == 0) side.context_tokens = s.tokens + static_cast<int64_t>(rng() % 4096);
  }
  const TensorView k{kb.data(), c.dtype, c.layout}, v{vb.data(), c.dtype, c.layout};
  auto ref = EncodePage(*cfg, s, k, v, side, Backend::kReference);
  auto fast = EncodePage(*cfg, s, k, v, side, Backend::kFast);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_TRUE(fast.ok()) << fast.status();
  ASSERT_EQ(ref->size(), fast->size());
  if (*ref != *fast) {
    size_t i = 0;
    while ((*ref)[i] == (*fast)[i]) ++i;
    FAIL() << "encoded pages differ first at byte " << i << " of " << ref->size();
  }
  for (DType odt : {DType::kF16, DType::kBF16, DType::kF32})
    for (Layout ol : {Layout::kNHD, Layout::kHND}) {
      const size_t n = s.values() * (odt == DType::kF32 ? 4 : 2);
      // Poisoned outputs: every byte must be written by both backends.
      std::vector<uint8_t> kr(n, 0xa5), vr(n, 0xa5), kf(n, 0x5a), vf(n, 0x5a);
      ASSERT_EQ(DecodePage(*ref, {kr.data(), odt, ol}, {vr.data(), odt, ol}, &s,
                           Backend::kReference),
                absl::OkStatus());
      ASSERT_EQ(DecodePage(*ref, {kf.data(), odt, ol}, {vf.data(), odt, ol}, &s, Backend::kFast),
                absl::OkStatus());
      for (int which = 0; which < 2; ++which) {
        const auto& r = which ? vr : kr;
        const auto& f = which ? vf : kf;
        if (r != f) {
          size_t i = 0;
          while (r[i] == f[i]) ++i;
          FAIL() << (which ? "V" : "K") << " decode differs at byte " << i << " for output dtype "
                 << int(odt) << " layout " << int(ol);
        }
      }
    }
}

const char* const kCodecs[] = {"int8",      "int4",        "kivi2",      "kivi2:r=32,g=16",
                               "qaq:o=0",   "qaq:o=0.01",  "qaq-layer",  "qaq-cs", "qaq-cc", "qaq-cc:o=0", "qaq-cs-cc:o=0",
                               "qaq:o=0.01,b=2-6", "int8-layer", "int4-layer", "qaq-layer-cs",
                               "fp16", "int4-rh", "qaq-cc-rh:o=0", "qaq-ec:o=0", "qaq-ec-rh:o=0",
                               "qaq-ec:s=1e-6,x=1e-6,o=0", "qaq-rh:o=0.01", "qaq-cc-rh",
                               // The grouped fast path: many outliers per side, layer groups
                               // rotated or with key transforms, kivi2 without a residual.
                               "qaq:o=0.1", "qaq:o=0.05,b=4-4", "qaq-layer-rh", "qaq-layer-cc:o=0.02",
                               "qaq-layer-rh:o=0", "kivi2:r=0,g=32", "kivi2:r=5,g=7"};

// Both fast-path builds are held against the reference: the native one
// (AVX-512 where the CPU has it) and the AVX2 one, forced.
class FastPath : public testing::TestWithParam<bool> {
 protected:
  void SetUp() override { internal::ForceAvx2ForTesting(GetParam()); }
  void TearDown() override { internal::ForceAvx2ForTesting(false); }
};

TEST_P(FastPath, MatchesReferenceByteForByte) {
  const uint64_t seed = TestSeed();
  SCOPED_TRACE(testing::Message() << "QAQKV_TEST_SEED=" << seed);
  std::printf("fast path: %s AVX2=%d AVX-512=%d seed %llu\n",
              GetParam() ? "forced AVX2 build" : "native build", CpuHasAvx2(), CpuHasAvx512(),
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  const Layout layouts[] = {Layout::kNHD, Layout::kHND};
  int i = 0;
  for (int tokens : {1, 7, 67, 255, 256, 257})
    for (int head_dim : {64, 128, 256})
      for (const char* codec : kCodecs) {
        Case c;
        c.codec = codec;
        // Big pages get fewer heads to keep the sweep quick.
        const int max_heads = tokens * head_dim > 20000 ? 2 : 4;
        c.shape = {tokens, 1 + static_cast<int>(rng() % max_heads), head_dim};
        c.dtype = dtypes[rng() % 3];
        c.layout = layouts[rng() % 2];
        c.fill = static_cast<Fill>(i % static_cast<int>(Fill::kCount));
        c.side = i % 3;
        ++i;
        RunCase(rng, c);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

TEST_P(FastPath, AwkwardShapes) {
  const uint64_t seed = TestSeed() ^ 0x9e3779b97f4a7c15ull;
  SCOPED_TRACE(testing::Message() << "QAQKV_TEST_SEED=" << TestSeed());
  std::mt19937_64 rng(seed);
  // Head dims that are not multiples of a vector, layer groups over many heads.
  const PageShape shapes[] = {{1, 1, 1},  {3, 1, 7},   {5, 3, 33},  {17, 8, 64},
                              {9, 4, 96}, {2, 16, 128}, {31, 2, 257}, {4, 1, 1024}};
  int i = 0;
  for (const PageShape& s : shapes)
    for (const char* codec : kCodecs)
      for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
        Case c{codec, s, dt, (i & 1) ? Layout::kHND : Layout::kNHD,
               static_cast<Fill>(i % static_cast<int>(Fill::kCount)), (i / 2) % 3};
        ++i;
        RunCase(rng, c);
        if (HasFatalFailure() || HasFailure()) return;
      }
}

// fp16 pages go through a copy, not through fp32: it must still quiet a
// signalling NaN exactly where the reference's round trip does, keep every
// other bit pattern, and refuse the same out-of-range values with the same
// message.
TEST_P(FastPath, Fp16CopyKeepsTheReferencesBitsForEveryPattern) {
  std::mt19937_64 rng(TestSeed() ^ 0x5bd1e995ull);
  SCOPED_TRACE(testing::Message() << "QAQKV_TEST_SEED=" << TestSeed());
  const uint16_t specials[] = {0x7c01, 0xfc01, 0x7d55, 0x7e00, 0xfe12, 0x7c00, 0xfc00,
                               0x0001, 0x83ff, 0x0000, 0x8000, 0x7bff, 0xfbff};
  auto cfg = ParseCodecConfig("fp16");
  ASSERT_TRUE(cfg.ok());
  for (const PageShape& s : {PageShape{5, 3, 33}, PageShape{16, 2, 128}, PageShape{1, 1, 1}})
    for (Layout l : {Layout::kNHD, Layout::kHND}) {
      SCOPED_TRACE(testing::Message() << s.tokens << "x" << s.kv_heads << "x" << s.head_dim
                                      << " layout " << int(l));
      std::vector<uint16_t> kh(s.values()), vh(s.values());
      for (auto* t : {&kh, &vh})
        for (auto& h : *t) h = (rng() % 4 == 0) ? specials[rng() % std::size(specials)]
                                                 : static_cast<uint16_t>(rng());
      const TensorView k{kh.data(), DType::kF16, l}, v{vh.data(), DType::kF16, l};
      auto ref = EncodePage(*cfg, s, k, v, {}, Backend::kReference);
      auto fast = EncodePage(*cfg, s, k, v, {}, Backend::kFast);
      ASSERT_TRUE(ref.ok() && fast.ok());
      ASSERT_EQ(*ref, *fast);
      // A page written elsewhere may hold signalling NaNs: decode one.
      std::vector<uint8_t> page = *ref;
      for (size_t i = 32; i + 8 < page.size(); i += 2)
        if (rng() % 3 == 0) {
          const uint16_t h = specials[rng() % std::size(specials)];
          std::memcpy(page.data() + i, &h, 2);
        }
      const uint64_t sum = PageChecksum(page.data(), page.size() - 8);
      std::memcpy(page.data() + page.size() - 8, &sum, 8);
      for (DType odt : {DType::kF16, DType::kBF16, DType::kF32}) {
        const size_t n = s.values() * (odt == DType::kF32 ? 4 : 2);
        std::vector<uint8_t> kr(n, 0xa5), vr(n, 0xa5), kf(n, 0x5a), vf(n, 0x5a);
        ASSERT_EQ(DecodePage(page, {kr.data(), odt, l}, {vr.data(), odt, l}, &s,
                             Backend::kReference), absl::OkStatus());
        ASSERT_EQ(DecodePage(page, {kf.data(), odt, l}, {vf.data(), odt, l}, &s, Backend::kFast),
                  absl::OkStatus());
        EXPECT_EQ(kr, kf) << "output dtype " << int(odt);
        EXPECT_EQ(vr, vf) << "output dtype " << int(odt);
      }
    }
  // Out of range in fp32 and bf16 input: the same refusal from both paths.
  const PageShape s{7, 2, 40};
  std::vector<float> kf(s.values(), 1.0f), vf(s.values(), -2.0f);
  vf[3 * 80 + 41] = 70000.0f;
  std::vector<uint16_t> kb(s.values(), 0x3f80), vb(s.values(), 0x3f80);
  kb[5 * 80 + 7] = 0x5000;  // bf16 2^33
  for (const auto& [k, v] : {std::pair{TensorView{kf.data(), DType::kF32, Layout::kNHD},
                                       TensorView{vf.data(), DType::kF32, Layout::kNHD}},
                             std::pair{TensorView{kb.data(), DType::kBF16, Layout::kHND},
                                       TensorView{vb.data(), DType::kBF16, Layout::kHND}}}) {
    auto ref = EncodePage(*cfg, s, k, v, {}, Backend::kReference);
    auto fast = EncodePage(*cfg, s, k, v, {}, Backend::kFast);
    ASSERT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ref.status(), fast.status());
    EXPECT_NE(ref.status().message().find("beyond fp16 range"), std::string::npos)
        << ref.status();
  }
}

INSTANTIATE_TEST_SUITE_P(Builds, FastPath, testing::Values(false, true),
                         [](const testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Avx2") : std::string("Native");
                         });


// The fast fp16 decoder checks the page while it copies it: a mismatch is
// found after the outputs were written, and must leave zeros there, not the
// corrupt page's values. The reference checks first and writes nothing.
TEST(Fp16Decode, ChecksumMismatchLeavesNoValueOfThePage) {
  const PageShape s{64, 2, 128};
  std::vector<uint16_t> k(s.values(), FloatToHalf(0.25f)), v(s.values(), FloatToHalf(-3.0f));
  auto page = EncodePage(*ParseCodecConfig("fp16"), s, {k.data(), DType::kF16, Layout::kNHD},
                         {v.data(), DType::kF16, Layout::kNHD});
  ASSERT_TRUE(page.ok());
  (*page)[page->size() - 100] ^= 0x10;  // inside V
  for (Backend b : {Backend::kReference, Backend::kFast}) {
    std::vector<uint16_t> ko(s.values(), 0xa5a5), vo(s.values(), 0xa5a5);
    const absl::Status st = DecodePage(*page, {ko.data(), DType::kF16, Layout::kNHD},
                                       {vo.data(), DType::kF16, Layout::kNHD}, &s, b);
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
    EXPECT_EQ(st.message(), "page: checksum mismatch (XXH3-64)");
    const bool fused = b == Backend::kFast && CpuHasAvx2();
    const uint16_t want = fused ? 0 : 0xa5a5;
    for (size_t i = 0; i < ko.size(); ++i) {
      ASSERT_EQ(ko[i], want) << "k " << i;
      ASSERT_EQ(vo[i], want) << "v " << i;
    }
    // A corrupt page is DATA_LOSS even when the caller expects another shape.
    const PageShape other{32, 2, 128};
    EXPECT_EQ(DecodePage(*page, {ko.data(), DType::kF16, Layout::kNHD},
                         {vo.data(), DType::kF16, Layout::kNHD}, &other, b)
                  .code(),
              absl::StatusCode::kDataLoss);
  }
}

// EncodePageInto writes the bytes EncodePage returns, whatever the buffer
// held and however large it was.
TEST(EncodePageInto, ReusedBuffersHoldExactlyThePage) {
  std::mt19937_64 rng(TestSeed() ^ 0x2545f4914f6cdd1dull);
  const PageShape s{33, 3, 64};
  for (const char* codec : kCodecs) {
    SCOPED_TRACE(codec);
    auto cfg = ParseCodecConfig(codec);
    ASSERT_TRUE(cfg.ok());
    const auto kx = Values(rng, s, Fill::kNormal), vx = Values(rng, s, Fill::kNormal);
    const auto kb = ToBytes(kx, s, DType::kF16, Layout::kNHD);
    const auto vb = ToBytes(vx, s, DType::kF16, Layout::kNHD);
    const TensorView k{kb.data(), DType::kF16, Layout::kNHD}, v{vb.data(), DType::kF16, Layout::kNHD};
    auto want = EncodePage(*cfg, s, k, v);
    ASSERT_TRUE(want.ok());
    for (size_t start : {size_t{0}, want->size() / 2, want->size(), want->size() * 3}) {
      std::vector<uint8_t> buf(start, 0xee);
      ASSERT_EQ(EncodePageInto(*cfg, s, k, v, {}, Backend::kAuto, buf), absl::OkStatus());
      EXPECT_EQ(buf, *want) << "buffer of " << start << " bytes";
    }
  }
}

}  // namespace
}  // namespace qaqkv
