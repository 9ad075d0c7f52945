// Sub-warp encode and decode for groups that are contiguous in memory (head
// groups in NHD or HND, layer groups in NHD) of 32..1024 values: the common
// case, and the one the block-per-group kernels of codec_kernels.cu were too
// slow for (a 128-thread block and a dozen __syncthreads per 128-value group
// left the GPU at a few percent of its bandwidth; a warp per group, measured
// next, still spent most of its instructions on shuffles).
//
// A group belongs to kLanes lanes holding 16 values each (32 for the
// largest), so a warp works on several groups at once. Values stay in
// registers, loaded and stored with 16-byte vector accesses; outliers and
// ranges are min/max over 64-bit order keys and sub-warp shuffles; a group's
// codes are assembled in shared memory and written as whole words. The
// per-group math is the same functions as everywhere else (group_math.h,
// device_common.cuh), so the bytes are the CPU reference's.
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/cuda/internal/device_common.cuh"

namespace qaqkv::cuda_internal {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kWarpsPerBlock = kBlockThreads / 32;
// The pack kernel at 64 registers or fewer: four blocks (32 warps) an SM
// instead of three, for a few spilled bytes. (The analysis kernel keeps its
// 80: bounded, its 1024-value groups spill kilobytes.)
constexpr int kPackMinBlocks = 4;

// The lanes that share a group of kN values: 16 values each, at most a warp.
template <int kN>
constexpr int kLanesOf = kN / 16 < 2 ? 2 : (kN / 16 > 32 ? 32 : kN / 16);

template <int kBytes>
struct VecOf;
template <>
struct VecOf<4> {
  using T = uint32_t;
};
template <>
struct VecOf<8> {
  using T = uint2;
};
template <>
struct VecOf<16> {
  using T = uint4;
};

// dtype as qaqkv::DType: 1 f16, 2 bf16, 3 f32.
template <int kDtype>
using Elem = std::conditional_t<kDtype == 3, float, uint16_t>;

// Conversions of the hot paths. fp16 <-> fp32 in hardware (one cvt each)
// gives the software conversions' results for every non-NaN value (exact
// one way, round-to-nearest-even the other); NaN payloads may differ, so
// values that can be NaN (exact groups) go through the software ones.
template <int kDtype>
__device__ __forceinline__ float ToFloat(Elem<kDtype> e) {
  if constexpr (kDtype == 1) return __half2float(__ushort_as_half(e));
  else if constexpr (kDtype == 2) return Bf16ToFloat(e);
  else return e;
}
__device__ __forceinline__ float FastHalfToFloat(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}

// For values that are not NaN (quantized values and outliers of finite groups).
template <int kDtype>
__device__ __forceinline__ Elem<kDtype> FromFloat(float v) {
  if constexpr (kDtype == 1) return __half_as_ushort(__float2half_rn(v));
  else if constexpr (kDtype == 2) return FloatToBf16(v);
  else return v;
}
// For any value, NaN included (exact groups): the software conversions.
template <int kDtype>
__device__ __forceinline__ Elem<kDtype> FromFloatExact(float v) {
  if constexpr (kDtype == 1) return FloatToHalf(v);
  else if constexpr (kDtype == 2) return FloatToBf16(v);
  else return v;
}

// How a group of kN values of dtype kDtype is spread over its lanes.
// Register j of sub-lane s holds element Index(j, s): chunks of kLanes x kVec
// values, sub-lanes contiguous inside a chunk, so a chunk is one coalesced
// access and element order is register order within a lane.
template <int kN, int kDtype>
struct Shape {
  static constexpr int kLanes = kLanesOf<kN>;
  static constexpr int kGroupsPerWarp = 32 / kLanes;
  static constexpr int kGroupsPerBlock = kWarpsPerBlock * kGroupsPerWarp;
  static constexpr int kVpl = kN / kLanes;
  static constexpr int kElemBytes = int{sizeof(Elem<kDtype>)};
  static constexpr int kVec = kVpl * kElemBytes < 16 ? kVpl : 16 / kElemBytes;
  static constexpr int kChunks = kVpl / kVec;
  __device__ static int Index(int j, int s) { return (j / kVec) * kLanes * kVec + s * kVec + j % kVec; }
};

// Where a thread's group is: its index, its sub-lane, whether it exists.
template <typename S>
struct Place {
  int64_t g;
  int sub, slot;  // sub-lane in the group; the group's slot in the block
  bool valid;
};
template <typename S>
__device__ __forceinline__ Place<S> PlaceOf(int64_t groups) {
  Place<S> at;
  at.slot = threadIdx.x / S::kLanes;
  at.sub = threadIdx.x % S::kLanes;
  at.g = int64_t{blockIdx.x} * S::kGroupsPerBlock + at.slot;
  at.valid = at.g < groups;
  return at;
}

// The lane's values of the group whose first element is data[base].
template <typename S, int kDtype>
__device__ __forceinline__ void LoadGroup(const void* data, int64_t base, int sub,
                                          float (&x)[S::kVpl]) {
  using E = Elem<kDtype>;
  using V = typename VecOf<S::kVec * sizeof(E)>::T;
  const E* src = static_cast<const E*>(data) + base;
#pragma unroll
  for (int c = 0; c < S::kChunks; ++c) {
    const V v = *reinterpret_cast<const V*>(src + c * S::kLanes * S::kVec + sub * S::kVec);
    E e[S::kVec];
    memcpy(e, &v, sizeof(V));
#pragma unroll
    for (int u = 0; u < S::kVec; ++u) x[c * S::kVec + u] = ToFloat<kDtype>(e[u]);
  }
}

template <typename S, int kDtype, bool kMaybeNan>
__device__ __forceinline__ void StoreGroup(void* data, int64_t base, int sub,
                                           const float (&x)[S::kVpl]) {
  using E = Elem<kDtype>;
  using V = typename VecOf<S::kVec * sizeof(E)>::T;
  E* dst = static_cast<E*>(data) + base;
#pragma unroll
  for (int c = 0; c < S::kChunks; ++c) {
    E e[S::kVec];
#pragma unroll
    for (int u = 0; u < S::kVec; ++u) {
      e[u] = kMaybeNan ? FromFloatExact<kDtype>(x[c * S::kVec + u])
                       : FromFloat<kDtype>(x[c * S::kVec + u]);
    }
    V v;
    memcpy(&v, e, sizeof(V));
    *reinterpret_cast<V*>(dst + c * S::kLanes * S::kVec + sub * S::kVec) = v;
  }
}

// First element of group g in a dense tensor (WarpGroupSize's geometries).
__device__ __forceinline__ int64_t GroupBase(const Geo& geo, int layout, int64_t g) {
  if (geo.kind == kGeoLayer) return g * geo.kv_heads * geo.head_dim;  // NHD
  if (layout == 1) return ((g % geo.kv_heads) * geo.tokens + g / geo.kv_heads) * geo.head_dim;
  return g * geo.head_dim;
}

// The same in a vLLM paged cache (NHD inside a block).
__device__ __forceinline__ int64_t PagedBase(const Geo& geo, const OutView& out, int64_t g) {
  const bool layer = geo.kind == kGeoLayer;
  const int64_t t = layer ? g : g / geo.kv_heads, h = layer ? 0 : g % geo.kv_heads;
  const int64_t pos = out.first_token + t;
  const int64_t block = out.block_table[pos / out.block_size];
  return ((block * out.block_size + pos % out.block_size) * geo.kv_heads + h) * geo.head_dim;
}

// Min and max over a group's lanes; every lane of the warp must call them.
template <int kLanes>
__device__ __forceinline__ unsigned long long GroupMin(unsigned long long v) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) {
    const unsigned long long y = __shfl_xor_sync(kFullMask, v, o, kLanes);
    v = y < v ? y : v;
  }
  return v;
}
template <int kLanes>
__device__ __forceinline__ unsigned long long GroupMax(unsigned long long v) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) {
    const unsigned long long y = __shfl_xor_sync(kFullMask, v, o, kLanes);
    v = y > v ? y : v;
  }
  return v;
}

