#include "client/internal/host_kv.h"

#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/ids.h"
#include "base/status_macros.h"
#include "qaqkv/limits.h"

namespace qaqkv::client::internal {
namespace {

static_assert(static_cast<int>(DType::kF16) == static_cast<int>(::qaqkv::DType::kF16));
static_assert(static_cast<int>(DType::kBF16) == static_cast<int>(::qaqkv::DType::kBF16));
static_assert(static_cast<int>(DType::kF32) == static_cast<int>(::qaqkv::DType::kF32));
static_assert(static_cast<int>(Layout::kNHD) == static_cast<int>(::qaqkv::Layout::kNHD));
static_assert(static_cast<int>(Layout::kHND) == static_cast<int>(::qaqkv::Layout::kHND));

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// `hi` is one of the contract's limits (qaqkv/limits.h).
absl::Status CheckRange(int value, int lo, uint32_t hi, std::string_view field,
                        std::string_view name) {
  if (value < lo || static_cast<int64_t>(value) > static_cast<int64_t>(hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(field), ".", Sv(name), ": ", value, " not in [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckPointers(const std::vector<const void*>& ptrs, const Geometry& g,
                           int layer_begin, int layer_end, std::string_view field,
                           std::string_view which) {
  if (ptrs.size() != static_cast<size_t>(g.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(field), ".", Sv(which), ": ", ptrs.size(),
                                                   " layers given, geometry.num_layers is ",
                                                   g.num_layers));
  }
  for (int l = layer_begin; l < layer_end; ++l) {
    if (ptrs[l] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(Sv(field), ".", Sv(which), "[", l, "]: null"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

size_t ElementBytes(DType d) { return d == DType::kF32 ? 4 : 2; }

absl::Status ValidateGeometry(const Geometry& g, std::string_view field) {
  QAQKV_RETURN_IF_ERROR(CheckRange(g.num_layers, 1, limits::kMaxLayers, field, "num_layers"));
  QAQKV_RETURN_IF_ERROR(CheckRange(g.num_kv_heads, 1, limits::kMaxKvHeads, field, "num_kv_heads"));
  QAQKV_RETURN_IF_ERROR(CheckRange(g.num_q_heads, 1, limits::kMaxQHeads, field, "num_q_heads"));
  if (g.num_q_heads % g.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(field), ".num_q_heads: ", g.num_q_heads,
                                                   " is not a positive multiple of num_kv_heads ",
                                                   g.num_kv_heads));
  }
  QAQKV_RETURN_IF_ERROR(CheckRange(g.head_dim, 1, limits::kMaxHeadDim, field, "head_dim"));
  if (g.dtype != DType::kF16 && g.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        Sv(field), ".dtype: ", static_cast<int>(g.dtype), " is not kF16 or kBF16 (the model's dtype)"));
  }
  QAQKV_RETURN_IF_ERROR(
      CheckRange(g.block_tokens, 1, limits::kMaxBlockTokens, field, "block_tokens"));
  const uint64_t page_values = uint64_t(g.block_tokens) * g.num_kv_heads * g.head_dim;
  if (page_values > limits::kMaxPageValues) {
    return absl::InvalidArgumentError(absl::StrCat(
        Sv(field), ": block_tokens x num_kv_heads x head_dim is ", page_values,
        " values per page, more than ", limits::kMaxPageValues));
  }
  return absl::OkStatus();
}

bool SameGeometry(const Geometry& a, const Geometry& b) {
  return a.num_layers == b.num_layers && a.num_kv_heads == b.num_kv_heads &&
         a.num_q_heads == b.num_q_heads && a.head_dim == b.head_dim && a.dtype == b.dtype &&
         a.block_tokens == b.block_tokens;
}

std::string DescribeGeometry(const Geometry& g) {
  const char* dtype = g.dtype == DType::kF16    ? "fp16"
                      : g.dtype == DType::kBF16 ? "bf16"
                                                : "unspecified";
  return absl::StrCat("layers=", g.num_layers, " kv_heads=", g.num_kv_heads,
                      " q_heads=", g.num_q_heads, " head_dim=", g.head_dim, " dtype=", dtype,
                      " block_tokens=", g.block_tokens);
}

absl::StatusOr<::qaqkv::CodecConfig> ParseCodec(std::string_view codec, std::string_view field) {
  if (codec.empty()) return absl::InvalidArgumentError(absl::StrCat(Sv(field), ": empty"));
  absl::StatusOr<::qaqkv::CodecConfig> config = ::qaqkv::ParseCodecConfig(codec);
  if (!config.ok()) {
    // The kernels' message starts with "codec: "; name the request field
    // instead, and the spelling unless the message quotes it already.
    absl::string_view why = config.status().message();
    absl::ConsumePrefix(&why, "codec: ");
    const std::string quoted = absl::StrCat("'", Sv(codec), "'");
    if (absl::StrContains(why, quoted)) {
      return absl::InvalidArgumentError(absl::StrCat(Sv(field), ": ", why));
    }
    return absl::InvalidArgumentError(absl::StrCat(Sv(field), " ", quoted, ": ", why));
  }
  return config;
}

absl::Status ValidateSessionId(std::string_view id) {
  return base::ValidatePrintableId("session_id", id, limits::kMaxSessionIdBytes);
}

KvBuffers View(const HostKv& kv) {
  return KvBuffers{kv.dtype, kv.layout, kv.k, kv.v, kv.tokens, kv.first_token};
}

KvBuffers View(const MutableHostKv& kv) {
  KvBuffers b{kv.dtype, kv.layout, {}, {}, kv.tokens, kv.first_token};
  b.k.assign(kv.k.begin(), kv.k.end());
  b.v.assign(kv.v.begin(), kv.v.end());
  return b;
}

absl::StatusOr<int64_t> ValidateKv(const KvBuffers& kv, const Geometry& g, int64_t rows,
                                   int layer_begin, int layer_end, std::string_view field) {
  if (kv.dtype != DType::kF16 && kv.dtype != DType::kBF16 && kv.dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(field), ".dtype: unknown value ", static_cast<int>(kv.dtype)));
  }
  if (kv.layout != Layout::kNHD && kv.layout != Layout::kHND) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(field), ".layout: unknown value ", static_cast<int>(kv.layout)));
  }
  if (absl::Status s = CheckPointers(kv.k, g, layer_begin, layer_end, field, "k"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPointers(kv.v, g, layer_begin, layer_end, field, "v"); !s.ok()) {
    return s;
  }
  if (kv.first_token < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(field), ".first_token: ", kv.first_token, " is negative"));
  }
  const int64_t end = kv.first_token + rows;
  if (kv.tokens < 0 || (kv.tokens != 0 && kv.tokens < end)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Sv(field), ".tokens: ", kv.tokens, " rows cannot hold first_token ", kv.first_token,
        " + ", rows, " tokens"));
  }
  return kv.tokens != 0 ? kv.tokens : end;
}

