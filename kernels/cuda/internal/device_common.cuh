// Device helpers shared by the encode/decode kernels: element addressing of
// every group geometry, value loads and stores in every dtype, unaligned
// page fields, the outlier order, and the page layout on the device. The
// per-group math itself is kernels/internal/group_math.h (shared with the CPU).
#ifndef QAQKV_KERNELS_CUDA_INTERNAL_DEVICE_COMMON_CUH_
#define QAQKV_KERNELS_CUDA_INTERNAL_DEVICE_COMMON_CUH_

#include <cstdint>

#include "kernels/cuda/internal/launch.h"
#include "kernels/internal/group_math.h"
#include "kernels/half.h"

namespace qaqkv::cuda_internal {

using ::qaqkv::Bf16ToFloat;
using ::qaqkv::FloatToBf16;
using ::qaqkv::FloatToHalf;
using ::qaqkv::HalfToFloat;

constexpr unsigned kFullMask = 0xffffffffu;

struct Coord {
  int64_t h, t, d;
};

__device__ __forceinline__ int GroupSize(const Geo& geo, int64_t g) {
  switch (geo.kind) {
    case kGeoHead: return geo.head_dim;
    case kGeoLayer: return geo.kv_heads * geo.head_dim;
    case kGeoKiviKey: {
      const int64_t blocks = (geo.quant_tokens + geo.kivi_group - 1) / geo.kivi_group;
      const int64_t j = (g / geo.head_dim) % blocks;
      const int64_t left = geo.quant_tokens - j * geo.kivi_group;
      return static_cast<int>(left < geo.kivi_group ? left : geo.kivi_group);
    }
    default: {
      const int64_t chunks = (geo.head_dim + geo.kivi_group - 1) / geo.kivi_group;
      const int64_t left = geo.head_dim - (g % chunks) * geo.kivi_group;
      return static_cast<int>(left < geo.kivi_group ? left : geo.kivi_group);
    }
  }
}

// Element i of group g (GroupGeometry::ForEachIndex, page-format.md "Groups").
__device__ __forceinline__ Coord ElementCoord(const Geo& geo, int64_t g, int i) {
  const int64_t D = geo.head_dim;
  switch (geo.kind) {
    case kGeoHead: return {g % geo.kv_heads, g / geo.kv_heads, i};
    case kGeoLayer: return {i / D, g, i % D};
    case kGeoKiviKey: {
      const int64_t blocks = (geo.quant_tokens + geo.kivi_group - 1) / geo.kivi_group;
      const int64_t j = (g / D) % blocks;
      return {g / D / blocks, j * geo.kivi_group + i, g % D};
    }
    default: {
      const int64_t chunks = (D + geo.kivi_group - 1) / geo.kivi_group;
      const int64_t c = g % chunks, t = (g / chunks) % geo.quant_tokens;
      return {g / chunks / geo.quant_tokens, t, c * geo.kivi_group + i};
    }
  }
}

__device__ __forceinline__ int64_t CanonicalIndex(const Geo& geo, Coord c) {
  return (c.h * geo.tokens + c.t) * geo.head_dim + c.d;
}

__device__ __forceinline__ float Load(const InView& in, const Geo& geo, Coord c) {
  const int64_t off = in.layout == 1 ? (c.h * geo.tokens + c.t) * geo.head_dim + c.d
                                     : (c.t * geo.kv_heads + c.h) * geo.head_dim + c.d;
  switch (in.dtype) {
    case 1: return HalfToFloat(static_cast<const uint16_t*>(in.data)[off]);
    case 2: return Bf16ToFloat(static_cast<const uint16_t*>(in.data)[off]);
    default: return static_cast<const float*>(in.data)[off];
  }
}

__device__ __forceinline__ void Store(const OutView& out, const Geo& geo, Coord c, float v) {
  int64_t off;
  if (out.block_table != nullptr) {
    const int64_t pos = out.first_token + c.t;
    const int64_t block = out.block_table[pos / out.block_size];
    off = ((block * out.block_size + pos % out.block_size) * geo.kv_heads + c.h) * geo.head_dim +
          c.d;
  } else if (out.layout == 1) {
    off = (c.h * geo.tokens + c.t) * geo.head_dim + c.d;
  } else {
    off = (c.t * geo.kv_heads + c.h) * geo.head_dim + c.d;
  }
  switch (out.dtype) {
    case 1: static_cast<uint16_t*>(out.data)[off] = FloatToHalf(v); break;
    case 2: static_cast<uint16_t*>(out.data)[off] = FloatToBf16(v); break;
    default: static_cast<float*>(out.data)[off] = v; break;
  }
}

// Sections are packed without alignment: multi-byte fields go byte by byte.
__device__ __forceinline__ void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
__device__ __forceinline__ void PutU32(uint8_t* p, uint32_t v) {
  for (int b = 0; b < 4; ++b) p[b] = static_cast<uint8_t>(v >> (8 * b));
}
__device__ __forceinline__ uint16_t GetU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
__device__ __forceinline__ uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

__device__ __forceinline__ int Nibble(int bits) { return bits == internal::kExactWidth ? 0 : bits; }

// A value and its index inside the group; i < 0 means "none".
struct Key {
  float v;
  int i;
};
// The reference's orders (SelectOutliers, std::min / std::max over the
// group): ascending value, and descending value, lower index first on ties in
// both. -0 and +0 tie, as they do for std::stable_sort.
__device__ __forceinline__ bool AscBefore(Key a, Key b) {
  return a.v < b.v || (a.v == b.v && a.i < b.i);
}
__device__ __forceinline__ bool DescBefore(Key a, Key b) {
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}
template <bool kDesc>
__device__ __forceinline__ Key Better(Key a, Key b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  return (kDesc ? DescBefore(b, a) : AscBefore(b, a)) ? b : a;
}
// The same orders as unsigned integers, so a min or max is a compare and a
// select: the value's bits made monotonic (-0 equal to +0, as the
// comparisons above have it), then the index (in DescKey a lower index is a
// larger key), and in bit 0 the value's sign, so KeyValue recovers a -0.
__device__ __forceinline__ uint32_t OrderedBits(float v) {
  const uint32_t u = __float_as_uint(v + 0.0f);  // -0 + 0 is +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ unsigned long long AscKey(float v, int i) {
  return (static_cast<unsigned long long>(OrderedBits(v)) << 32) |
         (static_cast<unsigned long long>(static_cast<uint32_t>(i)) << 1) |
         (__float_as_uint(v) >> 31);
}
__device__ __forceinline__ unsigned long long DescKey(float v, int i) {
  return (static_cast<unsigned long long>(OrderedBits(v)) << 32) |
         (static_cast<unsigned long long>(0x7fffffffu - static_cast<uint32_t>(i)) << 1) |
         (__float_as_uint(v) >> 31);
}
__device__ __forceinline__ float KeyValue(unsigned long long key) {
  const uint32_t o = static_cast<uint32_t>(key >> 32);
  const uint32_t u = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
  return __uint_as_float(u | (static_cast<uint32_t>(key & 1) << 31));
}
// "No threshold": no key is <= kNoSmall or >= kNoLarge.
constexpr unsigned long long kNoSmall = 0, kNoLarge = ~0ull;

// The same test with the thresholds' values sv = KeyValue(small_key) and
// lv = KeyValue(large_key) at hand: values strictly outside [sv, lv] are
// outliers and values strictly inside are not, so only a value equal to a
// threshold's (a tie, or -0 against +0) needs the keys.
__device__ __forceinline__ bool IsOutlierByValue(int k, unsigned long long small_key,
                                                 unsigned long long large_key, float sv,
                                                 float lv, float v, int i) {
  if (k == 0) return false;
  if (v < sv || v > lv) return true;
  if (v > sv && v < lv) return false;
  return AscKey(v, i) <= small_key || DescKey(v, i) >= large_key;
}

// Whether element i (value v) is one of the group's 2k outliers: at or
// below the k-th smallest, or at or above the k-th largest of the rest.
__device__ __forceinline__ bool IsOutlier(int k, unsigned long long small_key,
                                          unsigned long long large_key, float v, int i) {
  return k > 0 && (AscKey(v, i) <= small_key || DescKey(v, i) >= large_key);
}

__device__ __forceinline__ int WidthOf(const TensorParams& p, const uint8_t* page,
                                       const SectionLayout& layout, int64_t g) {
  if (!p.variable_widths) return p.fixed_bits;
  return (page[layout.widths + (g >> 1)] >> ((g & 1) * 4)) & 0xf;
}

// The width nibbles of groups g and g + 1 (their byte is written once, by
// the even group).
__device__ __forceinline__ void PutWidths(const TensorParams& p, const GroupInfo* info, int64_t g,
                                          const SectionLayout& layout, uint8_t* page) {
  if (!p.variable_widths || (g & 1) != 0) return;
  int b = Nibble(info[g].bits);
  if (g + 1 < p.geo.groups) b |= Nibble(info[g + 1].bits) << 4;
  page[layout.widths + g / 2] = static_cast<uint8_t>(b);
}

// Offset and step of quantized group q (the q-th group not kept exactly).
__device__ __forceinline__ void PutOffsetAndStep(const SectionLayout& layout, uint8_t* page,
                                                 uint64_t q, const GroupInfo& gi) {
  PutU16(page + layout.lo + 2 * q, gi.lo);
  PutU16(page + layout.step + 2 * q, gi.step);
}

// Outlier `slot` of the section: element i of its group, value x.
__device__ __forceinline__ void PutOutlier(const TensorParams& p, const SectionLayout& layout,
                                           uint8_t* page, uint64_t slot, float x, int i) {
  PutU16(page + layout.outlier_values + 2 * slot, FloatToHalf(x));
  if (p.index_bytes == 1) {
    page[layout.outlier_index + slot] = static_cast<uint8_t>(i);
  } else {
    PutU16(page + layout.outlier_index + 2 * slot, static_cast<uint16_t>(i));
  }
}

// What group g and groups 0..g contribute to a section being decoded: from
// the scans, or, with count == nullptr (fixed width, no exact group, all
// groups of n values: the decoder skips the scan), computed.
__device__ __forceinline__ void DecodeCounts(const TensorParams& p, const GroupCount* count,
                                             const GroupCount* scanned, int64_t g, int n,
                                             GroupCount& own, GroupCount& upto) {
  if (count == nullptr) {
    own = GroupCount{0, 0, static_cast<uint64_t>(n - 2 * p.outliers) * p.fixed_bits};
    upto = GroupCount{0, 0, own.code_bits * static_cast<uint64_t>(g + 1)};
    return;
  }
  own = count[g];
  upto = scanned[g];
}

// Group g's error target (qaq).
__device__ __forceinline__ float GroupE(const TensorParams& p, int64_t g) {
  switch (p.e_mode) {
    case kEScalar: return p.e_scalar;
    case kEPerHead: return p.e_per_head[g % p.geo.kv_heads];
    default: return p.group_e[g];
  }
}

// The analysis result of a group kept exactly (non-finite values).
__device__ __forceinline__ void WriteExactGroup(int64_t g, int n, GroupInfo* info,
                                                GroupCount* count) {
  GroupInfo gi{};
  gi.bits = internal::kExactWidth;
  info[g] = gi;
  count[g] = GroupCount{1, static_cast<uint64_t>(n), 0};
}

// The analysis result of a finite group: its outlier thresholds, the range
// [lo, hi] of the other values, and the width, offset and step that follow.
__device__ __forceinline__ void WriteGroup(const TensorParams& p, int64_t g, int n,
                                           unsigned long long small_key,
                                           unsigned long long large_key, float lo, float hi,
                                           GroupInfo* info, GroupCount* count) {
  const int k = p.outliers;
  int bits = p.fixed_bits;
  if (p.variable_widths) {
    const float e = GroupE(p, g);
    const float range = hi - HalfToFloat(::qaqkv::FloatToHalfDown(lo));
    bits = e < 0 ? p.b_max : internal::BitWidthFor(range, e, p.b_min, p.b_max);
  }
  const internal::GroupParams gp = internal::MakeGroupParams(lo, hi, bits);
  GroupInfo gi;
  gi.small_key = small_key;
  gi.large_key = large_key;
  gi.lo = gp.lo;
  gi.step = gp.step;
  gi.bits = static_cast<uint8_t>(gp.bits);
  info[g] = gi;
  count[g] = gp.bits == internal::kExactWidth
                 ? GroupCount{1, static_cast<uint64_t>(n), 0}
                 : GroupCount{0, 0, static_cast<uint64_t>(n - 2 * k) * gp.bits};
}

// Both sections' layouts from the scans' totals (PageTarget).
__device__ __forceinline__ SectionLayout DeviceLayout(const PageTarget& t, int which) {
  auto total = [&](int s) {
    return t.shape[s].groups > 0 ? t.scanned[s][t.shape[s].groups - 1] : GroupCount{0, 0, 0};
  };
  const SectionLayout k = LayoutSection(t.base, t.shape[0], total(0));
  return which == 0 ? k : LayoutSection(k.end, t.shape[1], total(1));
}

// DeviceLayout computed once per block (some hundred 64-bit operations) and
// shared. Every thread of the block must call it, before any returns.
__device__ __forceinline__ SectionLayout BlockLayout(const PageTarget& t, int which) {
  __shared__ SectionLayout layout;
  if (threadIdx.x == 0) layout = DeviceLayout(t, which);
  __syncthreads();
  return layout;
}

// Where codes go: 32-bit words of the page (the buffer is cudaMalloc-aligned),
// except the section's partial first and last word, which go to the edge
// words (PageTarget::edges) and are merged byte by byte at the end.
struct CodeSink {
  uint32_t* words = nullptr;
  uint32_t* edges = nullptr;  // this section's two
  int64_t first_edge = -1, last_edge = -1;
  uint64_t c0 = 0;  // bit of the page where the section's codes start
};

__device__ __forceinline__ CodeSink MakeCodeSink(const PageTarget& t, int which,
                                                 const SectionLayout& l) {
  CodeSink s;
  s.words = reinterpret_cast<uint32_t*>(t.page);
  s.edges = t.edges + 2 * which;
  s.c0 = l.codes * 8;
  const uint64_t c1 = l.residual * 8;
  if (c1 > s.c0) {
    if (s.c0 % 32 != 0) s.first_edge = static_cast<int64_t>(s.c0 / 32);
    if (c1 % 32 != 0) s.last_edge = static_cast<int64_t>(c1 / 32);
  }
  return s;
}

__device__ __forceinline__ uint32_t* SinkWord(const CodeSink& s, int64_t w) {
  if (w == s.first_edge) return s.edges;
  if (w == s.last_edge) return s.edges + 1;
  return s.words + w;
}

// ORs `code` (bits wide) in at bit `bit` of the section's codes.
__device__ __forceinline__ void OrCode(const CodeSink& s, uint64_t bit, uint32_t code, int bits) {
  const uint64_t p = s.c0 + bit;
  const int64_t w = static_cast<int64_t>(p >> 5);
  const int shift = static_cast<int>(p & 31);
  atomicOr(SinkWord(s, w), code << shift);
  if (shift + bits > 32) atomicOr(SinkWord(s, w + 1), code >> (32 - shift));
}

// Host side: the size of the groups if the sub-warp kernels take this
// geometry (groups contiguous in memory: head groups in either layout, layer
// groups in NHD; 32 to 1024 values; 16-byte aligned data), else 0 (the
// block-per-group kernels).
inline int WarpGroupSize(const Geo& geo, int layout, const void* data) {
  int64_t n = 0;
  if (geo.kind == kGeoHead) n = geo.head_dim;
  if (geo.kind == kGeoLayer && layout == 0) n = int64_t{geo.kv_heads} * geo.head_dim;
  if (reinterpret_cast<uintptr_t>(data) % 16 != 0) return 0;
  return n == 32 || n == 64 || n == 128 || n == 256 || n == 512 || n == 1024 ? static_cast<int>(n)
                                                                             : 0;
}

// The sub-warp kernels (warp_kernels.cu); n from WarpGroupSize.
cudaError_t LaunchAnalyzeWarp(int n, const TensorParams& p, InView in, GroupInfo* info,
                              GroupCount* count, unsigned long long* bad_index,
                              cudaStream_t stream);
cudaError_t LaunchPackWarp(int n, const TensorParams& p, InView in, const GroupInfo* info,
                           const GroupCount* count, const PageTarget& t, int which,
                           cudaStream_t stream);
cudaError_t LaunchDecodeWarp(int n, const TensorParams& p, const uint8_t* page,
                             const SectionLayout& layout, const GroupCount* count,
                             const GroupCount* scanned, OutView out, cudaStream_t stream);

}  // namespace qaqkv::cuda_internal

#endif  // QAQKV_KERNELS_CUDA_INTERNAL_DEVICE_COMMON_CUH_
