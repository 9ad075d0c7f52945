// The scalar reference backend: plain loops, written for clarity. It is the
// oracle the fast CPU path and the CUDA kernels are tested against.
#ifndef QAQKV_KERNELS_INTERNAL_REFERENCE_H_
#define QAQKV_KERNELS_INTERNAL_REFERENCE_H_

#include "kernels/internal/tensor_codec.h"

namespace qaqkv::internal {

// Outliers of one group: the k smallest values (ties: lower index first), then
// the k largest of the rest (same tie rule); returned sorted by index.
std::vector<int> SelectOutliers(std::span<const float> values, int k);

// `x` is the tensor in canonical [kv_heads][tokens][head_dim] order, already
// divided by the channel scales when task.channel_scale is set; `raw` holds
// the unscaled values (what exact groups and outliers store).
void EncodeTensorReference(const TensorTask& task, const float* x, const float* raw,
                           TensorEncoding& enc);

// Rebuilds the tensor in canonical order. `view` came from ParseSection, so
// every size has been checked.
void DecodeTensorReference(const SectionView& view, float* out);

// The last step of decoding a rotated (-rh) section into canonical order:
// the rows of its quantized groups, decoded still rotated, are rotated back
// and get their key centres. Exact groups are left as they are.
// `rotate_back` is RotateRow(row, head_dim, true) or a backend's equal.
void UnrotateQuantizedRows(const SectionView& view, float* out,
                           void (*rotate_back)(float* row, int head_dim));

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_REFERENCE_H_
