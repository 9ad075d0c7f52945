#include "kernels/codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "kernels/checksum.h"
#include "kernels/half.h"
#include "kernels/internal/codec_table.h"
#include "kernels/internal/encode_plan.h"
#include "kernels/internal/entropy_codec.h"
#include "kernels/internal/fast.h"
#include "kernels/internal/page_format.h"
#include "kernels/internal/reference.h"
#include "kernels/internal/rotation.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv {
namespace {


constexpr double kSqrt12 = 3.4641016151377544;

bool ValidDType(DType t) { return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32; }
bool ValidLayout(Layout l) { return l == Layout::kNHD || l == Layout::kHND; }

float LoadValue(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const uint8_t*>(data) + i * 2, 2);
      return HalfToFloat(h);
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const uint8_t*>(data) + i * 2, 2);
      return ::qaqkv::Bf16ToFloat(h);
    }
    case DType::kF32: {
      float f;
      std::memcpy(&f, static_cast<const uint8_t*>(data) + i * 4, 4);
      return f;
    }
  }
  return 0;
}

void StoreValue(void* data, DType t, int64_t i, float v) {
  auto* p = static_cast<uint8_t*>(data);
  switch (t) {
    case DType::kF16: {
      const uint16_t h = FloatToHalf(v);
      std::memcpy(p + i * 2, &h, 2);
      break;
    }
    case DType::kBF16: {
      const uint16_t h = ::qaqkv::FloatToBf16(v);
      std::memcpy(p + i * 2, &h, 2);
      break;
    }
    case DType::kF32: std::memcpy(p + i * 4, &v, 4); break;
  }
}

// Offset of canonical (h, t, d) in `layout`.
inline int64_t LayoutIndex(Layout l, const PageShape& s, int64_t h, int64_t t, int64_t d) {
  return l == Layout::kHND ? (h * s.tokens + t) * s.head_dim + d
                           : (t * s.kv_heads + h) * s.head_dim + d;
}

// Input in any dtype/layout -> canonical HND float. Finite values beyond fp16's
// range cannot be stored by any codec, so they are rejected here.
absl::Status ToCanonical(const TensorView& in, const PageShape& s, const char* name,
                         std::vector<float>& out) {
  out.resize(s.values());
  for (int64_t h = 0; h < s.kv_heads; ++h)
    for (int64_t t = 0; t < s.tokens; ++t)
      for (int64_t d = 0; d < s.head_dim; ++d) {
        const float v = LoadValue(in.data, in.dtype, LayoutIndex(in.layout, s, h, t, d));
        if (std::isfinite(v) && std::fabs(v) > ::qaqkv::kHalfMax) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, ": value ", v, " at token ", t, " head ", h, " channel ", d,
                           " is beyond fp16 range"));
        }
        out[(h * s.tokens + t) * s.head_dim + d] = v;
      }
  return absl::OkStatus();
}

absl::Status ValidateConfig(const CodecConfig& c) {
  const internal::CodecTraits* traits = internal::FindCodec(c.kind);
  if (traits == nullptr) return absl::InvalidArgumentError("config.kind: unknown codec");
  if (c.group == GroupLevel::kLayer && !traits->layer_groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.group: ", base::AsAbsl(traits->name), " has no layer-level groups"));
  }
  if (c.group != GroupLevel::kHead && c.group != GroupLevel::kLayer) {
    return absl::InvalidArgumentError("config.group: unknown group level");
  }
  if (c.kind == CodecKind::kQaq) {
    if (!(c.sigma_s > 0) || !std::isfinite(c.sigma_s)) {
      return absl::InvalidArgumentError("config.sigma_s: must be finite and > 0");
    }
    if (!(c.sigma_x > 0) || !std::isfinite(c.sigma_x)) {
      return absl::InvalidArgumentError("config.sigma_x: must be finite and > 0");
    }
    if (c.b_min < 0 || c.b_min > 8) return absl::InvalidArgumentError("config.b_min: must be in [0, 8]");
    if (c.b_max < c.b_min || c.b_max > 8) {
      return absl::InvalidArgumentError("config.b_max: must be in [b_min, 8]");
    }
    if (c.window < 1 || c.window > 4096) {
      return absl::InvalidArgumentError("config.window: must be in [1, 4096]");
    }
    if (!(c.outlier_ratio >= 0) || !(c.outlier_ratio < 0.5f)) {
      return absl::InvalidArgumentError("config.outlier_ratio: must be in [0, 0.5)");
    }
  }
  if (c.kind == CodecKind::kKivi2) {
    if (c.kivi_group < 1 || c.kivi_group > 256) {
      return absl::InvalidArgumentError("config.kivi_group: must be in [1, 256]");
    }
    if (c.kivi_residual < 0) return absl::InvalidArgumentError("config.kivi_residual: must be >= 0");
  }
  if (c.key_channel_scale && !traits->key_transforms) {
    return absl::InvalidArgumentError("config.key_channel_scale: only for qaq");
  }
  if (c.key_channel_center && c.kind != CodecKind::kQaq) {
    return absl::InvalidArgumentError("config.key_channel_center: only for qaq");
  }
  if (c.rotate && !traits->rotation) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.rotate: ", base::AsAbsl(traits->name), " has no rotated variant (int8, int4, qaq)"));
  }
  if (c.entropy_coded) {
    if (!traits->entropy_coding) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config.entropy_coded: ", base::AsAbsl(traits->name), " has no -ec variant (qaq)"));
    }
    if (c.group != GroupLevel::kHead || c.key_channel_scale || c.key_channel_center) {
      return absl::InvalidArgumentError(
          "config.entropy_coded: head-level groups only, without -cs or -cc (every channel is "
          "centred already)");
    }
    if (c.outlier_ratio != 0) {
      return absl::InvalidArgumentError("config.outlier_ratio: must be 0 with -ec (o=0)");
    }
    if (c.b_max != 8) {
      return absl::InvalidArgumentError(
          "config.b_max: -ec has no widest code; only b_min applies (b=N-8)");
    }
  }
  if (c.rotate && c.key_channel_scale) {
    return absl::InvalidArgumentError(
        "config.rotate: not with key_channel_scale (-cs): the scales are per channel, the "
        "rotation mixes channels");
  }
  return absl::OkStatus();
}

