// XXH3-64, the page checksum (docs/page-format.md), for every module that
// computes or checks one. Debian's libxxhash is built for the baseline
// x86-64 CPU, so its XXH3_64bits runs the SSE2 loop: 18.6 GB/s on a 256 KiB
// page on the development VM, and 22% of the server's CPU under puts at four
// clients. The same library's x86 dispatcher picks the AVX2 or AVX-512 loop
// at run time: 41 GB/s there. XXH3's value does not depend on the loop, so
// pages written either way check the same.
#ifndef QAQKV_KERNELS_INTERNAL_XXH3_H_
#define QAQKV_KERNELS_INTERNAL_XXH3_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#define XXH_DISPATCH_DISABLE_REPLACE  // call the dispatcher by name, below
#include "xxh_x86dispatch.h"
#else
#include "xxhash.h"
#endif

namespace qaqkv::internal {

inline uint64_t Xxh3(const void* data, size_t size) {
#if defined(__x86_64__) || defined(__i386__)
  return XXH3_64bits_dispatch(data, size);
#else
  return XXH3_64bits(data, size);
#endif
}

// True when the `size` bytes at `page` end with the little-endian XXH3-64
// of everything before them: the page trailer (docs/page-format.md). Both
// the codec and storage check it; storage stores pages as opaque bytes and
// needs nothing else of the format.
inline bool TrailerChecksumOk(const uint8_t* page, size_t size) {
  if (size < sizeof(uint64_t)) return false;
  uint64_t stored;
  std::memcpy(&stored, page + size - sizeof(uint64_t), sizeof(uint64_t));
  return Xxh3(page, size - sizeof(uint64_t)) == stored;
}

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_XXH3_H_
