// Page format v1 (docs/page-format.md): the byte layout shared by every
// backend, the little-endian readers and writers, and the bit stream of codes.
#ifndef QAQKV_KERNELS_INTERNAL_PAGE_FORMAT_H_
#define QAQKV_KERNELS_INTERNAL_PAGE_FORMAT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <span>
#include <vector>

#include "base/endian.h"
#include "kernels/checksum.h"
#include "kernels/codec.h"
#include "qaqkv/limits.h"

namespace qaqkv::internal {

inline constexpr uint32_t kPageMagic = 0x50514151u;  // "QAQP" little-endian
// Version 1 is every page without a version-2 feature, byte for byte as
// before version 2 existed; version 2 adds the row rotation (kFlagRotate).
inline constexpr uint16_t kPageVersion = 1;
inline constexpr uint16_t kPageVersion2 = 2;
inline constexpr size_t kHeaderBytes = 32;
inline constexpr size_t kChecksumBytes = kPageChecksumBytes;
// Where WriteHeader puts the section sizes (little-endian u32): the GPU
// encoder learns them on the device and patches them in place.
inline constexpr size_t kHeaderKBytesOffset = 24;
inline constexpr size_t kHeaderVBytesOffset = 28;
// Hard limits a header must respect; they keep size arithmetic in range and
// let a decoder reject a lying page before allocating anything.
inline constexpr int kMaxTokens = static_cast<int>(limits::kMaxPageTokens);
inline constexpr int kMaxKvHeads = static_cast<int>(limits::kMaxKvHeads);
inline constexpr int kMaxHeadDim = static_cast<int>(limits::kMaxHeadDim);
inline constexpr int64_t kMaxPageValues = static_cast<int64_t>(limits::kMaxPageValues);

inline constexpr uint8_t kFlagLayerGroups = 1u << 0;
inline constexpr uint8_t kFlagKeyChannelScale = 1u << 1;
inline constexpr uint8_t kFlagKeyChannelCenter = 1u << 2;
inline constexpr uint8_t kFlagRotate = 1u << 3;         // version 2
inline constexpr uint8_t kFlagEntropyCoded = 1u << 4;   // version 2

// The version a page with these flags is written as.
inline uint16_t PageVersionFor(uint8_t flags) {
  return (flags & (kFlagRotate | kFlagEntropyCoded)) ? kPageVersion2 : kPageVersion;
}

struct PageHeader {
  CodecKind kind = CodecKind::kQaq;
  uint8_t flags = 0;
  uint32_t tokens = 0;
  uint16_t kv_heads = 0;
  uint16_t head_dim = 0;
  uint16_t outliers = 0;  // k per side per group (2k outliers per group)
  uint16_t kivi_group = 0;
  uint32_t kivi_residual = 0;
  uint32_t k_bytes = 0;
  uint32_t v_bytes = 0;
};

// The page's little-endian fields, under the names the codec backends use.
inline void PutU16(uint8_t* p, uint16_t v) { base::StoreLe16(p, v); }
inline void PutU32(uint8_t* p, uint32_t v) { base::StoreLe32(p, v); }
inline void PutU64(uint8_t* p, uint64_t v) { base::StoreLe64(p, v); }
inline uint16_t GetU16(const uint8_t* p) { return base::LoadLe16(p); }
inline uint32_t GetU32(const uint8_t* p) { return base::LoadLe32(p); }
inline uint64_t GetU64(const uint8_t* p) { return base::LoadLe64(p); }

void WriteHeader(const PageHeader& h, uint8_t* out);
// Parses and sanity-checks the header of a page whose checksum already passed.
absl::StatusOr<PageHeader> ReadHeader(std::span<const uint8_t> page);
// Verifies length and XXH3-64; returns the page without its checksum.
absl::StatusOr<std::span<const uint8_t>> VerifyChecksum(std::span<const uint8_t> page);
uint64_t PageChecksum(std::span<const uint8_t> bytes);

// A byte vector whose resize does not zero the new bytes: code buffers are
// sized for the worst case and then written once.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using ByteBuffer = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

// Codes packed LSB-first: bit p of the stream is bit p%8 of byte p/8.
class BitWriter {
 public:
  void Reserve(size_t bits) { bytes_.reserve(bits / 8 + 16); }
  // Appends the low `n` bits of `v`, n <= 56.
  void Put(uint64_t v, int n) {
    acc_ |= v << fill_;
    fill_ += n;
    while (fill_ >= 8) {
      bytes_.push_back(static_cast<uint8_t>(acc_));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  // Takes over bytes a fast encoder already packed in this same bit order.
  void Adopt(ByteBuffer bytes) {
    bytes_ = std::move(bytes);
    acc_ = 0;
    fill_ = 0;
  }
  size_t bit_size() const { return bytes_.size() * 8 + fill_; }
  size_t byte_size() const { return bytes_.size() + (fill_ > 0 ? 1 : 0); }
  ByteBuffer Finish() {
    if (fill_ > 0) bytes_.push_back(static_cast<uint8_t>(acc_));
    acc_ = 0;
    fill_ = 0;
    return std::move(bytes_);
  }

 private:
  ByteBuffer bytes_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

// Reads `n` <= 57 bits at bit offset `pos` of `data`; the caller guarantees
// pos + n <= 8 * data.size().
inline uint64_t ReadBits(std::span<const uint8_t> data, uint64_t pos, int n) {
  const size_t byte = pos >> 3;
  const int shift = static_cast<int>(pos & 7);
  uint64_t v = 0;
  if (byte + 8 <= data.size()) {
    std::memcpy(&v, data.data() + byte, 8);
  } else {
    std::memcpy(&v, data.data() + byte, data.size() - byte);
  }
  v >>= shift;
  return n == 64 ? v : (v & ((uint64_t{1} << n) - 1));
}

// How one tensor (K or V) of a page is cut into groups. Element i of group g
// lives at canonical index Index(g, i) of the [kv_heads][tokens][head_dim]
// (HND) array.
struct GroupGeometry {
  enum class Kind : uint8_t { kHead, kLayer, kKiviKey, kKiviValue } kind = Kind::kHead;
  int tokens = 0, kv_heads = 0, head_dim = 0;
  int quant_tokens = 0;  // tokens covered by groups (kivi: excludes the residual)
  int kivi_group = 0;

  int64_t groups() const;
  int GroupSize(int64_t g) const;
  // Largest group size: decides the width of outlier indices.
  int MaxGroupSize() const;
  template <typename F>
  void ForEachIndex(int64_t g, F&& f) const;  // f(i, canonical_index)
};

GroupGeometry MakeGeometry(const PageHeader& h, bool keys);

// Size in bytes of one outlier index for groups of up to `max_group` values.
inline int OutlierIndexBytes(int max_group) { return max_group <= 256 ? 1 : 2; }

template <typename F>
void GroupGeometry::ForEachIndex(int64_t g, F&& f) const {
  const int64_t D = head_dim, T = tokens;
  switch (kind) {
    case Kind::kHead: {  // g = t * kv_heads + h: token-major, the order of NHD memory
      const int64_t t = g / kv_heads, h = g % kv_heads;
      const int64_t base = (h * T + t) * D;
      for (int i = 0; i < head_dim; ++i) f(i, base + i);
      break;
    }
    case Kind::kLayer: {  // g = t, element i = h * D + d
      for (int h = 0; h < kv_heads; ++h)
        for (int d = 0; d < head_dim; ++d) f(h * head_dim + d, (h * T + g) * D + d);
      break;
    }
    case Kind::kKiviKey: {  // g = (h * blocks + j) * D + d
      const int64_t blocks = (quant_tokens + kivi_group - 1) / kivi_group;
      const int64_t d = g % D, j = (g / D) % blocks, h = g / D / blocks;
      const int64_t t0 = j * kivi_group;
      const int64_t n = std::min<int64_t>(kivi_group, quant_tokens - t0);
      for (int64_t i = 0; i < n; ++i) f(static_cast<int>(i), (h * T + t0 + i) * D + d);
      break;
    }
    case Kind::kKiviValue: {  // g = (h * quant_tokens + t) * chunks + c
      const int64_t chunks = (D + kivi_group - 1) / kivi_group;
      const int64_t c = g % chunks, t = (g / chunks) % quant_tokens,
                    h = g / chunks / quant_tokens;
      const int64_t d0 = c * kivi_group;
      const int64_t n = std::min<int64_t>(kivi_group, D - d0);
      for (int64_t i = 0; i < n; ++i) f(static_cast<int>(i), (h * T + t) * D + d0 + i);
      break;
    }
  }
}

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_PAGE_FORMAT_H_
