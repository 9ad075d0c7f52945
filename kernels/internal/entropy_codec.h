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
// - codes q = round(y / step), zigzagged, are rANS-coded (rans.h, 8 lanes)
//   under one of 16 fixed two-sided geometric models, chosen per value from
//   its channel's spread (an 8-bit code per channel) against its group's
//   step; codes of 32 and more escape to an Elias-gamma bit stream;
// - a group holding NaN or Inf, or whose codes would exceed 2^20, is stored
//   exactly as fp16, as in version 1.
#ifndef QAQKV_KERNELS_INTERNAL_ENTROPY_CODEC_H_
#define QAQKV_KERNELS_INTERNAL_ENTROPY_CODEC_H_

#include "absl/status/status.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv::internal {

// Fills enc (exact groups and values, and the entropy-coded parts) and
// task.channel_offset (the centres) from the canonical input `raw`
// ([kv_heads][tokens][head_dim]); task.group_e must be filled.
void EncodeTensorEntropy(TensorTask& task, const float* raw, TensorEncoding& enc);

// Decodes a parsed section into canonical fp32. kDataLoss when the coded
// streams do not decode to exactly the symbols the section needs. With a
// null `out`, only checks that (what VerifyPage needs), in memory that does
// not grow with the page.
absl::Status DecodeTensorEntropy(const SectionView& v, float* out);

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_ENTROPY_CODEC_H_
