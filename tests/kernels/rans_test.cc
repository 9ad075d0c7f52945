// The rANS coder planned for entropy-coded pages (kernels/internal/rans.h).
#include "kernels/internal/rans.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace qaqkv::internal {
namespace {

RansTable Table(std::vector<uint32_t> counts) {
  auto t = RansTable::FromCounts(counts);
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(RansTable, FrequenciesSumToTheScaleAndKeepEveryCountedSymbol) {
  const RansTable t = Table({1000000, 1, 0, 3, 0, 500});
  uint32_t sum = 0;
  for (int s = 0; s < t.symbols(); ++s) sum += t.freq(s);
  EXPECT_EQ(sum, kRansProbScale);
  EXPECT_GE(t.freq(1), 1u);
  EXPECT_EQ(t.freq(2), 0u);
  EXPECT_GE(t.freq(3), 1u);
  EXPECT_EQ(t.freq(4), 0u);
  EXPECT_GT(t.freq(0), t.freq(5));
  for (uint32_t slot = 0; slot < kRansProbScale; ++slot) {
    const int s = t.SymbolAt(slot);
    ASSERT_GE(slot, t.start(s));
    ASSERT_LT(slot, t.start(s) + t.freq(s));
  }
  // Every symbol counted once among 4096: exactly 1 each.
  const RansTable full = Table(std::vector<uint32_t>(4096, 1));
  for (int s = 0; s < 4096; ++s) ASSERT_EQ(full.freq(s), 1u);
}

TEST(RansTable, BadInputs) {
  EXPECT_EQ(RansTable::FromCounts(std::vector<uint32_t>{0, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RansTable::FromCounts(std::vector<uint32_t>(4097, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RansTable::FromFrequencies(std::vector<uint16_t>{4095}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(RansTable::FromFrequencies(std::vector<uint16_t>{4096}).ok());
}

// Symbols drawn from a geometric distribution under two contexts of very
// different spread: the coded size must come close to the entropy of the
// tables, and decode must give back every symbol, for any lane count.
TEST(Rans, RoundTripsNearTheEntropyWithContexts) {
  std::mt19937 rng(3);
  const int n = 200000;
  std::vector<uint16_t> sym(n);
  std::vector<uint8_t> ctx(n);
  std::vector<uint32_t> counts[2] = {std::vector<uint32_t>(64, 0), std::vector<uint32_t>(64, 0)};
  std::geometric_distribution<int> narrow(0.7), wide(0.1);
  for (int i = 0; i < n; ++i) {
    ctx[i] = static_cast<uint8_t>(rng() % 2);
    sym[i] = static_cast<uint16_t>(std::min(63, ctx[i] ? wide(rng) : narrow(rng)));
    ++counts[ctx[i]][sym[i]];
  }
  const std::vector<RansTable> tables = {Table(counts[0]), Table(counts[1])};
  double entropy_bits = 0;
  for (int i = 0; i < n; ++i) {
    entropy_bits -= std::log2(double(tables[ctx[i]].freq(sym[i])) / kRansProbScale);
  }
  for (int lanes : {1, 2, 4, 32, 64}) {
    SCOPED_TRACE(lanes);
    auto bytes = RansEncode(sym, ctx, tables, lanes);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_LT(bytes->size() * 8.0, entropy_bits * 1.003 + lanes * 64);
    std::vector<uint16_t> back(n, 0xffff);
    ASSERT_EQ(RansDecode(*bytes, ctx, tables, lanes, back), absl::OkStatus());
    EXPECT_EQ(back, sym);
  }
}

TEST(Rans, AnAlmostCertainSymbolCostsAlmostNothing) {
  // 4095 of 4096 for zero: a million zeros in about 350 bytes.
  std::vector<uint16_t> freq = {4095, 1};
  const RansTable t = *RansTable::FromFrequencies(freq);
  std::vector<uint16_t> zeros(1000000, 0);
  auto bytes = RansEncode(zeros, {}, std::span(&t, 1), 4);
  ASSERT_TRUE(bytes.ok());
  EXPECT_LT(bytes->size(), 400u);
  std::vector<uint16_t> back(zeros.size(), 7);
  ASSERT_EQ(RansDecode(*bytes, {}, std::span(&t, 1), 4, back), absl::OkStatus());
  EXPECT_EQ(back, zeros);
}

TEST(Rans, EncoderRefusesWhatItCannotCode) {
  const RansTable t = Table({5, 0, 5});
  const std::vector<uint16_t> has_zero_freq = {0, 1, 2}, out_of_range = {0, 3};
  EXPECT_EQ(RansEncode(has_zero_freq, {}, std::span(&t, 1), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RansEncode(out_of_range, {}, std::span(&t, 1), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<uint16_t> ok = {0, 2};
  const std::vector<uint8_t> bad_ctx = {0, 1};
  EXPECT_EQ(RansEncode(ok, bad_ctx, std::span(&t, 1), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RansEncode(ok, {}, std::span(&t, 1), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RansEncode(ok, {}, std::span(&t, 1), kRansMaxLanes + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A damaged stream is DATA_LOSS or decodes to something, but never reads
// outside its bytes (ASan checks that in the sanitizer build); truncations
// and extensions are always caught.
TEST(Rans, DamagedStreamsAreCaught) {
  std::mt19937 rng(11);
  std::vector<uint16_t> sym(3000);
  std::vector<uint32_t> counts(16, 0);
  std::geometric_distribution<int> g(0.3);
  for (auto& s : sym) {
    s = static_cast<uint16_t>(std::min(15, g(rng)));
    ++counts[s];
  }
  const RansTable t = Table(counts);
  auto bytes = RansEncode(sym, {}, std::span(&t, 1), 4);
  ASSERT_TRUE(bytes.ok());
  std::vector<uint16_t> out(sym.size());
  for (size_t cut = 0; cut < bytes->size(); ++cut) {
    const std::span<const uint8_t> part(bytes->data(), cut);
    ASSERT_EQ(RansDecode(part, {}, std::span(&t, 1), 4, out).code(), absl::StatusCode::kDataLoss)
        << cut;
  }
  std::vector<uint8_t> longer = *bytes;
  longer.push_back(0);
  EXPECT_EQ(RansDecode(longer, {}, std::span(&t, 1), 4, out).code(), absl::StatusCode::kDataLoss);
  int caught = 0;
  for (size_t i = 0; i < bytes->size(); ++i) {
    std::vector<uint8_t> bad = *bytes;
    bad[i] ^= 0x5a;
    const absl::Status st = RansDecode(bad, {}, std::span(&t, 1), 4, out);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
      ++caught;
    }
  }
  // The end-state check catches nearly every flip.
  EXPECT_GT(caught, static_cast<int>(bytes->size() * 9 / 10));
}

}  // namespace
}  // namespace qaqkv::internal
