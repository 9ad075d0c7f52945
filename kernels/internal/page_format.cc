#include "kernels/internal/page_format.h"

#include "absl/strings/str_cat.h"
#include "kernels/checksum.h"
#include "kernels/internal/codec_table.h"

namespace qaqkv::internal {

void WriteHeader(const PageHeader& h, uint8_t* out) {
  PutU32(out + 0, kPageMagic);
  PutU16(out + 4, PageVersionFor(h.flags));
  out[6] = static_cast<uint8_t>(h.kind);
  out[7] = h.flags;
  PutU32(out + 8, h.tokens);
  PutU16(out + 12, h.kv_heads);
  PutU16(out + 14, h.head_dim);
  PutU16(out + 16, h.outliers);
  PutU16(out + 18, h.kivi_group);
  PutU32(out + 20, h.kivi_residual);
  PutU32(out + kHeaderKBytesOffset, h.k_bytes);
  PutU32(out + kHeaderVBytesOffset, h.v_bytes);
}

uint64_t PageChecksum(std::span<const uint8_t> bytes) {
  return ::qaqkv::PageChecksum(bytes.data(), bytes.size());
}

absl::StatusOr<std::span<const uint8_t>> VerifyChecksum(std::span<const uint8_t> page) {
  if (page.size() < kHeaderBytes + kChecksumBytes) {
    return absl::DataLossError(absl::StrCat("page: ", page.size(),
                                            " bytes is shorter than a header and checksum (",
                                            kHeaderBytes + kChecksumBytes, ")"));
  }
  static_assert(kChecksumBytes == sizeof(uint64_t));
  if (!::qaqkv::PageChecksumOk(page.data(), page.size())) {
    return absl::DataLossError("page: checksum mismatch (XXH3-64)");
  }
  return page.first(page.size() - kChecksumBytes);
}

absl::StatusOr<PageHeader> ReadHeader(std::span<const uint8_t> body) {
  const uint8_t* p = body.data();
  if (GetU32(p) != kPageMagic) return absl::InvalidArgumentError("page: bad magic");
  const uint16_t version = GetU16(p + 4);
  if (version != kPageVersion && version != kPageVersion2) {
    return absl::InvalidArgumentError(
        absl::StrCat("page: unsupported format version ", version));
  }
  PageHeader h;
  const CodecTraits* codec = FindCodec(p[6]);
  if (codec == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("page: unknown codec id ", p[6]));
  }
  h.kind = static_cast<CodecKind>(p[6]);
  h.flags = p[7];
  h.tokens = GetU32(p + 8);
  h.kv_heads = GetU16(p + 12);
  h.head_dim = GetU16(p + 14);
  h.outliers = GetU16(p + 16);
  h.kivi_group = GetU16(p + 18);
  h.kivi_residual = GetU32(p + 20);
  h.k_bytes = GetU32(p + 24);
  h.v_bytes = GetU32(p + 28);
  if ((h.flags & ~(kFlagLayerGroups | kFlagKeyChannelScale | kFlagKeyChannelCenter |
                   kFlagRotate | kFlagEntropyCoded)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("page: unknown flags ", h.flags));
  }
  // A version is exactly its features: a rotated page is version 2, and
  // version 2 says the page is rotated.
  if (PageVersionFor(h.flags) != version) {
    return absl::InvalidArgumentError(absl::StrCat("page: flags ", h.flags,
                                                   " are not those of format version ", version));
  }
  if ((h.flags & kFlagRotate) != 0 &&
      (!codec->rotation || (h.flags & kFlagKeyChannelScale) != 0)) {
    return absl::InvalidArgumentError("page: rotation is only valid for int8, int4 and qaq, "
                                      "without key channel scales");
  }
  if ((h.flags & kFlagEntropyCoded) != 0 &&
      (!codec->entropy_coding || h.outliers != 0 ||
       (h.flags & (kFlagLayerGroups | kFlagKeyChannelScale | kFlagKeyChannelCenter)) != 0)) {
    return absl::InvalidArgumentError("page: entropy coding is only valid for head-level qaq "
                                      "without outliers or key channel transforms");
  }
  if (h.tokens == 0 || h.tokens > kMaxTokens || h.kv_heads == 0 ||
      h.kv_heads > kMaxKvHeads || h.head_dim == 0 || h.head_dim > kMaxHeadDim ||
      int64_t{h.tokens} * h.kv_heads * h.head_dim > kMaxPageValues) {
    return absl::InvalidArgumentError(
        absl::StrCat("page: impossible shape tokens=", h.tokens, " kv_heads=", h.kv_heads,
                     " head_dim=", h.head_dim));
  }
  if ((h.flags & (kFlagKeyChannelScale | kFlagKeyChannelCenter)) != 0 && !codec->key_transforms) {
    return absl::InvalidArgumentError("page: key channel transforms are only valid for qaq");
  }
  if (h.kind == CodecKind::kKivi2 && (h.kivi_group == 0 || h.kivi_residual > h.tokens)) {
    return absl::InvalidArgumentError("page: bad kivi group or residual");
  }
  if (kHeaderBytes + uint64_t{h.k_bytes} + h.v_bytes != body.size()) {
    return absl::DataLossError(absl::StrCat("page: section sizes ", h.k_bytes, "+",
                                            h.v_bytes, " do not match page size ",
                                            body.size()));
  }
  return h;
}

