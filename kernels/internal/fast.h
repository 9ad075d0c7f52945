// The vectorized CPU backend. It covers the configurations that matter for
// throughput (head- and layer-level groups of qaq/int8/int4, fp16 and bf16
// and fp32 input in NHD or HND) and must write exactly the bytes of the
// reference; anything it does not cover falls back to the reference.
#ifndef QAQKV_KERNELS_INTERNAL_FAST_H_
#define QAQKV_KERNELS_INTERNAL_FAST_H_

#include "kernels/codec.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv::internal {

// Head-level groups of int8/int4/qaq (with qaq-cs / qaq-cc keys) with at most
// one outlier per side, on a CPU with AVX2, FMA, F16C and BMI2.
bool FastPathSupports(const PageHeader& header);
// Makes the fast path use its AVX2 build even on an AVX-512 CPU, so tests
// can hold both builds against the reference on one machine.
void ForceAvx2ForTesting(bool on);
// Reads the caller's tensor directly (no canonical copy). kInvalidArgument for
// a finite value beyond fp16's range.
absl::Status EncodeTensorFast(const TensorTask& task, const TensorView& in,
                              TensorEncoding& enc);
// qaq-cc / qaq-cs channel statistics of the keys read in place: the same
// values the reference computes from its canonical copy (fp16 channel means
// of the finite values, fp16 max |k - mean| rounded up, 1 where that is 0).
void KeyChannelStatsFast(const TensorView& in, const PageShape& shape, bool center, bool scale,
                         std::vector<uint16_t>& offsets, std::vector<uint16_t>& scales);
// Decodes straight into the caller's buffer; false when this view is not
// covered (the caller then uses the reference).
bool DecodeTensorFast(const PageHeader& header, const SectionView& view, void* out,
                      DType dtype, Layout layout);

#define QAQKV_DECLARE_FAST(ns)                                                     \
  namespace ns {                                                                   \
  absl::Status EncodeHeadTensor(const TensorTask& task, const TensorView& in,     \
                                TensorEncoding& enc);                              \
  void DecodeHeadTensor(const SectionView& v, void* out, DType dtype, Layout layout); \
  void KeyChannelStats(const TensorView& in, int tokens, int kv_heads, int head_dim,    \
                       bool center, bool scale, std::vector<uint16_t>& offsets,          \
                       std::vector<uint16_t>& scales);                                   \
  }
QAQKV_DECLARE_FAST(avx2)
QAQKV_DECLARE_FAST(avx512)
#undef QAQKV_DECLARE_FAST

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_FAST_H_
