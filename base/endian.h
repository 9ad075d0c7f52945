// Little-endian stores and loads of 16-, 32- and 64-bit integers at any
// address. Records on disk and the bytes hashed into keys are little-endian
// whatever the host, so they are written and read through these rather than
// by copying an integer's memory. On a little-endian host each one compiles
// to a single (unaligned) move.
#ifndef QAQKV_BASE_ENDIAN_H_
#define QAQKV_BASE_ENDIAN_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace qaqkv::base {
namespace endian_internal {

static_assert(std::endian::native == std::endian::little ||
                  std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

// `v` with its bytes in the opposite order (std::byteswap is C++23).
template <typename T>
constexpr T ByteSwap(T v) {
  static_assert(std::is_unsigned_v<T>);
  T out = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    out = static_cast<T>((out << 8) | (v & 0xff));
    v = static_cast<T>(v >> 8);
  }
  return out;
}

template <typename T>
constexpr T ToLittle(T v) {
  if constexpr (std::endian::native == std::endian::big) {
    return ByteSwap(v);
  } else {
    return v;
  }
}

// memcpy, not a cast: `p` may be unaligned and may alias anything.
template <typename T>
void Store(void* p, T v) {
  v = ToLittle(v);
  std::memcpy(p, &v, sizeof(T));
}

template <typename T>
T Load(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return ToLittle(v);
}

}  // namespace endian_internal

// Writes `v` to the 2, 4 or 8 bytes at `p`, least significant byte first.
// `p` needs no alignment. A signed value goes through its unsigned type
// (two's complement), which keeps its bytes.
inline void StoreLe16(void* p, uint16_t v) { endian_internal::Store(p, v); }
inline void StoreLe32(void* p, uint32_t v) { endian_internal::Store(p, v); }
inline void StoreLe64(void* p, uint64_t v) { endian_internal::Store(p, v); }

// The 2, 4 or 8 bytes at `p` read least significant byte first. `p` needs no
// alignment.
inline uint16_t LoadLe16(const void* p) { return endian_internal::Load<uint16_t>(p); }
inline uint32_t LoadLe32(const void* p) { return endian_internal::Load<uint32_t>(p); }
inline uint64_t LoadLe64(const void* p) { return endian_internal::Load<uint64_t>(p); }

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_ENDIAN_H_
