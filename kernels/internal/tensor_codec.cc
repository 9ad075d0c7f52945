#include "kernels/internal/tensor_codec.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/half.h"
#include "kernels/internal/codec_table.h"
#include "kernels/internal/entropy_codec.h"
#include "base/status_macros.h"

namespace qaqkv::internal {
namespace {

void AppendU16s(std::span<const uint16_t> v, std::vector<uint8_t>& out) {
  const size_t at = out.size();
  out.resize(at + v.size() * 2);
  if (!v.empty()) std::memcpy(out.data() + at, v.data(), v.size() * 2);  // little-endian host
}

// Cuts `n` bytes off the front of `rest`, or reports the section as short.
absl::StatusOr<std::span<const uint8_t>> Take(std::span<const uint8_t>& rest, uint64_t n,
                                              const char* what, bool keys) {
  if (n > rest.size()) {
    return absl::DataLossError(absl::StrCat("page: ", keys ? "K" : "V", " section too short for ",
                                            what, " (", n, " bytes needed, ", rest.size(),
                                            " left)"));
  }
  auto s = rest.first(static_cast<size_t>(n));
  rest = rest.subspan(static_cast<size_t>(n));
  return s;
}

bool FiniteHalf(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

}  // namespace

std::vector<uint16_t> ChannelCentres(const float* canon, int64_t kv_heads, int64_t tokens,
                                     int64_t head_dim) {
  std::vector<uint16_t> out(size_t(kv_heads) * head_dim, 0);
  // Row by row, so the reads are sequential; each channel still sums its
  // tokens in order.
  std::vector<double> sum(head_dim);
  std::vector<int64_t> n(head_dim);
  for (int64_t h = 0; h < kv_heads; ++h) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(n.begin(), n.end(), 0);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* row = canon + (h * tokens + t) * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) {
        const bool finite = std::isfinite(row[d]);
        sum[d] += finite ? double{row[d]} : 0.0;
        n[d] += finite;
      }
    }
    for (int64_t d = 0; d < head_dim; ++d) {
      out[h * head_dim + d] = FloatToHalf(n[d] > 0 ? static_cast<float>(sum[d] / n[d]) : 0.0f);
    }
  }
  return out;
}

TensorTask TaskShape(const PageHeader& h, bool keys) {
  TensorTask t;
  t.geo = MakeGeometry(h, keys);
  const CodecTraits& codec = *FindCodec(h.kind);  // ReadHeader checked the id
  t.fixed_bits = codec.fixed_bits;
  t.variable_widths = codec.variable_widths;
  if (codec.outliers) t.outliers = h.outliers;
  t.rotate = (h.flags & kFlagRotate) != 0;
  t.entropy_coded = (h.flags & kFlagEntropyCoded) != 0;
  if (t.entropy_coded) t.variable_widths = false;
  return t;
}

size_t SectionSize(const TensorTask& task, const TensorEncoding& enc) {
  size_t n = (task.channel_scale.size() + task.channel_offset.size()) * 2 + 4 +
             enc.exact_groups.size() * 4;
  if (task.variable_widths) n += (enc.widths.size() + 1) / 2;
  if (task.entropy_coded) n += enc.ec_scales.size() + 1 + 4 + enc.ec_step_stream.size() + 2 + 4 +
                                 enc.ec_stream.size();
  n += (enc.lo.size() + enc.step.size() + enc.outlier_values.size()) * 2;
  n += enc.outlier_index.size() * OutlierIndexBytes(task.geo.MaxGroupSize());
  n += (enc.exact_values.size() + enc.residual.size()) * 2;
  return n + enc.codes.byte_size();
}

