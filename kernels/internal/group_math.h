// Per-group quantization math shared by every backend (CPU reference, CPU fast
// path, CUDA). Keeping it in one header is what makes the backends write the
// same bytes: same float32 operations in the same order, no log2, fp16 rounding
// of offsets and steps done here and only here. See docs/qaq.md sections 2-3.
#ifndef QAQKV_KERNELS_INTERNAL_GROUP_MATH_H_
#define QAQKV_KERNELS_INTERNAL_GROUP_MATH_H_

#include <cstdint>

#include "kernels/half.h"

namespace qaqkv::internal {

// Bit width 16 marks a group kept exactly as fp16 (non-finite input, or a
// range fp16 cannot express as offset + step).
inline constexpr int kExactWidth = 16;

// Smallest B in [b_min, b_max] with range <= e * 2^B, where e = sqrt(12) *
// sigma. `e` may be +inf (no constraint). Multiplying by 2^B is exact, so this
// is the same integer on every backend.
QAQKV_HD int BitWidthFor(float range, float e, int b_min, int b_max) {
  int b = b_min;
  float cap = e;
  for (int i = 0; i < b_min; ++i) cap *= 2.0f;
  while (b < b_max && !(range <= cap)) {
    cap *= 2.0f;
    ++b;
  }
  return b;
}

// e for a value group with predicted attention `a` (docs/qaq.md: sigma_t(V) =
// sigma_X / (sqrt(T) a_t)); `ev` = sqrt(12) sigma_X / sqrt(T). Negative `a`
// (not enough observations) yields -1, which selects b_max.
QAQKV_HD float ValueE(float ev, float a) {
  if (a < 0.0f) return -1.0f;
  if (!(a > 0.0f)) return __builtin_inff();
  return ev / a;
}

struct GroupParams {
  int bits = 0;       // 0..8, or kExactWidth
  uint16_t lo = 0;    // fp16 offset (rounded down)
  uint16_t step = 0;  // fp16 step (rounded up); 0 when the range is 0
};

// Offset and step of a group whose non-outlier values span [lo, hi] with bit
// width `bits`; falls back to an exact group when fp16 cannot hold them.
template <typename Half = SoftHalf>
QAQKV_HD GroupParams MakeGroupParams(float lo, float hi, int bits) {
  GroupParams p;
  p.bits = bits;
  p.lo = FloatToHalfDown<Half>(lo);
  const float lo16 = Half::ToFloat(p.lo);
  const float range = hi - lo16;
  float levels = 1.0f;
  for (int i = 0; i < bits; ++i) levels *= 2.0f;
  p.step = FloatToHalfUp<Half>(range / levels);
  const float step = Half::ToFloat(p.step);
  if (!(lo16 >= -kHalfMax) || !(step <= kHalfMax)) {
    p.bits = kExactWidth;
    p.lo = 0;
    p.step = 0;
  }
  return p;
}

// The quantizer multiplies by the fp32 reciprocal of the step instead of
// dividing (a division per value was the encoder's bottleneck). Every
// backend computes `inv_step` once per group as 1.0f / step, IEEE-rounded.
QAQKV_HD float InverseStep(float step) { return step > 0.0f ? 1.0f / step : 0.0f; }

QAQKV_HD uint32_t QuantizeValue(float x, float lo, float inv_step, int bits) {
  if (!(inv_step > 0.0f)) return 0;
  const float q = (x - lo) * inv_step;
  const float max_code = static_cast<float>((1u << bits) - 1u);
  if (!(q > 0.0f)) return 0;  // also catches -0 and values below lo
  const float f = q >= max_code ? max_code : static_cast<float>(static_cast<int32_t>(q));
  return static_cast<uint32_t>(f);
}

// Reconstruction at the midpoint of the level. fmaf is explicit so that no
// backend is free to round the product separately.
QAQKV_HD float DequantizeValue(uint32_t code, float lo, float step) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(static_cast<float>(code) + 0.5f, step, lo);
#else
  return __builtin_fmaf(static_cast<float>(code) + 0.5f, step, lo);
#endif
}

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_GROUP_MATH_H_
