// Unit tests of service/validate.h: the checks every request field and page
// goes through before the store sees it. No server, no network: the
// functions are called directly, so each rule is pinned down at both ends of
// its range with the exact status code and the field the message names
// (integration tests through qaqkv-server only see a few of these paths).
//
// Pages are real: random values encoded by the kernels' EncodePage. Lying
// pages are made from them by editing bytes and recomputing the XXH3-64
// trailer (kernels/checksum.h), so they get past the checksum and must be
// refused by the structural checks (docs/page-format.md).
#include "service/validate.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/checksum.h"
#include "kernels/codec.h"
#include "qaqkv/limits.h"
#include "tests/service/test_util.h"

namespace qaqkv::service {
namespace {

using ::testing::HasSubstr;

constexpr absl::StatusCode kOk = absl::StatusCode::kOk;
constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
constexpr absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;

// Header offsets (docs/page-format.md).
constexpr size_t kHeaderBytes = 32, kKBytesAt = 24, kVBytesAt = 28;
constexpr size_t kTrailerBytes = 8;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// The service tests' small geometry and formats (tests/service/test_util.h).
using testing::MakeFormat;
using testing::SmallGeometry;

Format MustFormat(const std::string& codec, const v1::Geometry& g = SmallGeometry()) {
  auto f = ValidateFormat(MakeFormat(codec, g), "format");
  EXPECT_TRUE(f.ok()) << codec << ": " << f.status();
  return f.ok() ? *f : Format{};
}

// An encoded page of `tokens` (0: block_tokens) x kv_heads x head_dim random
// values of K and V, written by `codec`.
std::string MakePage(const std::string& codec, uint32_t seed, uint32_t tokens = 0,
                     const v1::Geometry& g = SmallGeometry()) {
  absl::StatusOr<std::string> page = testing::MakePage(codec, g, seed, tokens);
  EXPECT_TRUE(page.ok()) << codec << ": " << page.status();
  return page.ok() ? *page : std::string();
}

uint32_t Get32(const std::string& p, size_t at) {
  uint32_t v;
  std::memcpy(&v, p.data() + at, 4);
  return v;
}
void Put32(std::string& p, size_t at, uint32_t v) { std::memcpy(p.data() + at, &v, 4); }

// Recomputes the trailer with the checksum the codec uses, so the page gets
// past the checksum and only its structure can betray it.
void Resign(std::string& p) {
  const uint64_t h = PageChecksum(p.data(), p.size() - kTrailerBytes);
  std::memcpy(p.data() + p.size() - kTrailerBytes, &h, kTrailerBytes);
}

std::string BlockKey(uint8_t seed) { return std::string(limits::kBlockKeyBytes, char(seed)); }

// ---------------------------------------------------------------------------
// ValidateFormat

struct FormatCase {
  std::string name;
  std::function<void(v1::BlockFormat&)> mutate;
  absl::StatusCode code;
  std::string message;  // substring of the message (after the field prefix)
};

TEST(ValidateFormatTest, GeometryRangesAtBothEndsAndCodec) {
  using limits::kMaxBlockTokens, limits::kMaxHeadDim, limits::kMaxKvHeads, limits::kMaxLayers,
      limits::kMaxQHeads;
  constexpr uint32_t kU32Max = std::numeric_limits<uint32_t>::max();
  auto geo = [](auto setter) {
    return [setter](v1::BlockFormat& f) { setter(*f.mutable_geometry()); };
  };
  const std::string gp = "x.format.geometry.";
  const std::vector<FormatCase> cases = {
      {"valid", [](v1::BlockFormat&) {}, kOk, ""},
      {"geometry missing", [](v1::BlockFormat& f) { f.clear_geometry(); }, kInvalid,
       "x.format.geometry: missing"},

      {"num_layers 0", geo([](v1::Geometry& g) { g.set_num_layers(0); }), kInvalid,
       gp + "num_layers: 0 is outside 1..4096"},
      {"num_layers 1", geo([](v1::Geometry& g) { g.set_num_layers(1); }), kOk, ""},
      {"num_layers max", geo([](v1::Geometry& g) { g.set_num_layers(kMaxLayers); }), kOk, ""},
      {"num_layers max+1", geo([](v1::Geometry& g) { g.set_num_layers(kMaxLayers + 1); }),
       kInvalid, gp + "num_layers: 4097"},
      {"num_layers u32 max", geo([](v1::Geometry& g) { g.set_num_layers(kU32Max); }), kInvalid,
       gp + "num_layers"},

      // num_q_heads follows num_kv_heads so each keeps the other valid.
      {"num_kv_heads 0", geo([](v1::Geometry& g) { g.set_num_kv_heads(0); }), kInvalid,
       gp + "num_kv_heads: 0 is outside 1..1024"},
      {"num_kv_heads 1", geo([](v1::Geometry& g) { g.set_num_kv_heads(1); }), kOk, ""},
      {"num_kv_heads max",
       geo([](v1::Geometry& g) {
         g.set_num_kv_heads(kMaxKvHeads);
         g.set_num_q_heads(kMaxKvHeads);
       }),
       kOk, ""},
      {"num_kv_heads max+1",
       geo([](v1::Geometry& g) {
         g.set_num_kv_heads(kMaxKvHeads + 1);
         g.set_num_q_heads(kMaxKvHeads + 1);
       }),
       kInvalid, gp + "num_kv_heads: 1025"},

      {"num_q_heads 0", geo([](v1::Geometry& g) { g.set_num_q_heads(0); }), kInvalid,
       gp + "num_q_heads: 0 is outside 1..65536"},
      {"num_q_heads 1",
       geo([](v1::Geometry& g) {
         g.set_num_kv_heads(1);
         g.set_num_q_heads(1);
       }),
       kOk, ""},
      {"num_q_heads max", geo([](v1::Geometry& g) { g.set_num_q_heads(kMaxQHeads); }), kOk, ""},
      {"num_q_heads max+1",
       geo([](v1::Geometry& g) {
         g.set_num_kv_heads(1);
         g.set_num_q_heads(kMaxQHeads + 1);
       }),
       kInvalid, gp + "num_q_heads: 65537"},
      {"num_q_heads max+2 (a multiple of 2 kv heads)",
       geo([](v1::Geometry& g) { g.set_num_q_heads(kMaxQHeads + 2); }), kInvalid,
       gp + "num_q_heads: 65538 is outside"},
      {"num_q_heads not a multiple", geo([](v1::Geometry& g) { g.set_num_q_heads(5); }),
       kInvalid, gp + "num_q_heads: 5 is not a multiple of num_kv_heads 2"},
      {"num_q_heads below num_kv_heads",
       geo([](v1::Geometry& g) {
         g.set_num_kv_heads(8);
         g.set_num_q_heads(4);
       }),
       kInvalid, gp + "num_q_heads: 4 is not a multiple of num_kv_heads 8"},
      {"num_q_heads equal to num_kv_heads (MHA)",
       geo([](v1::Geometry& g) { g.set_num_q_heads(2); }), kOk, ""},

      {"head_dim 0", geo([](v1::Geometry& g) { g.set_head_dim(0); }), kInvalid,
       gp + "head_dim: 0 is outside 1..1024"},
      {"head_dim 1", geo([](v1::Geometry& g) { g.set_head_dim(1); }), kOk, ""},
      {"head_dim max", geo([](v1::Geometry& g) { g.set_head_dim(kMaxHeadDim); }), kOk, ""},
      {"head_dim max+1", geo([](v1::Geometry& g) { g.set_head_dim(kMaxHeadDim + 1); }),
       kInvalid, gp + "head_dim: 1025"},

      {"dtype unspecified", geo([](v1::Geometry& g) { g.set_dtype(v1::DTYPE_UNSPECIFIED); }),
       kInvalid, gp + "dtype: 0 is not FP16 or BF16"},
      {"dtype unknown enum value",
       geo([](v1::Geometry& g) { g.set_dtype(static_cast<v1::DType>(3)); }), kInvalid,
       gp + "dtype: 3"},
      {"dtype bf16", geo([](v1::Geometry& g) { g.set_dtype(v1::DTYPE_BF16); }), kOk, ""},

      {"block_tokens 0", geo([](v1::Geometry& g) { g.set_block_tokens(0); }), kInvalid,
       gp + "block_tokens: 0 is outside 1..65536"},
      {"block_tokens 1", geo([](v1::Geometry& g) { g.set_block_tokens(1); }), kOk, ""},
      {"block_tokens max", geo([](v1::Geometry& g) { g.set_block_tokens(kMaxBlockTokens); }),
       kOk, ""},
      {"block_tokens max+1",
       geo([](v1::Geometry& g) { g.set_block_tokens(kMaxBlockTokens + 1); }), kInvalid,
       gp + "block_tokens: 65537"},
      // Each field in range, but no page of that size can exist.
      {"page values past the page format's limit",
       geo([](v1::Geometry& g) {
         g.set_block_tokens(kMaxBlockTokens);
         g.set_num_kv_heads(32);
         g.set_num_q_heads(32);
         g.set_head_dim(1024);
       }),
       kInvalid, "x.format.geometry: block_tokens x num_kv_heads x head_dim is 2147483648 values"},
      {"page values at the limit",
       geo([](v1::Geometry& g) {
         g.set_block_tokens(kMaxBlockTokens);
         g.set_num_kv_heads(16);
         g.set_num_q_heads(16);
         g.set_head_dim(1024);
       }),
       kOk, ""},

      {"codec missing", [](v1::BlockFormat& f) { f.clear_codec(); }, kInvalid,
       "x.format.codec: missing"},
      {"codec unknown", [](v1::BlockFormat& f) { f.set_codec("zstd"); }, kInvalid,
       "x.format.codec: codec: unknown codec 'zstd'"},
      {"codec unknown variant", [](v1::BlockFormat& f) { f.set_codec("qaq-foo"); }, kInvalid,
       "x.format.codec: codec: unknown variant 'foo'"},
      {"codec variant of another kind", [](v1::BlockFormat& f) { f.set_codec("int8-cs"); },
       kInvalid, "x.format.codec"},
      {"codec bad parameter", [](v1::BlockFormat& f) { f.set_codec("qaq:s=abc"); }, kInvalid,
       "x.format.codec: codec: bad parameter 's=abc'"},
      {"codec parameter of another kind", [](v1::BlockFormat& f) { f.set_codec("int8:s=1"); },
       kInvalid, "x.format.codec"},
      {"codec config out of range", [](v1::BlockFormat& f) { f.set_codec("qaq:b=9-8"); },
       kInvalid, "x.format.codec"},
      {"codec outlier ratio 0.5", [](v1::BlockFormat& f) { f.set_codec("qaq:o=0.5"); },
       kInvalid, "x.format.codec"},
      {"codec uppercase", [](v1::BlockFormat& f) { f.set_codec("QAQ"); }, kInvalid,
       "x.format.codec"},
  };
  for (const FormatCase& c : cases) {
    SCOPED_TRACE(c.name);
    v1::BlockFormat f = MakeFormat("qaq");
    c.mutate(f);
    const auto got = ValidateFormat(f, "x.format");
    EXPECT_EQ(got.status().code(), c.code) << got.status();
    if (c.code != kOk) {
      EXPECT_THAT(Msg(got.status()), HasSubstr(c.message));
    } else if (got.ok()) {
      // The canonical proto keeps the geometry as sent.
      EXPECT_EQ(got->proto.geometry().SerializeAsString(), f.geometry().SerializeAsString());
    }
  }
}

TEST(ValidateFormatTest, CanonicalCodecNames) {
  const std::string qaq_default = CodecConfig{}.Name();
  ASSERT_NE(qaq_default, "qaq");  // the full name, with every parameter
  const std::vector<std::vector<std::string>> same = {
      {"qaq", qaq_default, "qaq:", "qaq:s=1e-3,x=1e-3", "qaq:b=0-8,o=0.01,x=0.001,s=0.001,w=5"},
      {"qaq-cs-cc", "qaq-cc-cs"},
      {"qaq-layer", "qaq-layer:o=0.010"},
      {"kivi2", "kivi2:r=128,g=32", "kivi2:g=32"},
      {"int8"},
      {"fp16"},
      {"qaq:o=0"},
  };
  std::vector<std::string> descriptors;
  for (const auto& spellings : same) {
    const Format first = MustFormat(spellings[0]);
    EXPECT_EQ(first.proto.codec(), first.codec.Name()) << spellings[0];
    descriptors.push_back(first.descriptor);
    for (const std::string& s : spellings) {
      const Format f = MustFormat(s);
      EXPECT_EQ(f.descriptor, first.descriptor) << s << " vs " << spellings[0];
      EXPECT_EQ(f.proto.codec(), first.proto.codec()) << s;
    }
  }
  EXPECT_EQ(MustFormat("qaq").proto.codec(), qaq_default);
  // Different codecs (and different geometries) never share a descriptor.
  for (size_t i = 0; i < descriptors.size(); ++i) {
    for (size_t j = i + 1; j < descriptors.size(); ++j) {
      EXPECT_NE(descriptors[i], descriptors[j]) << same[i][0] << " vs " << same[j][0];
    }
  }
  v1::Geometry other = SmallGeometry();
  other.set_dtype(v1::DTYPE_BF16);
  EXPECT_NE(MustFormat("qaq", other).descriptor, MustFormat("qaq").descriptor);
}

// The descriptor is what the store compares; it must stand for exactly one
// codec: two configs that write different pages must not get the same
// descriptor, and the descriptor read back must validate to itself.
TEST(ValidateFormatTest, DescriptorPinsTheCodecThatWritesThePages) {
  // 0.06250001 is the float 0.0625 + 1 ulp. With head_dim 64 it keeps
  // ceil(0.0625000075 / 2 * 64) = 3 outliers per side; 0.0625 keeps 2.
  const Format a = MustFormat("qaq:o=0.06250001");
  const Format b = MustFormat("qaq:o=0.0625");
  const std::string page_a = MakePage("qaq:o=0.06250001", 1);
  const std::string page_b = MakePage("qaq:o=0.0625", 1);
  ASSERT_NE(page_a[16], page_b[16]) << "the two configs write different outlier counts";
  // Each page is valid under its own format and refused under the other.
  EXPECT_TRUE(ValidatePageBytes(a, page_a, "p", 16).ok());
  EXPECT_TRUE(ValidatePageBytes(b, page_b, "p", 16).ok());
  EXPECT_EQ(ValidatePageBytes(b, page_a, "p", 16).code(), kInvalid);
  // Re-validating a stored descriptor gives back the same descriptor.
  auto back = FormatFromDescriptor(a.descriptor);
  ASSERT_TRUE(back.ok()) << back.status();
  auto again = ValidateFormat(*back, "stored");
  ASSERT_TRUE(again.ok()) << again.status();
  // CodecConfig::Name() once printed six significant digits, so the two
  // shared one descriptor and it parsed back to the other config.
  EXPECT_NE(a.descriptor, b.descriptor);
  EXPECT_EQ(again->codec.outlier_ratio, a.codec.outlier_ratio);
  EXPECT_EQ(again->descriptor, a.descriptor);
}

TEST(ValidateFormatFromDescriptorTest, RoundTrip) {
  for (const std::string codec : {"qaq", "qaq-layer-cs:o=0.1", "kivi2:r=4,g=8", "fp16"}) {
    v1::Geometry g = SmallGeometry();
    g.set_num_layers(32);
    g.set_dtype(v1::DTYPE_BF16);
    const Format f = MustFormat(codec, g);
    auto back = FormatFromDescriptor(f.descriptor);
    ASSERT_TRUE(back.ok()) << codec << ": " << back.status();
    EXPECT_EQ(back->SerializeAsString(), f.proto.SerializeAsString()) << codec;
    EXPECT_EQ(back->codec(), f.codec.Name());
    EXPECT_EQ(back->geometry().num_layers(), 32u);
    EXPECT_EQ(back->geometry().dtype(), v1::DTYPE_BF16);
    // A stored descriptor validates to itself.
    auto again = ValidateFormat(*back, "stored");
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->descriptor, f.descriptor) << codec;
  }
}

TEST(ValidateFormatFromDescriptorTest, GarbageIsDataLoss) {
  const std::string valid = MustFormat("qaq").descriptor;
  const std::vector<std::pair<std::string, std::string>> garbage = {
      {"truncated varint", std::string("\xff\xff\xff", 3)},
      {"length beyond the end", std::string("\x0a\x05" "ab", 4)},
      {"truncated valid descriptor", valid.substr(0, valid.size() - 1)},
      {"end-group tag", std::string("\x0c", 1)},
      {"geometry holds garbage", std::string("\x0a\x02\xff\xff", 4)},
      {"empty: no geometry, no codec", std::string()},
      {"geometry without a codec", valid.substr(0, valid.find('\x12'))},
  };
  for (const auto& [name, bytes] : garbage) {
    const auto got = FormatFromDescriptor(bytes);
    EXPECT_EQ(got.status().code(), kDataLoss) << name << ": " << got.status();
  }
}

// ---------------------------------------------------------------------------
// ValidateBlockKey(s)

TEST(ValidateBlockKeyTest, LengthMustBeExactly16) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{17}, size_t{32}}) {
    const auto got = ValidateBlockKey(std::string(n, 'k'), "req.block_key");
    EXPECT_EQ(got.status().code(), kInvalid) << n;
    EXPECT_THAT(Msg(got.status()), HasSubstr("req.block_key: " + std::to_string(n) + " bytes"));
  }
  std::string bytes(limits::kBlockKeyBytes, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(0xf0 + i);
  const auto got = ValidateBlockKey(bytes, "req.block_key");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(std::memcmp(got->data(), bytes.data(), bytes.size()), 0);
}

