// The vectorized CPU backend. It covers the configurations that matter for
// throughput (head- and layer-level groups of qaq/int8/int4, fp16 and bf16
// and fp32 input in NHD or HND) and must write exactly the bytes of the
// reference; anything it does not cover falls back to the reference.
#ifndef QAQKV_KERNELS_INTERNAL_FAST_H_
#define QAQKV_KERNELS_INTERNAL_FAST_H_

#include "kernels/codec.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv::internal {

bool FastPathSupports(const PageHeader& header);
void EncodeTensorFast(const TensorTask& task, const float* x, const float* raw,
                      TensorEncoding& enc);
// Decodes straight into the caller's buffer; false when this view is not
// covered (the caller then uses the reference).
bool DecodeTensorFast(const PageHeader& header, const SectionView& view, void* out,
                      DType dtype, Layout layout);

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_FAST_H_
