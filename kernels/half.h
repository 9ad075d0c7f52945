// Exact, portable fp16 / bf16 <-> fp32 conversions with explicit rounding.
// Host and device code share them (QAQKV_HD), so every backend rounds alike;
// tools and tests use them to build and compare KV.
//
// Thread-safety: pure functions.
#ifndef QAQKV_KERNELS_HALF_H_
#define QAQKV_KERNELS_HALF_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define QAQKV_HD __host__ __device__ __forceinline__
#else
#define QAQKV_HD inline
#endif

namespace qaqkv {

QAQKV_HD uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
QAQKV_HD float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

QAQKV_HD float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // inf/nan
  if (exp != 0) return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return BitsFloat(sign);
  // Subnormal: value = mant * 2^-24, exact in fp32.
  const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

// Round to nearest, ties to even (IEEE default; what F16C and CUDA produce).
QAQKV_HD uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or nan; keep nan quiet and non-zero
    return sign | (ax > 0x7f800000u ? static_cast<uint16_t>(0x7e00u | ((ax >> 13) & 0x3ffu))
                                    : uint16_t{0x7c00u});
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {                          // result subnormal or zero
    if (ax < 0x33000000u) return sign;             // < 2^-25 rounds to zero
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = ((ax >> 13) - (112u << 10));
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) ++r;
  return sign | static_cast<uint16_t>(r);
}

// The fp16 value next below / above a finite fp16 value (toward -inf / +inf).
QAQKV_HD uint16_t HalfNextDown(uint16_t h) {
  if (h == 0x0000u || h == 0x8000u) return 0x8001u;
  return (h & 0x8000u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}
QAQKV_HD uint16_t HalfNextUp(uint16_t h) {
  if (h == 0x0000u || h == 0x8000u) return 0x0001u;
  return (h & 0x8000u) ? static_cast<uint16_t>(h - 1) : static_cast<uint16_t>(h + 1);
}

// The conversions above as a policy type, so shared math can be instantiated
// with hardware conversions (F16C, CUDA) that give the same results.
struct SoftHalf {
  QAQKV_HD static uint16_t ToHalf(float f) { return FloatToHalf(f); }
  QAQKV_HD static float ToFloat(uint16_t h) { return HalfToFloat(h); }
};

// Directed roundings used for a group's offset (down) and step (up), so that
// every non-outlier value lies inside [lo, lo + 2^B * s] and decodes within
// half a step of itself.
template <typename Half = SoftHalf>
QAQKV_HD uint16_t FloatToHalfDown(float f) {
  uint16_t h = Half::ToHalf(f);
  if (Half::ToFloat(h) > f) h = HalfNextDown(h);
  return h;
}
template <typename Half = SoftHalf>
QAQKV_HD uint16_t FloatToHalfUp(float f) {
  uint16_t h = Half::ToHalf(f);
  if (Half::ToFloat(h) < f) h = HalfNextUp(h);
  return h;
}

QAQKV_HD float Bf16ToFloat(uint16_t b) { return BitsFloat(uint32_t{b} << 16); }
QAQKV_HD uint16_t FloatToBf16(float f) {
  uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

inline constexpr float kHalfMax = 65504.0f;

}  // namespace qaqkv

#endif  // QAQKV_KERNELS_HALF_H_
