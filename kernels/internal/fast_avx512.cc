#define QAQKV_FAST_NS avx512
#include "kernels/internal/fast_impl.inc"
