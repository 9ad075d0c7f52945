#include "tools/eval/evaluator.h"

#include "gtest/gtest.h"

namespace qaqkv::eval {
namespace {

const KvSample& Dev00() {
  static const KvSample sample = [] {
    auto s = LoadSafetensorsFile(QAQKV_SOURCE_DIR "/data/tinylm-kv/dev-00.safetensors");
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }();
  return sample;
}

std::vector<CodecConfig> Configs(std::initializer_list<const char*> names) {
  std::vector<CodecConfig> out;
  for (const char* n : names) out.push_back(*ParseCodecConfig(n));
  return out;
}

// Sizes follow from the page format alone: one 768-token page of 1 head x 64
// dims per layer. int8: 32 header + 8 checksum + per tensor 4 (exact count) +
// 768 x (4 offset/step + 64 codes).
TEST(EvaluatorTest, HonestRatiosAreExactPageArithmetic) {
  EvalOptions opt;
  opt.max_queries = 16;
  auto r = Evaluate({Dev00()}, Configs({"fp16", "int8", "int4"}), opt);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  const double fp16_bytes = 768.0 * 64 * 2 * 2;
  EXPECT_DOUBLE_EQ((*r)[0].ratio, fp16_bytes / (40 + fp16_bytes));
  EXPECT_DOUBLE_EQ((*r)[1].ratio, fp16_bytes / (40 + 2 * (4 + 768 * (4 + 64))));
  EXPECT_DOUBLE_EQ((*r)[2].ratio, fp16_bytes / (40 + 2 * (4 + 768 * (4 + 32))));
  EXPECT_DOUBLE_EQ((*r)[1].ratio_paper, 2.0);
  EXPECT_DOUBLE_EQ((*r)[2].ratio_paper, 4.0);
  EXPECT_EQ((*r)[1].fp16_bytes, 4 * static_cast<int64_t>(fp16_bytes));  // 4 layers
}

// Errors order as the codecs' precision: fp16 exact, int8 far below int4,
// and top-8 agreement falls with them.
TEST(EvaluatorTest, ErrorsFollowPrecision) {
  EvalOptions opt;
  opt.max_queries = 32;
  auto r = Evaluate({Dev00()}, Configs({"fp16", "int8", "int4", "qaq:s=1,x=1,o=0"}), opt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].metrics.out_rel_err, 0.0);
  EXPECT_EQ((*r)[0].metrics.top8, 1.0);
  EXPECT_GT((*r)[1].metrics.out_rel_err, 0.0);
  EXPECT_LT((*r)[1].metrics.out_rel_err, 0.003);
  EXPECT_GT((*r)[2].metrics.out_rel_err, 5 * (*r)[1].metrics.out_rel_err);
  EXPECT_LT((*r)[2].metrics.out_rel_err, 0.05);
  // sigma 1 on both sides: almost every width is 0, the output is badly off.
  EXPECT_GT((*r)[3].metrics.out_rel_err, 0.3);
  EXPECT_GT((*r)[3].ratio, 10.0);
  EXPECT_LT((*r)[3].metrics.top8, (*r)[2].metrics.top8);
  EXPECT_EQ((*r)[0].per_layer.size(), 4u);
}

TEST(EvaluatorTest, ThreadCountDoesNotChangeResults) {
  EvalOptions one, two;
  one.max_queries = two.max_queries = 8;
  one.threads = 1;
  two.threads = 2;
  const auto cfg = Configs({"qaq-cc:s=5e-4,x=2e-4,o=0", "kivi2"});
  auto a = Evaluate({Dev00()}, cfg, one);
  auto b = Evaluate({Dev00()}, cfg, two);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].stored_bytes, (*b)[i].stored_bytes);
    EXPECT_EQ((*a)[i].metrics.out_rel_err, (*b)[i].metrics.out_rel_err);
    EXPECT_EQ((*a)[i].metrics.attn_kl, (*b)[i].metrics.attn_kl);
  }
}

TEST(EvaluatorTest, BadOptionsAreInvalidArgument) {
  EvalOptions opt;
  EXPECT_EQ(Evaluate({}, Configs({"int8"}), opt).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Evaluate({Dev00()}, {}, opt).status().code(), absl::StatusCode::kInvalidArgument);
  opt.cache_fraction = 1.0;
  EXPECT_EQ(Evaluate({Dev00()}, Configs({"int8"}), opt).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qaqkv::eval
