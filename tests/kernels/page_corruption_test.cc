// Damaged and lying pages: every failure must be a specific status, never a
// crash or an out-of-bounds access (run under ASan).
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/codec.h"
#include "kernels/half.h"
#include "kernels/checksum.h"
#include "xxhash.h"

namespace qaqkv {
namespace {

constexpr absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;
constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

// Header offsets (docs/page-format.md).
constexpr size_t kMagic = 0, kVersion = 4, kCodec = 6, kFlags = 7, kTokens = 8, kHeads = 12,
                 kHeadDim = 14, kOutliers = 16, kKiviGroup = 18, kKiviResidual = 20,
                 kKBytes = 24, kVBytes = 28, kHeader = 32;

void Put16(std::vector<uint8_t>& p, size_t at, uint16_t v) { std::memcpy(p.data() + at, &v, 2); }
void Put32(std::vector<uint8_t>& p, size_t at, uint32_t v) { std::memcpy(p.data() + at, &v, 4); }
uint32_t Get32(const std::vector<uint8_t>& p, size_t at) {
  uint32_t v;
  std::memcpy(&v, p.data() + at, 4);
  return v;
}

// Recomputes the XXH3-64 trailer so the page passes the checksum.
void Resign(std::vector<uint8_t>& p) {
  const uint64_t h = XXH3_64bits(p.data(), p.size() - 8);
  std::memcpy(p.data() + p.size() - 8, &h, 8);
}

// Runs every reader of pages and checks they agree on `code`.
void ExpectCode(std::span<const uint8_t> page, absl::StatusCode code, const std::string& what) {
  std::vector<float> k(1 << 16), v(1 << 16);
  const absl::Status d = DecodePage(page, {k.data(), DType::kF32}, {v.data(), DType::kF32},
                                    nullptr, Backend::kReference);
  EXPECT_EQ(d.code(), code) << what << ": " << d;
  const absl::Status f = DecodePage(page, {k.data(), DType::kF16}, {v.data(), DType::kBF16},
                                    nullptr, Backend::kAuto);
  EXPECT_EQ(f.code(), code) << what << ": " << f;
  const auto st = ComputePageStats(page);
  EXPECT_EQ(st.status().code(), code) << what << ": " << st.status();
  // InspectPage reads only the header: section errors are invisible to it.
  const auto info = InspectPage(page);
  if (!info.ok()) {
    EXPECT_EQ(info.status().code(), code) << what << ": " << info.status();
  }
}

std::vector<uint8_t> Encode(const char* codec, PageShape s, uint32_t seed, int nan_groups = 0) {
  auto cfg = ParseCodecConfig(codec);
  EXPECT_TRUE(cfg.ok()) << codec;
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> k(s.values()), v(s.values());
  for (auto& x : k) x = n(rng);
  for (auto& x : v) x = n(rng);
  // NaN in the first value of the first `nan_groups` tokens of head 0 (HND).
  for (int i = 0; i < nan_groups; ++i) {
    k[int64_t{i} * s.head_dim] = std::numeric_limits<float>::quiet_NaN();
  }
  auto page = EncodePage(*cfg, s, {k.data(), DType::kF32, Layout::kHND},
                         {v.data(), DType::kF32, Layout::kHND});
  EXPECT_TRUE(page.ok()) << page.status();
  return *page;
}

const char* const kSmallCodecs[] = {"fp16", "int8", "int4", "kivi2:r=2,g=4", "qaq",
                                    "qaq-layer", "qaq-cs", "qaq-cc", "qaq:o=0.1",
                                    "qaq-rh", "int4-layer-rh", "qaq-ec:o=0",
                                    "qaq-ec-rh:o=0"};

TEST(PageCorruption, ValidPagesDecode) {
  for (const char* c : kSmallCodecs) {
    const auto page = Encode(c, {5, 2, 16}, 1, 1);
    ExpectCode(page, absl::StatusCode::kOk, c);
  }
}

TEST(PageCorruption, EveryTruncationIsDataLoss) {
  for (const char* c : kSmallCodecs) {
    const auto page = Encode(c, {5, 2, 16}, 2, 1);
    for (size_t len = 0; len < page.size(); ++len) {
      ExpectCode(std::span<const uint8_t>(page.data(), len), kDataLoss,
                 std::string(c) + " truncated to " + std::to_string(len));
    }
    // Appended garbage is just as wrong.
    auto longer = page;
    longer.push_back(0);
    ExpectCode(longer, kDataLoss, std::string(c) + " extended");
  }
}

TEST(PageCorruption, EverySingleByteFlipIsDataLoss) {
  for (const char* c : kSmallCodecs) {
    const auto page = Encode(c, {5, 2, 16}, 3, 1);
    for (size_t i = 0; i < page.size(); ++i) {
      for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
        auto bad = page;
        bad[i] ^= mask;
        ExpectCode(bad, kDataLoss, std::string(c) + " byte " + std::to_string(i));
      }
    }
  }
}

struct Lie {
  const char* what;
  size_t at;
  int size;  // 1, 2 or 4 bytes
  uint32_t value;
  absl::StatusCode code;
};

// Writes each lie into a copy of `page`, re-signs it and checks the code.
template <size_t N>
void ExpectLies(const std::vector<uint8_t>& page, const Lie (&lies)[N]) {
  for (const Lie& l : lies) {
    auto bad = page;
    if (l.size == 1) bad[l.at] = static_cast<uint8_t>(l.value);
    if (l.size == 2) Put16(bad, l.at, static_cast<uint16_t>(l.value));
    if (l.size == 4) Put32(bad, l.at, l.value);
    Resign(bad);
    ExpectCode(bad, l.code, l.what);
  }
}

TEST(PageCorruption, LyingHeaderWithValidChecksum) {
  const auto page = Encode("qaq", {5, 2, 16}, 4);
  const uint32_t kb = Get32(page, kKBytes), vb = Get32(page, kVBytes);
  const Lie lies[] = {
      {"magic", kMagic, 4, 0x50514152u, kInvalid},
      {"magic zero", kMagic, 4, 0, kInvalid},
      {"version 2", kVersion, 2, 2, kInvalid},
      {"version 0", kVersion, 2, 0, kInvalid},
      {"codec 5", kCodec, 1, 5, kInvalid},
      {"codec 9", kCodec, 1, 9, kInvalid},
      {"codec 255", kCodec, 1, 255, kInvalid},
      {"unknown flag", kFlags, 1, 0x80, kInvalid},
      {"tokens 0", kTokens, 4, 0, kInvalid},
      {"tokens huge", kTokens, 4, 0xffffffffu, kInvalid},
      {"tokens 2^20+1", kTokens, 4, (1u << 20) + 1, kInvalid},
      {"kv_heads 0", kHeads, 2, 0, kInvalid},
      {"kv_heads 1025", kHeads, 2, 1025, kInvalid},
      {"head_dim 0", kHeadDim, 2, 0, kInvalid},
      {"head_dim 2000", kHeadDim, 2, 2000, kInvalid},
      {"tokens 4 (sections no longer fit)", kTokens, 4, 4, kDataLoss},
      {"tokens 6", kTokens, 4, 6, kDataLoss},
      {"tokens 2^20", kTokens, 4, 1u << 20, kDataLoss},
      {"head_dim 1024", kHeadDim, 2, 1024, kDataLoss},
      {"kv_heads 1024", kHeads, 2, 1024, kDataLoss},
      {"outliers 7", kOutliers, 2, 7, kDataLoss},
      {"outliers 8 (2k >= group)", kOutliers, 2, 8, kDataLoss},
      {"outliers 65535", kOutliers, 2, 65535, kDataLoss},
      {"layer flag", kFlags, 1, 1, kDataLoss},
      {"channel scale flag", kFlags, 1, 2, kDataLoss},
      {"k_bytes + 1", kKBytes, 4, kb + 1, kDataLoss},
      {"k_bytes - 1", kKBytes, 4, kb - 1, kDataLoss},
      {"k_bytes huge", kKBytes, 4, 0xffffffffu, kDataLoss},
      {"v_bytes + 1", kVBytes, 4, vb + 1, kDataLoss},
      {"v_bytes 0", kVBytes, 4, 0, kDataLoss},
  };
  ExpectLies(page, lies);
  // Sizes that add up but split the sections at the wrong place.
  for (int delta : {-3, -1, 1, 2, 64}) {
    auto bad = page;
    Put32(bad, kKBytes, kb + delta);
    Put32(bad, kVBytes, vb - delta);
    Resign(bad);
    ExpectCode(bad, kDataLoss, "k/v split moved by " + std::to_string(delta));
  }
  // Both sections claiming the whole page: the sum overflows 32 bits.
  auto bad = page;
  Put32(bad, kKBytes, 0x80000000u);
  Put32(bad, kVBytes, 0x80000000u + static_cast<uint32_t>(page.size() - 40 - kHeader + kHeader));
  Resign(bad);
  ExpectCode(bad, kDataLoss, "k_bytes + v_bytes wrap");
}

TEST(PageCorruption, LyingKiviHeader) {
  const auto page = Encode("kivi2:r=2,g=4", {9, 1, 8}, 5);
  const Lie lies[] = {
      {"kivi group 0", kKiviGroup, 2, 0, kInvalid},
      {"residual > tokens", kKiviResidual, 4, 10, kInvalid},
      {"residual huge", kKiviResidual, 4, 0xffffffffu, kInvalid},
      {"residual 3", kKiviResidual, 4, 3, kDataLoss},
      {"residual 0", kKiviResidual, 4, 0, kDataLoss},
      {"residual = tokens", kKiviResidual, 4, 9, kDataLoss},
      {"group 8", kKiviGroup, 2, 8, kDataLoss},
      {"group 1", kKiviGroup, 2, 1, kDataLoss},
      {"group 65535", kKiviGroup, 2, 65535, kDataLoss},
      {"codec int8", kCodec, 1, 1, kDataLoss},
  };
  ExpectLies(page, lies);
}

TEST(PageCorruption, ExactGroupList) {
  // int8 K section: [count u32][group ids u32...][lo][step][exact values][codes].
  const PageShape s{6, 2, 16};  // 12 groups per tensor
  const auto page = Encode("int8", s, 6, 2);  // two K groups hold a NaN: exact
  ASSERT_EQ(Get32(page, kHeader), 2u);
  const uint32_t g0 = Get32(page, kHeader + 4), g1 = Get32(page, kHeader + 8);
  ASSERT_LT(g0, g1);
  ASSERT_LT(g1, 12u);
  for (uint32_t count : {3u, 12u, 13u, 0xffffffffu, 0u, 1u}) {
    auto bad = page;
    Put32(bad, kHeader, count);
    Resign(bad);
    ExpectCode(bad, kDataLoss, "exact count " + std::to_string(count));
  }
  // Not increasing, repeated, out of range.
  for (auto [a, b] : {std::pair<uint32_t, uint32_t>{1, 0}, {1, 1}, {0, 12}, {12, 13},
                      {0xffffffffu, 1}}) {
    auto bad = page;
    Put32(bad, kHeader + 4, a);
    Put32(bad, kHeader + 8, b);
    Resign(bad);
    ExpectCode(bad, kDataLoss, "exact list " + std::to_string(a) + "," + std::to_string(b));
  }
  // A different valid list of the same size decodes fine (the bytes are
  // reinterpreted, but nothing is out of bounds).
  auto other = page;
  Put32(other, kHeader + 4, g0 == 3 ? 4 : 3);
  Put32(other, kHeader + 8, 7);
  Resign(other);
  ExpectCode(other, absl::StatusCode::kOk, "exact list 3,7");
}

TEST(PageCorruption, QaqWidthsAndOutlierIndices) {
  // qaq head level, D = 16, o = 0.1: k = ceil(0.8) = 1 per side. 5 x 1 groups.
  // K section: [count=0][widths: 3 bytes][lo 5x2][step 5x2][outlier values 5x2x2]
  //            [outlier idx 5x2x1][codes]
  const PageShape s{5, 1, 16};
  const auto page = Encode("qaq:o=0.1", s, 7);
  ASSERT_EQ(page[kOutliers], 1);
  ASSERT_EQ(Get32(page, kHeader), 0u);
  const size_t widths = kHeader + 4;
  const size_t idx = widths + 3 + 5 * 2 + 5 * 2 + 5 * 2 * 2;
  ASSERT_LT(page[idx], page[idx + 1]);
  for (int w = 9; w <= 15; ++w) {
    for (int nibble = 0; nibble < 2; ++nibble) {
      auto bad = page;
      bad[widths] = static_cast<uint8_t>((bad[widths] & (nibble ? 0x0f : 0xf0)) |
                                         (nibble ? w << 4 : w));
      Resign(bad);
      ExpectCode(bad, kDataLoss, "width " + std::to_string(w) + " nibble " + std::to_string(nibble));
    }
  }
  // The unused high nibble of the last width byte (5 groups) is ignored.
  // Outlier index out of range (>= 16) or not increasing.
  const std::pair<uint8_t, uint8_t> bad_pairs[] = {{0, 16}, {0, 255}, {3, 3}, {5, 2}, {16, 17}};
  for (auto [a, b] : bad_pairs) {
    auto bad = page;
    bad[idx] = a;
    bad[idx + 1] = b;
    Resign(bad);
    ExpectCode(bad, kDataLoss, "outlier indices " + std::to_string(a) + "," + std::to_string(b));
  }
  // Last group's indices too.
  auto bad = page;
  bad[idx + 8] = 20;
  Resign(bad);
  ExpectCode(bad, kDataLoss, "last group's outlier index");
}

TEST(PageCorruption, QaqWideOutlierIndices) {
  // Layer level with 2 x 256 = 512-value groups: 2-byte indices.
  const PageShape s{2, 2, 256};
  const auto page = Encode("qaq-layer:o=0.01", s, 8);
  ASSERT_EQ(page[kOutliers], 3);  // ceil(0.005 * 512 - 1e-9) = 3
  // K: [count][widths 1 byte][lo 2x2][step 2x2][ov 2x6x2][oi 2x6x2]
  const size_t idx = kHeader + 4 + 1 + 4 + 4 + 24;
  for (uint16_t v : {uint16_t{512}, uint16_t{0xffff}}) {
    auto bad = page;
    Put16(bad, idx + 10, v);  // last index of group 0
    Resign(bad);
    ExpectCode(bad, kDataLoss, "wide index " + std::to_string(v));
  }
  auto bad = page;
  Put16(bad, idx + 2, 0);
  Put16(bad, idx, 0);
  Resign(bad);
  ExpectCode(bad, kDataLoss, "wide index repeated");
}

TEST(PageCorruption, ChannelTransformsMustBeFiniteAndScalesPositive) {
  // A K section with key transforms starts with H*D fp16 channel scales (-cs)
  // and/or H*D fp16 channel centres (-cc, and every -ec page). The encoder
  // writes only finite centres and finite positive scales; a NaN there once
  // reached a whole channel and the fast and reference decoders returned
  // different NaN payloads for it (a fuzzer find). Such pages are corrupt.
  const PageShape s{5, 2, 16};
  const size_t hd = 2 * 16;
  struct Case {
    const char* codec;
    size_t scales;   // offset of the scale array, 0 if none
    size_t centres;  // offset of the centre array, 0 if none
  };
  const Case cases[] = {
      {"qaq-cs", kHeader, 0},
      {"qaq-cc", 0, kHeader},
      {"qaq-cs-cc", kHeader, kHeader + hd * 2},
      {"qaq-ec:o=0", 0, kHeader},
  };
  const uint16_t non_finite[] = {0x7c00, 0xfc00, 0x7e00, 0xfee3, 0x7c01};
  for (const Case& c : cases) {
    const auto page = Encode(c.codec, s, 11);
    ExpectCode(page, absl::StatusCode::kOk, c.codec);
    for (size_t at : {c.scales, c.centres}) {
      if (at == 0) continue;
      const bool scale = at == c.scales;
      const std::string what = std::string(c.codec) + (scale ? " scale " : " centre ");
      for (size_t channel : {size_t{0}, size_t{19}, hd - 1}) {
        for (uint16_t h : non_finite) {
          auto bad = page;
          Put16(bad, at + channel * 2, h);
          Resign(bad);
          ExpectCode(bad, kDataLoss, what + std::to_string(channel) + " = " + std::to_string(h));
        }
        // Zero and negative scales are not written either; a zero or
        // negative centre is ordinary data.
        for (uint16_t h : {uint16_t{0x0000}, uint16_t{0x8000}, uint16_t{0xbc00}}) {
          auto other = page;
          Put16(other, at + channel * 2, h);
          Resign(other);
          ExpectCode(other, scale ? kDataLoss : absl::StatusCode::kOk,
                     what + std::to_string(channel) + " = " + std::to_string(h));
        }
        auto fine = page;  // 2.0: another finite positive value decodes
        Put16(fine, at + channel * 2, 0x4000);
        Resign(fine);
        ExpectCode(fine, absl::StatusCode::kOk, what + std::to_string(channel) + " = 2");
      }
    }
  }
}

TEST(PageCorruption, ZeroWidthsShrinkCodes) {
  // Re-labelling every group as width 0 leaves the codes unexplained.
  const PageShape s{4, 1, 16};
  const auto page = Encode("qaq:o=0", s, 9);
  auto bad = page;
  bad[kHeader + 4] = 0;
  bad[kHeader + 5] = 0;
  Resign(bad);
  ExpectCode(bad, kDataLoss, "all widths 0");
}

TEST(PageCorruption, RandomGarbageWithValidChecksum) {
  // Random bodies behind a correct magic/version/size header never crash and
  // fail with one of the two documented codes.
  std::mt19937 rng(12345);
  const auto page = Encode("qaq-cs", {5, 2, 16}, 10, 1);
  for (int iter = 0; iter < 2000; ++iter) {
    auto bad = page;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) bad[kHeader + rng() % (bad.size() - 8 - kHeader)] = rng();
    Resign(bad);
    std::vector<float> k(5 * 2 * 16), v(5 * 2 * 16);
    const absl::Status st = DecodePage(bad, {k.data(), DType::kF32}, {v.data(), DType::kF32});
    EXPECT_TRUE(st.ok() || st.code() == kDataLoss || st.code() == kInvalid) << st;
    (void)ComputePageStats(bad);
  }
}

// The checksum every module computes goes through xxHash's x86 dispatcher
// (AVX2/AVX-512); it must equal the library's portable XXH3-64 at every
// length class XXH3 treats differently (0-16, 17-128, 129-240, long with
// and without a partial stripe and block), or stored pages would stop
// checking.
TEST(PageChecksumTest, DispatchedXxh3EqualsThePortableOne) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> bytes(262184 + 64);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  for (size_t n : {0, 1, 3, 4, 8, 9, 16, 17, 64, 128, 129, 200, 240, 241, 1023, 1024, 1025,
                   4096, 65536, 65537, 262144, 262184}) {
    for (size_t offset : {0, 1, 7}) {  // unaligned starts too
      EXPECT_EQ(PageChecksum(bytes.data() + offset, n), XXH3_64bits(bytes.data() + offset, n))
          << n << " bytes at offset " << offset;
    }
  }
}

}  // namespace
}  // namespace qaqkv
