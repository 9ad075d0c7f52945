// CUDA encode/decode of page sections. One thread block per group; the
// per-group math (fp16 rounding, widths, quantizer) is the CPU's, from
// kernels/internal/group_math.h, so the bytes match the reference exactly.
// The library is compiled with --fmad=false as the CPU code is with
// -ffp-contract=off: a fused multiply-add where the reference rounds twice
// would change codes.
#include <cub/device/device_scan.cuh>

#include "kernels/cuda/internal/launch.h"
#include "kernels/internal/group_math.h"
#include "kernels/internal/half.h"

namespace qaqkv::cuda_internal {
namespace {

using internal::Bf16ToFloat;
using internal::FloatToBf16;
using internal::FloatToHalf;
using internal::HalfToFloat;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// Groups up to this many values are read from global memory once and kept in
// shared memory while outliers are selected (every head-level group, and
// layer-level groups of up to 32 heads x 128).
constexpr int kCacheValues = 4096;
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
// The first key of the block in the chosen order; every thread gets it.
template <bool kDesc>
__device__ Key BlockBest(Key k, Key* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    const Key other{__shfl_xor_sync(kFullMask, k.v, o), __shfl_xor_sync(kFullMask, k.i, o)};
    k = Better<kDesc>(k, other);
  }
  __syncthreads();  // the previous call's readers are done with scratch
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = k;
  __syncthreads();
  Key r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = Better<kDesc>(r, scratch[w]);
  return r;
}

// Whether (v, i) is one of the group's 2k outliers, given the k-th smallest
// key and the k-th largest key of the rest.
__device__ __forceinline__ bool IsOutlier(int k, Key small, Key large, Key c) {
  return k > 0 && (!AscBefore(small, c) || !DescBefore(large, c));
}

__global__ void __launch_bounds__(kThreads)
    AnalyzeKernel(TensorParams p, InView in, GroupInfo* info, GroupCount* count,
                  unsigned long long* bad_index) {
  __shared__ float cache[kCacheValues];
  __shared__ Key scratch[kWarps];
  const Geo& geo = p.geo;
  const int64_t g = blockIdx.x;
  const int n = GroupSize(geo, g);
  const bool cached = n <= kCacheValues;
  bool finite = true;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const Coord c = ElementCoord(geo, g, i);
    const float x = Load(in, geo, c);
    if (!isfinite(x)) {
      finite = false;
    } else if (fabsf(x) > internal::kHalfMax) {
      atomicMin(bad_index, static_cast<unsigned long long>(CanonicalIndex(geo, c)));
    }
    if (cached) cache[i] = x;
  }
  finite = __syncthreads_and(finite);
  auto value = [&](int i) { return cached ? cache[i] : Load(in, geo, ElementCoord(geo, g, i)); };
  if (!finite) {
    if (threadIdx.x == 0) {
      GroupInfo gi{};
      gi.bits = internal::kExactWidth;
      info[g] = gi;
      count[g] = GroupCount{1, static_cast<uint64_t>(n), 0};
    }
    return;
  }
  // Outliers by repeated selection: the j-th smallest is the first key after
  // the (j-1)-th; then the same in descending order over the rest. k is small
  // (1% of a group), so k passes over the cached group are cheap.
  const int k = p.outliers;
  Key small{0.0f, -1}, large{0.0f, -1};
  for (int j = 0; j < k; ++j) {
    Key best{0.0f, -1};
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const Key c{value(i), i};
      if (small.i >= 0 && !AscBefore(small, c)) continue;
      best = Better<false>(best, c);
    }
    small = BlockBest<false>(best, scratch);
  }
  for (int j = 0; j < k; ++j) {
    Key best{0.0f, -1};
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const Key c{value(i), i};
      if (!AscBefore(small, c)) continue;
      if (large.i >= 0 && !DescBefore(large, c)) continue;
      best = Better<true>(best, c);
    }
    large = BlockBest<true>(best, scratch);
  }
  Key lo{0.0f, -1}, hi{0.0f, -1};
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const Key c{value(i), i};
    if (IsOutlier(k, small, large, c)) continue;
    lo = Better<false>(lo, c);
    hi = Better<true>(hi, c);
  }
  lo = BlockBest<false>(lo, scratch);
  hi = BlockBest<true>(hi, scratch);
  if (threadIdx.x == 0) {
    int bits = p.fixed_bits;
    if (p.variable_widths) {
      const float e = p.group_e[g];
      const float range = hi.v - HalfToFloat(internal::FloatToHalfDown(lo.v));
      bits = e < 0 ? p.b_max : internal::BitWidthFor(range, e, p.b_min, p.b_max);
    }
    const internal::GroupParams gp = internal::MakeGroupParams(lo.v, hi.v, bits);
    GroupInfo gi;
    gi.small_v = small.v;
    gi.small_i = small.i;
    gi.large_v = large.v;
    gi.large_i = large.i;
    gi.lo = gp.lo;
    gi.step = gp.step;
    gi.bits = static_cast<uint8_t>(gp.bits);
    info[g] = gi;
    count[g] = gp.bits == internal::kExactWidth
                   ? GroupCount{1, static_cast<uint64_t>(n), 0}
                   : GroupCount{0, 0, static_cast<uint64_t>(n - 2 * k) * gp.bits};
  }
}