int64_t GroupGeometry::groups() const {
  const int64_t H = kv_heads, D = head_dim;
  switch (kind) {
    case Kind::kHead: return H * tokens;
    case Kind::kLayer: return tokens;
    case Kind::kKiviKey: return H * ((quant_tokens + kivi_group - 1) / kivi_group) * D;
    case Kind::kKiviValue: return H * quant_tokens * ((D + kivi_group - 1) / kivi_group);
  }
  return 0;
}

int GroupGeometry::GroupSize(int64_t g) const {
  switch (kind) {
    case Kind::kHead: return head_dim;
    case Kind::kLayer: return kv_heads * head_dim;
    case Kind::kKiviKey: {
      const int64_t blocks = (quant_tokens + kivi_group - 1) / kivi_group;
      const int64_t j = (g / head_dim) % blocks;
      return static_cast<int>(std::min<int64_t>(kivi_group, quant_tokens - j * kivi_group));
    }
    case Kind::kKiviValue: {
      const int64_t chunks = (head_dim + kivi_group - 1) / kivi_group;
      const int64_t c = g % chunks;
      return static_cast<int>(std::min<int64_t>(kivi_group, head_dim - c * kivi_group));
    }
  }
  return 0;
}

int GroupGeometry::MaxGroupSize() const {
  switch (kind) {
    case Kind::kHead: return head_dim;
    case Kind::kLayer: return kv_heads * head_dim;
    case Kind::kKiviKey: return std::min(kivi_group, std::max(quant_tokens, 1));
    case Kind::kKiviValue: return std::min(kivi_group, head_dim);
  }
  return 0;
}

GroupGeometry MakeGeometry(const PageHeader& h, bool keys) {
  GroupGeometry g;
  g.tokens = static_cast<int>(h.tokens);
  g.kv_heads = h.kv_heads;
  g.head_dim = h.head_dim;
  g.quant_tokens = g.tokens;
  if (h.kind == CodecKind::kKivi2) {
    g.kind = keys ? GroupGeometry::Kind::kKiviKey : GroupGeometry::Kind::kKiviValue;
    g.quant_tokens = g.tokens - static_cast<int>(h.kivi_residual);
    g.kivi_group = h.kivi_group;
  } else {
    g.kind = (h.flags & kFlagLayerGroups) ? GroupGeometry::Kind::kLayer
                                          : GroupGeometry::Kind::kHead;
  }
  return g;
}

}  // namespace qaqkv::internal
