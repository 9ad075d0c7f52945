#include "tools/eval/kv_source.h"

#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qaqkv::eval {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kDataDir = std::string(QAQKV_SOURCE_DIR) + "/data/tinylm-kv";
const std::string kDev00 = kDataDir + "/dev-00.safetensors";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// A safetensors file: length, header padded with spaces to 8 bytes, data.
std::string Safetensors(const std::string& header, const std::string& data) {
  std::string h = header;
  h.resize((h.size() + 7) / 8 * 8, ' ');
  return LengthPrefix(h.size()) + h + data;
}

double Rms(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += double{v} * v;
  return std::sqrt(s / x.size());
}

class KvSourceFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "kv_source_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    const std::string bytes = ReadAll(kDev00);
    ASSERT_GT(bytes.size(), 8u);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);  // the test hosts are little-endian
    header_ = json::parse(bytes.substr(8, n));
    data_ = bytes.substr(8 + n);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `bytes` to a fresh file in the temp dir and loads it.
  absl::StatusOr<KvSample> Load(const std::string& bytes) {
    const std::string path = dir_ + "/case-" + std::to_string(files_++) + ".safetensors";
    WriteAll(path, bytes);
    return LoadSafetensorsFile(path);
  }
  absl::StatusOr<KvSample> LoadHeader(const json& header) {
    return Load(Safetensors(header.dump(), data_));
  }

  std::string dir_;
  json header_;
  std::string data_;
  int files_ = 0;
};

TEST_F(KvSourceFileTest, LoadsDev00) {
  absl::StatusOr<KvSample> s = LoadSafetensorsFile(kDev00);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "dev-00");
  EXPECT_EQ(s->num_layers, 4);
  EXPECT_EQ(s->kv_heads, 1);
  EXPECT_EQ(s->q_heads, 2);
  EXPECT_EQ(s->head_dim, 64);
  EXPECT_EQ(s->tokens, 1024);
  ASSERT_EQ(s->layers.size(), 4u);
  for (const LayerKv& l : s->layers) {
    ASSERT_EQ(l.k.size(), 1u * 1024 * 64);
    ASSERT_EQ(l.v.size(), 1u * 1024 * 64);
    ASSERT_EQ(l.q.size(), 2u * 1024 * 64);
    for (const auto* t : {&l.k, &l.v, &l.q}) {
      EXPECT_TRUE(
          std::all_of(t->begin(), t->end(), [](float x) { return std::isfinite(x); }));
    }
  }
  // Values read with Python's struct '<e' from the same file.
  EXPECT_EQ(s->layers[0].k[0], -2.173828125f);
  EXPECT_EQ(s->layers[0].k[1], 2.869140625f);
  EXPECT_EQ(s->layers[0].k[64], -3.693359375f);
  EXPECT_EQ(s->layers[0].k[65535], -0.52294921875f);
  EXPECT_EQ(s->layers[3].q[131071], -1.873046875f);
  EXPECT_EQ(s->layers[2].v[100], 0.671875f);
  // README statistics (averaged over files: keys 1.11 / 1.76 / 2.21 / 2.42).
  EXPECT_NEAR(Rms(s->layers[0].k), 1.156, 0.01);
  EXPECT_NEAR(Rms(s->layers[3].k), 2.456, 0.01);
  EXPECT_NEAR(Rms(s->layers[0].v), 0.284, 0.01);
}

