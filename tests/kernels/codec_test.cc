#include "kernels/codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/half.h"
#include "kernels/internal/page_format.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv {
namespace {

using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

const DType kDTypes[] = {DType::kF16, DType::kBF16, DType::kF32};
const Layout kLayouts[] = {Layout::kNHD, Layout::kHND};
const char* const kCodecs[] = {"fp16",      "int8",   "int4",   "kivi2",     "qaq",
                               "qaq-layer", "qaq-cs", "qaq-cc", "qaq-cs-cc"};

int64_t LayoutIndex(Layout l, const PageShape& s, int64_t h, int64_t t, int64_t d) {
  return l == Layout::kHND ? (h * s.tokens + t) * s.head_dim + d
                           : (t * s.kv_heads + h) * s.head_dim + d;
}
// Head-level group of (h, t): token-major, the order of NHD memory
// (docs/page-format.md).
int64_t HeadGroup(const PageShape& s, int64_t h, int64_t t) { return t * s.kv_heads + h; }

int64_t Canon(const PageShape& s, int64_t h, int64_t t, int64_t d) {
  return (h * s.tokens + t) * s.head_dim + d;
}

// What an input value becomes once stored in `dtype`.
float Rounded(float x, DType t) {
  switch (t) {
    case DType::kF16: return HalfToFloat(FloatToHalf(x));
    case DType::kBF16: return ::qaqkv::Bf16ToFloat(::qaqkv::FloatToBf16(x));
    case DType::kF32: return x;
  }
  return x;
}

// A tensor held both as canonical (HND) floats, already rounded to its dtype,
// and as raw bytes in `dtype` / `layout`.
struct Tensor {
  std::vector<float> canon;
  std::vector<uint8_t> bytes;
  DType dtype = DType::kF32;
  Layout layout = Layout::kNHD;
  TensorView view() const { return TensorView{bytes.data(), dtype, layout}; }
};

Tensor MakeTensor(const PageShape& s, const std::vector<float>& canon_in, DType dt, Layout l) {
  Tensor t;
  t.dtype = dt;
  t.layout = l;
  const size_t es = dt == DType::kF32 ? 4 : 2;
  t.canon.resize(canon_in.size());
  t.bytes.resize(canon_in.size() * es);
  for (int h = 0; h < s.kv_heads; ++h)
    for (int tk = 0; tk < s.tokens; ++tk)
      for (int d = 0; d < s.head_dim; ++d) {
        const int64_t c = Canon(s, h, tk, d), o = LayoutIndex(l, s, h, tk, d);
        const float x = canon_in[c];
        t.canon[c] = Rounded(x, dt);
        if (dt == DType::kF32) {
          std::memcpy(t.bytes.data() + o * 4, &x, 4);
        } else {
          const uint16_t b = dt == DType::kF16 ? FloatToHalf(x) : ::qaqkv::FloatToBf16(x);
          std::memcpy(t.bytes.data() + o * 2, &b, 2);
        }
      }
  return t;
}

std::vector<float> RandomValues(const PageShape& s, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, scale);
  std::vector<float> v(s.values());
  for (auto& x : v) x = n(rng);
  return v;
}

// Decodes into canonical f32 (via an HND f32 view).
std::vector<float> DecodeCanon(std::span<const uint8_t> page, const PageShape& s, bool keys,
                               Backend b = Backend::kReference) {
  std::vector<float> k(s.values()), v(s.values());
  const absl::Status st = DecodePage(page, {k.data(), DType::kF32, Layout::kHND},
                                     {v.data(), DType::kF32, Layout::kHND}, &s, b);
  EXPECT_TRUE(st.ok()) << st;
  return keys ? k : v;
}

struct Parsed {
  internal::PageHeader header;
  internal::SectionView k, v;
};
Parsed ParsePage(std::span<const uint8_t> page) {
  Parsed p;
  auto body = internal::VerifyChecksum(page);
  EXPECT_TRUE(body.ok());
  auto h = internal::ReadHeader(*body);
  EXPECT_TRUE(h.ok()) << h.status();
  p.header = *h;
  auto k = internal::ParseSection(*h, true, body->subspan(internal::kHeaderBytes, h->k_bytes));
  auto v = internal::ParseSection(*h, false,
                                  body->subspan(internal::kHeaderBytes + h->k_bytes, h->v_bytes));
  EXPECT_TRUE(k.ok()) << k.status();
  EXPECT_TRUE(v.ok()) << v.status();
  p.k = *k;
  p.v = *v;
  return p;
}

int64_t CountFailures(const std::vector<float>& in, const std::vector<float>& out) {
  int64_t bad = 0;
  for (size_t i = 0; i < in.size(); ++i) bad += !(in[i] == out[i] || (std::isnan(in[i]) && std::isnan(out[i])));
  return bad;
}

