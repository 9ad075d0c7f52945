// What every encoder backend (CPU reference, CPU fast path, CUDA) derives from
// EncodePage's arguments before it touches a tensor: the argument checks, the
// page header and QAQ's per-group error targets. One implementation, so the
// backends cannot disagree on them.
#ifndef QAQKV_KERNELS_INTERNAL_ENCODE_PLAN_H_
#define QAQKV_KERNELS_INTERNAL_ENCODE_PLAN_H_

#include <vector>

#include "absl/status/status.h"
#include "kernels/codec.h"
#include "kernels/internal/page_format.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv::internal {

// Checks config, shape and side inputs (not the tensor views): the same
// kInvalidArgument errors, with the same messages, as EncodePage.
absl::Status ValidateEncodeArgs(const CodecConfig& config, const PageShape& shape,
                                const QaqSideInputs& side);

// The page header for `config` and `shape`; k_bytes and v_bytes are left 0.
PageHeader MakePageHeader(const CodecConfig& config, const PageShape& shape);

// kInvalidArgument when a decoder was told to expect another shape than
// the page's (`expected` null: any shape).
absl::Status CheckExpectedShape(const PageShape& shape, const PageShape* expected);

// QAQ's per-group error targets in the form a backend can use without a
// table per group: one value for all groups, or one per KV head (group g
// has head g % kv_heads); only values with attention side inputs need the
// whole table (kTable: call FillGroupE).
struct GroupEModel {
  enum class Kind { kScalar, kPerHead, kTable };
  Kind kind = Kind::kScalar;
  float scalar = 0;             // kScalar
  std::vector<float> per_head;  // kPerHead
  float ev = 0;                 // values: sqrt(12) sigma_X / sqrt(T)
};
GroupEModel ModelGroupE(const CodecConfig& config, const PageShape& shape,
                        const QaqSideInputs& side, bool keys, const TensorTask& task);

// QAQ only: fills task.group_e (sqrt(12) * sigma per group, negative for
// b_max) for the keys or the values. Key targets account for
// task.channel_scale when it is set, so it must be filled first.
void FillGroupE(const CodecConfig& config, const PageShape& shape, const QaqSideInputs& side,
                bool keys, TensorTask& task);

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_ENCODE_PLAN_H_