absl::Status ValidateSide(const QaqInputs& side, const Geometry& g, int64_t end_row,
                          bool check_values) {
  const size_t layers = static_cast<size_t>(g.num_layers);
  if (!side.attention.empty() && side.attention.size() != layers) {
    return absl::InvalidArgumentError(absl::StrCat("side.attention: ", side.attention.size(),
                                                   " layers given, geometry.num_layers is ",
                                                   g.num_layers));
  }
  if (!side.q2.empty() && side.q2.size() != layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "side.q2: ", side.q2.size(), " layers given, geometry.num_layers is ", g.num_layers));
  }
  if (side.context_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("side.context_tokens: ", side.context_tokens, " is negative"));
  }
  const size_t need = static_cast<size_t>(end_row) * g.num_kv_heads;
  for (size_t l = 0; l < side.attention.size(); ++l) {
    const std::span<const float> a = side.attention[l];
    if (a.empty()) continue;
    if (a.size() < need) {
      return absl::InvalidArgumentError(absl::StrCat(
          "side.attention[", l, "]: ", a.size(), " values, need at least (first_token + blocks * "
          "block_tokens) * num_kv_heads = ", need));
    }
    if (!check_values) continue;
    for (size_t i = 0; i < need; ++i) {
      if (std::isnan(a[i]) || a[i] > 1.0f) {
        return absl::InvalidArgumentError(absl::StrCat(
            "side.attention[", l, "][", i, "]: ", a[i], " is not <= 1 (negative: unseen)"));
      }
    }
  }
  for (size_t l = 0; l < side.q2.size(); ++l) {
    const std::span<const float> q = side.q2[l];
    if (q.empty()) continue;
    if (q.size() != static_cast<size_t>(g.num_kv_heads)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "side.q2[", l, "]: ", q.size(), " values, geometry.num_kv_heads is ", g.num_kv_heads));
    }
    if (!check_values) continue;
    for (size_t h = 0; h < q.size(); ++h) {
      if (!(q[h] > 0) || !std::isfinite(q[h])) {
        return absl::InvalidArgumentError(
            absl::StrCat("side.q2[", l, "][", h, "]: ", q[h], " is not finite and > 0"));
      }
    }
  }
  return absl::OkStatus();
}