template <int kLanes>
__device__ __forceinline__ float GroupMinF(float v) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(kFullMask, v, o, kLanes));
  return v;
}
template <int kLanes>
__device__ __forceinline__ float GroupMaxF(float v) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o, kLanes));
  return v;
}

template <int kN, int kDtype>
__global__ void __launch_bounds__(kBlockThreads)
    AnalyzeWarpKernel(TensorParams p, InView in, GroupInfo* info, GroupCount* count,
                      unsigned long long* bad_index) {
  using S = Shape<kN, kDtype>;
  const Geo& geo = p.geo;
  const Place<S> at = PlaceOf<S>(geo.groups);
  float x[S::kVpl] = {};
  if (at.valid) LoadGroup<S, kDtype>(in.data, GroupBase(geo, in.layout, at.g), at.sub, x);
  bool finite = true, in_range = true;
#pragma unroll
  for (int j = 0; j < S::kVpl; ++j) {
    finite = finite && isfinite(x[j]);
    in_range = in_range && !(fabsf(x[j]) > ::qaqkv::kHalfMax && isfinite(x[j]));
  }
  if (!in_range) {  // rare: find the values fp16 cannot hold
    for (int j = 0; j < S::kVpl; ++j) {
      if (isfinite(x[j]) && fabsf(x[j]) > ::qaqkv::kHalfMax) {
        const Coord c = ElementCoord(geo, at.g, S::Index(j, at.sub));
        atomicMin(bad_index, static_cast<unsigned long long>(CanonicalIndex(geo, c)));
      }
    }
  }
  // Every lane goes on (the shuffles need the whole warp); a group with a
  // non-finite value is kept exactly and its keys below are ignored.
  finite = GroupMin<S::kLanes>(finite ? 1 : 0) != 0;
  // Outliers by repeated selection, as AnalyzeKernel: the r-th smallest is
  // the least key above the (r-1)-th; then the greatest descending keys
  // among the rest.
  const int k = p.outliers;
  unsigned long long small = kNoSmall, large = kNoLarge;
  for (int r = 0; r < k; ++r) {
    unsigned long long best = ~0ull;
#pragma unroll
    for (int j = 0; j < S::kVpl; ++j) {
      const unsigned long long key = AscKey(x[j], S::Index(j, at.sub));
      if (key > small && key < best) best = key;
    }
    small = GroupMin<S::kLanes>(best);
  }
  for (int r = 0; r < k; ++r) {
    unsigned long long best = 0;
#pragma unroll
    for (int j = 0; j < S::kVpl; ++j) {
      const int i = S::Index(j, at.sub);
      if (AscKey(x[j], i) <= small) continue;
      const unsigned long long key = DescKey(x[j], i);
      if (key < large && key > best) best = key;
    }
    large = GroupMax<S::kLanes>(best);
  }
  // The range of the other values, in floats: the thresholds' values decide
  // all but ties (IsOutlierByValue).
  const float sv = KeyValue(small), lv = KeyValue(large);
  float lo = __int_as_float(0x7f800000), hi = __int_as_float(0xff800000);  // +inf, -inf
#pragma unroll
  for (int j = 0; j < S::kVpl; ++j) {
    if (IsOutlierByValue(k, small, large, sv, lv, x[j], S::Index(j, at.sub))) continue;
    lo = fminf(lo, x[j]);
    hi = fmaxf(hi, x[j]);
  }
  lo = GroupMinF<S::kLanes>(lo);
  hi = GroupMaxF<S::kLanes>(hi);
  // fminf and fmaxf may return either of -0 and +0; the reference takes the
  // zero with the lowest index. Rare, so only then the keys (the whole warp,
  // for the shuffles; each group keeps its own answer).
  const bool zero_lo = lo == 0.0f, zero_hi = hi == 0.0f;
  if (__any_sync(kFullMask, zero_lo || zero_hi)) {
    unsigned long long lo_key = ~0ull, hi_key = 0;
#pragma unroll
    for (int j = 0; j < S::kVpl; ++j) {
      const int i = S::Index(j, at.sub);
      if (IsOutlierByValue(k, small, large, sv, lv, x[j], i)) continue;
      const unsigned long long a = AscKey(x[j], i), d = DescKey(x[j], i);
      lo_key = a < lo_key ? a : lo_key;
      hi_key = d > hi_key ? d : hi_key;
    }
    lo_key = GroupMin<S::kLanes>(lo_key);
    hi_key = GroupMax<S::kLanes>(hi_key);
    if (zero_lo) lo = KeyValue(lo_key);
    if (zero_hi) hi = KeyValue(hi_key);
  }
  if (!at.valid || at.sub != 0) return;
  if (!finite) {
    WriteExactGroup(at.g, kN, info, count);
  } else {
    WriteGroup(p, at.g, kN, small, large, lo, hi, info, count);
  }
}