TEST_F(KvSourceFileTest, LoadsDirectorySorted) {
  absl::StatusOr<std::vector<KvSample>> all = LoadSafetensorsPath(kDataDir);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ((*all)[i].name, "dev-0" + std::to_string(i));
    EXPECT_EQ((*all)[i].tokens, 1024);
  }
  absl::StatusOr<std::vector<KvSample>> one = LoadSafetensorsPath(kDev00);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(one->front().layers[1].q, (*all)[0].layers[1].q);

  EXPECT_EQ(LoadSafetensorsPath(dir_).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadSafetensorsPath(dir_ + "/nope").status().code(),
            absl::StatusCode::kNotFound);
  WriteAll(dir_ + "/a.safetensors", "garbage");
  EXPECT_EQ(LoadSafetensorsPath(dir_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(KvSourceFileTest, MissingFileIsNotFound) {
  const std::string path = dir_ + "/missing.safetensors";
  absl::Status st = LoadSafetensorsFile(path).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(st.message(), HasSubstr(path));
}

TEST_F(KvSourceFileTest, TruncationIsDataLoss) {
  const std::string full = Safetensors(header_.dump(), data_);
  for (size_t len :
       {size_t{0}, size_t{7}, size_t{8}, size_t{200}, size_t{100000}, full.size() - 1}) {
    absl::Status st = Load(full.substr(0, len)).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << len << ": " << st;
    EXPECT_THAT(st.message(), HasSubstr(dir_));
  }
  ASSERT_TRUE(Load(full).ok());
}

TEST_F(KvSourceFileTest, BadHeaderIsInvalidArgument) {
  EXPECT_EQ(Load(LengthPrefix(uint64_t{1} << 40) + std::string(64, ' ')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Load(LengthPrefix(~uint64_t{0})).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (const char* header : {"{not json", "[1, 2, 3]", "\"text\"", "", "{\"a\": 1}",
                             "{\"__metadata__\": 5}", "{\"layers.0.k\": {}}"}) {
    absl::Status st = Load(Safetensors(header, data_)).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << header << ": " << st;
  }
}

struct Corruption {
  const char* name;
  void (*apply)(json& h);
  const char* message;  // substring of the error
};

TEST_F(KvSourceFileTest, CorruptHeaderFieldsAreInvalidArgument) {
  const Corruption cases[] = {
      {"missing tensor", [](json& h) { h.erase("layers.2.q"); }, "layers.2.q"},
      {"bad dtype", [](json& h) { h["layers.1.k"]["dtype"] = "I16"; }, "layers.1.k"},
      {"F32 with F16 bytes", [](json& h) { h["layers.1.k"]["dtype"] = "F32"; },
       "layers.1.k"},
      {"dtype not string", [](json& h) { h["layers.1.k"]["dtype"] = 16; }, "dtype"},
      {"shape vs metadata",
       [](json& h) {
         h["layers.1.v"]["shape"] = {1, 512, 128};
       },
       "layers.1.v"},
      {"shape rank",
       [](json& h) {
         h["layers.3.v"]["shape"] = {1024, 64};
       },
       "layers.3.v"},
      {"shape negative",
       [](json& h) {
         h["layers.0.v"]["shape"] = {1, -1024, -64};
       },
       "layers.0.v"},
      {"shape huge",
       [](json& h) {
         h["layers.0.v"]["shape"] = {2147483647, 2147483647, 2147483647};
       },
       "layers.0.v"},
      {"shape float",
       [](json& h) {
         h["layers.0.v"]["shape"] = {1.0, 1024, 64};
       },
       "layers.0.v"},
      {"metadata q heads", [](json& h) { h["__metadata__"]["num_q_heads"] = "4"; },
       "layers.0.q"},
      {"metadata head_dim", [](json& h) { h["__metadata__"]["head_dim"] = "abc"; },
       "head_dim"},
      {"metadata zero", [](json& h) { h["__metadata__"]["seq_len"] = "0"; }, "seq_len"},
      {"metadata layers", [](json& h) { h["__metadata__"]["num_layers"] = "5"; },
       "layers.4.k"},
      {"gqa ratio", [](json& h) { h["__metadata__"]["num_kv_heads"] = "3"; },
       "num_kv_heads"},
      {"byte length",
       [](json& h) {
         h["layers.0.v"]["data_offsets"][1] =
             h["layers.0.v"]["data_offsets"][1].get<uint64_t>() - 2;
       },
       "layers.0.v"},
      {"offsets reversed",
       [](json& h) {
         h["layers.0.k"]["data_offsets"] = {131072, 0};
       },
       "layers.0.k"},
      {"offsets outside data area",
       [](json& h) {
         auto& off = h["layers.3.q"]["data_offsets"];
         off = {off[0].get<uint64_t>() + (uint64_t{1} << 40),
                off[1].get<uint64_t>() + (uint64_t{1} << 40)};
       },
       "layers.3.q"},
      {"offsets overlap",
       [](json& h) { h["layers.0.v"]["data_offsets"] = h["layers.0.k"]["data_offsets"]; },
       "overlap"},
      {"offsets not array", [](json& h) { h["layers.2.k"]["data_offsets"] = 7; },
       "layers.2.k"},
  };
  for (const Corruption& c : cases) {
    json h = header_;
    c.apply(h);
    absl::Status st = LoadHeader(h).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << st;
    EXPECT_THAT(st.message(), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(st.message(), HasSubstr(dir_)) << c.name;
  }
}

// A tiny file without metadata: F16 keys with special values, BF16 values, F32
// queries.
std::string TinyFile() {
  const uint16_t halves[8] = {0x0001, 0x03ff, 0x8000, 0x7c00,
                              0xfc00, 0x3c00, 0x7bff, 0xc000};
  const uint16_t bf16[8] = {0x3f80, 0xc000, 0x0000, 0x4049,
                            0x7f80, 0x0001, 0xbf80, 0x3e80};
  std::string data;
  for (uint16_t h : halves)
    data += {static_cast<char>(h & 0xff), static_cast<char>(h >> 8)};
  for (uint16_t h : bf16)
    data += {static_cast<char>(h & 0xff), static_cast<char>(h >> 8)};
  for (int i = 0; i < 8; ++i) {
    const float f = 0.5f * i - 1.0f;
    char b[4];
    std::memcpy(b, &f, 4);
    data.append(b, 4);
  }
  const json header = {
      {"layers.0.k", {{"dtype", "F16"}, {"shape", {1, 1, 8}}, {"data_offsets", {0, 16}}}},
      {"layers.0.v",
       {{"dtype", "BF16"}, {"shape", {1, 1, 8}}, {"data_offsets", {16, 32}}}},
      {"layers.0.q",
       {{"dtype", "F32"}, {"shape", {1, 1, 8}}, {"data_offsets", {32, 64}}}},
  };
  return Safetensors(header.dump(), data);
}

TEST_F(KvSourceFileTest, InfersGeometryAndConvertsDtypes) {
  absl::StatusOr<KvSample> s = Load(TinyFile());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->num_layers, 1);
  EXPECT_EQ(s->kv_heads, 1);
  EXPECT_EQ(s->q_heads, 1);
  EXPECT_EQ(s->tokens, 1);
  EXPECT_EQ(s->head_dim, 8);
  const std::vector<float>& k = s->layers[0].k;
  EXPECT_EQ(k[0], std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(k[1], 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(k[2], 0.0f);
  EXPECT_TRUE(std::signbit(k[2]));
  EXPECT_EQ(k[3], std::numeric_limits<float>::infinity());
  EXPECT_EQ(k[4], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(k[5], 1.0f);
  EXPECT_EQ(k[6], 65504.0f);
  EXPECT_EQ(k[7], -2.0f);
  EXPECT_THAT(s->layers[0].v,
              ::testing::ElementsAre(1.0f, -2.0f, 0.0f, 3.140625f,
                                     std::numeric_limits<float>::infinity(),
                                     std::ldexp(1.0f, -133), -1.0f, 0.25f));
  EXPECT_THAT(s->layers[0].q,
              ::testing::ElementsAre(-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 2.5f));

  // NaN keeps being NaN.
  std::string nan_file = TinyFile();
  const size_t data_start = nan_file.size() - 64;
  nan_file[data_start] = 0x00;
  nan_file[data_start + 1] = 0x7e;
  s = Load(nan_file);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(std::isnan(s->layers[0].k[0]));
}

TEST_F(KvSourceFileTest, RandomCorruptionNeverCrashes) {
  const std::string good = TinyFile();
  std::mt19937_64 rng(12345);
  int ok = 0;
  for (int i = 0; i < 600; ++i) {
    std::string bad = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) bad.resize(rng() % bad.size());
    absl::StatusOr<KvSample> s = Load(bad);
    const absl::StatusCode code = s.status().code();
    EXPECT_TRUE(code == absl::StatusCode::kOk ||
                code == absl::StatusCode::kInvalidArgument ||
                code == absl::StatusCode::kDataLoss)
        << s.status();
    ok += s.ok();
  }
  EXPECT_GT(ok, 0);  // flips inside the data area still load
}

// ---------------------------------------------------------------------------
// Synthetic generator.

TEST(GeometryTest, Presets) {
  ASSERT_EQ(GeometryPresets().size(), 4u);
  absl::StatusOr<Geometry> g = FindGeometry("qwen2.5-7b");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->num_layers, 28);
  EXPECT_EQ(g->kv_heads, 4);
  EXPECT_EQ(g->q_heads, 28);
  EXPECT_EQ(g->head_dim, 128);
  EXPECT_EQ(FindGeometry("gpt-5").status().code(), absl::StatusCode::kNotFound);
}

TEST(SyntheticTest, AllPresetsHaveTheirShapes) {
  for (const Geometry& g : GeometryPresets()) {
    absl::StatusOr<KvSample> s = GenerateSynthetic({.geometry = g.name, .tokens = 9});
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->name, "synthetic:" + g.name + ":seed=1");
    EXPECT_EQ(s->num_layers, g.num_layers);
    EXPECT_EQ(s->kv_heads, g.kv_heads);
    EXPECT_EQ(s->q_heads, g.q_heads);
    EXPECT_EQ(s->head_dim, g.head_dim);
    EXPECT_EQ(s->tokens, 9);
    ASSERT_EQ(s->layers.size(), static_cast<size_t>(g.num_layers));
    for (const LayerKv& l : s->layers) {
      EXPECT_EQ(l.k.size(), static_cast<size_t>(g.kv_heads) * 9 * g.head_dim);
      EXPECT_EQ(l.v.size(), static_cast<size_t>(g.kv_heads) * 9 * g.head_dim);
      EXPECT_EQ(l.q.size(), static_cast<size_t>(g.q_heads) * 9 * g.head_dim);
    }
  }
  absl::StatusOr<KvSample> one = GenerateSynthetic({.geometry = "tinylm", .tokens = 1});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->layers[3].q.size(), 128u);
}

TEST(SyntheticTest, RejectsBadOptions) {
  EXPECT_EQ(GenerateSynthetic({.geometry = "nope"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(GenerateSynthetic({.tokens = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GenerateSynthetic({.max_layers = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      GenerateSynthetic({.geometry = "llama2-7b", .tokens = 1 << 20}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(SyntheticTest, DeterministicPerSeedAndLayer) {
  const SyntheticOptions opts{
      .geometry = "llama3-8b", .tokens = 64, .seed = 7, .max_layers = 3};
  absl::StatusOr<KvSample> a = GenerateSynthetic(opts);
  absl::StatusOr<KvSample> b = GenerateSynthetic(opts);
  ASSERT_TRUE(a.ok() && b.ok());
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ(a->layers[l].k, b->layers[l].k);
    EXPECT_EQ(a->layers[l].v, b->layers[l].v);
    EXPECT_EQ(a->layers[l].q, b->layers[l].q);
  }
  SyntheticOptions other = opts;
  other.seed = 8;
  absl::StatusOr<KvSample> c = GenerateSynthetic(other);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->name, "synthetic:llama3-8b:seed=8");
  EXPECT_NE(a->layers[0].k, c->layers[0].k);
  EXPECT_NE(a->layers[2].q, c->layers[2].q);
  // Layer L is the same whatever max_layers is.
  SyntheticOptions fewer = opts;
  fewer.max_layers = 2;
  absl::StatusOr<KvSample> d = GenerateSynthetic(fewer);
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->layers.size(), 2u);
  EXPECT_EQ(d->layers[1].k, a->layers[1].k);
  EXPECT_NE(a->layers[0].k, a->layers[1].k);
}

// Golden values: a change here changes every synthetic evaluation result.
TEST(SyntheticTest, MatchesGoldenValues) {
  absl::StatusOr<KvSample> s = GenerateSynthetic({.geometry = "tinylm", .tokens = 4});
  ASSERT_TRUE(s.ok()) << s.status();
  const LayerKv& l0 = s->layers[0];
  const LayerKv& l3 = s->layers[3];
  EXPECT_FLOAT_EQ(l0.k[0], 0.1138237f);
  EXPECT_FLOAT_EQ(l0.k[63], -0.44207022f);
  EXPECT_FLOAT_EQ(l3.k[100], 2.2169442f);
  EXPECT_FLOAT_EQ(l3.k[255], -0.53823102f);
  EXPECT_FLOAT_EQ(l3.v[7], -0.020010635f);
  EXPECT_FLOAT_EQ(l3.v[200], 0.6334843f);
  EXPECT_FLOAT_EQ(l3.q[0], 0.21399787f);
  EXPECT_FLOAT_EQ(l3.q[511], 1.804914f);
}

// Causal softmax(q.k / sqrt(D)) statistics of one sample, over all query heads.
struct AttentionStats {
  int heads = 0;
  int heads_with_sink = 0;       // heads whose largest mean attention is token 0
  std::vector<float> max_probs;  // per (head, query)
};

AttentionStats Attention(const KvSample& s) {
  AttentionStats out;
  const int t_n = s.tokens, d = s.head_dim, group = s.q_heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<double> mean(t_n), p(t_n);
  for (const LayerKv& l : s.layers) {
    for (int h = 0; h < s.q_heads; ++h) {
      const float* q = &l.q[static_cast<size_t>(h) * t_n * d];
      const float* k = &l.k[static_cast<size_t>(h / group) * t_n * d];
      std::fill(mean.begin(), mean.end(), 0.0);
      for (int t = 0; t < t_n; ++t) {
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= t; ++j) {
          float dot = 0;
          for (int c = 0; c < d; ++c) dot += q[t * d + c] * k[j * d + c];
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j <= t; ++j) sum += p[j] = std::exp(p[j] - mx);
        double pmax = 0;
        for (int j = 0; j <= t; ++j) {
          mean[j] += p[j] / sum;
          pmax = std::max(pmax, p[j] / sum);
        }
        out.max_probs.push_back(static_cast<float>(pmax));
      }
      ++out.heads;
      out.heads_with_sink += std::max_element(mean.begin(), mean.end()) == mean.begin();
    }
  }
  return out;
}

TEST(SyntheticTest, AttentionHasSinksAndIsNeitherUniformNorOneHot) {
  const SyntheticOptions cases[] = {
      {.geometry = "llama3-8b", .tokens = 512, .seed = 3, .max_layers = 2},
      {.geometry = "qwen2.5-7b", .tokens = 512, .seed = 3, .max_layers = 2},
      {.geometry = "tinylm", .tokens = 1024, .seed = 3},
  };
  for (const SyntheticOptions& opts : cases) {
    const std::string& geometry = opts.geometry;
    absl::StatusOr<KvSample> s = GenerateSynthetic(opts);
    ASSERT_TRUE(s.ok()) << s.status();
    AttentionStats a = Attention(*s);
    EXPECT_GE(a.heads_with_sink, a.heads * 7 / 10) << geometry << " of " << a.heads;
    std::nth_element(a.max_probs.begin(), a.max_probs.begin() + a.max_probs.size() / 2,
                     a.max_probs.end());
    const float median = a.max_probs[a.max_probs.size() / 2];
    EXPECT_GT(median, 0.05f) << geometry;
    EXPECT_LT(median, 0.5f) << geometry;
  }
}

TEST(SyntheticTest, KeysHaveOutlierChannelsAndValuesAreTame) {
  absl::StatusOr<KvSample> s = GenerateSynthetic(
      {.geometry = "llama3-8b", .tokens = 1024, .seed = 5, .max_layers = 4});
  ASSERT_TRUE(s.ok()) << s.status();
  const int t_n = s->tokens, d = s->head_dim;
  for (const LayerKv& l : s->layers) {
    const double k_rms = Rms(l.k), v_rms = Rms(l.v);
    EXPECT_GT(k_rms, 1.0);
    EXPECT_LT(k_rms, 3.0);
    EXPECT_GT(v_rms, 0.8);
    EXPECT_LT(v_rms, 1.3);
    for (int h = 0; h < s->kv_heads; ++h) {
      std::vector<double> mean_abs(d, 0.0), max_abs(d, 0.0);
      double sink_v = 0;
      for (int t = 0; t < t_n; ++t) {
        for (int c = 0; c < d; ++c) {
          const double x = std::fabs(l.k[(static_cast<size_t>(h) * t_n + t) * d + c]);
          mean_abs[c] += x / t_n;
          max_abs[c] = std::max(max_abs[c], x);
        }
      }
      for (int c = 0; c < d; ++c) {
        sink_v += std::fabs(l.v[static_cast<size_t>(h) * t_n * d + c]) / d;
      }
      // Outlier channels are large constant offsets: far above the median by
      // mean |k|, and still clearly above it by max |k| (which the median
      // channel's noise tail inflates).
      const std::pair<std::vector<double>*, double> metrics[] = {{&mean_abs, 5.0}, {&max_abs, 3.0}};
      for (const auto& [m, ratio] : metrics) {
        std::vector<double> sorted = *m;
        std::sort(sorted.begin(), sorted.end());
        EXPECT_GT(sorted.back() / sorted[d / 2], ratio) << "head " << h;
        EXPECT_GT(sorted[d - 2] / sorted[d / 2], ratio * 0.8) << "head " << h;  // at least 2
      }
      EXPECT_LT(sink_v, 0.3);
    }
  }
}

}  // namespace
}  // namespace qaqkv::eval