::qaqkv::QaqSideInputs PageSide(const QaqInputs& side, int layer, int64_t row0, int64_t rows,
                                int heads, int64_t default_context) {
  ::qaqkv::QaqSideInputs out;
  const size_t h = static_cast<size_t>(heads);
  if (!side.attention.empty() && !side.attention[layer].empty()) {
    out.attention = side.attention[layer].subspan(static_cast<size_t>(row0) * h,
                                                  static_cast<size_t>(rows) * h);
  }
  if (!side.q2.empty()) out.q2 = side.q2[layer];
  // The QAQ bounds want the whole context's length, not the page's.
  out.context_tokens = side.context_tokens > 0 ? side.context_tokens : default_context;
  return out;
}

absl::Status PageError(const absl::Status& s, size_t block, int layer, bool decoding) {
  const absl::StatusCode code = decoding && s.code() == absl::StatusCode::kInvalidArgument
                                    ? absl::StatusCode::kDataLoss
                                    : s.code();
  return absl::Status(code, absl::StrCat("page (block ", block, ", layer ", layer, "): ",
                                         s.message()));
}

absl::Status CheckPageSize(size_t size, size_t max_page, size_t block, int layer) {
  if (size <= max_page) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "page (block ", block, ", layer ", layer, "): encoded page of ", size,
      " bytes exceeds options.max_message_bytes less framing (", max_page, ")"));
}

void CopyRowsToNhd(const void* src, Layout layout, int64_t buffer_tokens, int64_t row0,
                   int64_t rows, int heads, int head_dim, size_t elem, void* dst) {
  const int64_t row_bytes = int64_t{head_dim} * static_cast<int64_t>(elem);
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  if (layout == Layout::kNHD) {
    std::memcpy(d, s + row0 * heads * row_bytes, rows * heads * row_bytes);
    return;
  }
  for (int64_t t = 0; t < rows; ++t) {
    for (int h = 0; h < heads; ++h) {
      std::memcpy(d + (t * heads + h) * row_bytes, s + (h * buffer_tokens + row0 + t) * row_bytes,
                  row_bytes);
    }
  }
}

void CopyRowsFromNhd(const void* src, void* dst, Layout layout, int64_t buffer_tokens,
                     int64_t row0, int64_t rows, int heads, int head_dim, size_t elem) {
  const int64_t row_bytes = int64_t{head_dim} * static_cast<int64_t>(elem);
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  if (layout == Layout::kNHD) {
    std::memcpy(d + row0 * heads * row_bytes, s, rows * heads * row_bytes);
    return;
  }
  for (int64_t t = 0; t < rows; ++t) {
    for (int h = 0; h < heads; ++h) {
      std::memcpy(d + (h * buffer_tokens + row0 + t) * row_bytes, s + (t * heads + h) * row_bytes,
                  row_bytes);
    }
  }
}

}  // namespace qaqkv::client::internal