// Walks every group of a parsed section and checks the decoded tensor: exact
// groups, outliers and residual tokens are the fp16 of the input, every other
// value lies within half a step (times the channel scale for qaq-cs keys).
// Returns per-group widths (-1 for exact groups).
std::vector<int> CheckSection(const internal::SectionView& view, const PageShape& s,
                              const std::vector<float>& in, const std::vector<float>& out,
                              const std::string& what) {
  const auto& geo = view.geo;
  const int64_t G = geo.groups();
  std::vector<int> widths(G);
  int64_t next_exact = 0, q = 0;
  int64_t failures = 0;
  auto exact_ok = [&](int64_t idx) {
    const float want = HalfToFloat(FloatToHalf(in[idx]));
    const bool ok = std::isnan(want) ? std::isnan(out[idx])
                                     : ::qaqkv::FloatBits(want) == ::qaqkv::FloatBits(out[idx]);
    if (!ok && failures++ < 5) {
      ADD_FAILURE() << what << " exact value at " << idx << ": in " << in[idx] << " out "
                    << out[idx];
    }
  };
  for (int64_t g = 0; g < G; ++g) {
    if (next_exact < view.n_exact &&
        internal::GetU32(view.exact_groups.data() + next_exact * 4) == g) {
      ++next_exact;
      widths[g] = -1;
      geo.ForEachIndex(g, [&](int, int64_t idx) { exact_ok(idx); });
      continue;
    }
    widths[g] = view.Width(g);
    const float step = HalfToFloat(internal::GetU16(view.step.data() + q * 2));
    const int64_t obase = q * 2 * view.outliers;
    int o = 0;
    geo.ForEachIndex(g, [&](int i, int64_t idx) {
      if (o < 2 * view.outliers) {
        const int oi = view.index_bytes == 1
                           ? view.outlier_index[obase + o]
                           : internal::GetU16(view.outlier_index.data() + (obase + o) * 2);
        if (oi == i) {
          ++o;
          exact_ok(idx);
          return;
        }
      }
      float scale = 1.0f;
      if (!view.channel_scale.empty()) {
        const int64_t h = idx / (int64_t{s.tokens} * s.head_dim), d = idx % s.head_dim;
        scale = HalfToFloat(internal::GetU16(view.channel_scale.data() + (h * s.head_dim + d) * 2));
      }
      float center = 0.0f;  // qaq-cc: the float subtraction and addition round
      if (!view.channel_offset.empty()) {
        const int64_t h = idx / (int64_t{s.tokens} * s.head_dim), d = idx % s.head_dim;
        center = HalfToFloat(internal::GetU16(view.channel_offset.data() + (h * s.head_dim + d) * 2));
      }
      const float err = std::fabs(out[idx] - in[idx]);
      const float tol = step * scale / 2 * (1 + 1e-4f) +
                        4e-7f * (std::max(std::fabs(in[idx]), std::fabs(out[idx])) + std::fabs(center)) +
                        1e-30f;
      if (!(err <= tol) && failures++ < 5) {
        ADD_FAILURE() << what << " group " << g << " width " << widths[g] << " index " << idx
                      << ": in " << in[idx] << " out " << out[idx] << " step " << step
                      << " scale " << scale;
      }
    });
    ++q;
  }
  for (int64_t h = 0; h < s.kv_heads; ++h)
    for (int64_t t = geo.quant_tokens; t < s.tokens; ++t)
      for (int64_t d = 0; d < s.head_dim; ++d) exact_ok(Canon(s, h, t, d));
  EXPECT_EQ(failures, 0) << what;
  return widths;
}

// ---- configs ---------------------------------------------------------------

TEST(CodecConfig, NamesKeepTheirSixDigitSpelling) {
  // A name is a stored block's format: names of configs stored before
  // stay the same.
  EXPECT_EQ(ParseCodecConfig("qaq")->Name(), "qaq:s=0.001,x=0.001,o=0.01,b=0-8");
  EXPECT_EQ(ParseCodecConfig("qaq-cc:s=3e-4,x=2e-2,o=0")->Name(),
            "qaq-cc:s=0.0003,x=0.02,o=0,b=0-8");
  EXPECT_EQ(ParseCodecConfig("qaq:o=0.06250001")->Name(), "qaq:s=0.001,x=0.001,o=0.06250001,b=0-8");
}

TEST(CodecConfig, NameRoundTrip) {
  const char* names[] = {"fp16", "int8", "int4", "int8-layer", "int4-layer", "kivi2",
                         "kivi2:r=32", "kivi2:r=0,g=64", "qaq", "qaq-layer", "qaq-cs",
                         "qaq-layer-cs", "qaq:s=7e-4,x=2e-4,o=0,b=0-8",
                         "qaq:s=0.5,x=0.25,o=0.1,b=2-6,w=1", "qaq-cs:o=0.02,b=1-7,w=9",
                         "qaq-cc:s=3e-4,x=2e-2,o=0", "qaq-layer-cs-cc",
                         // Values six digits cannot tell from a neighbour.
                         "qaq:o=0.06250001", "qaq:s=1.00000012e-3,x=3.14159274"};
  for (const char* name : names) {
    auto c = ParseCodecConfig(name);
    ASSERT_TRUE(c.ok()) << name << " " << c.status();
    const std::string n = c->Name();
    auto c2 = ParseCodecConfig(n);
    ASSERT_TRUE(c2.ok()) << n << " " << c2.status();
    EXPECT_EQ(c2->Name(), n);
    EXPECT_EQ(c2->kind, c->kind) << name;
    EXPECT_EQ(c2->group, c->group) << name;
    EXPECT_EQ(c2->sigma_s, c->sigma_s) << name;
    EXPECT_EQ(c2->sigma_x, c->sigma_x) << name;
    EXPECT_EQ(c2->b_min, c->b_min) << name;
    EXPECT_EQ(c2->b_max, c->b_max) << name;
    EXPECT_EQ(c2->outlier_ratio, c->outlier_ratio) << name;
    EXPECT_EQ(c2->key_channel_scale, c->key_channel_scale) << name;
    EXPECT_EQ(c2->key_channel_center, c->key_channel_center) << name;
    EXPECT_EQ(c2->window, c->window) << name;
    EXPECT_EQ(c2->kivi_group, c->kivi_group) << name;
    EXPECT_EQ(c2->kivi_residual, c->kivi_residual) << name;
  }
}

