#include "kernels/internal/fast.h"

namespace qaqkv {

bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
  return has;
}

bool CpuHasAvx512() {
  static const bool has = CpuHasAvx2() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return has;
}

namespace internal {

bool FastPathSupports(const PageHeader& h) {
  const bool kind_ok = h.kind == CodecKind::kInt8 || h.kind == CodecKind::kInt4 ||
                       h.kind == CodecKind::kQaq;
  return kind_ok && CpuHasAvx2() && (h.flags & (kFlagLayerGroups | kFlagKeyChannelScale)) == 0 &&
         h.outliers <= 1 && h.head_dim <= kMaxHeadDim;
}

absl::Status EncodeTensorFast(const TensorTask& task, const TensorView& in, TensorEncoding& enc) {
  return CpuHasAvx512() ? avx512::EncodeHeadTensor(task, in, enc)
                        : avx2::EncodeHeadTensor(task, in, enc);
}

bool DecodeTensorFast(const PageHeader& header, const SectionView& view, void* out, DType dtype,
                      Layout layout) {
  if (!FastPathSupports(header)) return false;
  if (CpuHasAvx512()) {
    avx512::DecodeHeadTensor(view, out, dtype, layout);
  } else {
    avx2::DecodeHeadTensor(view, out, dtype, layout);
  }
  return true;
}

}  // namespace internal
}  // namespace qaqkv