template <int kN, int kDtype>
__global__ void __launch_bounds__(kBlockThreads, kPackMinBlocks)
    PackWarpKernel(TensorParams p, InView in, const GroupInfo* info, const GroupCount* count,
                   PageTarget t, int which) {
  using S = Shape<kN, kDtype>;
  // A group's codes span at most 8 bits per value plus a partial word at
  // each end.
  constexpr int kWords = kN / 4 + 2;
  __shared__ uint32_t words[S::kGroupsPerBlock][kWords];
  const Geo& geo = p.geo;
  const Place<S> at = PlaceOf<S>(geo.groups);
  uint32_t* sm = words[at.slot];
  const SectionLayout layout = BlockLayout(t, which);
  uint8_t* page = t.page;
  GroupInfo gi{};
  GroupCount own{}, upto{};
  float x[S::kVpl] = {};
  if (at.valid) {
    gi = info[at.g];
    own = count[at.g];
    upto = t.scanned[which][at.g];
    LoadGroup<S, kDtype>(in.data, GroupBase(geo, in.layout, at.g), at.sub, x);
    if (at.sub == 0) PutWidths(p, info, at.g, layout, page);
  }
  const uint64_t exact_before = upto.exact - own.exact;
  const bool exact = at.valid && gi.bits == internal::kExactWidth;
  if (exact) {
    if (at.sub == 0) {
      PutU32(page + layout.exact_list + 4 * exact_before, static_cast<uint32_t>(at.g));
    }
    const uint64_t to = layout.exact_values + 2 * (upto.exact_values - own.exact_values);
    // Possibly NaN: the stored bits are the software conversions' (a
    // reload, as the hardware conversion in LoadGroup may change payloads).
    const Elem<kDtype>* src = static_cast<const Elem<kDtype>*>(in.data) + GroupBase(geo, in.layout, at.g);
    for (int j = 0; j < S::kVpl; ++j) {
      const int i = S::Index(j, at.sub);
      float v;
      if constexpr (kDtype == 1) v = HalfToFloat(src[i]);
      else v = ToFloat<kDtype>(src[i]);
      PutU16(page + to + 2 * i, FloatToHalf(v));
    }
  }
  // From here every lane takes part (shuffles); only quantized groups write.
  const bool quantized = at.valid && !exact;
  const uint64_t q = at.g - exact_before;
  if (quantized && at.sub == 0) PutOffsetAndStep(layout, page, q, gi);
  const float lo = HalfToFloat(gi.lo), inv = internal::InverseStep(HalfToFloat(gi.step));
  const int k = quantized ? p.outliers : 0, bits = quantized ? gi.bits : 0;
  // The group's codes go to page bits [p0, p0 + own.code_bits), assembled in
  // shared memory from the word holding p0.
  const CodeSink sink = MakeCodeSink(t, which, layout);
  const uint64_t p0 = sink.c0 + (upto.code_bits - own.code_bits);
  const int local0 = static_cast<int>(p0 & 31);
  const int nwords =
      !quantized || own.code_bits == 0 ? 0 : static_cast<int>((local0 + own.code_bits + 31) / 32);
  for (int w = at.sub; w < nwords; w += S::kLanes) sm[w] = 0;
  __syncwarp();
  const float sv = KeyValue(gi.small_key), lv = KeyValue(gi.large_key);
  int seen = 0;  // outliers in earlier chunks
#pragma unroll
  for (int c = 0; c < S::kChunks; ++c) {
    uint32_t outliers = 0;  // bit u: value u of the chunk
#pragma unroll
    for (int u = 0; u < S::kVec; ++u) {
      const int j = c * S::kVec + u;
      if (IsOutlierByValue(k, gi.small_key, gi.large_key, sv, lv, x[j], S::Index(j, at.sub))) {
        outliers |= 1u << u;
      }
    }
    const int mine = __popc(outliers);
    // Outliers before this lane's part of the chunk: a scan over the group.
    int upto_lane = mine;
#pragma unroll
    for (int o = 1; o < S::kLanes; o <<= 1) {
      const int y = __shfl_up_sync(kFullMask, upto_lane, o, S::kLanes);
      if (at.sub >= o) upto_lane += y;
    }
    const int chunk_total = __shfl_sync(kFullMask, upto_lane, S::kLanes - 1, S::kLanes);
    int r = seen + upto_lane - mine;
    // The chunk's quantized values have consecutive codes: gather them in a
    // register (at most 8 x 8 bits) and OR them into shared memory at once.
    const int i0 = S::Index(c * S::kVec, at.sub);
    const int first_bit = local0 + (i0 - r) * bits;
    unsigned long long acc = 0;
    int n_codes = 0;
#pragma unroll
    for (int u = 0; u < S::kVec; ++u) {
      const int j = c * S::kVec + u;
      if (outliers & (1u << u)) {
        PutOutlier(p, layout, page, q * 2 * k + r, x[j], i0 + u);
        ++r;
      } else if (bits > 0) {
        acc |= static_cast<unsigned long long>(internal::QuantizeValue(x[j], lo, inv, bits))
               << (n_codes * bits);
        ++n_codes;
      }
    }
    if (acc != 0) {
      const int w = first_bit >> 5, shift = first_bit & 31;
      const unsigned long long low = acc << shift;
      const uint32_t top = shift == 0 ? 0u : static_cast<uint32_t>(acc >> (64 - shift));
      if (static_cast<uint32_t>(low) != 0) atomicOr(&sm[w], static_cast<uint32_t>(low));
      if (static_cast<uint32_t>(low >> 32) != 0) atomicOr(&sm[w + 1], static_cast<uint32_t>(low >> 32));
      if (top != 0) atomicOr(&sm[w + 2], top);
    }
    seen += chunk_total;
  }
  __syncwarp();
  // Words wholly inside the group are its alone; the first and last may
  // hold a neighbour's bits too (ZeroCodesKernel cleared them).
  const int64_t w0 = static_cast<int64_t>(p0 >> 5);
  for (int w = at.sub; w < nwords; w += S::kLanes) {
    const uint32_t v = sm[w];
    if (w == 0 || w == nwords - 1) {
      if (v != 0) atomicOr(SinkWord(sink, w0 + w), v);
    } else {
      *SinkWord(sink, w0 + w) = v;
    }
  }
}