TEST(ValidateBlockKeysTest, CountAndEveryKeyNamedByIndex) {
  google::protobuf::RepeatedPtrField<std::string> keys;
  for (int i = 0; i < 5; ++i) *keys.Add() = BlockKey(static_cast<uint8_t>(i));

  auto ok = ValidateBlockKeys(keys, "req.block_keys", 5);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ((*ok)[i][0], i);

  auto over = ValidateBlockKeys(keys, "req.block_keys", 4);
  EXPECT_EQ(over.status().code(), kInvalid);
  EXPECT_THAT(Msg(over.status()), HasSubstr("req.block_keys: 5 keys, at most 4"));

  google::protobuf::RepeatedPtrField<std::string> none;
  auto empty = ValidateBlockKeys(none, "req.block_keys", 4);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());

  for (int bad : {0, 3, 4}) {
    auto copy = keys;
    copy.Mutable(bad)->pop_back();
    const auto got = ValidateBlockKeys(copy, "req.block_keys", 5);
    EXPECT_EQ(got.status().code(), kInvalid);
    EXPECT_THAT(Msg(got.status()),
                HasSubstr("req.block_keys[" + std::to_string(bad) + "]: 15 bytes"));
  }
}

TEST(ValidateBlockKeysTest, ProtocolMaximum) {
  google::protobuf::RepeatedPtrField<std::string> keys;
  for (size_t i = 0; i < limits::kMaxTransferKeys; ++i) *keys.Add() = BlockKey(7);
  EXPECT_TRUE(ValidateBlockKeys(keys, "k", limits::kMaxTransferKeys).ok());
  *keys.Add() = BlockKey(7);
  const auto got = ValidateBlockKeys(keys, "k", limits::kMaxTransferKeys);
  EXPECT_EQ(got.status().code(), kInvalid);
  EXPECT_THAT(Msg(got.status()), HasSubstr("k: 65537 keys, at most 65536"));
}

