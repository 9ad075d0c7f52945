#include "service/validate.h"

#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/strings.h"

namespace qaqkv::service {
namespace {

absl::Status CheckRange(uint32_t value, uint32_t lo, uint32_t hi, std::string_view field) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(base::AsAbsl(field), ": ", value, " is outside ", lo, "..", hi));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Format> ValidateFormat(const v1::BlockFormat& format, std::string_view field) {
  const std::string f(field);
  if (!format.has_geometry()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".geometry: missing"));
  }
  const v1::Geometry& g = format.geometry();
  const std::string gf = absl::StrCat(f, ".geometry");
  QAQKV_RETURN_IF_ERROR(CheckRange(g.num_layers(), 1, limits::kMaxLayers, gf + ".num_layers"));
  QAQKV_RETURN_IF_ERROR(
      CheckRange(g.num_kv_heads(), 1, limits::kMaxKvHeads, gf + ".num_kv_heads"));
  QAQKV_RETURN_IF_ERROR(CheckRange(g.num_q_heads(), 1, limits::kMaxQHeads, gf + ".num_q_heads"));
  if (g.num_q_heads() % g.num_kv_heads() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(gf, ".num_q_heads: ", g.num_q_heads(),
                                                   " is not a multiple of num_kv_heads ",
                                                   g.num_kv_heads()));
  }
  QAQKV_RETURN_IF_ERROR(CheckRange(g.head_dim(), 1, limits::kMaxHeadDim, gf + ".head_dim"));
  if (g.dtype() != v1::DTYPE_FP16 && g.dtype() != v1::DTYPE_BF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(gf, ".dtype: ", static_cast<int>(g.dtype()), " is not FP16 or BF16"));
  }
  QAQKV_RETURN_IF_ERROR(
      CheckRange(g.block_tokens(), 1, limits::kMaxBlockTokens, gf + ".block_tokens"));
  const uint64_t page_values = uint64_t{g.block_tokens()} * g.num_kv_heads() * g.head_dim();
  if (page_values > limits::kMaxPageValues) {
    return absl::InvalidArgumentError(absl::StrCat(
        gf, ": block_tokens x num_kv_heads x head_dim is ", page_values,
        " values per page, more than ", limits::kMaxPageValues));
  }
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
  if (!format.ParseFromArray(descriptor.data(), static_cast<int>(descriptor.size())) ||
      !format.has_geometry() || format.codec().empty()) {
    return absl::DataLossError("stored block format does not parse");
  }
  return format;
}

absl::StatusOr<storage::BlockKey> ValidateBlockKey(const std::string& bytes,
                                                   std::string_view field) {
  storage::BlockKey key{};
  if (bytes.size() != key.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(base::AsAbsl(field), ": ", bytes.size(), " bytes, a block key has ", key.size()));
  }
  std::memcpy(key.data(), bytes.data(), key.size());
  return key;
}

absl::StatusOr<std::vector<storage::BlockKey>> ValidateBlockKeys(
    const google::protobuf::RepeatedPtrField<std::string>& keys, std::string_view field,
    size_t max) {
  if (static_cast<size_t>(keys.size()) > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(base::AsAbsl(field), ": ", keys.size(), " keys, at most ", max));
  }
  std::vector<storage::BlockKey> out;
  out.reserve(keys.size());
  for (int i = 0; i < keys.size(); ++i) {
    QAQKV_ASSIGN_OR_RETURN(
        const storage::BlockKey key,
        ValidateBlockKey(keys.Get(i), absl::StrCat(base::AsAbsl(field), "[", i, "]")));
    out.push_back(key);
  }
  return out;
}

absl::Status ValidatePageBytes(const Format& format, std::string_view data,
                               std::string_view field, uint32_t tokens) {
  if (data.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(base::AsAbsl(field), ": empty page"));
  }
  // The whole page, not only its header: a cache shared by many workers must
  // never hold a page that cannot be decoded.
  const v1::Geometry& g = format.proto.geometry();
  const PageShape expected{static_cast<int>(tokens), static_cast<int>(g.num_kv_heads()),
                           static_cast<int>(g.head_dim())};
  return base::Annotate(
      VerifyPage(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                                          data.size()),
                 &format.codec, &expected)
          .status(),
      field);
}

absl::StatusOr<storage::BlockKey> ValidatePage(const Format& format, const v1::Page& page,
                                               std::string_view field) {
  const std::string f(field);
  QAQKV_ASSIGN_OR_RETURN(const storage::BlockKey key,
                         ValidateBlockKey(page.block_key(), f + ".block_key"));
  if (page.layer() >= format.proto.geometry().num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".layer: ", page.layer(),
                                                   " is not below geometry.num_layers ",
                                                   format.proto.geometry().num_layers()));
  }
  QAQKV_RETURN_IF_ERROR(ValidatePageBytes(format, page.data(), f + ".data",
                                          format.proto.geometry().block_tokens()));
  return key;
}

absl::StatusOr<storage::SessionRecord> ValidateSession(const v1::Session& s) {
  if (absl::Status id = storage::ValidateSessionId(s.session_id()); !id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("session.", id.message()));  // session.session_id
  }
  if (!s.has_format()) return absl::InvalidArgumentError("session.format: missing");
  QAQKV_ASSIGN_OR_RETURN(const Format format, ValidateFormat(s.format(), "session.format"));
  storage::SessionRecord r;
  QAQKV_ASSIGN_OR_RETURN(
      r.blocks, ValidateBlockKeys(s.block_keys(), "session.block_keys", limits::kMaxSessionBlocks));
  const uint64_t block_tokens = format.proto.geometry().block_tokens();
  const uint64_t in_blocks = block_tokens * r.blocks.size();
  if (s.token_count() < in_blocks || s.token_count() - in_blocks >= block_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session.token_count: ", s.token_count(), " does not fit ", r.blocks.size(),
        " blocks of ", block_tokens, " tokens plus a tail shorter than a block"));
  }
  const uint64_t tail_tokens = s.token_count() - in_blocks;
  if (tail_tokens == 0 && !s.tail().empty()) {
    return absl::InvalidArgumentError(
        "session.tail: must be empty when token_count ends on a block boundary");
  }
  if (tail_tokens > 0) {
    if (s.tail().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("session.tail: missing for ", tail_tokens, " tail tokens"));
    }
    const uint64_t rows = tail_tokens * format.proto.geometry().num_layers();
    if (rows > limits::kMaxPageTokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "session.tail: ", tail_tokens, " tail tokens x ", format.proto.geometry().num_layers(),
          " layers is more than a page's ", limits::kMaxPageTokens, " rows"));
    }
    QAQKV_RETURN_IF_ERROR(
        ValidatePageBytes(format, s.tail(), "session.tail", static_cast<uint32_t>(rows)));
  }
  if (s.ttl_ms() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("session.ttl_ms: ", s.ttl_ms(), " is negative"));
  }
  r.token_count = s.token_count();
  r.ttl_ms = s.ttl_ms();
  r.tail = s.tail();
  r.descriptor = format.descriptor;
  return r;
}

}  // namespace qaqkv::service