void SerializeSection(const TensorTask& task, TensorEncoding& enc, std::vector<uint8_t>& out) {
  AppendU16s(task.channel_scale, out);
  AppendU16s(task.channel_offset, out);
  const size_t at = out.size();
  out.resize(at + 4 + enc.exact_groups.size() * 4);
  PutU32(out.data() + at, static_cast<uint32_t>(enc.exact_groups.size()));
  for (size_t i = 0; i < enc.exact_groups.size(); ++i) {
    PutU32(out.data() + at + 4 + i * 4, enc.exact_groups[i]);
  }
  if (task.variable_widths) {
    const size_t n = enc.widths.size();
    const size_t w_at = out.size();
    out.resize(w_at + (n + 1) / 2, 0);
    for (size_t g = 0; g < n; ++g) out[w_at + g / 2] |= enc.widths[g] << ((g & 1) * 4);
  }
  AppendU16s(enc.lo, out);
  AppendU16s(enc.step, out);
  AppendU16s(enc.outlier_values, out);
  if (OutlierIndexBytes(task.geo.MaxGroupSize()) == 1) {
    for (uint16_t i : enc.outlier_index) out.push_back(static_cast<uint8_t>(i));
  } else {
    AppendU16s(enc.outlier_index, out);
  }
  AppendU16s(enc.exact_values, out);
  if (task.entropy_coded) {
    out.insert(out.end(), enc.ec_scales.begin(), enc.ec_scales.end());
    out.push_back(enc.ec_step_model);
    const size_t at_steps = out.size();
    out.resize(at_steps + 4);
    PutU32(out.data() + at_steps, static_cast<uint32_t>(enc.ec_step_stream.size()));
    out.insert(out.end(), enc.ec_step_stream.begin(), enc.ec_step_stream.end());
    out.push_back(enc.ec_family);
    out.push_back(static_cast<uint8_t>(enc.ec_shift));
    const size_t at_len = out.size();
    out.resize(at_len + 4);
    PutU32(out.data() + at_len, static_cast<uint32_t>(enc.ec_stream.size()));
    out.insert(out.end(), enc.ec_stream.begin(), enc.ec_stream.end());
  }
  const ByteBuffer codes = enc.codes.Finish();
  out.insert(out.end(), codes.begin(), codes.end());
  AppendU16s(enc.residual, out);
}