absl::Status ValidateShape(const PageShape& s) {
  if (s.tokens < 1 || s.tokens > internal::kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat("shape.tokens: ", s.tokens, " not in [1, ",
                                                   internal::kMaxTokens, "]"));
  }
  if (s.kv_heads < 1 || s.kv_heads > internal::kMaxKvHeads) {
    return absl::InvalidArgumentError(absl::StrCat("shape.kv_heads: ", s.kv_heads, " not in [1, ",
                                                   internal::kMaxKvHeads, "]"));
  }
  if (s.head_dim < 1 || s.head_dim > internal::kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("shape.head_dim: ", s.head_dim, " not in [1, ",
                                                   internal::kMaxHeadDim, "]"));
  }
  if (s.values() > internal::kMaxPageValues) {
    return absl::InvalidArgumentError("shape: page holds too many values");
  }
  return absl::OkStatus();
}

absl::Status ValidateView(const void* data, DType t, Layout l, const char* name) {
  if (data == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ".data: null"));
  if (!ValidDType(t)) return absl::InvalidArgumentError(absl::StrCat(name, ".dtype: unknown"));
  if (!ValidLayout(l)) return absl::InvalidArgumentError(absl::StrCat(name, ".layout: unknown"));
  return absl::OkStatus();
}

int OutliersPerSide(const CodecConfig& c, int group_size) {
  if (!internal::FindCodec(c.kind)->outliers || c.outlier_ratio <= 0) return 0;
  // Computed once, in double, and stored in the header: no backend recomputes it.
  const int k = static_cast<int>(std::ceil(double{c.outlier_ratio} / 2 * group_size - 1e-9));
  return std::min(k, (group_size - 1) / 2);
}

// sqrt(12) * sigma_K per KV head (docs/qaq.md section 2), optionally corrected for
// per-channel key scales: the score error then has variance
// Q2 * mean(c_d^2) * sigma'^2, so sigma' = sigma_K / rms(c).
std::vector<double> KeyE(const CodecConfig& c, const PageShape& s, const QaqSideInputs& side,
                         int64_t T, std::span<const uint16_t> scales) {
  const double t = static_cast<double>(std::max<int64_t>(T, 2));
  const double ss = c.sigma_s;
  std::vector<double> e(s.kv_heads);
  for (int h = 0; h < s.kv_heads; ++h) {
    const double q2 = side.q2.empty() ? kDefaultQ2 : std::max(double{side.q2[h]}, 1e-30);
    double sigma = std::sqrt(std::log(t * t * t / (t - 1) * ss * ss + 1) / q2);
    if (!scales.empty()) {
      double sum = 0;
      for (int d = 0; d < s.head_dim; ++d) {
        const double v = HalfToFloat(scales[h * s.head_dim + d]);
        sum += v * v;
      }
      sigma /= std::sqrt(sum / s.head_dim);
    }
    e[h] = kSqrt12 * sigma;
  }
  return e;
}

}  // namespace

