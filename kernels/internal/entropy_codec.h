// QAQ entropy-coded (`qaq-ec`, page format version 2, flag bit 4): QAQ's
// error bounds with an entropy-coded scalar quantizer instead of min-max
// groups (docs/page-format.md, docs/quality.md "Codec v2").
//
// Per tensor (K or V) of a page, head-level groups (one token of one head):
// - every channel's page mean (fp16) is subtracted; with `-rh` the row is
//   then rotated (rotation.h);
// - each group's step is QAQ's sqrt(12) sigma for it, rounded down to an
//   8-bit code (the top 8 bits of an fp16), so the error of every value is at
//   most half of it; a group whose values all lie within half a step of 0
//   gets code 0 and decodes to the channel centres, with no codes at all;
// - codes q = round(y / step), zigzagged to u, are rANS-coded (rans.h, 32
//   lanes) as tokens under one of 16 fixed two-sided geometric models,
//   chosen per value from its channel's spread (an 8-bit code per channel)
//   against its group's step, moved by a per-section shift that the
//   encoder picks as the one costing fewest bits. u < 16 is its own token;
//   a larger u, whose top bit is bit n, is token 16 + 2 (n - 4) + (bit n - 1
//   of u), and its n - 1 low bits go to a raw bit stream (the section's
//   `codes`), in symbol order;
// - a group holding NaN or Inf, or whose codes would exceed 2^20, is stored
//   exactly as fp16, as in version 1.
#ifndef QAQKV_KERNELS_INTERNAL_ENTROPY_CODEC_H_
#define QAQKV_KERNELS_INTERNAL_ENTROPY_CODEC_H_

#include <algorithm>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "kernels/internal/page_format.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv::internal {

// The coder's fixed parameters, shared with the vectorized decoder
// (fast_ec_impl.inc). Fixed for format version 2.
inline constexpr int kEcLanes = 32;      // symbol i of a section goes to lane i % 32
inline constexpr int kEcContexts = 16;     // models per family
inline constexpr int kEcFamilies = 3;      // shapes (ec_models.inc)
inline constexpr int kEcDirect = 16;     // zigzag codes 0..15 are their own tokens
inline constexpr int kEcTokens = 52;     // tokens 16..51 carry 3..20 raw bits

inline constexpr int kEcMaxShift = 8;    // a section's model shift is in [-8, 8]
inline constexpr uint8_t kEcStepZeros = 0x80;  // step model flag: zero-width groups present

// The model of a value: its channel's spread code against its group's step
// code, in half octaves (the codes are 8 per octave), rounded down, moved by
// the section's shift.
inline int EcContext(int spread, int step, int shift) {
  return std::clamp(((spread - step) >> 2) + 3 + shift, 0, kEcContexts - 1);
}
// The same before the shift, as an encoder collects it (EcRowKernels):
// clamped to [-kEcMaxShift, kEcContexts - 1 + kEcMaxShift] and offset by
// kEcMaxShift, so that any shift then clamps it exactly as EcContext does.
inline uint8_t EcUnshiftedContext(int spread, int step) {
  return static_cast<uint8_t>(
      std::clamp(((spread - step) >> 2) + 3, -kEcMaxShift, kEcContexts - 1 + kEcMaxShift) + kEcMaxShift);
}

// An 8-bit step or spread code's value: the fp16 with those top 8 bits.
float EcCodeValue(uint8_t code);

// Every model as one decode table, [family][context][slot] for the 4096
// slots of rans.h: freq | (slot - start) << 13 | symbol << 25.
const uint32_t* EcDecodeEntries();

// The zigzag code of a token of kEcDirect or more, whose raw bits are read
// from `bits` at bit `at` (advancing it); false when the bits end early.
inline bool EcTokenValue(uint32_t token, std::span<const uint8_t> bits, uint64_t& at,
                         uint32_t* zigzag) {
  const int raw = static_cast<int>((token - kEcDirect) >> 1) + 3;
  if (at + raw > uint64_t{bits.size()} * 8) return false;
  *zigzag = ((2u | (token & 1)) << raw) | static_cast<uint32_t>(ReadBits(bits, at, raw));
  at += raw;
  return true;
}
// kDataLoss unless the raw bits end at `at`, padded to a byte with zeros.
absl::Status EcCheckRawBitsEnd(std::span<const uint8_t> bits, uint64_t at);

// The encoder's loops over one row of head_dim values, so that a vectorized
// build (fast_ec_impl.inc) can stand in for the reference's; both compute
// exactly the same values.
struct EcRowKernels {
  // y = raw - centre; false when raw holds a NaN or an Inf.
  bool (*centre_row)(const float* raw, const float* centre, int n, float* y);
  // max |y|, min y and max y of a finite row.
  void (*row_range)(const float* y, int n, float* amax, float* lo, float* hi);
  // The tokens and unshifted contexts (EcUnshiftedContext) of a coded row
  // under its step (code), into tokens[0, n) and contexts[0, n); raw bits
  // appended to `raw`.
  void (*quantize_row)(const float* y, int n, float step, uint8_t code, const uint8_t* spread,
                       uint16_t* tokens, uint8_t* contexts, BitWriter& raw);
  // RotateRow(row, n, false) (-rh).
  void (*rotate_row)(float* row, int n);
};
const EcRowKernels& EcReferenceKernels();

// Fills enc (exact groups and values, and the entropy-coded parts) and
// task.channel_offset (the centres) from the canonical input `raw`
// ([kv_heads][tokens][head_dim]); task.group_e must be filled.
void EncodeTensorEntropy(TensorTask& task, const float* raw, TensorEncoding& enc,
                         const EcRowKernels& kernels = EcReferenceKernels());

// Decodes a section's step codes (the stream after its step model byte,
// whose raw bits open `v.codes`) into v.ec_steps, and moves v.codes past
// them. kDataLoss when they do not decode exactly or a code is out of range.
absl::Status DecodeEcSteps(SectionView& v, std::span<const uint8_t> stream);

// Decodes a parsed section into canonical fp32. kDataLoss when the coded
// streams do not decode to exactly the symbols the section needs. With a
// null `out`, only checks that (what VerifyPage needs), in memory that does
// not grow with the page.
absl::Status DecodeTensorEntropy(const SectionView& v, float* out);

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_ENTROPY_CODEC_H_