TEST(CodecConfig, ParsedFields) {
  auto c = ParseCodecConfig("qaq:s=7e-4,x=2e-4,o=0,b=1-7,w=3");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, CodecKind::kQaq);
  EXPECT_EQ(c->group, GroupLevel::kHead);
  EXPECT_EQ(c->sigma_s, 7e-4f);
  EXPECT_EQ(c->sigma_x, 2e-4f);
  EXPECT_EQ(c->outlier_ratio, 0.0f);
  EXPECT_EQ(c->b_min, 1);
  EXPECT_EQ(c->b_max, 7);
  EXPECT_EQ(c->window, 3);
  c = ParseCodecConfig("qaq-layer-cs");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->group, GroupLevel::kLayer);
  EXPECT_TRUE(c->key_channel_scale);
  c = ParseCodecConfig("kivi2:r=32,g=16");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, CodecKind::kKivi2);
  EXPECT_EQ(c->kivi_residual, 32);
  EXPECT_EQ(c->kivi_group, 16);
  c = ParseCodecConfig("int4-layer");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, CodecKind::kInt4);
  EXPECT_EQ(c->group, GroupLevel::kLayer);
  for (CodecKind k : {CodecKind::kFp16, CodecKind::kInt8, CodecKind::kInt4, CodecKind::kKivi2,
                      CodecKind::kQaq}) {
    auto p = ParseCodecConfig(CodecKindName(k));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->kind, k);
  }
}

TEST(CodecConfig, BadStrings) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "unknown codec"},
      {"foo", "unknown codec 'foo'"},
      {"int16", "unknown codec 'int16'"},
      {"fp16-layer", "unknown variant 'layer'"},
      {"kivi2-layer", "unknown variant 'layer'"},
      {"int8-cs", "unknown variant 'cs'"},
      {"int4-cc", "unknown variant 'cc'"},
      {"qaq-xyz", "unknown variant 'xyz'"},
      {"qaq:s=0", "config.sigma_s"},
      {"qaq:s=-1", "config.sigma_s"},
      {"qaq:s=inf", "config.sigma_s"},
      {"qaq:x=0", "config.sigma_x"},
      {"qaq:x=nan", "config.sigma_x"},
      {"qaq:b=9-9", "config.b_min"},
      {"qaq:b=-1-8", "bad parameter 'b=-1-8'"},
      {"qaq:b=4-2", "config.b_max"},
      {"qaq:b=0-9", "config.b_max"},
      {"qaq:o=0.5", "config.outlier_ratio"},
      {"qaq:o=-0.1", "config.outlier_ratio"},
      {"qaq:w=0", "config.window"},
      {"qaq:w=5000", "config.window"},
      {"kivi2:g=0", "config.kivi_group"},
      {"kivi2:g=300", "config.kivi_group"},
      {"kivi2:r=-1", "config.kivi_residual"},
      {"qaq:s=abc", "bad parameter 's=abc'"},
      {"qaq:b=3", "bad parameter 'b=3'"},
      {"qaq:s", "bad parameter 's'"},
      {"qaq:q=1", "bad parameter 'q=1'"},
      {"int8:s=1", "bad parameter 's=1'"},
      {"kivi2:s=1", "bad parameter 's=1'"},
      {"qaq:r=3", "bad parameter 'r=3'"},
      {"kivi2:r=x", "bad parameter 'r=x'"},
  };
  for (const auto& [text, msg] : cases) {
    auto c = ParseCodecConfig(text);
    ASSERT_FALSE(c.ok()) << "'" << text << "' parsed as " << c->Name();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(msg)) << text;
  }
}

TEST(CodecConfig, EncodeRejectsBadStruct) {
  const PageShape s{4, 1, 8};
  std::vector<float> x(s.values(), 1.0f);
  const TensorView in{x.data(), DType::kF32};
  auto expect = [&](const CodecConfig& c, const char* field) {
    auto p = EncodePage(c, s, in, in);
    ASSERT_FALSE(p.ok()) << field;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(field));
  };
  CodecConfig c;
  c.b_min = -1;
  expect(c, "config.b_min");
  c = {};
  c.b_max = 9;
  expect(c, "config.b_max");
  c = {};
  c.sigma_s = 0;
  expect(c, "config.sigma_s");
  c = {};
  c.outlier_ratio = kNaN;
  expect(c, "config.outlier_ratio");
  c = {};
  c.kind = CodecKind::kInt8;
  c.key_channel_scale = true;
  expect(c, "config.key_channel_scale");
  c = {};
  c.kind = CodecKind::kKivi2;
  c.key_channel_center = true;
  expect(c, "config.key_channel_center");
  c = {};
  c.kind = static_cast<CodecKind>(7);
  expect(c, "config.kind");
  c = {};
  c.group = static_cast<GroupLevel>(3);
  expect(c, "config.group");
  c = {};
  c.kind = CodecKind::kKivi2;
  c.kivi_group = 0;
  expect(c, "config.kivi_group");
}

// ---- round trips -------------------------------------------------------------

struct RoundTripCase {
  const char* codec;
  DType dtype;
  Layout layout;
};

