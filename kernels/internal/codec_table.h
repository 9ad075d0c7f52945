// What each codec kind is, in one table: its id on the page (docs/
// page-format.md, header byte 6), its name, and what its pages can hold.
// Parsing names, checking configs and headers, and laying out sections all
// read this table, so a new codec is a new row here plus its encoder and
// decoder (docs/contributing.md), not a hunt for range checks against the
// last enum value.
#ifndef QAQKV_KERNELS_INTERNAL_CODEC_TABLE_H_
#define QAQKV_KERNELS_INTERNAL_CODEC_TABLE_H_

#include <cstdint>
#include <iterator>
#include <string_view>

#include "kernels/codec.h"

namespace qaqkv::internal {

struct CodecTraits {
  CodecKind kind;
  std::string_view name;   // as ParseCodecConfig and Name() spell it
  int fixed_bits;          // bits per code of every group; 0: none (fp16) or per group (qaq)
  bool variable_widths;    // widths chosen per group and stored in the page
  bool layer_groups;       // takes "-layer" (groups of one token across all heads)
  bool key_transforms;     // takes "-cs" and "-cc" (per-channel key scale or centre)
  bool outliers;           // keeps the largest and smallest values of a group exact
  bool rotation;           // takes "-rh" (rows rotated before quantization)
  bool entropy_coding;     // takes "-ec" (entropy-coded scalar quantizer)
};

// Indexed by the codec's id: kCodecs[id].kind == CodecKind(id).
inline constexpr CodecTraits kCodecs[] = {
    {CodecKind::kFp16, "fp16", 0, false, false, false, false, false, false},
    {CodecKind::kInt8, "int8", 8, false, true, false, false, true, false},
    {CodecKind::kInt4, "int4", 4, false, true, false, false, true, false},
    {CodecKind::kKivi2, "kivi2", 2, false, false, false, false, false, false},
    {CodecKind::kQaq, "qaq", 0, true, true, true, true, true, true},
};

constexpr bool CodecIdsAreIndices() {
  for (size_t i = 0; i < std::size(kCodecs); ++i) {
    if (static_cast<size_t>(kCodecs[i].kind) != i) return false;
  }
  return true;
}
static_assert(CodecIdsAreIndices(), "kCodecs must be ordered by codec id");

// The row of a codec id read from a page or a config; null when unknown.
inline const CodecTraits* FindCodec(uint8_t id) {
  return id < std::size(kCodecs) ? &kCodecs[id] : nullptr;
}
inline const CodecTraits* FindCodec(CodecKind kind) {
  return FindCodec(static_cast<uint8_t>(kind));
}
// The row of a codec name; null when unknown.
inline const CodecTraits* FindCodec(std::string_view name) {
  for (const CodecTraits& c : kCodecs) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_CODEC_TABLE_H_
