#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/codec.h"

namespace qaqkv {
namespace {

using ::testing::HasSubstr;

// keys: token 0 = [1, 0], token 1 = [0, 1] (T = 2, one KV head, D = 2).
const std::vector<float> kKeys = {1, 0, 0, 1};

WindowInputs Inputs(const std::vector<float>& keys, const std::vector<float>& queries,
                    const std::vector<int>& positions, int kv_heads = 1, int q_heads = 1) {
  WindowInputs in;
  in.context_tokens = static_cast<int>(keys.size() / (2 * kv_heads));
  in.kv_heads = kv_heads;
  in.q_heads = q_heads;
  in.head_dim = 2;
  in.keys = keys;
  in.queries = queries;
  in.query_positions = positions;
  return in;
}

TEST(WindowStats, OneQuerySoftmax) {
  // q = [2, 0] at position 1: logits sqrt(2) and 0.
  const std::vector<float> q = {2, 0};
  const std::vector<int> pos = {1};
  auto st = ComputeWindowStats(Inputs(kKeys, q, pos));
  ASSERT_TRUE(st.ok()) << st.status();
  const double e = std::exp(std::sqrt(2.0));
  ASSERT_EQ(st->attention.size(), 2u);
  EXPECT_NEAR(st->attention[0], e / (e + 1), 1e-6);
  EXPECT_NEAR(st->attention[1], 1 / (e + 1), 1e-6);
  ASSERT_EQ(st->q2.size(), 1u);
  EXPECT_FLOAT_EQ(st->q2[0], 2.0f);  // |q|^2 / D = 4 / 2
}

TEST(WindowStats, TokensSeenByFewerQueriesGetMinusOne) {
  // Query 0 at position 1 ([0, 2]), query 1 at position 0 ([1, 1]).
  // Token 1 is seen only by query 0: -1. Token 0 is seen by both: max.
  const std::vector<float> q = {0, 2, 1, 1};
  const std::vector<int> pos = {1, 0};
  auto st = ComputeWindowStats(Inputs(kKeys, q, pos));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_FLOAT_EQ(st->attention[0], 1.0f);  // query 1 sees only token 0
  EXPECT_EQ(st->attention[1], -1.0f);
  // Norms 4/2 = 2 and 2/2 = 1: the 90th percentile of two is the larger.
  EXPECT_FLOAT_EQ(st->q2[0], 2.0f);
}

TEST(WindowStats, MaxOverQueries) {
  // Both queries at position 1; token 0 favoured by the first, token 1 by the second.
  const std::vector<float> q = {2, 0, 0, 4};
  const std::vector<int> pos = {1, 1};
  auto st = ComputeWindowStats(Inputs(kKeys, q, pos));
  ASSERT_TRUE(st.ok()) << st.status();
  const double e1 = std::exp(2 / std::sqrt(2.0)), e2 = std::exp(4 / std::sqrt(2.0));
  EXPECT_NEAR(st->attention[0], e1 / (e1 + 1), 1e-6);
  EXPECT_NEAR(st->attention[1], e2 / (e2 + 1), 1e-6);
  EXPECT_FLOAT_EQ(st->q2[0], 8.0f);  // norms 2 and 8
}

TEST(WindowStats, Q2IsNinetiethPercentile) {
  // Ten queries q_i = [i, i], |q|^2 / D = i^2; ceil(0.9 * 10) = 9th smallest = 81.
  std::vector<float> q;
  std::vector<int> pos;
  for (int i = 10; i >= 1; --i) {
    q.push_back(static_cast<float>(i));
    q.push_back(static_cast<float>(i));
    pos.push_back(1);
  }
  auto st = ComputeWindowStats(Inputs(kKeys, q, pos));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_FLOAT_EQ(st->q2[0], 81.0f);
}

TEST(WindowStats, GqaMaxOverQueryHeads) {
  // Two KV heads, four query heads: q heads 0,1 -> kv 0; 2,3 -> kv 1.
  // keys[t][h][d]: kv head 0 = {[1,0],[0,1]}, kv head 1 = {[0,1],[1,0]}.
  const std::vector<float> keys = {1, 0, 0, 1, /*t1*/ 0, 1, 1, 0};
  // One query position (1): q head 0 = [2,0], 1 = [0,2], 2 = [0,0], 3 = [2,0].
  const std::vector<float> q = {2, 0, 0, 2, 0, 0, 2, 0};
  const std::vector<int> pos = {1};
  auto st = ComputeWindowStats(Inputs(keys, q, pos, 2, 4));
  ASSERT_TRUE(st.ok()) << st.status();
  const double e = std::exp(std::sqrt(2.0));
  const float big = static_cast<float>(e / (e + 1)), small = static_cast<float>(1 / (e + 1));
  ASSERT_EQ(st->attention.size(), 4u);
  // kv head 0: q head 0 favours token 0, q head 1 favours token 1.
  EXPECT_NEAR(st->attention[0 * 2 + 0], big, 1e-6);
  EXPECT_NEAR(st->attention[1 * 2 + 0], big, 1e-6);
  // kv head 1: q head 2 is uniform (0.5, 0.5); q head 3 = [2,0] favours token 1
  // (whose key at head 1 is [1,0]).
  EXPECT_NEAR(st->attention[0 * 2 + 1], 0.5f, 1e-6);
  EXPECT_NEAR(st->attention[1 * 2 + 1], big, 1e-6);
  (void)small;
  ASSERT_EQ(st->q2.size(), 2u);
  EXPECT_FLOAT_EQ(st->q2[0], 2.0f);
  EXPECT_FLOAT_EQ(st->q2[1], 2.0f);  // norms 0 and 2
}

void ExpectInvalid(const WindowInputs& in, const char* field) {
  auto st = ComputeWindowStats(in);
  ASSERT_FALSE(st.ok()) << field;
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument) << st.status();
  EXPECT_THAT(std::string(st.status().message()), HasSubstr(field));
}

TEST(WindowStats, BadInputs) {
  const std::vector<float> q = {2, 0};
  const std::vector<int> pos = {1};
  const WindowInputs good = Inputs(kKeys, q, pos);
  ASSERT_TRUE(ComputeWindowStats(good).ok());
  WindowInputs in = good;
  in.context_tokens = 0;
  ExpectInvalid(in, "window.context_tokens");
  in = good;
  in.kv_heads = 0;
  ExpectInvalid(in, "window.kv_heads");
  in = good;
  in.q_heads = 0;
  ExpectInvalid(in, "window.q_heads");
  in = good;
  in.kv_heads = 2;
  in.q_heads = 3;
  ExpectInvalid(in, "window.q_heads");
  in = good;
  in.head_dim = 0;
  ExpectInvalid(in, "window.head_dim");
  in = good;
  in.context_tokens = 3;  // keys no longer cover T * H * D
  ExpectInvalid(in, "window.keys");
  in = good;
  in.q_heads = 2;  // queries no longer n * Q * D
  ExpectInvalid(in, "window.queries");
  const std::vector<int> past_end = {2};
  in = good;
  in.query_positions = past_end;
  ExpectInvalid(in, "window.query_positions");
  const std::vector<int> negative = {-1};
  in = good;
  in.query_positions = negative;
  ExpectInvalid(in, "window.query_positions");
}

// Q2 from an arbitrary set of queries: 2 kv heads, 4 query heads (groups of
// 2), D = 4, three queries. |q/2|^2 of query head j at query i is
// (i + 1) * (j + 1) when every component is sqrt(i + 1) * sqrt(j + 1).
TEST(ComputeQ2Test, PercentileOverQueriesAndGroupHeads) {
  const int n = 3, Q = 4, H = 2, D = 4;
  std::vector<float> q(size_t(n) * Q * D);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < Q; ++j)
      for (int d = 0; d < D; ++d) q[(size_t(i) * Q + j) * D + d] = std::sqrt(float((i + 1) * (j + 1)));
  // KV head 0 sees {1,2,3} x {1,2} = {1,2,2,3,4,6}; head 1 sees {1,2,3} x {3,4}.
  auto p90 = ComputeQ2(q, Q, H, D, 0.9);
  ASSERT_TRUE(p90.ok()) << p90.status();
  EXPECT_FLOAT_EQ((*p90)[0], 6.0f);   // ceil(0.9 * 6) = 6th of 6
  EXPECT_FLOAT_EQ((*p90)[1], 12.0f);  // {3,4,6,8,9,12}
  auto p50 = ComputeQ2(q, Q, H, D, 0.5);
  ASSERT_TRUE(p50.ok());
  EXPECT_FLOAT_EQ((*p50)[0], 2.0f);  // 3rd of {1,2,2,3,4,6}
  EXPECT_FLOAT_EQ((*p50)[1], 6.0f);  // 3rd of {3,4,6,8,9,12}
  auto none = ComputeQ2({}, Q, H, D);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, std::vector<float>(H, kDefaultQ2));
  EXPECT_EQ(ComputeQ2(q, Q, H, D, 0.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ComputeQ2(q, 3, H, D).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<float> ragged(5, 1.0f);
  auto r = ComputeQ2(ragged, Q, H, D);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("q2.queries"), std::string::npos);
}

}  // namespace
}  // namespace qaqkv