__global__ void __launch_bounds__(kThreads)
    PackKernel(TensorParams p, InView in, const GroupInfo* info, const GroupCount* count,
               const GroupCount* scanned, SectionLayout layout, uint8_t* page,
               uint32_t* code_words) {
  __shared__ int warp_counts[kWarps];
  const Geo& geo = p.geo;
  const int64_t g = blockIdx.x;
  const GroupInfo gi = info[g];
  const GroupCount own = count[g], upto = scanned[g];
  const uint64_t exact_before = upto.exact - own.exact;
  const int n = GroupSize(geo, g);
  if (p.variable_widths && (g & 1) == 0 && threadIdx.x == 0) {
    int b = Nibble(gi.bits);
    if (g + 1 < geo.groups) b |= Nibble(info[g + 1].bits) << 4;
    page[layout.widths + g / 2] = static_cast<uint8_t>(b);
  }
  if (gi.bits == internal::kExactWidth) {
    if (threadIdx.x == 0) PutU32(page + layout.exact_list + 4 * exact_before, static_cast<uint32_t>(g));
    const uint64_t at = layout.exact_values + 2 * (upto.exact_values - own.exact_values);
    for (int i = threadIdx.x; i < n; i += kThreads) {
      PutU16(page + at + 2 * i, FloatToHalf(Load(in, geo, ElementCoord(geo, g, i))));
    }
    return;
  }
  const uint64_t q = g - exact_before;
  if (threadIdx.x == 0) {
    PutU16(page + layout.lo + 2 * q, gi.lo);
    PutU16(page + layout.step + 2 * q, gi.step);
  }
  const float lo = HalfToFloat(gi.lo), inv = internal::InverseStep(HalfToFloat(gi.step));
  const int k = p.outliers, bits = gi.bits;
  const Key small{gi.small_v, gi.small_i}, large{gi.large_v, gi.large_i};
  const uint64_t bit0 = upto.code_bits - own.code_bits;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int seen = 0;  // outliers in earlier tiles
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + threadIdx.x;
    float x = 0.0f;
    bool outlier = false;
    if (i < n) {
      x = Load(in, geo, ElementCoord(geo, g, i));
      outlier = IsOutlier(k, small, large, Key{x, i});
    }
    // Outliers before element i, in element order: a block-wide prefix count.
    const unsigned mask = __ballot_sync(kFullMask, outlier);
    int before = __popc(mask & ((1u << lane) - 1u));
    __syncthreads();
    if (lane == 0) warp_counts[warp] = __popc(mask);
    __syncthreads();
    int tile = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) before += warp_counts[w];
      tile += warp_counts[w];
    }
    const int r = seen + before;
    if (i < n) {
      if (outlier) {
        const uint64_t slot = q * 2 * k + r;
        PutU16(page + layout.outlier_values + 2 * slot, FloatToHalf(x));
        if (p.index_bytes == 1) {
          page[layout.outlier_index + slot] = static_cast<uint8_t>(i);
        } else {
          PutU16(page + layout.outlier_index + 2 * slot, static_cast<uint16_t>(i));
        }
      } else if (bits > 0) {
        const uint32_t code = internal::QuantizeValue(x, lo, inv, bits);
        const uint64_t bit = bit0 + static_cast<uint64_t>(i - r) * bits;
        const uint64_t w = bit >> 5;
        const int shift = static_cast<int>(bit & 31);
        // Neighbouring codes (and neighbouring groups) share words: OR them in.
        atomicOr(&code_words[w], code << shift);
        if (shift + bits > 32) atomicOr(&code_words[w + 1], code >> (32 - shift));
      }
    }
    seen += tile;
  }
}

__global__ void StoreFp16Kernel(Geo geo, int32_t t0, InView in, uint8_t* page, uint64_t offset,
                                unsigned long long* bad_index) {
  const int64_t rt = geo.tokens - t0, D = geo.head_dim;
  const int64_t total = int64_t{geo.kv_heads} * rt * D;
  for (int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const Coord c{idx / D / rt, t0 + (idx / D) % rt, idx % D};
    const float x = Load(in, geo, c);
    if (bad_index != nullptr && isfinite(x) && fabsf(x) > internal::kHalfMax) {
      atomicMin(bad_index, static_cast<unsigned long long>(CanonicalIndex(geo, c)));
    }
    if (page != nullptr) PutU16(page + offset + 2 * idx, FloatToHalf(x));
  }
}