// ---------------------------------------------------------------------------
// ValidatePageBytes

struct PageCase {
  std::string name;
  std::string page_codec;    // what wrote the page
  std::string format_codec;  // the format it is offered under
  uint32_t page_tokens;      // 0: block_tokens
  std::function<void(std::string&)> mutate;  // may be null
  absl::StatusCode code;
  std::string message;  // besides the field name
};

// Moves `delta` bytes from V to K in the header and re-signs: the sizes
// still add up to the page, but the sections split in the wrong place.
void MoveSplit(std::string& p, int delta) {
  Put32(p, kKBytesAt, Get32(p, kKBytesAt) + delta);
  Put32(p, kVBytesAt, Get32(p, kVBytesAt) - delta);
  Resign(p);
}

// Inserts `n` zero bytes at the end of the K section (k_bytes + n), re-signed.
void GrowK(std::string& p, size_t n) {
  const uint32_t kb = Get32(p, kKBytesAt);
  p.insert(kHeaderBytes + kb, n, '\0');
  Put32(p, kKBytesAt, kb + static_cast<uint32_t>(n));
  Resign(p);
}

// Drops the last `n` bytes of the V section (v_bytes - n), re-signed.
void ShrinkV(std::string& p, size_t n) {
  const uint32_t kb = Get32(p, kKBytesAt), vb = Get32(p, kVBytesAt);
  p.erase(kHeaderBytes + kb + vb - n, n);
  Put32(p, kVBytesAt, vb - static_cast<uint32_t>(n));
  Resign(p);
}

