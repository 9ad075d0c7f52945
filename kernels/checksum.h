// The page checksum (docs/page-format.md): XXH3-64, seed 0, of every byte
// before the 8-byte little-endian trailer. The codec writes and checks it;
// storage checks it on every page it reads back and needs nothing else of
// the page format.
//
// Debian's libxxhash is built for the baseline x86-64 CPU, so its
// XXH3_64bits runs the SSE2 loop; the same library's x86 dispatcher picks
// the AVX2 or AVX-512 loop at run time, about twice as fast
// (docs/performance.md). XXH3's value does not depend on the loop, so pages
// written either way check the same.
//
// Thread-safety: pure functions.
#ifndef QAQKV_KERNELS_CHECKSUM_H_
#define QAQKV_KERNELS_CHECKSUM_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#define XXH_DISPATCH_DISABLE_REPLACE  // call the dispatcher by name, below
#include "xxh_x86dispatch.h"
#else
#include "xxhash.h"
#endif

namespace qaqkv {

inline constexpr size_t kPageChecksumBytes = 8;

// XXH3-64 (seed 0) of `size` bytes.
inline uint64_t PageChecksum(const void* data, size_t size) {
#if defined(__x86_64__) || defined(__i386__)
  return XXH3_64bits_dispatch(data, size);
#else
  return XXH3_64bits(data, size);
#endif
}

// PageChecksum of bytes given in pieces, so an encoder can hash what it just
// wrote while it is still in cache. Same value as one PageChecksum call over
// the concatenation.
class PageHasher {
 public:
  PageHasher() : state_(XXH3_createState()) { XXH3_64bits_reset(state_.get()); }
  void Update(const void* data, size_t size) {
#if defined(__x86_64__) || defined(__i386__)
    XXH3_64bits_update_dispatch(state_.get(), data, size);
#else
    XXH3_64bits_update(state_.get(), data, size);
#endif
  }
  uint64_t Digest() const { return XXH3_64bits_digest(state_.get()); }

 private:
  struct Free {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
  };
  std::unique_ptr<XXH3_state_t, Free> state_;
};

// True when the `size` bytes at `page` end with the little-endian XXH3-64
// of everything before them. False for fewer than 8 bytes.
inline bool PageChecksumOk(const void* page, size_t size) {
  if (size < kPageChecksumBytes) return false;
  const auto* bytes = static_cast<const uint8_t*>(page);
  uint64_t stored;
  std::memcpy(&stored, bytes + size - kPageChecksumBytes, kPageChecksumBytes);
  return PageChecksum(bytes, size - kPageChecksumBytes) == stored;
}
inline bool PageChecksumOk(std::string_view page) {
  return PageChecksumOk(page.data(), page.size());
}

}  // namespace qaqkv

#endif  // QAQKV_KERNELS_CHECKSUM_H_