template <int kN, int kDtype>
__global__ void __launch_bounds__(kBlockThreads)
    DecodeWarpKernel(TensorParams p, const uint8_t* page, SectionLayout layout,
                     const GroupCount* count, const GroupCount* scanned, OutView out) {
  using S = Shape<kN, kDtype>;
  // A group's codes as the page's 32-bit words, from the one holding its
  // first code bit (at most 8 bits per value, a partial word at each end),
  // then zero words for the 64-bit windows read past the last code.
  constexpr int kWords = kN / 4 + 5;
  __shared__ uint32_t words[S::kGroupsPerBlock][kWords];
  const Geo& geo = p.geo;
  const Place<S> at = PlaceOf<S>(geo.groups);
  uint32_t* sm = words[at.slot];
  GroupCount own{}, upto{};
  if (at.valid) DecodeCounts(p, count, scanned, at.g, kN, own, upto);
  const bool quantized = at.valid && !own.exact;
  const uint64_t bit0 = upto.code_bits - own.code_bits;
  const uint64_t first_byte = layout.codes + (bit0 >> 3);
  const uint64_t word0 = first_byte / 4;  // the page is cudaMalloc-aligned
  const int s0 = static_cast<int>((first_byte % 4) * 8 + (bit0 & 7));  // first code bit in sm
  const int nwords = quantized ? static_cast<int>((s0 + own.code_bits + 31) / 32) : -3;
  for (int b = at.sub; b < nwords + 3; b += S::kLanes) {
    uint32_t v = 0;
    if (b < nwords) {
      // Whole words, except a last one reaching past the codes: its bytes
      // beyond them may lie past the page, so only the codes' are read.
      const uint64_t from = (word0 + b) * 4;
      if (from + 4 <= layout.residual) {
        v = reinterpret_cast<const uint32_t*>(page)[word0 + b];
      } else {
        for (int k = 0; k < 4 && from + k < layout.residual; ++k) v |= uint32_t{page[from + k]} << (8 * k);
      }
    }
    sm[b] = v;
  }
  __syncwarp();
  if (!at.valid) return;
  float r[S::kVpl];
  if (!quantized) {
    const uint8_t* from = page + layout.exact_values + 2 * (upto.exact_values - own.exact_values);
#pragma unroll
    for (int j = 0; j < S::kVpl; ++j) r[j] = HalfToFloat(GetU16(from + 2 * S::Index(j, at.sub)));
    const int64_t base =
        out.block_table != nullptr ? PagedBase(geo, out, at.g) : GroupBase(geo, out.layout, at.g);
    StoreGroup<S, kDtype, true>(out.data, base, at.sub, r);
    return;
  }
  {
    const uint64_t q = at.g - (upto.exact - own.exact);
    const int w = WidthOf(p, page, layout, at.g);
    const float lo = FastHalfToFloat(GetU16(page + layout.lo + 2 * q));
    const float step = FastHalfToFloat(GetU16(page + layout.step + 2 * q));
    const int per_group = 2 * p.outliers;
    const uint8_t* oi = page + layout.outlier_index + p.index_bytes * q * per_group;
    const uint8_t* ov = page + layout.outlier_values + 2 * q * per_group;
    auto index_at = [&](int a) {
      if (a >= per_group) return kN;  // past every element
      return p.index_bytes == 1 ? int{oi[a]} : int{GetU16(oi + 2 * a)};
    };
#pragma unroll
    for (int c = 0; c < S::kChunks; ++c) {
      // Outliers are sorted by index: a = outliers before element i.
      const int i0 = S::Index(c * S::kVec, at.sub);
      int a = 0, b = per_group;
      while (a < b) {
        const int m = (a + b) / 2;
        if (index_at(m) < i0) a = m + 1; else b = m;
      }
      int next = index_at(a);
      // The chunk's quantized values have consecutive codes (at most 8 x 8
      // bits): one 64-bit window from shared memory holds them all.
      unsigned long long window = 0;
      if (w > 0) {
        const int bit = s0 + (i0 - a) * w, k = bit >> 5, shift = bit & 31;
        window = (sm[k] | (static_cast<unsigned long long>(sm[k + 1]) << 32)) >> shift;
        if (shift != 0) window |= static_cast<unsigned long long>(sm[k + 2]) << (64 - shift);
      }
      const uint32_t mask = (1u << w) - 1u;
      int t = 0;  // quantized values so far in the chunk
#pragma unroll
      for (int u = 0; u < S::kVec; ++u) {
        const int i = i0 + u;
        if (next == i) {
          r[c * S::kVec + u] = FastHalfToFloat(GetU16(ov + 2 * a));
          next = index_at(++a);
          continue;
        }
        const uint32_t code = static_cast<uint32_t>(window >> (t * w)) & mask;
        ++t;
        r[c * S::kVec + u] = internal::DequantizeValue(code, lo, step);
      }
    }
  }
  const int64_t base =
      out.block_table != nullptr ? PagedBase(geo, out, at.g) : GroupBase(geo, out.layout, at.g);
  StoreGroup<S, kDtype, false>(out.data, base, at.sub, r);
}