namespace internal {

absl::Status ValidateEncodeArgs(const CodecConfig& config, const PageShape& shape,
                                const QaqSideInputs& side) {
  QAQKV_RETURN_IF_ERROR(ValidateConfig(config));
  QAQKV_RETURN_IF_ERROR(ValidateShape(shape));
  const bool qaq = config.kind == CodecKind::kQaq;
  if (side.context_tokens < 0) {
    return absl::InvalidArgumentError("side.context_tokens: must be >= 0");
  }
  if (qaq && !side.attention.empty() &&
      side.attention.size() != size_t(shape.tokens) * shape.kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("side.attention: ", side.attention.size(),
                                                   " values, expected tokens*kv_heads = ",
                                                   int64_t{shape.tokens} * shape.kv_heads));
  }
  if (qaq && !side.q2.empty() && side.q2.size() != size_t(shape.kv_heads)) {
    return absl::InvalidArgumentError(absl::StrCat("side.q2: ", side.q2.size(),
                                                   " values, expected kv_heads = ", shape.kv_heads));
  }
  if (qaq) {
    for (float a : side.attention) {
      if (std::isnan(a) || a > 1.0f) {
        return absl::InvalidArgumentError("side.attention: values must be <= 1 (or negative for unseen)");
      }
    }
    for (float q : side.q2) {
      if (!(q > 0) || !std::isfinite(q)) {
        return absl::InvalidArgumentError("side.q2: values must be finite and > 0");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckExpectedShape(const PageShape& shape, const PageShape* expected) {
  if (expected != nullptr && (expected->tokens != shape.tokens ||
                              expected->kv_heads != shape.kv_heads ||
                              expected->head_dim != shape.head_dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page: shape ", shape.tokens, "x", shape.kv_heads, "x", shape.head_dim,
        " (tokens x kv_heads x head_dim) does not match the expected ", expected->tokens, "x",
        expected->kv_heads, "x", expected->head_dim));
  }
  return absl::OkStatus();
}

PageHeader MakePageHeader(const CodecConfig& config, const PageShape& shape) {
  PageHeader header;
  header.kind = config.kind;
  header.tokens = static_cast<uint32_t>(shape.tokens);
  header.kv_heads = static_cast<uint16_t>(shape.kv_heads);
  header.head_dim = static_cast<uint16_t>(shape.head_dim);
  if (FindCodec(config.kind)->layer_groups && config.group == GroupLevel::kLayer) {
    header.flags |= kFlagLayerGroups;
  }
  if (config.key_channel_scale) header.flags |= kFlagKeyChannelScale;
  if (config.key_channel_center) header.flags |= kFlagKeyChannelCenter;
  if (config.rotate) header.flags |= kFlagRotate;
  if (config.entropy_coded) header.flags |= kFlagEntropyCoded;
  if (config.kind == CodecKind::kKivi2) {
    header.kivi_group = static_cast<uint16_t>(config.kivi_group);
    header.kivi_residual = static_cast<uint32_t>(std::min(config.kivi_residual, shape.tokens));
  }
  const int group_size = config.group == GroupLevel::kLayer ? shape.kv_heads * shape.head_dim
                                                            : shape.head_dim;
  header.outliers = static_cast<uint16_t>(OutliersPerSide(config, group_size));
  return header;
}

GroupEModel ModelGroupE(const CodecConfig& config, const PageShape& shape,
                        const QaqSideInputs& side, bool keys, const TensorTask& task) {
  const int64_t T = side.context_tokens > 0 ? side.context_tokens : shape.tokens;
  const bool layer = config.group == GroupLevel::kLayer;
  GroupEModel m;
  if (keys) {
    const std::vector<double> e = KeyE(config, shape, side, T, task.channel_scale);
    if (layer) {
      m.kind = GroupEModel::Kind::kScalar;
      m.scalar = static_cast<float>(*std::min_element(e.begin(), e.end()));
    } else {
      m.kind = GroupEModel::Kind::kPerHead;
      m.per_head.assign(e.begin(), e.end());  // each rounded to float, as the table
    }
    return m;
  }
  m.ev = static_cast<float>(kSqrt12 * config.sigma_x / std::sqrt(double(T)));
  if (side.attention.empty()) {
    m.kind = GroupEModel::Kind::kScalar;
    m.scalar = ValueE(m.ev, 1.0f);
  } else {
    m.kind = GroupEModel::Kind::kTable;
  }
  return m;
}

void FillGroupE(const CodecConfig& config, const PageShape& shape, const QaqSideInputs& side,
                bool keys, TensorTask& task) {
  const int64_t G = task.geo.groups();
  const GroupEModel m = ModelGroupE(config, shape, side, keys, task);
  task.group_e.resize(G);
  task.e_unobserved = keys ? 0.0f : ValueE(m.ev, 1.0f);
  switch (m.kind) {
    case GroupEModel::Kind::kScalar:
      std::fill(task.group_e.begin(), task.group_e.end(), m.scalar);
      return;
    case GroupEModel::Kind::kPerHead:
      for (int64_t g = 0; g < G; ++g) task.group_e[g] = m.per_head[g % shape.kv_heads];
      return;
    case GroupEModel::Kind::kTable:
      break;
  }
  const bool layer = config.group == GroupLevel::kLayer;
  for (int64_t g = 0; g < G; ++g) {
    float a;
    if (layer) {
      a = 0;
      for (int h = 0; h < shape.kv_heads; ++h) {
        const float ah = side.attention[size_t(g) * shape.kv_heads + h];
        a = (a < 0 || ah < 0) ? -1.0f : std::max(a, ah);
      }
    } else {
      a = side.attention[size_t(g)];  // head-level g = t * kv_heads + h
    }
    task.group_e[g] = ValueE(m.ev, a);
  }
}

}  // namespace internal

std::string_view CodecKindName(CodecKind kind) {
  const internal::CodecTraits* c = internal::FindCodec(kind);
  return c == nullptr ? "unknown" : c->name;
}

namespace {

// `v` as short as it can be written and still parse back to the same float:
// six significant digits (what names used before, so existing names keep
// their spelling) unless more are needed. Two configs that write different
// pages must never share a name: the name is the stored block format.
std::string FloatName(float v) {
  std::string text = absl::StrCat(v);
  for (int digits = 7; digits <= 9; ++digits) {
    float back = 0;
    if (absl::SimpleAtof(text, &back) && back == v) break;
    text = absl::StrFormat("%.*g", digits, v);
  }
  return text;
}

}  // namespace

std::string CodecConfig::Name() const {
  std::string n(CodecKindName(kind));
  if (kind == CodecKind::kKivi2) {
    return absl::StrCat(n, ":r=", kivi_residual, ",g=", kivi_group);
  }
  if (group == GroupLevel::kLayer) n += "-layer";
  if (key_channel_scale) n += "-cs";
  if (key_channel_center) n += "-cc";
  if (entropy_coded) n += "-ec";
  if (rotate) n += "-rh";
  if (kind == CodecKind::kQaq) {
    absl::StrAppend(&n, ":s=", FloatName(sigma_s), ",x=", FloatName(sigma_x),
                    ",o=", FloatName(outlier_ratio), ",b=", b_min, "-", b_max);
    if (window != 5) absl::StrAppend(&n, ",w=", window);
  }
  return n;
}

absl::StatusOr<CodecConfig> ParseCodecConfig(std::string_view text_in) {
  // Debian's abseil has its own string_view type; convert once.
  const absl::string_view text = base::AsAbsl(text_in);
  CodecConfig c;
  absl::string_view name = text, params;
  if (const size_t colon = text.find(':'); colon != absl::string_view::npos) {
    name = text.substr(0, colon);
    params = text.substr(colon + 1);
  }
  std::vector<absl::string_view> parts = absl::StrSplit(name, '-');
  const absl::string_view base = parts[0];
  const internal::CodecTraits* traits = internal::FindCodec(base::AsStd(base));
  if (traits == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("codec: unknown codec '", base, "'"));
  }
  c.kind = traits->kind;
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "layer" && traits->layer_groups) {
      c.group = GroupLevel::kLayer;
    } else if (parts[i] == "cs" && traits->key_transforms) {
      c.key_channel_scale = true;
    } else if (parts[i] == "cc" && traits->key_transforms) {
      c.key_channel_center = true;
    } else if (parts[i] == "rh" && traits->rotation) {
      c.rotate = true;
    } else if (parts[i] == "ec" && traits->entropy_coding) {
      c.entropy_coded = true;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("codec: unknown variant '", parts[i], "' of ", base));
    }
  }
  if (!params.empty()) {
    for (absl::string_view kv : absl::StrSplit(params, ',')) {
      std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
      const absl::string_view key = p.first, val = p.second;
      bool ok = false;
      if (c.kind == CodecKind::kQaq && key == "s") ok = absl::SimpleAtof(val, &c.sigma_s);
      else if (c.kind == CodecKind::kQaq && key == "x") ok = absl::SimpleAtof(val, &c.sigma_x);
      else if (c.kind == CodecKind::kQaq && key == "o") ok = absl::SimpleAtof(val, &c.outlier_ratio);
      else if (c.kind == CodecKind::kQaq && key == "w") ok = absl::SimpleAtoi(val, &c.window);
      else if (c.kind == CodecKind::kQaq && key == "b") {
        std::pair<absl::string_view, absl::string_view> b = absl::StrSplit(val, absl::MaxSplits('-', 1));
        ok = absl::SimpleAtoi(b.first, &c.b_min) && absl::SimpleAtoi(b.second, &c.b_max);
      } else if (c.kind == CodecKind::kKivi2 && key == "r") ok = absl::SimpleAtoi(val, &c.kivi_residual);
      else if (c.kind == CodecKind::kKivi2 && key == "g") ok = absl::SimpleAtoi(val, &c.kivi_group);
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat("codec: bad parameter '", kv, "' for ", base));
      }
    }
  }
  QAQKV_RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

