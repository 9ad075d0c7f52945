// The vectorized CPU backend. It covers the configurations that matter for
// throughput (head- and layer-level groups of qaq/int8/int4, fp16 and bf16
// and fp32 input in NHD or HND) and must write exactly the bytes of the
// reference; anything it does not cover falls back to the reference.
#ifndef QAQKV_KERNELS_INTERNAL_FAST_H_
#define QAQKV_KERNELS_INTERNAL_FAST_H_

#include "kernels/codec.h"
#include "kernels/internal/entropy_codec.h"
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
// covered (the caller then uses the reference). Unlike encoding, decoding
// covers rotated (-rh) pages too. fp16 pages are not covered
// here: DecodePage copies them with DecodeFp16RowsFast as it checks them.
bool DecodeTensorFast(const PageHeader& header, const SectionView& view, void* out,
                      DType dtype, Layout layout);

// Every other quantized section that is not entropy coded (layer groups,
// kivi2, head groups with more than one outlier per side, -rh encodes), on
// a CPU with AVX2, FMA, F16C and BMI2. These work on the canonical fp32
// copies the reference works on, with its arguments and results: `x` and
// `raw` as for EncodeTensorReference, `out` in canonical order.
bool GroupedFastPathSupports(const PageHeader& header);
void EncodeGroupedTensorFast(const TensorTask& task, const float* x, const float* raw,
                             TensorEncoding& enc);
void DecodeGroupedTensorFast(const SectionView& view, float* out);

// Entropy-coded (qaq-ec) sections whose head_dim is a multiple of the
// coder's 32 lanes, on a CPU with AVX2, FMA, F16C and BMI2.
bool EntropyFastPathSupports(const PageHeader& header);
// Decodes straight into the caller's buffer. kDataLoss when the coded
// streams do not decode exactly (the buffer then holds part of the tensor).
absl::Status DecodeEntropyTensorFast(const SectionView& view, void* out, DType dtype,
                                     Layout layout);
// The vectorized row loops of the qaq-ec encoder; null without AVX2.
const EcRowKernels* EntropyRowKernelsFast();
// The canonical fp32 copy ([kv_heads][tokens][head_dim]) of `in`, as the
// reference makes it; false without AVX2 or when `in` holds a finite value
// beyond fp16's range (the reference then names it).
bool ToCanonicalFast(const TensorView& in, const PageShape& shape, float* out);
// Stores a canonical fp32 copy into the caller's tensor, as the reference
// does value by value; false without AVX2.
bool FromCanonicalFast(const float* canon, const PageShape& shape, void* out, DType dtype,
                       Layout layout);

// RotateRow (rotation.h) on `count` consecutive rows, vectorized, with the
// same results; false without AVX2.
bool RotateRowsFast(float* rows, int64_t count, int head_dim, bool inverse);

// fp16 pages (a copy in canonical order) on a CPU with AVX2 and F16C.
// Encoding writes canonical rows [first_row, first_row + rows) of one tensor
// (row h * tokens + t holds head_dim fp16 values) to `out`, so the caller can
// hash each piece while it is in cache. False when the input holds a finite
// value beyond fp16's range (the reference then names it).
bool Fp16FastPathSupported();
bool EncodeFp16RowsFast(const TensorView& in, const PageShape& shape, int64_t first_row,
                        int64_t rows, uint8_t* out);
// Decoding converts canonical rows [first_row, first_row + rows), read from
// `rows_in`, into the caller's tensor; fp16 output bypasses the cache.
void DecodeFp16RowsFast(const uint8_t* rows_in, const PageShape& shape, int64_t first_row,
                        int64_t rows, void* out, DType dtype, Layout layout);
// Copies `n` bytes with stores that bypass the cache: for pages written once
// and sent or stored, not read back soon.
void StreamCopy(const uint8_t* src, uint8_t* dst, size_t n);
// Orders the cache-bypassing stores of DecodeFp16RowsFast and StreamCopy
// before what follows; their callers run it once they are done.
void Fp16StoreFence();

#define QAQKV_DECLARE_FAST(ns)                                                     \
  namespace ns {                                                                   \
  void StreamCopy(const uint8_t* src, uint8_t* dst, size_t n);                    \
  bool EncodeFp16Rows(const TensorView& in, int tokens, int kv_heads, int head_dim, \
                      int64_t first_row, int64_t rows, uint8_t* out);              \
  void DecodeFp16Rows(const uint8_t* rows_in, int tokens, int kv_heads, int head_dim, \
                      int64_t first_row, int64_t rows, void* out, DType dtype, Layout layout); \
  absl::Status EncodeHeadTensor(const TensorTask& task, const TensorView& in,     \
                                TensorEncoding& enc);                              \
  void DecodeHeadTensor(const SectionView& v, void* out, DType dtype, Layout layout); \
  void RotateRows(float* rows, int64_t count, int head_dim, bool inverse);           \
  void EncodeGroupedTensor(const TensorTask& task, const float* x, const float* raw,    \
                           TensorEncoding& enc);                                       \
  void DecodeGroupedTensor(const SectionView& v, float* out);                          \
  absl::Status DecodeEntropyTensor(const SectionView& v, void* out, DType dtype,   \
                                   Layout layout);                                 \
  extern const EcRowKernels kEcRowKernels;                                         \
  bool ToCanonical(const TensorView& in, int tokens, int kv_heads, int head_dim,    \
                   float* out);                                                    \
  void FromCanonical(const float* canon, int tokens, int kv_heads, int head_dim,   \
                     void* out, DType dtype, Layout layout);                       \
  void KeyChannelStats(const TensorView& in, int tokens, int kv_heads, int head_dim,    \
                       bool center, bool scale, std::vector<uint16_t>& offsets,          \
                       std::vector<uint16_t>& scales);                                   \
  }
QAQKV_DECLARE_FAST(avx2)
QAQKV_DECLARE_FAST(avx512)
#undef QAQKV_DECLARE_FAST

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_FAST_H_