struct SmallBytes {
  uint8_t b[64];
};
__global__ void WriteBytesKernel(uint8_t* dst, SmallBytes bytes, int n) {
  if (static_cast<int>(threadIdx.x) < n) dst[threadIdx.x] = bytes.b[threadIdx.x];
}

struct CountSum {
  __host__ __device__ GroupCount operator()(const GroupCount& a, const GroupCount& b) const {
    return GroupCount{a.exact + b.exact, a.exact_values + b.exact_values,
                      a.code_bits + b.code_bits};
  }
};

__device__ __forceinline__ int WidthOf(const TensorParams& p, const uint8_t* page,
                                       const SectionLayout& layout, int64_t g) {
  if (!p.variable_widths) return p.fixed_bits;
  return (page[layout.widths + (g >> 1)] >> ((g & 1) * 4)) & 0xf;
}

__global__ void DecodeCountKernel(TensorParams p, const uint8_t* page, SectionLayout layout,
                                  uint64_t n_exact, GroupCount* count) {
  const int64_t g = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (g >= p.geo.groups) return;
  // The exact list is sorted (checked on the host): binary search.
  uint64_t a = 0, b = n_exact;
  while (a < b) {
    const uint64_t m = (a + b) / 2;
    if (GetU32(page + layout.exact_list + 4 * m) < g) a = m + 1; else b = m;
  }
  const bool exact = a < n_exact && GetU32(page + layout.exact_list + 4 * a) == g;
  const int n = GroupSize(p.geo, g);
  count[g] = exact ? GroupCount{1, static_cast<uint64_t>(n), 0}
                   : GroupCount{0, 0, static_cast<uint64_t>(n - 2 * p.outliers) *
                                          WidthOf(p, page, layout, g)};
}

__global__ void __launch_bounds__(kThreads)
    DecodeKernel(TensorParams p, const uint8_t* page, SectionLayout layout,
                 const GroupCount* count, const GroupCount* scanned, OutView out) {
  const Geo& geo = p.geo;
  const int64_t g = blockIdx.x;
  const GroupCount own = count[g], upto = scanned[g];
  const uint64_t exact_before = upto.exact - own.exact;
  const int n = GroupSize(geo, g);
  if (own.exact) {
    const uint8_t* at = page + layout.exact_values + 2 * (upto.exact_values - own.exact_values);
    for (int i = threadIdx.x; i < n; i += kThreads) {
      Store(out, geo, ElementCoord(geo, g, i), HalfToFloat(GetU16(at + 2 * i)));
    }
    return;
  }
  const uint64_t q = g - exact_before;
  const int w = WidthOf(p, page, layout, g);
  const float lo = HalfToFloat(GetU16(page + layout.lo + 2 * q));
  const float step = HalfToFloat(GetU16(page + layout.step + 2 * q));
  const int per_group = 2 * p.outliers;
  const uint8_t* oi = page + layout.outlier_index + p.index_bytes * q * per_group;
  const uint8_t* ov = page + layout.outlier_values + 2 * q * per_group;
  auto index_at = [&](int j) { return p.index_bytes == 1 ? int{oi[j]} : int{GetU16(oi + 2 * j)}; };
  const uint8_t* codes = page + layout.codes;
  const uint64_t code_bytes = layout.residual - layout.codes;
  const uint64_t bit0 = upto.code_bits - own.code_bits;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const Coord c = ElementCoord(geo, g, i);
    // Outliers are sorted by index: r = outliers before element i.
    int a = 0, b = per_group;
    while (a < b) {
      const int m = (a + b) / 2;
      if (index_at(m) < i) a = m + 1; else b = m;
    }
    float r;
    if (a < per_group && index_at(a) == i) {
      r = HalfToFloat(GetU16(ov + 2 * a));
    } else {
      uint32_t code = 0;
      if (w > 0) {
        const uint64_t bit = bit0 + static_cast<uint64_t>(i - a) * w;
        const uint64_t byte = bit >> 3;
        uint32_t v = codes[byte];
        if (byte + 1 < code_bytes) v |= uint32_t{codes[byte + 1]} << 8;
        code = (v >> (bit & 7)) & ((1u << w) - 1u);
      }
      r = internal::DequantizeValue(code, lo, step);
      const int64_t channel = c.h * geo.head_dim + c.d;
      if (layout.has_channel_scale) {
        r = __fmul_rn(r, HalfToFloat(GetU16(page + layout.channel_scale + 2 * channel)));
      }
      if (layout.has_channel_offset) {
        r = __fadd_rn(r, HalfToFloat(GetU16(page + layout.channel_offset + 2 * channel)));
      }
    }
    Store(out, geo, c, r);
  }
}