TEST(CodecRoundTrip, EveryCodecDTypeLayout) {
  const PageShape s{37, 3, 64};
  const std::vector<float> kv = RandomValues(s, 1), vv = RandomValues(s, 2, 3.0f);
  for (const char* name : kCodecs) {
    auto cfg = ParseCodecConfig(name);
    ASSERT_TRUE(cfg.ok());
    if (cfg->kind == CodecKind::kKivi2) cfg->kivi_residual = 16;  // part quantized, part not
    for (DType dt : kDTypes)
      for (Layout l : kLayouts) {
        SCOPED_TRACE(testing::Message() << name << " dtype " << int(dt) << " layout " << int(l));
        const Tensor k = MakeTensor(s, kv, dt, l), v = MakeTensor(s, vv, dt, l);
        auto page = EncodePage(*cfg, s, k.view(), v.view());
        ASSERT_TRUE(page.ok()) << page.status();
        auto info = InspectPage(*page);
        ASSERT_TRUE(info.ok()) << info.status();
        EXPECT_EQ(info->version, 1);
        EXPECT_EQ(info->kind, cfg->kind);
        EXPECT_EQ(info->group, cfg->group);
        EXPECT_EQ(info->shape.tokens, s.tokens);
        EXPECT_EQ(info->shape.kv_heads, s.kv_heads);
        EXPECT_EQ(info->shape.head_dim, s.head_dim);
        EXPECT_EQ(info->encoded_bytes, page->size());

        const std::vector<float> kd = DecodeCanon(*page, s, true), vd = DecodeCanon(*page, s, false);
        if (cfg->kind == CodecKind::kFp16) {
          std::vector<float> k16(k.canon.size()), v16(v.canon.size());
          for (size_t i = 0; i < k16.size(); ++i) k16[i] = HalfToFloat(FloatToHalf(k.canon[i]));
          for (size_t i = 0; i < v16.size(); ++i) v16[i] = HalfToFloat(FloatToHalf(v.canon[i]));
          EXPECT_EQ(CountFailures(k16, kd), 0);
          EXPECT_EQ(CountFailures(v16, vd), 0);
        } else {
          const Parsed p = ParsePage(*page);
          const auto kw = CheckSection(p.k, s, k.canon, kd, "K");
          const auto vw = CheckSection(p.v, s, v.canon, vd, "V");
          for (int w : kw) EXPECT_NE(w, -1);  // no exact groups for finite normal data
          for (int w : vw) EXPECT_NE(w, -1);
          if (cfg->kind == CodecKind::kInt8) {
            for (int w : kw) EXPECT_EQ(w, 8);
          }
          if (cfg->kind == CodecKind::kInt4) {
            for (int w : vw) EXPECT_EQ(w, 4);
          }
          if (cfg->kind == CodecKind::kKivi2) {
            for (int w : vw) EXPECT_EQ(w, 2);
          }
        }

        // Every output dtype and layout agrees with the f32 HND decode.
        for (DType odt : kDTypes)
          for (Layout ol : kLayouts) {
            const size_t es = odt == DType::kF32 ? 4 : 2;
            std::vector<uint8_t> ko(s.values() * es), vo(s.values() * es);
            ASSERT_EQ(DecodePage(*page, {ko.data(), odt, ol}, {vo.data(), odt, ol}, &s,
                                 Backend::kReference),
                      absl::OkStatus());
            int64_t bad = 0;
            for (int h = 0; h < s.kv_heads; ++h)
              for (int t = 0; t < s.tokens; ++t)
                for (int d = 0; d < s.head_dim; ++d) {
                  const int64_t c = Canon(s, h, t, d), o = LayoutIndex(ol, s, h, t, d);
                  for (int which = 0; which < 2; ++which) {
                    const float f = which ? vd[c] : kd[c];
                    const auto& buf = which ? vo : ko;
                    if (odt == DType::kF32) {
                      float g;
                      std::memcpy(&g, buf.data() + o * 4, 4);
                      bad += ::qaqkv::FloatBits(g) != ::qaqkv::FloatBits(f);
                    } else {
                      uint16_t g;
                      std::memcpy(&g, buf.data() + o * 2, 2);
                      bad += g != (odt == DType::kF16 ? FloatToHalf(f) : ::qaqkv::FloatToBf16(f));
                    }
                  }
                }
            EXPECT_EQ(bad, 0) << "output dtype " << int(odt) << " layout " << int(ol);
          }
      }
  }
}

TEST(CodecRoundTrip, Fp16IsBitExact) {
  const PageShape s{9, 2, 16};
  std::vector<float> x(s.values());
  // Every kind of fp16: normals, subnormals, signed zero, extremes.
  const float specials[] = {0.0f, -0.0f, 65504.0f, -65504.0f, std::ldexp(1.0f, -24),
                            -std::ldexp(3.0f, -24), 1e-5f, 0.333f};
  std::mt19937 rng(3);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = i < 8 ? specials[i] : HalfToFloat(static_cast<uint16_t>(rng() & 0x7bff) | ((rng() & 1) << 15));
  }
  const Tensor t = MakeTensor(s, x, DType::kF16, Layout::kNHD);
  auto cfg = ParseCodecConfig("fp16");
  auto page = EncodePage(*cfg, s, t.view(), t.view());
  ASSERT_TRUE(page.ok());
  std::vector<uint16_t> ko(s.values()), vo(s.values());
  ASSERT_EQ(DecodePage(*page, {ko.data(), DType::kF16}, {vo.data(), DType::kF16}), absl::OkStatus());
  EXPECT_EQ(std::memcmp(ko.data(), t.bytes.data(), t.bytes.size()), 0);
  EXPECT_EQ(std::memcmp(vo.data(), t.bytes.data(), t.bytes.size()), 0);
  EXPECT_EQ(page->size(), 32u + 8u + 2u * s.values() * 2u);
}

TEST(CodecRoundTrip, Int8ErrorWithinHalfLevelOfGroupRange) {
  // Independent of the page internals: error <= range / 256 / 2 (+ fp16 slack).
  const PageShape s{20, 2, 64};
  const std::vector<float> x = RandomValues(s, 5);
  auto cfg = ParseCodecConfig("int8");
  auto page = EncodePage(*cfg, s, {x.data(), DType::kF32, Layout::kHND},
                         {x.data(), DType::kF32, Layout::kHND});
  ASSERT_TRUE(page.ok());
  const auto out = DecodeCanon(*page, s, false);
  for (int64_t g = 0; g < int64_t{s.kv_heads} * s.tokens; ++g) {
    float lo = kInf, hi = -kInf;
    for (int d = 0; d < s.head_dim; ++d) {
      lo = std::min(lo, x[g * s.head_dim + d]);
      hi = std::max(hi, x[g * s.head_dim + d]);
    }
    // Offset rounds down by at most an fp16 ulp of lo; step up by one fp16 ulp.
    const float range = (hi - lo) + std::fabs(lo) * 1e-3f;
    const float tol = range / 256 / 2 * (1 + 2e-3f) + 1e-6f;
    for (int d = 0; d < s.head_dim; ++d) {
      const int64_t i = g * s.head_dim + d;
      ASSERT_LE(std::fabs(out[i] - x[i]), tol) << "group " << g << " d " << d;
    }
  }
}