absl::StatusOr<SectionView> ParseSection(const PageHeader& h, bool keys,
                                         std::span<const uint8_t> section) {
  const TensorTask shape = TaskShape(h, keys);
  SectionView v;
  v.geo = shape.geo;
  v.outliers = shape.outliers;
  v.variable_widths = shape.variable_widths;
  v.fixed_bits = shape.fixed_bits;
  v.rotate = shape.rotate;
  v.entropy_coded = shape.entropy_coded;
  v.index_bytes = OutlierIndexBytes(v.geo.MaxGroupSize());
  const int64_t H = h.kv_heads, D = h.head_dim, T = h.tokens;
  std::span<const uint8_t> rest = section;
  const char* side = keys ? "K" : "V";

  if (h.kind == CodecKind::kFp16) {
    QAQKV_ASSIGN_OR_RETURN(v.exact_values,
                           Take(rest, uint64_t(H * T * D) * 2, "fp16 values", keys));
  } else {
    if (keys && (h.flags & kFlagKeyChannelScale)) {
      QAQKV_ASSIGN_OR_RETURN(v.channel_scale,
                             Take(rest, uint64_t(H * D) * 2, "channel scales", keys));
    }
    if ((keys && (h.flags & kFlagKeyChannelCenter)) || v.entropy_coded) {
      QAQKV_ASSIGN_OR_RETURN(v.channel_offset,
                             Take(rest, uint64_t(H * D) * 2, "channel offsets", keys));
    }
    // An encoder writes finite channel centres and finite positive channel
    // scales (a channel with no usable spread gets 1). Anything else is a
    // corrupt page: a NaN here would reach every value of its channel, and
    // which NaN comes out would depend on the decoder's order of operations.
    for (size_t i = 0; i < v.channel_scale.size(); i += 2) {
      const uint16_t s = GetU16(v.channel_scale.data() + i);
      if (!FiniteHalf(s) || (s & 0x8000u) != 0 || (s & 0x7fffu) == 0) {
        return absl::DataLossError(absl::StrCat("page: ", side, " channel scale ", i / 2,
                                                " is not finite and positive"));
      }
    }
    for (size_t i = 0; i < v.channel_offset.size(); i += 2) {
      if (!FiniteHalf(GetU16(v.channel_offset.data() + i))) {
        return absl::DataLossError(
            absl::StrCat("page: ", side, " channel offset ", i / 2, " is not finite"));
      }
    }
    const int64_t G = v.geo.groups();
    QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> count,
                           Take(rest, 4, "exact group count", keys));
    v.n_exact = GetU32(count.data());
    if (v.n_exact > G) {
      return absl::DataLossError(
          absl::StrCat("page: ", side, " section lists ", v.n_exact, " exact groups of ", G));
    }
    QAQKV_ASSIGN_OR_RETURN(v.exact_groups,
                           Take(rest, uint64_t(v.n_exact) * 4, "exact group list", keys));
    int64_t exact_values = 0;
    for (int64_t i = 0; i < v.n_exact; ++i) {
      const uint32_t g = GetU32(v.exact_groups.data() + i * 4);
      if (g >= G || (i > 0 && g <= GetU32(v.exact_groups.data() + (i - 1) * 4))) {
        return absl::DataLossError(
            absl::StrCat("page: ", side, " exact group list is not increasing or out of range"));
      }
      exact_values += v.geo.GroupSize(g);
    }
    if (v.entropy_coded) {
      QAQKV_ASSIGN_OR_RETURN(v.exact_values,
                             Take(rest, uint64_t(exact_values) * 2, "exact values", keys));
      QAQKV_ASSIGN_OR_RETURN(v.ec_scales, Take(rest, uint64_t(H * D), "channel spreads", keys));
      QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> step_model, Take(rest, 1, "step model", keys));
      v.ec_step_model = step_model[0];
      QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> step_len,
                             Take(rest, 4, "step stream size", keys));
      QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> step_stream,
                             Take(rest, GetU32(step_len.data()), "step stream", keys));
      QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> model, Take(rest, 2, "model", keys));
      v.ec_family = model[0];
      v.ec_shift = static_cast<int8_t>(model[1]);
      if (v.ec_family >= kEcFamilies) {
        return absl::DataLossError(absl::StrCat("page: ", side, " model family ", v.ec_family,
                                                " of ", kEcFamilies));
      }
      if (v.ec_shift < -kEcMaxShift || v.ec_shift > kEcMaxShift) {
        return absl::DataLossError(absl::StrCat("page: ", side, " model shift ", v.ec_shift,
                                                " is beyond +-", kEcMaxShift));
      }
      QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> len,
                             Take(rest, 4, "entropy stream size", keys));
      QAQKV_ASSIGN_OR_RETURN(v.ec_stream, Take(rest, GetU32(len.data()), "entropy stream", keys));
      v.codes = rest;  // raw bits, to the end of the section
      rest = {};
      // Codes at or above 0xf8 would be fp16 Inf or NaN spreads.
      for (uint8_t c : v.ec_scales)
        if (c >= 0xf8) return absl::DataLossError(absl::StrCat("page: ", side, " bad spread code"));
      // The steps (exact groups get none), and v.codes past their raw bits.
      if (absl::Status st = DecodeEcSteps(v, step_stream); !st.ok()) {
        return absl::DataLossError(absl::StrCat(side, " ", st.message()));
      }
      return v;
    }
    if (v.variable_widths) {
      QAQKV_ASSIGN_OR_RETURN(v.widths, Take(rest, uint64_t(G + 1) / 2, "bit widths", keys));
    }
    const int64_t quantized = G - v.n_exact;
    QAQKV_ASSIGN_OR_RETURN(v.lo, Take(rest, uint64_t(quantized) * 2, "offsets", keys));
    QAQKV_ASSIGN_OR_RETURN(v.step, Take(rest, uint64_t(quantized) * 2, "steps", keys));
    const uint64_t n_out = uint64_t(quantized) * 2 * v.outliers;
    QAQKV_ASSIGN_OR_RETURN(v.outlier_values, Take(rest, n_out * 2, "outlier values", keys));
    QAQKV_ASSIGN_OR_RETURN(v.outlier_index,
                           Take(rest, n_out * v.index_bytes, "outlier indices", keys));
    QAQKV_ASSIGN_OR_RETURN(v.exact_values,
                           Take(rest, uint64_t(exact_values) * 2, "exact values", keys));

    // An encoder only writes finite offsets, non-negative finite steps and
    // finite outliers (non-finite input goes to exact groups); anything else
    // is a corrupt page, not data.
    for (int64_t i = 0; i < quantized; ++i) {
      const uint16_t lo_h = GetU16(v.lo.data() + i * 2), step_h = GetU16(v.step.data() + i * 2);
      if (!FiniteHalf(lo_h) || !FiniteHalf(step_h) || (step_h & 0x8000u) != 0) {
        return absl::DataLossError(absl::StrCat("page: ", side, " quantized group ", i,
                                                " has a non-finite offset or a bad step"));
      }
    }
    for (uint64_t i = 0; i < n_out; ++i) {
      if (!FiniteHalf(GetU16(v.outlier_values.data() + i * 2))) {
        return absl::DataLossError(absl::StrCat("page: ", side, " outlier ", i, " is not finite"));
      }
    }
    // Widths and outlier indices decide how many code bits follow; check them
    // all now so decoding never needs a bounds check per value.
    uint64_t bits = 0;
    const bool uniform = v.geo.kind == GroupGeometry::Kind::kHead ||
                         v.geo.kind == GroupGeometry::Kind::kLayer;
    if (uniform && v.variable_widths) {
      // Every group has n values: the code bits are (n - 2k) times the sum of
      // the widths of the quantized groups. Widths are summed and bounded
      // over the whole nibble array (exact groups must carry 0), which is a
      // plain byte loop instead of a branch per group.
      const int n = v.geo.GroupSize(0);
      if (v.outliers > 0 && 2 * v.outliers >= n) {
        return absl::DataLossError(absl::StrCat("page: ", side, " outlier count ", v.outliers,
                                                " does not fit groups of ", n));
      }
      uint64_t sum = 0;
      uint8_t worst = 0;
      for (size_t i = 0; i < v.widths.size(); ++i) {
        const uint8_t lo_w = v.widths[i] & 0xf, hi_w = v.widths[i] >> 4;
        sum += lo_w + hi_w;
        worst = std::max<uint8_t>(worst, std::max(lo_w, hi_w));
      }
      if (worst > 8) {
        return absl::DataLossError(absl::StrCat("page: ", side, " has a bit width of ", worst));
      }
      if ((G & 1) != 0 && (v.widths.back() >> 4) != 0) {
        return absl::DataLossError(absl::StrCat("page: ", side, " width padding is not zero"));
      }
      for (int64_t i = 0; i < v.n_exact; ++i) {
        if (v.Width(GetU32(v.exact_groups.data() + i * 4)) != 0) {
          return absl::DataLossError(
              absl::StrCat("page: ", side, " an exact group has a nonzero width"));
        }
      }
      bits = sum * uint64_t(n - 2 * v.outliers);
    }
    if (uniform) {
      const int n = v.geo.GroupSize(0);
      const int per_group = 2 * v.outliers;
      for (int64_t q = 0; q < quantized; ++q) {
        int prev = -1;
        for (int j = 0; j < per_group; ++j) {
          const uint64_t at = uint64_t(q) * per_group + j;
          const int idx = v.index_bytes == 1 ? v.outlier_index[at]
                                             : GetU16(v.outlier_index.data() + at * 2);
          if (idx <= prev || idx >= n) {
            return absl::DataLossError(absl::StrCat("page: ", side, " quantized group ", q,
                                                    " has a bad outlier index ", idx));
          }
          prev = idx;
        }
      }
      if (!v.variable_widths) bits = uint64_t(quantized) * (n - per_group) * v.fixed_bits;
    } else {
      // kivi2: group sizes vary at the edges; no outliers.
      int64_t next_exact = 0;
      for (int64_t g = 0; g < G; ++g) {
        if (next_exact < v.n_exact && GetU32(v.exact_groups.data() + next_exact * 4) == g) {
          ++next_exact;
          continue;
        }
        bits += uint64_t(v.geo.GroupSize(g)) * v.Width(g);
      }
    }
    QAQKV_ASSIGN_OR_RETURN(v.codes, Take(rest, (bits + 7) / 8, "codes", keys));
    const int64_t residual_tokens = T - v.geo.quant_tokens;
    QAQKV_ASSIGN_OR_RETURN(v.residual,
                           Take(rest, uint64_t(H * residual_tokens * D) * 2, "residual", keys));
  }
  if (!rest.empty()) {
    return absl::DataLossError(
        absl::StrCat("page: ", side, " section has ", rest.size(), " unexplained bytes"));
  }
  return v;
}

}  // namespace qaqkv::internal
