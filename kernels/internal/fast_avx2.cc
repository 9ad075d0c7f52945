#define QAQKV_FAST_NS avx2
#include "kernels/internal/fast_impl.inc"
#include "kernels/internal/fast_fp16_impl.inc"
#include "kernels/internal/fast_grouped_impl.inc"
#include "kernels/internal/fast_ec_impl.inc"
#include "kernels/internal/fast_canonical_impl.inc"