TEST(CodecRoundTrip, QaqOutliersAreExact) {
  // o = 0.01 with head_dim 64: k = ceil(0.32) = 1 smallest and 1 largest per group.
  const PageShape s{16, 2, 64};
  std::vector<float> x = RandomValues(s, 9);
  auto cfg = ParseCodecConfig("qaq:o=0.01");
  ASSERT_TRUE(cfg.ok());
  const Tensor t = MakeTensor(s, x, DType::kF16, Layout::kHND);
  auto page = EncodePage(*cfg, s, t.view(), t.view());
  ASSERT_TRUE(page.ok());
  const Parsed p = ParsePage(*page);
  EXPECT_EQ(p.header.outliers, 1);
  for (bool keys : {true, false}) {
    const auto out = DecodeCanon(*page, s, keys);
    for (int64_t g = 0; g < int64_t{s.kv_heads} * s.tokens; ++g) {
      const float* in = t.canon.data() + g * s.head_dim;
      const auto mn = std::min_element(in, in + s.head_dim) - in;
      const auto mx = std::max_element(in, in + s.head_dim) - in;
      EXPECT_EQ(out[g * s.head_dim + mn], in[mn]) << g;
      EXPECT_EQ(out[g * s.head_dim + mx], in[mx]) << g;
    }
  }
  // With 4% outliers on 64 values: k = ceil(1.28) = 2 per side.
  cfg = ParseCodecConfig("qaq:o=0.04");
  page = EncodePage(*cfg, s, t.view(), t.view());
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(ParsePage(*page).header.outliers, 2);
  const auto out = DecodeCanon(*page, s, true);
  for (int64_t g = 0; g < int64_t{s.kv_heads} * s.tokens; ++g) {
    std::vector<float> in(t.canon.begin() + g * s.head_dim, t.canon.begin() + (g + 1) * s.head_dim);
    // Ties go to the lower index: sort by (value, index) for the smallest and
    // by (-value, index) for the largest of the rest.
    std::vector<int> order(s.head_dim);
    for (int d = 0; d < s.head_dim; ++d) order[d] = d;
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return in[a] < in[b] || (in[a] == in[b] && a < b); });
    std::vector<int> rest(order.begin() + 2, order.end());
    std::sort(rest.begin(), rest.end(),
              [&](int a, int b) { return in[a] > in[b] || (in[a] == in[b] && a < b); });
    for (int d : {order[0], order[1], rest[0], rest[1]}) {
      EXPECT_EQ(out[g * s.head_dim + d], in[d]) << g << " " << d;
    }
  }
}

TEST(CodecRoundTrip, Kivi2ResidualExactAndSize) {
  const PageShape s{768, 1, 64};
  const std::vector<float> x = RandomValues(s, 4);
  const Tensor t = MakeTensor(s, x, DType::kF16, Layout::kNHD);
  auto cfg = ParseCodecConfig("kivi2");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->kivi_residual, 128);
  EXPECT_EQ(cfg->kivi_group, 32);
  auto page = EncodePage(*cfg, s, t.view(), t.view());
  ASSERT_TRUE(page.ok());
  // Quantized tokens 640. K: 20 token blocks x 64 channels = 1280 groups of 32;
  // V: 640 tokens x 2 chunks = 1280 groups of 32. Per section: exact count 4 +
  // lo/step 1280 * 4 + codes 640 * 64 * 2 bits / 8 + residual 128 * 64 * 2.
  const size_t section = 4 + 1280 * 4 + 640 * 64 * 2 / 8 + 128 * 64 * 2;
  EXPECT_EQ(section, 31748u);
  EXPECT_EQ(page->size(), 32 + 8 + 2 * section);
  auto st = ComputePageStats(*page);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->values, 2 * 768 * 64);
  EXPECT_EQ(st->encoded_bytes, 63536);
  EXPECT_DOUBLE_EQ(st->ratio(), 196608.0 / 63536.0);
  EXPECT_EQ(st->exact_values, 2 * 128 * 64);
  EXPECT_EQ(st->outliers, 0);
  EXPECT_DOUBLE_EQ(st->code_bits, 2.0 * 2 * 640 * 64);
  for (bool keys : {true, false}) {
    const auto out = DecodeCanon(*page, s, keys);
    for (int tk = 640; tk < 768; ++tk)
      for (int d = 0; d < 64; ++d) ASSERT_EQ(out[tk * 64 + d], t.canon[tk * 64 + d]) << tk;
    const Parsed p = ParsePage(*page);
    CheckSection(keys ? p.k : p.v, s, t.canon, out, keys ? "K" : "V");
  }
  // Residual larger than the page: everything exact.
  cfg->kivi_residual = 1000;
  page = EncodePage(*cfg, s, t.view(), t.view());
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(CountFailures(t.canon, DecodeCanon(*page, s, true)), 0);
}

TEST(PageSize, Int8HeadLevelHandComputed) {
  for (PageShape s : {PageShape{1, 1, 1}, PageShape{5, 3, 64}, PageShape{67, 2, 128}}) {
    const std::vector<float> x = RandomValues(s, 8);
    auto cfg = ParseCodecConfig("int8");
    auto page = EncodePage(*cfg, s, {x.data(), DType::kF32}, {x.data(), DType::kF32});
    ASSERT_TRUE(page.ok());
    const int64_t G = int64_t{s.tokens} * s.kv_heads, N = s.head_dim;
    EXPECT_EQ(static_cast<int64_t>(page->size()), 32 + 8 + 2 * (4 + G * 4 + N * G));
  }
}

