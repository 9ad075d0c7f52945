#include "kernels/internal/fast.h"

#include "kernels/internal/reference.h"

namespace qaqkv::internal {

bool FastPathSupports(const PageHeader& header) { return false; }

void EncodeTensorFast(const TensorTask& task, const float* x, const float* raw,
                      TensorEncoding& enc) {
  EncodeTensorReference(task, x, raw, enc);
}

bool DecodeTensorFast(const PageHeader& header, const SectionView& view, void* out,
                      DType dtype, Layout layout) {
  return false;
}

}  // namespace qaqkv::internal

namespace qaqkv {
bool CpuHasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2"); }
bool CpuHasAvx512() { return CpuHasAvx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"); }
}  // namespace qaqkv