namespace {

// An fp16 page written by the fast copy into `page`. The header goes first
// (an fp16 page's sizes follow from its shape). HND input is in the page's
// row order: each piece is converted into a scratch buffer that stays in L1,
// hashed there and streamed into the page with stores that bypass the cache.
// NHD input is copied in its own order (reading it across heads a row at a
// time is slow) and each tensor hashed afterwards, from cache. False when a
// value is beyond fp16's range.
bool EncodeFp16PageFast(internal::PageHeader header, const PageShape& shape, TensorView k,
                        TensorView v, std::vector<uint8_t>& page) {
  const int64_t rows = int64_t{shape.kv_heads} * shape.tokens;
  const size_t row_bytes = size_t(shape.head_dim) * 2;
  const size_t tensor_bytes = rows * row_bytes;
  if (tensor_bytes > UINT32_MAX) return false;  // the reference says why
  header.k_bytes = static_cast<uint32_t>(tensor_bytes);
  header.v_bytes = static_cast<uint32_t>(tensor_bytes);
  // A reused buffer of at least this size shrinks without being cleared.
  page.resize(internal::kHeaderBytes + 2 * tensor_bytes + internal::kChecksumBytes);
  internal::WriteHeader(header, page.data());
  PageHasher hasher;
  hasher.Update(page.data(), internal::kHeaderBytes);
  constexpr size_t kScratchBytes = 16 << 10;  // >= one row: head_dim <= 1024
  static_assert(kScratchBytes >= 2 * internal::kMaxHeadDim);
  alignas(64) uint8_t scratch[kScratchBytes];
  const int64_t piece = static_cast<int64_t>(kScratchBytes / row_bytes);
  for (int which = 0; which < 2; ++which) {
    const TensorView& in = which == 0 ? k : v;
    uint8_t* out = page.data() + internal::kHeaderBytes + which * tensor_bytes;
    if (in.layout == Layout::kNHD) {
      if (!internal::EncodeFp16RowsFast(in, shape, 0, rows, out)) return false;
      hasher.Update(out, tensor_bytes);
      continue;
    }
    for (int64_t r = 0; r < rows; r += piece) {
      const int64_t n = std::min(piece, rows - r);
      if (!internal::EncodeFp16RowsFast(in, shape, r, n, scratch)) return false;
      hasher.Update(scratch, n * row_bytes);
      internal::StreamCopy(scratch, out + r * row_bytes, n * row_bytes);
    }
  }
  internal::Fp16StoreFence();
  internal::PutU64(page.data() + page.size() - internal::kChecksumBytes, hasher.Digest());
  return true;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> EncodePage(const CodecConfig& config, const PageShape& shape,
                                                TensorView k, TensorView v,
                                                const QaqSideInputs& side, Backend backend) {
  std::vector<uint8_t> page;
  QAQKV_RETURN_IF_ERROR(EncodePageInto(config, shape, k, v, side, backend, page));
  return page;
}

absl::Status EncodePageInto(const CodecConfig& config, const PageShape& shape, TensorView k,
                            TensorView v, const QaqSideInputs& side, Backend backend,
                            std::vector<uint8_t>& page) {
  // Same order of checks as before the plan was shared: config, shape, views, side.
  QAQKV_RETURN_IF_ERROR(ValidateConfig(config));
  QAQKV_RETURN_IF_ERROR(ValidateShape(shape));
  QAQKV_RETURN_IF_ERROR(ValidateView(k.data, k.dtype, k.layout, "k"));
  QAQKV_RETURN_IF_ERROR(ValidateView(v.data, v.dtype, v.layout, "v"));
  QAQKV_RETURN_IF_ERROR(internal::ValidateEncodeArgs(config, shape, side));
  const bool qaq = config.kind == CodecKind::kQaq;
  internal::PageHeader header = internal::MakePageHeader(config, shape);
  const bool use_fast = backend != Backend::kReference && internal::FastPathSupports(header);
  // What the head-group fast path does not cover, the grouped one does, on
  // the reference's canonical copies.
  const bool use_grouped =
      !use_fast && backend != Backend::kReference && internal::GroupedFastPathSupports(header);
  size_t section_bytes[2] = {0, 0};
  std::vector<float> raw, scaled, rotated;
  if (config.kind == CodecKind::kFp16) {
    if (backend != Backend::kReference && internal::Fp16FastPathSupported() &&
        EncodeFp16PageFast(header, shape, k, v, page)) {
      return absl::OkStatus();
    }
    // The reference; it also names a value beyond fp16's range, which the
    // fast copy only detects.
    const size_t tensor_bytes = static_cast<size_t>(shape.values()) * 2;
    page.resize(internal::kHeaderBytes + 2 * tensor_bytes);
    for (int which = 0; which < 2; ++which) {
      const bool keys = which == 0;
      uint8_t* out = page.data() + internal::kHeaderBytes + which * tensor_bytes;
      section_bytes[which] = tensor_bytes;
      QAQKV_RETURN_IF_ERROR(ToCanonical(keys ? k : v, shape, keys ? "k" : "v", raw));
      for (size_t i = 0; i < raw.size(); ++i) internal::PutU16(out + i * 2, FloatToHalf(raw[i]));
    }
  } else {
    // Both tensors are encoded first so the page is allocated once, at its
    // exact size.
    internal::TensorTask tasks[2];
    internal::TensorEncoding encs[2];
    for (int which = 0; which < 2; ++which) {
      const bool keys = which == 0;
      const TensorView& in = keys ? k : v;
      internal::TensorTask& task = tasks[which];
      task = internal::TaskShape(header, keys);
      task.b_min = config.b_min;
      task.b_max = config.b_max;
      // The fast path reads the caller's tensor in place; the reference works
      // on a canonical fp32 copy.
      if (!use_fast) {
        raw.resize(shape.values());
        if (backend == Backend::kReference || !internal::ToCanonicalFast(in, shape, raw.data())) {
          QAQKV_RETURN_IF_ERROR(ToCanonical(in, shape, keys ? "k" : "v", raw));
        }
      }
      if (config.entropy_coded) {
        internal::FillGroupE(config, shape, side, keys, task);
        const internal::EcRowKernels* fast_rows =
            backend != Backend::kReference ? internal::EntropyRowKernelsFast() : nullptr;
        internal::EncodeTensorEntropy(task, raw.data(), encs[which],
                                      fast_rows != nullptr ? *fast_rows : internal::EcReferenceKernels());
        continue;
      }
      const float* x = raw.data();
      if (keys && use_fast && (config.key_channel_scale || config.key_channel_center)) {
        internal::KeyChannelStatsFast(in, shape, config.key_channel_center,
                                      config.key_channel_scale, task.channel_offset,
                                      task.channel_scale);
      } else if (keys && (config.key_channel_scale || config.key_channel_center)) {
        const int H = shape.kv_heads, D = shape.head_dim, TT = shape.tokens;
        if (use_grouped) {
          // The same statistics, read from the caller's tensor in place.
          internal::KeyChannelStatsFast(in, shape, config.key_channel_center,
                                        config.key_channel_scale, task.channel_offset,
                                        task.channel_scale);
        } else {
          // Centering first: the mean of each channel over the page's finite
          // values, rounded to fp16, is what the decoder adds back.
          if (config.key_channel_center) {
            task.channel_offset = internal::ChannelCentres(raw.data(), H, TT, D);
          }
          if (config.key_channel_scale) {
            task.channel_scale.assign(size_t(H) * D, 0);
            for (int h = 0; h < H; ++h)
              for (int d = 0; d < D; ++d) {
                const float c = config.key_channel_center
                                    ? HalfToFloat(task.channel_offset[size_t(h) * D + d])
                                    : 0.0f;
                float m = 0;
                for (int t = 0; t < TT; ++t) {
                  const float a = std::fabs(raw[(size_t(h) * TT + t) * D + d] - c);
                  if (std::isfinite(a)) m = std::max(m, a);
                }
                uint16_t sc = ::qaqkv::FloatToHalfUp(m);
                if (!(HalfToFloat(sc) > 0) || !std::isfinite(HalfToFloat(sc))) sc = FloatToHalf(1.0f);
                task.channel_scale[size_t(h) * D + d] = sc;
              }
          }
        }
        std::vector<float> center(size_t(H) * D, 0.0f), scale(size_t(H) * D, 1.0f);
        for (size_t i = 0; i < task.channel_offset.size(); ++i) center[i] = HalfToFloat(task.channel_offset[i]);
        for (size_t i = 0; i < task.channel_scale.size(); ++i) scale[i] = HalfToFloat(task.channel_scale[i]);
        // x' = (x - center) / scale; decode computes x'^ * scale + center.
        scaled.resize(raw.size());
        for (int h = 0; h < H; ++h)
          for (int t = 0; t < TT; ++t)
            for (int d = 0; d < D; ++d) {
              const size_t i = (size_t(h) * TT + t) * D + d;
              const size_t c = size_t(h) * D + d;
              scaled[i] = (raw[i] - center[c]) / scale[c];
            }
        x = scaled.data();
      }
      if (config.rotate) {
        // Rows are rotated after the key centres are taken out; the
        // decoder rotates back, then adds them.
        const int64_t rows = int64_t{shape.kv_heads} * shape.tokens;
        rotated.assign(x, x + rows * shape.head_dim);
        if (backend == Backend::kReference ||
            !internal::RotateRowsFast(rotated.data(), rows, shape.head_dim, false)) {
          for (int64_t r = 0; r < rows; ++r) {
            internal::RotateRow(rotated.data() + r * shape.head_dim, shape.head_dim, false);
          }
        }
        x = rotated.data();  // task.rotate is set already, from the header
      }
      if (qaq) internal::FillGroupE(config, shape, side, keys, task);
      internal::TensorEncoding& enc = encs[which];
      if (use_fast) {
        if (absl::Status s = internal::EncodeTensorFast(task, in, enc); !s.ok()) {
          return base::Annotate(s, keys ? "k" : "v");
        }
      } else if (use_grouped) {
        internal::EncodeGroupedTensorFast(task, x, raw.data(), enc);
      } else {
        internal::EncodeTensorReference(task, x, raw.data(), enc);
      }
    }
    const size_t k_size = internal::SectionSize(tasks[0], encs[0]);
    const size_t v_size = internal::SectionSize(tasks[1], encs[1]);
    page.reserve(internal::kHeaderBytes + k_size + v_size + internal::kChecksumBytes);
    page.resize(internal::kHeaderBytes);
    internal::SerializeSection(tasks[0], encs[0], page);
    internal::SerializeSection(tasks[1], encs[1], page);
    section_bytes[0] = k_size;
    section_bytes[1] = v_size;
  }
  if (section_bytes[0] > UINT32_MAX || section_bytes[1] > UINT32_MAX) {
    return absl::InvalidArgumentError("shape: encoded page would exceed 4 GiB");
  }
  header.k_bytes = static_cast<uint32_t>(section_bytes[0]);
  header.v_bytes = static_cast<uint32_t>(section_bytes[1]);
  internal::WriteHeader(header, page.data());
  const uint64_t sum = internal::PageChecksum(page);
  page.resize(page.size() + internal::kChecksumBytes);
  internal::PutU64(page.data() + page.size() - internal::kChecksumBytes, sum);
  return absl::OkStatus();
}

namespace {

struct ParsedPage {
  internal::PageHeader header;
  std::span<const uint8_t> k_section, v_section;
};

absl::StatusOr<ParsedPage> ParsePage(std::span<const uint8_t> page) {
  QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> body, internal::VerifyChecksum(page));
  QAQKV_ASSIGN_OR_RETURN(const internal::PageHeader header, internal::ReadHeader(body));
  ParsedPage p;
  p.header = header;
  p.k_section = body.subspan(internal::kHeaderBytes, header.k_bytes);
  p.v_section = body.subspan(internal::kHeaderBytes + header.k_bytes, header.v_bytes);
  return p;
}

PageShape ShapeOf(const internal::PageHeader& h) {
  return PageShape{static_cast<int>(h.tokens), h.kv_heads, h.head_dim};
}

PageInfo InfoOf(const internal::PageHeader& h, size_t encoded_bytes) {
  PageInfo info;
  info.version = internal::PageVersionFor(h.flags);
  info.kind = h.kind;
  info.group = (h.flags & internal::kFlagLayerGroups) ? GroupLevel::kLayer : GroupLevel::kHead;
  info.shape = ShapeOf(h);
  info.encoded_bytes = encoded_bytes;
  return info;
}

// What differs between the header a page carries and the one `config`
// writes for the same shape; empty when nothing does.
std::string HeaderMismatch(const internal::PageHeader& got, const internal::PageHeader& want) {
  if (got.kind != want.kind) {
    return absl::StrCat("codec ", base::AsAbsl(CodecKindName(got.kind)), ", expected ",
                        base::AsAbsl(CodecKindName(want.kind)));
  }
  if (got.flags != want.flags) {
    return absl::StrCat("flags 0x", absl::Hex(got.flags), " (group level, key transform), expected 0x",
                        absl::Hex(want.flags));
  }
  if (got.outliers != want.outliers) {
    return absl::StrCat(got.outliers, " outliers per side, expected ", want.outliers);
  }
  if (got.kivi_group != want.kivi_group || got.kivi_residual != want.kivi_residual) {
    return absl::StrCat("kivi group ", got.kivi_group, " and residual ", got.kivi_residual,
                        ", expected ", want.kivi_group, " and ", want.kivi_residual);
  }
  return "";
}

}  // namespace

absl::StatusOr<PageInfo> InspectPage(std::span<const uint8_t> page) {
  QAQKV_ASSIGN_OR_RETURN(const ParsedPage p, ParsePage(page));
  return InfoOf(p.header, page.size());
}

absl::StatusOr<PageInfo> VerifyPage(std::span<const uint8_t> page, const CodecConfig* config,
                                    const PageShape* expected) {
  QAQKV_ASSIGN_OR_RETURN(const ParsedPage p, ParsePage(page));
  QAQKV_RETURN_IF_ERROR(internal::CheckExpectedShape(ShapeOf(p.header), expected));
  for (int which = 0; which < 2; ++which) {
    QAQKV_ASSIGN_OR_RETURN(const internal::SectionView view,
                           internal::ParseSection(p.header, which == 0,
                                                  which == 0 ? p.k_section : p.v_section));
    // Whether an entropy-coded stream decodes shows only by decoding it.
    if (view.entropy_coded) {
      QAQKV_RETURN_IF_ERROR(internal::DecodeTensorEntropy(view, nullptr));
    }
  }
  if (config != nullptr) {
    QAQKV_RETURN_IF_ERROR(ValidateConfig(*config));
    const std::string mismatch =
        HeaderMismatch(p.header, internal::MakePageHeader(*config, ShapeOf(p.header)));
    if (!mismatch.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("page: written as ", mismatch, " (codec ", config->Name(), ")"));
    }
  }
  return InfoOf(p.header, page.size());
}

