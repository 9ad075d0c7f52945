// The middle layer of the codec: one tensor (K or V) of a page as groups,
// independent of backend. Backends fill a TensorEncoding group by group;
// Serialize/ParseSection turn it into section bytes and back.
#ifndef QAQKV_KERNELS_INTERNAL_TENSOR_CODEC_H_
#define QAQKV_KERNELS_INTERNAL_TENSOR_CODEC_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/internal/group_math.h"
#include "kernels/internal/page_format.h"

namespace qaqkv::internal {

// What the encoder needs to know about one tensor.
struct TensorTask {
  GroupGeometry geo;
  int outliers = 0;             // k per side per group
  bool variable_widths = false; // QAQ: widths chosen per group and stored
  int fixed_bits = 0;           // int8 / int4 / kivi2
  int b_min = 0, b_max = 8;
  // QAQ: e = sqrt(12) * sigma per group; negative means "use b_max".
  std::vector<float> group_e;
  // qaq-cs keys: per-channel fp16 scales [kv_heads * head_dim]; empty if unused.
  std::vector<uint16_t> channel_scale;
  // qaq-cc keys: per-channel fp16 means subtracted before quantization.
  std::vector<uint16_t> channel_offset;
  // Version-2 rotation: the values given to the encoder are rotated rows;
  // outliers are stored rotated too (exact groups keep the raw values).
  bool rotate = false;
  // qaq-ec: sections hold the entropy-coded parts below; channel_offset
  // holds the centres of K and V alike. e_unobserved is the value target of
  // a token with no attention observed (group_e < 0): that of attention 1.
  bool entropy_coded = false;
  float e_unobserved = 0;
};

struct TensorEncoding {
  std::vector<uint32_t> exact_groups;
  std::vector<uint8_t> widths;  // one per group (0 for exact groups)
  std::vector<uint16_t> lo, step;
  std::vector<uint16_t> outlier_values;
  std::vector<uint16_t> outlier_index;
  std::vector<uint16_t> exact_values;
  BitWriter codes;
  std::vector<uint16_t> residual;  // kivi: fp16 tokens kept exact, HND
  // qaq-ec: per channel spread codes, per group step codes, the models'
  // family and shift, the rANS stream; `codes` holds the tokens' raw bits.
  std::vector<uint8_t> ec_scales, ec_steps, ec_stream;
  uint8_t ec_step_model = 0;
  std::vector<uint8_t> ec_step_stream;
  uint8_t ec_family = 0;
  int8_t ec_shift = 0;
};

// Each channel's mean over the page's finite values, rounded to fp16, from a
// canonical [kv_heads][tokens][head_dim] tensor: the centres of qaq-cc keys
// and of qaq-ec sections, which the decoder adds back.
std::vector<uint16_t> ChannelCentres(const float* canon, int64_t kv_heads, int64_t tokens,
                                     int64_t head_dim);

// Exact size in bytes of the section SerializeSection will write.
size_t SectionSize(const TensorTask& task, const TensorEncoding& enc);

// Appends the section bytes of `enc` to `out`.
void SerializeSection(const TensorTask& task, TensorEncoding& enc,
                      std::vector<uint8_t>& out);

// Parsed, bounds-checked view of one section. Every span lies inside the page.
struct SectionView {
  GroupGeometry geo;
  int outliers = 0;
  int index_bytes = 1;
  bool variable_widths = false;
  int fixed_bits = 0;
  std::span<const uint8_t> channel_scale;   // u16 each, empty unless qaq-cs
  std::span<const uint8_t> channel_offset;  // u16 each, empty unless qaq-cc
  std::span<const uint8_t> exact_groups;   // u32 each
  std::span<const uint8_t> widths;         // nibbles
  std::span<const uint8_t> lo, step;       // u16 each
  std::span<const uint8_t> outlier_values; // u16 each
  std::span<const uint8_t> outlier_index;  // index_bytes each
  std::span<const uint8_t> exact_values;   // u16 each
  std::span<const uint8_t> codes;
  std::span<const uint8_t> residual;       // u16 each
  int64_t n_exact = 0;
  bool rotate = false;  // quantized rows decode rotated; see rotation.h
  bool entropy_coded = false;  // qaq-ec: the fields below, `codes` = the values' raw bits
  std::span<const uint8_t> ec_scales, ec_stream;
  uint8_t ec_step_model = 0;
  std::vector<uint8_t> ec_steps;  // decoded from the step stream at parse time
  int ec_family = 0;  // below kEcFamilies
  int ec_shift = 0;   // within +-kEcMaxShift

  int Width(int64_t g) const {
    if (!variable_widths) return fixed_bits;
    return (widths[g >> 1] >> ((g & 1) * 4)) & 0xf;
  }
};

absl::StatusOr<SectionView> ParseSection(const PageHeader& header, bool keys,
                                         std::span<const uint8_t> section);

// Task parameters that follow from the header alone (sizes, widths policy).
TensorTask TaskShape(const PageHeader& header, bool keys);

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_TENSOR_CODEC_H_