TEST(PageStats, Int4Ratio) {
  const PageShape s{256, 8, 128};
  const std::vector<float> x = RandomValues(s, 6);
  auto cfg = ParseCodecConfig("int4");
  auto page = EncodePage(*cfg, s, {x.data(), DType::kF32}, {x.data(), DType::kF32});
  ASSERT_TRUE(page.ok());
  const int64_t G = 256 * 8;
  const int64_t bytes = 32 + 8 + 2 * (4 + G * 4 + G * 128 / 2);
  EXPECT_EQ(static_cast<int64_t>(page->size()), bytes);
  auto st = ComputePageStats(*page);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->values, 2 * s.values());
  EXPECT_EQ(st->encoded_bytes, bytes);
  EXPECT_DOUBLE_EQ(st->ratio(), double(2 * s.values() * 2) / bytes);
  EXPECT_DOUBLE_EQ(st->code_bits, 4.0 * 2 * s.values());
  EXPECT_EQ(st->outliers, 0);
  EXPECT_EQ(st->exact_values, 0);
  EXPECT_DOUBLE_EQ(st->paper_bits_per_value(), 4.0);
}

// ---- QAQ side inputs ----------------------------------------------------------

TEST(QaqSideInputs, AttentionDrivesValueWidths) {
  const PageShape s{6, 2, 64};
  const std::vector<float> x = RandomValues(s, 12);
  auto cfg = ParseCodecConfig("qaq:b=2-8,o=0");
  ASSERT_TRUE(cfg.ok());
  // attention[t * H + h]; token 0 unseen (-1), token 1 tiny, token 2 zero.
  std::vector<float> att(s.tokens * s.kv_heads, 1.0f);
  att[0 * 2 + 0] = -1.0f;
  att[0 * 2 + 1] = -0.5f;
  att[1 * 2 + 0] = 1e-30f;
  att[1 * 2 + 1] = 1e-30f;
  att[2 * 2 + 0] = 0.0f;
  att[2 * 2 + 1] = 0.0f;
  QaqSideInputs side;
  side.attention = att;
  // x is canonical (HND); attention is token-major whatever the layout.
  const TensorView in{x.data(), DType::kF32, Layout::kHND};
  auto page = EncodePage(*cfg, s, in, in, side);
  ASSERT_TRUE(page.ok()) << page.status();
  const Parsed p = ParsePage(*page);
  const auto vd = DecodeCanon(*page, s, false);
  const auto widths = CheckSection(p.v, s, x, vd, "V");
  for (int h = 0; h < 2; ++h) {
    EXPECT_EQ(widths[HeadGroup(s, h, 0)], 8) << h;  // negative -> b_max
    EXPECT_EQ(widths[HeadGroup(s, h, 1)], 2) << h;  // tiny -> b_min
    EXPECT_EQ(widths[HeadGroup(s, h, 2)], 2) << h;  // zero -> b_min
  }
  // Unit variance, sigma_x 1e-3, T 6, a = 1: e = sqrt(12) * 1e-3 / sqrt(6) ~ 1.4e-3,
  // range ~ 5 => 5 / 1.4e-3 ~ 3500 > 2^8: b_max.
  for (int h = 0; h < 2; ++h)
    for (int t = 3; t < 6; ++t) EXPECT_EQ(widths[HeadGroup(s, h, t)], 8);
  // Layer level: any negative head makes the token b_max.
  cfg = ParseCodecConfig("qaq-layer:b=2-8,o=0");
  page = EncodePage(*cfg, s, in, in, side);
  ASSERT_TRUE(page.ok());
  const Parsed pl = ParsePage(*page);
  EXPECT_EQ(pl.v.Width(0), 8);
  EXPECT_EQ(pl.v.Width(1), 2);
  EXPECT_EQ(pl.v.Width(2), 2);
  // Keys ignore attention.
  EXPECT_EQ(pl.k.Width(1), pl.k.Width(3));
  // With b_min 0, a token of zero attention stores only its midpoint: every
  // value of the group decodes to the same number.
  cfg = ParseCodecConfig("qaq:o=0");
  page = EncodePage(*cfg, s, in, in, side);
  ASSERT_TRUE(page.ok());
  const auto v0 = DecodeCanon(*page, s, false);
  for (int h = 0; h < 2; ++h) {
    const int64_t base = Canon(s, h, 2, 0);
    for (int d = 1; d < 64; ++d) EXPECT_EQ(v0[base + d], v0[base]);
  }
  auto st = ComputePageStats(*page);
  ASSERT_TRUE(st.ok());
  EXPECT_LT(st->code_bits, 2.0 * s.values() * 8);
}

TEST(QaqSideInputs, LowQ2AndLargeContextMeanFewerKeyBits) {
  const PageShape s{8, 1, 64};
  const std::vector<float> x = RandomValues(s, 13);
  auto cfg = ParseCodecConfig("qaq:o=0");
  std::vector<float> q2_small = {1e-8f}, q2_big = {1e8f};
  QaqSideInputs a, b;
  a.q2 = q2_small;
  b.q2 = q2_big;
  auto pa = EncodePage(*cfg, s, {x.data(), DType::kF32}, {x.data(), DType::kF32}, a);
  auto pb = EncodePage(*cfg, s, {x.data(), DType::kF32}, {x.data(), DType::kF32}, b);
  ASSERT_TRUE(pa.ok() && pb.ok());
  const Parsed A = ParsePage(*pa), B = ParsePage(*pb);
  for (int g = 0; g < s.tokens; ++g) {
    EXPECT_EQ(A.k.Width(g), 0) << g;
    EXPECT_EQ(B.k.Width(g), 8) << g;
  }
}