TEST(ValidatePageBytesTest, Table) {
  const std::vector<PageCase> cases = {
      // Valid pages of every codec family under their own format.
      {"qaq", "qaq", "qaq", 0, nullptr, kOk, ""},
      {"qaq full name", "qaq", CodecConfig{}.Name(), 0, nullptr, kOk, ""},
      {"qaq-layer", "qaq-layer", "qaq-layer", 0, nullptr, kOk, ""},
      {"qaq-cs", "qaq-cs", "qaq-cs", 0, nullptr, kOk, ""},
      {"qaq-cc", "qaq-cc", "qaq-cc", 0, nullptr, kOk, ""},
      {"int8", "int8", "int8", 0, nullptr, kOk, ""},
      {"int4", "int4", "int4", 0, nullptr, kOk, ""},
      {"kivi2", "kivi2", "kivi2", 0, nullptr, kOk, ""},
      {"fp16", "fp16", "fp16", 0, nullptr, kOk, ""},

      // Shape against the geometry.
      {"fewer tokens", "qaq", "qaq", 8, nullptr, kInvalid, "does not match the expected"},
      {"more tokens", "qaq", "qaq", 32, nullptr, kInvalid, "does not match the expected"},

      // Codec kind, group level, key transform, outliers against the format.
      {"int8 page under qaq", "int8", "qaq", 0, nullptr, kInvalid, "written as codec int8"},
      {"qaq page under int4", "qaq", "int4", 0, nullptr, kInvalid, "written as codec qaq"},
      {"fp16 page under qaq", "fp16", "qaq", 0, nullptr, kInvalid, "written as codec fp16"},
      {"qaq-layer page under qaq", "qaq-layer", "qaq", 0, nullptr, kInvalid, "flags"},
      {"qaq page under qaq-layer", "qaq", "qaq-layer", 0, nullptr, kInvalid, "flags"},
      {"int8-layer page under int8", "int8-layer", "int8", 0, nullptr, kInvalid, "flags"},
      {"(d) qaq-cs page under qaq", "qaq-cs", "qaq", 0, nullptr, kInvalid, "flags"},
      {"qaq page under qaq-cs", "qaq", "qaq-cs", 0, nullptr, kInvalid, "flags"},
      {"qaq-cc page under qaq", "qaq-cc", "qaq", 0, nullptr, kInvalid, "flags"},
      {"qaq-cs page under qaq-cc", "qaq-cs", "qaq-cc", 0, nullptr, kInvalid, "flags"},
      {"more outliers than the format keeps", "qaq:o=0.1", "qaq", 0, nullptr, kInvalid,
       "outliers per side"},
      {"kivi2 residual differs", "kivi2:r=4", "kivi2:r=8", 0, nullptr, kInvalid,
       "kivi group"},

      // Damaged bytes: the checksum catches them first.
      {"empty page", "qaq", "qaq", 0, [](std::string& p) { p.clear(); }, kInvalid,
       "empty page"},
      {"header only", "qaq", "qaq", 0, [](std::string& p) { p.resize(kHeaderBytes); }, kDataLoss,
       "shorter than a header"},
      {"one byte short", "qaq", "qaq", 0, [](std::string& p) { p.pop_back(); }, kDataLoss,
       "checksum"},
      {"half the page", "qaq", "qaq", 0, [](std::string& p) { p.resize(p.size() / 2); },
       kDataLoss, "checksum"},
      {"one byte appended", "qaq", "qaq", 0, [](std::string& p) { p.push_back('\0'); },
       kDataLoss, "checksum"},
      {"flipped header byte", "qaq", "qaq", 0, [](std::string& p) { p[9] ^= 0x01; }, kDataLoss,
       "checksum"},
      {"flipped K byte", "qaq", "qaq", 0, [](std::string& p) { p[kHeaderBytes + 40] ^= 0x80; },
       kDataLoss, "checksum"},
      {"flipped trailer byte", "fp16", "fp16", 0, [](std::string& p) { p.back() ^= 0x01; },
       kDataLoss, "checksum"},

      // Lying pages with a recomputed, valid trailer.
      {"(a) K 64 bytes longer, V 64 shorter", "qaq", "qaq", 0,
       [](std::string& p) { MoveSplit(p, 64); }, kDataLoss, "page:"},
      {"(a') K 64 bytes shorter, V 64 longer", "qaq", "qaq", 0,
       [](std::string& p) { MoveSplit(p, -64); }, kDataLoss, "page:"},
      {"(a'') qaq-cs split moved by 64", "qaq-cs", "qaq-cs", 0,
       [](std::string& p) { MoveSplit(p, 64); }, kDataLoss, "page:"},
      {"(b) qaq exact-group count 2^31-1", "qaq", "qaq", 0,
       [](std::string& p) {
         Put32(p, kHeaderBytes, 0x7fffffffu);
         Resign(p);
       },
       kDataLoss, "K section lists 2147483647 exact groups"},
      {"(b') qaq exact-group count 2^32-1", "qaq", "qaq", 0,
       [](std::string& p) {
         Put32(p, kHeaderBytes, 0xffffffffu);
         Resign(p);
       },
       kDataLoss, "exact groups"},
      {"(c) fp16 split moved by 64", "fp16", "fp16", 0, [](std::string& p) { MoveSplit(p, 64); },
       kDataLoss, "page:"},
      {"(c') fp16 split moved by 2", "fp16", "fp16", 0, [](std::string& p) { MoveSplit(p, 2); },
       kDataLoss, "page:"},
      {"(c'') fp16 K section 2 bytes longer than its shape", "fp16", "fp16", 0,
       [](std::string& p) { GrowK(p, 2); }, kDataLoss, "K section has 2 unexplained bytes"},
      {"(c''') fp16 V section 2 bytes shorter than its shape", "fp16", "fp16", 0,
       [](std::string& p) { ShrinkV(p, 2); }, kDataLoss, "V"},
      {"sizes that no longer add up", "qaq", "qaq", 0,
       [](std::string& p) {
         Put32(p, kKBytesAt, Get32(p, kKBytesAt) + 1);
         Resign(p);
       },
       kDataLoss, "do not match page size"},
      {"bad magic", "qaq", "qaq", 0,
       [](std::string& p) {
         p[0] = 'X';
         Resign(p);
       },
       kInvalid, "bad magic"},
  };
  for (const PageCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Format format = MustFormat(c.format_codec);
    std::string page = MakePage(c.page_codec, 42, c.page_tokens);
    ASSERT_FALSE(page.empty());
    if (c.mutate) c.mutate(page);
    const absl::Status got = ValidatePageBytes(format, page, "req.pages[3].data", 16);
    EXPECT_EQ(got.code(), c.code) << got;
    if (c.code != kOk) {
      EXPECT_THAT(Msg(got), HasSubstr("req.pages[3].data: "));
      EXPECT_THAT(Msg(got), HasSubstr(c.message));
    }
  }
}