namespace {

size_t DTypeBytes(DType t) { return t == DType::kF32 ? 4 : 2; }

// An fp16 page decoded in one pass: each piece of the page is hashed and
// then converted while it is in cache, instead of a checksum pass over the
// whole page before the copy. A checksum mismatch is found only at the end,
// so the outputs are zeroed then: no value of a page that failed its
// checksum is left in them. nullopt for anything but a well-formed fp16
// page of the expected shape; the general path then reports it, checksum
// first. Every fp16 page the fast path decodes comes through here.
std::optional<absl::Status> DecodeFp16PageFused(std::span<const uint8_t> page,
                                                const MutableTensorView& k,
                                                const MutableTensorView& v,
                                                const PageShape* expected) {
  if (page.size() < internal::kHeaderBytes + internal::kChecksumBytes) return std::nullopt;
  const std::span<const uint8_t> body = page.first(page.size() - internal::kChecksumBytes);
  const absl::StatusOr<internal::PageHeader> h = internal::ReadHeader(body);
  if (!h.ok() || h->kind != CodecKind::kFp16) return std::nullopt;
  const PageShape shape = ShapeOf(*h);
  if (!internal::CheckExpectedShape(shape, expected).ok()) return std::nullopt;
  const int64_t rows = int64_t{shape.kv_heads} * shape.tokens;
  const size_t row_bytes = size_t(shape.head_dim) * 2;
  const size_t tensor_bytes = rows * row_bytes;
  if (h->k_bytes != tensor_bytes || h->v_bytes != tensor_bytes) return std::nullopt;
  PageHasher hasher;
  hasher.Update(body.data(), internal::kHeaderBytes);
  const int64_t piece = std::max<int64_t>(1, (16 << 10) / row_bytes);
  for (int which = 0; which < 2; ++which) {
    const MutableTensorView& out = which == 0 ? k : v;
    const uint8_t* section = body.data() + internal::kHeaderBytes + which * tensor_bytes;
    for (int64_t r = 0; r < rows; r += piece) {
      const int64_t n = std::min(piece, rows - r);
      hasher.Update(section + r * row_bytes, n * row_bytes);
      internal::DecodeFp16RowsFast(section + r * row_bytes, shape, r, n, out.data, out.dtype,
                                   out.layout);
    }
  }
  internal::Fp16StoreFence();
  if (hasher.Digest() != internal::GetU64(body.data() + body.size())) {
    std::memset(k.data, 0, shape.values() * DTypeBytes(k.dtype));
    std::memset(v.data, 0, shape.values() * DTypeBytes(v.dtype));
    return absl::DataLossError("page: checksum mismatch (XXH3-64)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodePage(std::span<const uint8_t> page, MutableTensorView k, MutableTensorView v,
                        const PageShape* expected, Backend backend) {
  QAQKV_RETURN_IF_ERROR(ValidateView(k.data, k.dtype, k.layout, "k"));
  QAQKV_RETURN_IF_ERROR(ValidateView(v.data, v.dtype, v.layout, "v"));
  if (backend != Backend::kReference && internal::Fp16FastPathSupported()) {
    if (std::optional<absl::Status> fused = DecodeFp16PageFused(page, k, v, expected)) {
      return *fused;
    }
  }
  QAQKV_ASSIGN_OR_RETURN(const ParsedPage p, ParsePage(page));
  const PageShape shape = ShapeOf(p.header);
  QAQKV_RETURN_IF_ERROR(internal::CheckExpectedShape(shape, expected));
  internal::SectionView views[2];
  for (int which = 0; which < 2; ++which) {
    QAQKV_ASSIGN_OR_RETURN(views[which],
                           internal::ParseSection(p.header, which == 0,
                                                  which == 0 ? p.k_section : p.v_section));
  }
  std::vector<float> canon;
  for (int which = 0; which < 2; ++which) {
    const MutableTensorView& out = which == 0 ? k : v;
    const internal::SectionView& view = views[which];
    if (backend != Backend::kReference && view.entropy_coded &&
        internal::EntropyFastPathSupports(p.header)) {
      if (absl::Status st = internal::DecodeEntropyTensorFast(view, out.data, out.dtype, out.layout);
          !st.ok()) {
        // Not half a tensor: the contract is earlier contents or zeros.
        std::memset(out.data, 0, size_t(shape.values()) * DTypeBytes(out.dtype));
        return st;
      }
      continue;
    }
    if (backend != Backend::kReference &&
        internal::DecodeTensorFast(p.header, view, out.data, out.dtype, out.layout)) {
      continue;
    }
    canon.resize(shape.values());
    if (p.header.kind == CodecKind::kFp16) {
      for (int64_t i = 0; i < shape.values(); ++i) {
        canon[i] = HalfToFloat(internal::GetU16(view.exact_values.data() + i * 2));
      }
    } else if (view.entropy_coded) {
      QAQKV_RETURN_IF_ERROR(internal::DecodeTensorEntropy(view, canon.data()));
    } else if (backend != Backend::kReference && internal::GroupedFastPathSupports(p.header)) {
      internal::DecodeGroupedTensorFast(view, canon.data());
    } else {
      internal::DecodeTensorReference(view, canon.data());
    }
    if (backend != Backend::kReference &&
        internal::FromCanonicalFast(canon.data(), shape, out.data, out.dtype, out.layout)) {
      continue;
    }
    for (int64_t h = 0; h < shape.kv_heads; ++h)
      for (int64_t t = 0; t < shape.tokens; ++t)
        for (int64_t d = 0; d < shape.head_dim; ++d) {
          StoreValue(out.data, out.dtype, LayoutIndex(out.layout, shape, h, t, d),
                     canon[(h * shape.tokens + t) * shape.head_dim + d]);
        }
  }
  return absl::OkStatus();
}

double PageStats::paper_bits_per_value() const {
  const double quantized = static_cast<double>(values - outliers - exact_values);
  const double avg_bits = quantized > 0 ? code_bits / quantized : 0;
  const double r = values > 0 ? static_cast<double>(outliers + exact_values) / values : 0;
  return avg_bits * (1 - r) + 16 * r;
}

absl::StatusOr<PageStats> ComputePageStats(std::span<const uint8_t> page) {
  QAQKV_ASSIGN_OR_RETURN(const ParsedPage p, ParsePage(page));
  PageStats st;
  const PageShape shape = ShapeOf(p.header);
  st.values = 2 * shape.values();
  st.encoded_bytes = static_cast<int64_t>(page.size());
  for (int which = 0; which < 2; ++which) {
    QAQKV_ASSIGN_OR_RETURN(const internal::SectionView view,
                           internal::ParseSection(p.header, which == 0,
                                                  which == 0 ? p.k_section : p.v_section));
    if (p.header.kind == CodecKind::kFp16) {
      st.exact_values += shape.values();
      continue;
    }
    st.exact_values +=
        static_cast<int64_t>(view.exact_values.size() / 2 + view.residual.size() / 2);
    if (view.entropy_coded) {  // the coded streams, however the bits fall per value
      // As VerifyPage: a page whose streams do not decode is not counted.
      QAQKV_RETURN_IF_ERROR(internal::DecodeTensorEntropy(view, nullptr));
      st.code_bits += 8.0 * double(view.ec_stream.size() + view.codes.size());
      continue;
    }
    const int64_t G = view.geo.groups();
    int64_t next_exact = 0;
    for (int64_t g = 0; g < G; ++g) {
      if (next_exact < view.n_exact &&
          internal::GetU32(view.exact_groups.data() + next_exact * 4) == g) {
        ++next_exact;
        continue;
      }
      const int n = view.geo.GroupSize(g);
      st.outliers += 2 * view.outliers;
      st.code_bits += double(n - 2 * view.outliers) * view.Width(g);
    }
  }
  return st;
}

absl::StatusOr<WindowStats> ComputeWindowStats(const WindowInputs& in) {
  if (in.context_tokens < 1) return absl::InvalidArgumentError("window.context_tokens: must be >= 1");
  if (in.kv_heads < 1) return absl::InvalidArgumentError("window.kv_heads: must be >= 1");
  if (in.q_heads < in.kv_heads || in.q_heads % in.kv_heads != 0) {
    return absl::InvalidArgumentError("window.q_heads: must be a multiple of kv_heads");
  }
  if (in.head_dim < 1) return absl::InvalidArgumentError("window.head_dim: must be >= 1");
  const int64_t T = in.context_tokens, H = in.kv_heads, Q = in.q_heads, D = in.head_dim;
  const int64_t n = static_cast<int64_t>(in.query_positions.size());
  if (in.keys.size() != size_t(T * H * D)) {
    return absl::InvalidArgumentError(absl::StrCat("window.keys: ", in.keys.size(),
                                                   " values, expected ", T * H * D));
  }
  if (in.queries.size() != size_t(n * Q * D)) {
    return absl::InvalidArgumentError(absl::StrCat("window.queries: ", in.queries.size(),
                                                   " values, expected ", n * Q * D));
  }
  for (int pos : in.query_positions) {
    if (pos < 0 || pos >= T) {
      return absl::InvalidArgumentError(absl::StrCat("window.query_positions: ", pos,
                                                     " outside [0, ", T, ")"));
    }
  }
  WindowStats out;
  out.attention.assign(size_t(T * H), 0.0f);
  std::vector<int> seen(size_t(T), 0);
  const int64_t group = Q / H;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> logits;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = in.query_positions[i];
    for (int64_t t = 0; t <= pos; ++t) ++seen[t];
    logits.resize(pos + 1);
    for (int64_t qh = 0; qh < Q; ++qh) {
      const int64_t h = qh / group;
      const float* q = in.queries.data() + (i * Q + qh) * D;
      double mx = -INFINITY;
      for (int64_t t = 0; t <= pos; ++t) {
        const float* kk = in.keys.data() + (t * H + h) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double(q[d]) * kk[d];
        logits[t] = dot * scale;
        mx = std::max(mx, logits[t]);
      }
      double sum = 0;
      for (int64_t t = 0; t <= pos; ++t) sum += (logits[t] = std::exp(logits[t] - mx));
      for (int64_t t = 0; t <= pos; ++t) {
        float& a = out.attention[t * H + h];
        a = std::max(a, static_cast<float>(logits[t] / sum));
      }
    }
  }
  // Tokens seen by fewer than n queries (all of them when there are none)
  // have no prediction: -1 selects b_max.
  for (int64_t t = 0; t < T; ++t) {
    if (n == 0 || seen[t] < n) for (int64_t h = 0; h < H; ++h) out.attention[t * H + h] = -1.0f;
  }
  QAQKV_ASSIGN_OR_RETURN(out.q2, ComputeQ2(in.queries, in.q_heads, in.kv_heads, in.head_dim, 0.9));
  return out;
}

absl::StatusOr<std::vector<float>> ComputeQ2(std::span<const float> queries, int q_heads,
                                             int kv_heads, int head_dim, double percentile) {
  if (kv_heads < 1) return absl::InvalidArgumentError("q2.kv_heads: must be >= 1");
  if (q_heads < kv_heads || q_heads % kv_heads != 0) {
    return absl::InvalidArgumentError("q2.q_heads: must be a multiple of kv_heads");
  }
  if (head_dim < 1) return absl::InvalidArgumentError("q2.head_dim: must be >= 1");
  if (!(percentile > 0 && percentile <= 1)) {
    return absl::InvalidArgumentError("q2.percentile: must be in (0, 1]");
  }
  const int64_t Q = q_heads, D = head_dim, group = q_heads / kv_heads;
  if (queries.size() % size_t(Q * D) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("q2.queries: ", queries.size(),
                                                   " values is not a multiple of q_heads*head_dim"));
  }
  const int64_t n = static_cast<int64_t>(queries.size()) / (Q * D);
  std::vector<float> out(kv_heads, kDefaultQ2), norms;
  if (n == 0) return out;
  for (int64_t h = 0; h < kv_heads; ++h) {
    norms.clear();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t qh = h * group; qh < (h + 1) * group; ++qh) {
        const float* q = queries.data() + (i * Q + qh) * D;
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += double(q[d]) * q[d];
        norms.push_back(static_cast<float>(s / D));
      }
    const size_t idx = std::min(norms.size() - 1,
                                static_cast<size_t>(std::ceil(percentile * norms.size())) - 1);
    std::nth_element(norms.begin(), norms.begin() + idx, norms.end());
    out[h] = std::max(norms[idx], 1e-12f);
  }
  return out;
}

}  // namespace qaqkv
