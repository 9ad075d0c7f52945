#define QAQKV_FAST_NS avx2
#include "kernels/internal/fast_impl.inc"