TEST(QaqSideInputs, Validation) {
  const PageShape s{4, 2, 8};
  std::vector<float> x(s.values(), 0.5f);
  const TensorView in{x.data(), DType::kF32};
  auto cfg = ParseCodecConfig("qaq");
  auto expect = [&](const QaqSideInputs& side, const char* field) {
    auto p = EncodePage(*cfg, s, in, in, side);
    ASSERT_FALSE(p.ok()) << field;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(field));
  };
  std::vector<float> short_att(7, 0.1f), att(8, 0.1f), nan_att(8, 0.1f), big_att(8, 0.1f);
  nan_att[3] = kNaN;
  big_att[5] = 1.5f;
  std::vector<float> q2_bad_size = {1, 1, 1}, q2_neg = {1, -1}, q2_zero = {0, 1},
                     q2_inf = {kInf, 1}, q2_nan = {kNaN, 1};
  QaqSideInputs side;
  side.attention = short_att;
  expect(side, "side.attention");
  side.attention = nan_att;
  expect(side, "side.attention");
  side.attention = big_att;
  expect(side, "side.attention");
  side = {};
  side.q2 = q2_bad_size;
  expect(side, "side.q2");
  side.q2 = q2_neg;
  expect(side, "side.q2");
  side.q2 = q2_zero;
  expect(side, "side.q2");
  side.q2 = q2_inf;
  expect(side, "side.q2");
  side.q2 = q2_nan;
  expect(side, "side.q2");
  side = {};
  side.context_tokens = -1;
  expect(side, "side.context_tokens");
  // Valid side inputs (and -inf attention, which counts as unseen) pass.
  std::vector<float> ok_att(8, 0.1f);
  ok_att[0] = -kInf;
  side = {};
  side.attention = ok_att;
  EXPECT_TRUE(EncodePage(*cfg, s, in, in, side).ok());
}

// ---- non-finite and out-of-range inputs ---------------------------------------------

TEST(NonFinite, RoundTripAtSamePositions) {
  const PageShape s{40, 2, 64};
  std::vector<float> x = RandomValues(s, 21);
  const std::vector<int64_t> nan_at = {Canon(s, 0, 3, 5), Canon(s, 1, 39, 63)};
  const std::vector<int64_t> pinf_at = {Canon(s, 0, 10, 0)}, ninf_at = {Canon(s, 1, 0, 17)};
  for (auto i : nan_at) x[i] = kNaN;
  for (auto i : pinf_at) x[i] = kInf;
  for (auto i : ninf_at) x[i] = -kInf;
  for (const char* name : kCodecs) {
    auto cfg = ParseCodecConfig(name);
    if (cfg->kind == CodecKind::kKivi2) cfg->kivi_residual = 8;
    for (DType dt : kDTypes) {
      SCOPED_TRACE(testing::Message() << name << " dtype " << int(dt));
      const Tensor t = MakeTensor(s, x, dt, Layout::kNHD);
      auto page = EncodePage(*cfg, s, t.view(), t.view());
      ASSERT_TRUE(page.ok()) << page.status();
      for (bool keys : {true, false}) {
        const auto out = DecodeCanon(*page, s, keys);
        for (size_t i = 0; i < out.size(); ++i) {
          const bool want_nan = std::find(nan_at.begin(), nan_at.end(), int64_t(i)) != nan_at.end();
          ASSERT_EQ(std::isnan(out[i]), want_nan) << i;
        }
        for (auto i : pinf_at) EXPECT_EQ(out[i], kInf);
        for (auto i : ninf_at) EXPECT_EQ(out[i], -kInf);
        if (cfg->kind != CodecKind::kFp16) {
          const Parsed p = ParsePage(*page);
          const auto widths = CheckSection(keys ? p.k : p.v, s, t.canon, out, keys ? "K" : "V");
          int exact = 0;
          for (int w : widths) exact += w == -1;
          EXPECT_GE(exact, 1);
          EXPECT_LE(exact, 4);  // only the groups holding non-finite values
        }
      }
      auto st = ComputePageStats(*page);
      ASSERT_TRUE(st.ok());
      EXPECT_GT(st->exact_values, 0);
    }
  }
}

TEST(NonFinite, QaqCsChannelWithInf) {
  // An Inf in a key channel must not poison that channel's scale.
  const PageShape s{16, 1, 32};
  std::vector<float> x = RandomValues(s, 22);
  x[Canon(s, 0, 4, 7)] = kInf;
  auto cfg = ParseCodecConfig("qaq-cs");
  auto page = EncodePage(*cfg, s, {x.data(), DType::kF32, Layout::kHND},
                         {x.data(), DType::kF32, Layout::kHND});
  ASSERT_TRUE(page.ok());
  const auto out = DecodeCanon(*page, s, true);
  EXPECT_EQ(out[Canon(s, 0, 4, 7)], kInf);
  const Parsed p = ParsePage(*page);
  CheckSection(p.k, s, x, out, "K");
}