TEST(ValidatePageBytesTest, EveryTruncationAndEveryByteFlipIsDataLoss) {
  for (const std::string codec : {"qaq", "fp16"}) {
    v1::Geometry g = SmallGeometry();
    g.set_head_dim(8);
    g.set_block_tokens(4);
    const Format format = MustFormat(codec, g);
    const std::string page = MakePage(codec, 5, 0, g);
    ASSERT_TRUE(ValidatePageBytes(format, page, "d", 4).ok());
    for (size_t len = 1; len < page.size(); ++len) {
      const absl::Status s = ValidatePageBytes(format, page.substr(0, len), "d", 4);
      EXPECT_EQ(s.code(), kDataLoss) << codec << " truncated to " << len << ": " << s;
      EXPECT_THAT(Msg(s), HasSubstr("d: "));
    }
    for (size_t i = 0; i < page.size(); ++i) {
      std::string bad = page;
      bad[i] ^= 0x10;
      const absl::Status s = ValidatePageBytes(format, bad, "d", 4);
      EXPECT_EQ(s.code(), kDataLoss) << codec << " byte " << i << ": " << s;
    }
  }
}

TEST(ValidatePageBytesTest, StackedTailTokens) {
  // A session tail stacks its layers: tokens = block_tokens * layers.
  const Format format = MustFormat("qaq");
  const std::string tail = MakePage("qaq", 3, 16 * 4);
  EXPECT_TRUE(ValidatePageBytes(format, tail, "tail", 64).ok());
  const absl::Status s = ValidatePageBytes(format, tail, "tail", 16);
  EXPECT_EQ(s.code(), kInvalid) << s;
  EXPECT_THAT(Msg(s), HasSubstr("tail: "));
}