__global__ void LoadFp16Kernel(Geo geo, int32_t t0, const uint8_t* page, uint64_t offset,
                               OutView out) {
  const int64_t rt = geo.tokens - t0, D = geo.head_dim;
  const int64_t total = int64_t{geo.kv_heads} * rt * D;
  for (int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const Coord c{idx / D / rt, t0 + (idx / D) % rt, idx % D};
    Store(out, geo, c, HalfToFloat(GetU16(page + offset + 2 * idx)));
  }
}

unsigned ElementwiseBlocks(const Geo& geo, int32_t t0) {
  const int64_t total = int64_t{geo.kv_heads} * (geo.tokens - t0) * geo.head_dim;
  const int64_t blocks = (total + 255) / 256;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

cudaError_t LaunchAnalyze(const TensorParams& p, InView in, GroupInfo* info, GroupCount* count,
                          unsigned long long* bad_index, cudaStream_t stream) {
  if (p.geo.groups == 0) return cudaSuccess;
  AnalyzeKernel<<<static_cast<unsigned>(p.geo.groups), kThreads, 0, stream>>>(p, in, info, count,
                                                                              bad_index);
  return cudaGetLastError();
}

cudaError_t LaunchScan(const GroupCount* in, GroupCount* out, int64_t n, void* temp,
                       size_t* temp_bytes, cudaStream_t stream) {
  if (n == 0) {
    if (temp == nullptr) *temp_bytes = 0;
    return cudaSuccess;
  }
  return cub::DeviceScan::InclusiveScan(temp, *temp_bytes, in, out, CountSum{},
                                        static_cast<int>(n), stream);
}

cudaError_t LaunchPack(const TensorParams& p, InView in, const GroupInfo* info,
                       const GroupCount* count, const GroupCount* scanned,
                       const SectionLayout& layout, uint8_t* page, uint32_t* code_words,
                       cudaStream_t stream) {
  if (p.geo.groups == 0) return cudaSuccess;
  PackKernel<<<static_cast<unsigned>(p.geo.groups), kThreads, 0, stream>>>(
      p, in, info, count, scanned, layout, page, code_words);
  return cudaGetLastError();
}

cudaError_t LaunchStoreFp16(const Geo& geo, int32_t t0, InView in, uint8_t* page, uint64_t offset,
                            unsigned long long* bad_index, cudaStream_t stream) {
  if (t0 >= geo.tokens) return cudaSuccess;
  StoreFp16Kernel<<<ElementwiseBlocks(geo, t0), 256, 0, stream>>>(geo, t0, in, page, offset,
                                                                   bad_index);
  return cudaGetLastError();
}

cudaError_t LaunchWriteBytes(uint8_t* dst, const uint8_t* bytes, int n, cudaStream_t stream) {
  if (n <= 0 || n > 64) return n == 0 ? cudaSuccess : cudaErrorInvalidValue;
  SmallBytes b{};
  for (int i = 0; i < n; ++i) b.b[i] = bytes[i];
  WriteBytesKernel<<<1, 64, 0, stream>>>(dst, b, n);
  return cudaGetLastError();
}

cudaError_t LaunchDecodeCount(const TensorParams& p, const uint8_t* page,
                              const SectionLayout& layout, uint64_t n_exact, GroupCount* count,
                              cudaStream_t stream) {
  if (p.geo.groups == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((p.geo.groups + 255) / 256);
  DecodeCountKernel<<<blocks, 256, 0, stream>>>(p, page, layout, n_exact, count);
  return cudaGetLastError();
}

cudaError_t LaunchDecode(const TensorParams& p, const uint8_t* page, const SectionLayout& layout,
                         uint64_t n_exact, const GroupCount* count, const GroupCount* scanned,
                         OutView out, cudaStream_t stream) {
  if (p.geo.groups == 0) return cudaSuccess;
  DecodeKernel<<<static_cast<unsigned>(p.geo.groups), kThreads, 0, stream>>>(
      p, page, layout, count, scanned, out);
  return cudaGetLastError();
}

cudaError_t LaunchLoadFp16(const Geo& geo, int32_t t0, const uint8_t* page, uint64_t offset,
                           OutView out, cudaStream_t stream) {
  if (t0 >= geo.tokens) return cudaSuccess;
  LoadFp16Kernel<<<ElementwiseBlocks(geo, t0), 256, 0, stream>>>(geo, t0, page, offset, out);
  return cudaGetLastError();
}

}  // namespace qaqkv::cuda_internal
