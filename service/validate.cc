#include "service/validate.h"

#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"

namespace qaqkv::service {
namespace {

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status CheckRange(uint32_t value, uint32_t lo, uint32_t hi, std::string_view field) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(A(field), ": ", value, " is outside ", lo, "..", hi));
  }
  return absl::OkStatus();
}

// Keeps the code of a codec error but names the field.
absl::Status Prefixed(const absl::Status& s, std::string_view field) {
  return absl::Status(s.code(), absl::StrCat(A(field), ": ", s.message()));
}

}  // namespace

absl::StatusOr<Format> ValidateFormat(const v1::BlockFormat& format, std::string_view field) {
  const std::string f(field);
  if (!format.has_geometry()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".geometry: missing"));
  }
  const v1::Geometry& g = format.geometry();
  const std::string gf = absl::StrCat(f, ".geometry");
  if (absl::Status s = CheckRange(g.num_layers(), 1, kMaxLayers, gf + ".num_layers"); !s.ok())
    return s;
  if (absl::Status s = CheckRange(g.num_kv_heads(), 1, kMaxKvHeads, gf + ".num_kv_heads"); !s.ok())
    return s;
  if (absl::Status s = CheckRange(g.num_q_heads(), 1, kMaxQHeads, gf + ".num_q_heads"); !s.ok())
    return s;
  if (g.num_q_heads() % g.num_kv_heads() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(gf, ".num_q_heads: ", g.num_q_heads(),
                                                   " is not a multiple of num_kv_heads ",
                                                   g.num_kv_heads()));
  }
  if (absl::Status s = CheckRange(g.head_dim(), 1, kMaxHeadDim, gf + ".head_dim"); !s.ok())
    return s;
  if (g.dtype() != v1::DTYPE_FP16 && g.dtype() != v1::DTYPE_BF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(gf, ".dtype: ", static_cast<int>(g.dtype()), " is not FP16 or BF16"));
  }
  if (absl::Status s = CheckRange(g.block_tokens(), 1, kMaxBlockTokens, gf + ".block_tokens");
      !s.ok())
    return s;
  if (format.codec().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".codec: missing"));
  }
  auto codec = ParseCodecConfig(format.codec());
  if (!codec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".codec: ", codec.status().message()));
  }
  Format out;
  out.codec = *codec;
  *out.proto.mutable_geometry() = g;
  out.proto.set_codec(codec->Name());
  // Deterministic: same fields in the same order give the same bytes, so the
  // store can compare descriptors as strings.
  if (!out.proto.SerializeToString(&out.descriptor)) {
    return absl::InternalError(absl::StrCat(f, ": cannot serialize"));
  }
  return out;
}

absl::StatusOr<v1::BlockFormat> FormatFromDescriptor(std::string_view descriptor) {
  v1::BlockFormat format;
  if (!format.ParseFromArray(descriptor.data(), static_cast<int>(descriptor.size()))) {
    return absl::DataLossError("stored block format does not parse");
  }
  return format;
}

absl::StatusOr<storage::BlockKey> ValidateBlockKey(const std::string& bytes,
                                                   std::string_view field) {
  storage::BlockKey key{};
  if (bytes.size() != key.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(A(field), ": ", bytes.size(), " bytes, a block key has ", key.size()));
  }
  std::memcpy(key.data(), bytes.data(), key.size());
  return key;
}

absl::StatusOr<std::vector<storage::BlockKey>> ValidateBlockKeys(
    const google::protobuf::RepeatedPtrField<std::string>& keys, std::string_view field,
    size_t max) {
  if (static_cast<size_t>(keys.size()) > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(A(field), ": ", keys.size(), " keys, at most ", max));
  }
  std::vector<storage::BlockKey> out;
  out.reserve(keys.size());
  for (int i = 0; i < keys.size(); ++i) {
    auto key = ValidateBlockKey(keys.Get(i), absl::StrCat(A(field), "[", i, "]"));
    if (!key.ok()) return key.status();
    out.push_back(*key);
  }
  return out;
}

absl::Status ValidatePageBytes(const Format& format, std::string_view data,
                               std::string_view field, uint32_t tokens) {
  if (data.empty()) return absl::InvalidArgumentError(absl::StrCat(A(field), ": empty page"));
  auto info = InspectPage(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  if (!info.ok()) return Prefixed(info.status(), field);
  const v1::Geometry& g = format.proto.geometry();
  if (info->shape.tokens != static_cast<int>(tokens) ||
      info->shape.kv_heads != static_cast<int>(g.num_kv_heads()) ||
      info->shape.head_dim != static_cast<int>(g.head_dim())) {
    return absl::InvalidArgumentError(absl::StrCat(
        A(field), ": page shape ", info->shape.tokens, "x", info->shape.kv_heads, "x",
        info->shape.head_dim, " (tokens x kv_heads x head_dim) does not match the geometry's ",
        tokens, "x", g.num_kv_heads(), "x", g.head_dim()));
  }
  if (info->kind != format.codec.kind || info->group != format.codec.group) {
    return absl::InvalidArgumentError(
        absl::StrCat(A(field), ": page is codec ", A(CodecKindName(info->kind)),
                     info->group == GroupLevel::kLayer ? " (layer groups)" : " (head groups)",
                     ", format.codec is ", format.proto.codec()));
  }
  return absl::OkStatus();
}

absl::StatusOr<storage::BlockKey> ValidatePage(const Format& format, const v1::Page& page,
                                               std::string_view field) {
  const std::string f(field);
  auto key = ValidateBlockKey(page.block_key(), f + ".block_key");
  if (!key.ok()) return key.status();
  if (page.layer() >= format.proto.geometry().num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".layer: ", page.layer(),
                                                   " is not below geometry.num_layers ",
                                                   format.proto.geometry().num_layers()));
  }
  if (absl::Status s = ValidatePageBytes(format, page.data(), f + ".data",
                                         format.proto.geometry().block_tokens());
      !s.ok()) {
    return s;
  }
  return key;
}

}  // namespace qaqkv::service