// ---------------------------------------------------------------------------
// ValidatePage

TEST(ValidatePageTest, Table) {
  const Format format = MustFormat("qaq");
  const std::string good = MakePage("qaq", 9);
  struct Case {
    std::string name;
    std::function<void(v1::Page&)> mutate;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"valid", [](v1::Page&) {}, kOk, ""},
      {"last layer", [](v1::Page& p) { p.set_layer(3); }, kOk, ""},
      {"layer = num_layers", [](v1::Page& p) { p.set_layer(4); }, kInvalid,
       "put.pages[2].layer: 4 is not below geometry.num_layers 4"},
      {"layer u32 max", [](v1::Page& p) { p.set_layer(0xffffffffu); }, kInvalid,
       "put.pages[2].layer: 4294967295"},
      {"block key missing", [](v1::Page& p) { p.clear_block_key(); }, kInvalid,
       "put.pages[2].block_key: 0 bytes"},
      {"block key 17 bytes", [](v1::Page& p) { p.mutable_block_key()->push_back('x'); },
       kInvalid, "put.pages[2].block_key: 17 bytes"},
      {"data missing", [](v1::Page& p) { p.clear_data(); }, kInvalid,
       "put.pages[2].data: empty page"},
      {"data truncated", [](v1::Page& p) { p.mutable_data()->pop_back(); }, kDataLoss,
       "put.pages[2].data: "},
      {"data flipped", [](v1::Page& p) { (*p.mutable_data())[50] ^= 1; }, kDataLoss,
       "put.pages[2].data: "},
      {"data of another codec", [](v1::Page& p) { p.set_data(MakePage("int4", 9)); }, kInvalid,
       "put.pages[2].data: "},
      {"data of another shape", [](v1::Page& p) { p.set_data(MakePage("qaq", 9, 15)); },
       kInvalid, "put.pages[2].data: "},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::Page page;
    page.set_block_key(BlockKey(0xab));
    page.set_layer(0);
    page.set_data(good);
    c.mutate(page);
    const auto got = ValidatePage(format, page, "put.pages[2]");
    EXPECT_EQ(got.status().code(), c.code) << got.status();
    if (c.code != kOk) {
      EXPECT_THAT(Msg(got.status()), HasSubstr(c.message));
    } else if (got.ok()) {
      EXPECT_EQ((*got)[0], 0xab);
    }
  }
}

}  // namespace
}  // namespace qaqkv::service