TEST(OutOfRange, FiniteBeyondFp16IsRejected) {
  const PageShape s{3, 1, 8};
  for (const char* name : kCodecs) {
    auto cfg = ParseCodecConfig(name);
    for (int which = 0; which < 2; ++which) {
      std::vector<float> k(s.values(), 1.0f), v(s.values(), 1.0f);
      (which ? v : k)[5] = which ? -70000.0f : 65520.0f;
      auto page = EncodePage(*cfg, s, {k.data(), DType::kF32}, {v.data(), DType::kF32});
      ASSERT_FALSE(page.ok()) << name;
      EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(page.status().message()), HasSubstr(which ? "v:" : "k:"));
    }
    // bf16 holds 1e5, fp16 does not.
    std::vector<uint16_t> b(s.values(), ::qaqkv::FloatToBf16(1.0f));
    b[2] = ::qaqkv::FloatToBf16(1e5f);
    std::vector<uint16_t> ok(s.values(), ::qaqkv::FloatToBf16(1.0f));
    auto page = EncodePage(*cfg, s, {ok.data(), DType::kBF16}, {b.data(), DType::kBF16});
    ASSERT_FALSE(page.ok());
    EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(page.status().message()), HasSubstr("v:"));
    // 65504 itself is fine.
    std::vector<float> edge(s.values(), -65504.0f);
    edge[0] = 65504.0f;
    EXPECT_TRUE(EncodePage(*cfg, s, {edge.data(), DType::kF32}, {edge.data(), DType::kF32}).ok());
  }
}

TEST(OutOfRange, FullFp16RangeGroupDecodes) {
  // A group spanning [-65504, 65504] cannot be offset + step at B = 0 but can
  // at B >= 1; either way it must decode within half a step or exactly.
  const PageShape s{2, 1, 8};
  std::vector<float> x = {-65504, 65504, 0, 1, -1, 3, 100, -100,
                          1, 2, 3, 4, 5, 6, 7, 8};
  for (const char* name : {"int8", "int4", "qaq:o=0,b=0-0", "qaq:o=0,b=1-1", "qaq-layer:o=0"}) {
    auto cfg = ParseCodecConfig(name);
    ASSERT_TRUE(cfg.ok()) << name;
    auto page = EncodePage(*cfg, s, {x.data(), DType::kF32, Layout::kHND},
                           {x.data(), DType::kF32, Layout::kHND});
    ASSERT_TRUE(page.ok()) << name << page.status();
    const Parsed p = ParsePage(*page);
    CheckSection(p.k, s, x, DecodeCanon(*page, s, true), name);
  }
}

// ---- argument validation --------------------------------------------------------

TEST(Validation, BadShapesAndViews) {
  std::vector<float> x(2048, 1.0f);
  const TensorView in{x.data(), DType::kF32};
  auto cfg = ParseCodecConfig("int8");
  auto expect = [&](const PageShape& s, TensorView k, TensorView v, const char* field) {
    auto p = EncodePage(*cfg, s, k, v);
    ASSERT_FALSE(p.ok()) << field;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(field));
  };
  expect({0, 1, 8}, in, in, "shape.tokens");
  expect({-3, 1, 8}, in, in, "shape.tokens");
  expect({(1 << 20) + 1, 1, 8}, in, in, "shape.tokens");
  expect({1, 0, 8}, in, in, "shape.kv_heads");
  expect({1, 1025, 8}, in, in, "shape.kv_heads");
  expect({1, 1, 0}, in, in, "shape.head_dim");
  expect({1, 1, 1025}, in, in, "shape.head_dim");
  expect({1 << 20, 1024, 1024}, in, in, "shape");
  expect({4, 1, 8}, {nullptr, DType::kF32}, in, "k.data");
  expect({4, 1, 8}, in, {nullptr, DType::kF32}, "v.data");
  expect({4, 1, 8}, {x.data(), static_cast<DType>(9)}, in, "k.dtype");
  expect({4, 1, 8}, in, {x.data(), DType::kF32, static_cast<Layout>(5)}, "v.layout");

  const PageShape s{4, 1, 8};
  auto page = EncodePage(*cfg, s, in, in);
  ASSERT_TRUE(page.ok());
  std::vector<float> out(s.values());
  auto dec = [&](MutableTensorView k, MutableTensorView v, const PageShape* e) {
    return DecodePage(*page, k, v, e);
  };
  const MutableTensorView o{out.data(), DType::kF32};
  absl::Status st = dec({nullptr, DType::kF32}, o, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("k.data"));
  st = dec(o, {nullptr, DType::kF32}, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("v.data"));
  st = dec(o, {out.data(), static_cast<DType>(0)}, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  for (PageShape e : {PageShape{5, 1, 8}, PageShape{4, 2, 8}, PageShape{4, 1, 4}}) {
    st = dec(o, o, &e);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(st.message()), HasSubstr("does not match"));
  }
  EXPECT_EQ(dec(o, o, &s), absl::OkStatus());
}

TEST(Backends, AutoMatchesReference) {
  const PageShape s{33, 2, 128};
  const std::vector<float> x = RandomValues(s, 30);
  for (const char* name : kCodecs) {
    auto cfg = ParseCodecConfig(name);
    auto a = EncodePage(*cfg, s, {x.data(), DType::kF32}, {x.data(), DType::kF32}, {}, Backend::kAuto);
    auto r = EncodePage(*cfg, s, {x.data(), DType::kF32}, {x.data(), DType::kF32}, {},
                        Backend::kReference);
    ASSERT_TRUE(a.ok() && r.ok());
    EXPECT_EQ(*a, *r) << name;
    EXPECT_EQ(CountFailures(DecodeCanon(*r, s, true, Backend::kAuto),
                            DecodeCanon(*r, s, true, Backend::kReference)),
              0)
        << name;
  }
}

TEST(CodecKindName, Names) {
  EXPECT_EQ(CodecKindName(CodecKind::kFp16), "fp16");
  EXPECT_EQ(CodecKindName(CodecKind::kInt8), "int8");
  EXPECT_EQ(CodecKindName(CodecKind::kInt4), "int4");
  EXPECT_EQ(CodecKindName(CodecKind::kKivi2), "kivi2");
  EXPECT_EQ(CodecKindName(CodecKind::kQaq), "qaq");
}

}  // namespace
}  // namespace qaqkv
