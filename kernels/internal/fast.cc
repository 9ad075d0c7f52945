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