// Calls f(std::integral_constant<int, n>) for the supported group sizes.
template <typename F>
cudaError_t ForGroupSize(int n, F&& f) {
  switch (n) {
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 128: return f(std::integral_constant<int, 128>{});
    case 256: return f(std::integral_constant<int, 256>{});
    case 512: return f(std::integral_constant<int, 512>{});
    case 1024: return f(std::integral_constant<int, 1024>{});
    default: return cudaErrorInvalidValue;
  }
}

template <typename F>
cudaError_t ForDtype(int dtype, F&& f) {
  switch (dtype) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    default: return cudaErrorInvalidValue;
  }
}

template <typename S>
unsigned BlocksFor(int64_t groups) {
  return static_cast<unsigned>((groups + S::kGroupsPerBlock - 1) / S::kGroupsPerBlock);
}

}  // namespace

cudaError_t LaunchAnalyzeWarp(int n, const TensorParams& p, InView in, GroupInfo* info,
                              GroupCount* count, unsigned long long* bad_index,
                              cudaStream_t stream) {
  return ForGroupSize(n, [&](auto size) {
    return ForDtype(in.dtype, [&](auto d) {
      constexpr int kN = decltype(size)::value, kDtype = decltype(d)::value;
      AnalyzeWarpKernel<kN, kDtype><<<BlocksFor<Shape<kN, kDtype>>(p.geo.groups), kBlockThreads,
                                      0, stream>>>(p, in, info, count, bad_index);
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchPackWarp(int n, const TensorParams& p, InView in, const GroupInfo* info,
                           const GroupCount* count, const PageTarget& t, int which,
                           cudaStream_t stream) {
  return ForGroupSize(n, [&](auto size) {
    return ForDtype(in.dtype, [&](auto d) {
      constexpr int kN = decltype(size)::value, kDtype = decltype(d)::value;
      PackWarpKernel<kN, kDtype><<<BlocksFor<Shape<kN, kDtype>>(p.geo.groups), kBlockThreads, 0,
                                   stream>>>(p, in, info, count, t, which);
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchDecodeWarp(int n, const TensorParams& p, const uint8_t* page,
                             const SectionLayout& layout, const GroupCount* count,
                             const GroupCount* scanned, OutView out, cudaStream_t stream) {
  return ForGroupSize(n, [&](auto size) {
    return ForDtype(out.dtype, [&](auto d) {
      constexpr int kN = decltype(size)::value, kDtype = decltype(d)::value;
      DecodeWarpKernel<kN, kDtype><<<BlocksFor<Shape<kN, kDtype>>(p.geo.groups), kBlockThreads,
                                     0, stream>>>(p, page, layout, count, scanned, out);
      return cudaGetLastError();
    });
  });
}

}  // namespace qaqkv::cuda_internal
