// Warp-per-group encode and decode for groups that are contiguous in memory
// (head groups in NHD or HND, layer groups in NHD) of 64..1024 values: the
// common case, and the one the block-per-group kernels of codec_kernels.cu
// were too slow for (a 128-thread block and a dozen __syncthreads per
// 128-value group left the GPU at a few percent of its bandwidth).
//
// Each lane keeps its values in registers, loaded and stored with 16-byte
// vector accesses; outliers and ranges are warp shuffles; a group's codes are
// assembled in shared memory and written as whole words. The per-group math is
// the same functions as everywhere else (group_math.h, device_common.cuh), so
// the bytes are the CPU reference's.
#include <type_traits>

#include "kernels/cuda/internal/device_common.cuh"

namespace qaqkv::cuda_internal {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kGroupsPerBlock = kBlockThreads / 32;

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

// Values per vector access: 16 bytes, or all of a lane's values if fewer.
template <int kVpl, int kDtype>
constexpr int kVecOf = kVpl * int{sizeof(Elem<kDtype>)} < 16 ? kVpl : 16 / int{sizeof(Elem<kDtype>)};

// Register j of a lane holds element ElemIndex(j) of the group: chunks of
// 32 x kVec values, lanes contiguous inside a chunk, so a chunk is one
// coalesced access and element order is register order within a lane.
template <int kVec>
__device__ __forceinline__ int ElemIndex(int j, int lane) {
  return (j / kVec) * 32 * kVec + lane * kVec + j % kVec;
}

template <int kDtype>
__device__ __forceinline__ float ToFloat(Elem<kDtype> e) {
  if constexpr (kDtype == 1) return HalfToFloat(e);
  else if constexpr (kDtype == 2) return Bf16ToFloat(e);
  else return e;
}

template <int kDtype>
__device__ __forceinline__ Elem<kDtype> FromFloat(float v) {
  if constexpr (kDtype == 1) return FloatToHalf(v);
  else if constexpr (kDtype == 2) return FloatToBf16(v);
  else return v;
}

// A lane's values of the group whose first element is data[base].
template <int kVpl, int kDtype>
__device__ __forceinline__ void LoadGroup(const void* data, int64_t base, int lane,
                                          float (&x)[kVpl]) {
  using E = Elem<kDtype>;
  constexpr int kVec = kVecOf<kVpl, kDtype>;
  using V = typename VecOf<kVec * sizeof(E)>::T;
  const E* src = static_cast<const E*>(data) + base;
#pragma unroll
  for (int c = 0; c < kVpl / kVec; ++c) {
    const V v = *reinterpret_cast<const V*>(src + c * 32 * kVec + lane * kVec);
    E e[kVec];
    memcpy(e, &v, sizeof(V));
#pragma unroll
    for (int u = 0; u < kVec; ++u) x[c * kVec + u] = ToFloat<kDtype>(e[u]);
  }
}

template <int kVpl, int kDtype>
__device__ __forceinline__ void StoreGroup(void* data, int64_t base, int lane,
                                           const float (&x)[kVpl]) {
  using E = Elem<kDtype>;
  constexpr int kVec = kVecOf<kVpl, kDtype>;
  using V = typename VecOf<kVec * sizeof(E)>::T;
  E* dst = static_cast<E*>(data) + base;
#pragma unroll
  for (int c = 0; c < kVpl / kVec; ++c) {
    E e[kVec];
#pragma unroll
    for (int u = 0; u < kVec; ++u) e[u] = FromFloat<kDtype>(x[c * kVec + u]);
    V v;
    memcpy(&v, e, sizeof(V));
    *reinterpret_cast<V*>(dst + c * 32 * kVec + lane * kVec) = v;
  }
}

// First element of group g in a dense tensor (WarpValuesPerLane's geometries).
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

// The first key of the warp in the chosen order, on every lane: the order is
// total (value, then index), so the butterfly gives all lanes the same key.
template <bool kDesc>
__device__ __forceinline__ Key WarpBest(Key k) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const Key other{__shfl_xor_sync(kFullMask, k.v, o), __shfl_xor_sync(kFullMask, k.i, o)};
    k = Better<kDesc>(k, other);
  }
  return k;
}

template <int kVpl, int kDtype>
__global__ void __launch_bounds__(kBlockThreads)
    AnalyzeWarpKernel(TensorParams p, InView in, GroupInfo* info, GroupCount* count,
                      unsigned long long* bad_index) {
  constexpr int kVec = kVecOf<kVpl, kDtype>;
  constexpr int n = 32 * kVpl;
  const Geo& geo = p.geo;
  const int lane = threadIdx.x & 31;
  const int64_t g = int64_t{blockIdx.x} * kGroupsPerBlock + (threadIdx.x >> 5);
  if (g >= geo.groups) return;  // the whole warp
  float x[kVpl];
  LoadGroup<kVpl, kDtype>(in.data, GroupBase(geo, in.layout, g), lane, x);
  bool finite = true;
#pragma unroll
  for (int j = 0; j < kVpl; ++j) {
    if (!isfinite(x[j])) {
      finite = false;
    } else if (fabsf(x[j]) > internal::kHalfMax) {
      const Coord c = ElementCoord(geo, g, ElemIndex<kVec>(j, lane));
      atomicMin(bad_index, static_cast<unsigned long long>(CanonicalIndex(geo, c)));
    }
  }
  if (!__all_sync(kFullMask, finite)) {
    if (lane == 0) WriteExactGroup(g, n, info, count);
    return;
  }
  // Outliers by repeated selection, as AnalyzeKernel: the j-th smallest is
  // the first key after the (j-1)-th; then descending over the rest.
  const int k = p.outliers;
  Key small{0.0f, -1}, large{0.0f, -1};
  for (int r = 0; r < k; ++r) {
    Key best{0.0f, -1};
#pragma unroll
    for (int j = 0; j < kVpl; ++j) {
      const Key c{x[j], ElemIndex<kVec>(j, lane)};
      if (small.i >= 0 && !AscBefore(small, c)) continue;
      best = Better<false>(best, c);
    }
    small = WarpBest<false>(best);
  }
  for (int r = 0; r < k; ++r) {
    Key best{0.0f, -1};
#pragma unroll
    for (int j = 0; j < kVpl; ++j) {
      const Key c{x[j], ElemIndex<kVec>(j, lane)};
      if (!AscBefore(small, c)) continue;
      if (large.i >= 0 && !DescBefore(large, c)) continue;
      best = Better<true>(best, c);
    }
    large = WarpBest<true>(best);
  }
  Key lo{0.0f, -1}, hi{0.0f, -1};
#pragma unroll
  for (int j = 0; j < kVpl; ++j) {
    const Key c{x[j], ElemIndex<kVec>(j, lane)};
    if (IsOutlier(k, small, large, c)) continue;
    lo = Better<false>(lo, c);
    hi = Better<true>(hi, c);
  }
  lo = WarpBest<false>(lo);
  hi = WarpBest<true>(hi);
  if (lane == 0) WriteGroup(p, g, n, small, large, lo, hi, info, count);
}

template <int kVpl, int kDtype>
__global__ void __launch_bounds__(kBlockThreads)
    PackWarpKernel(TensorParams p, InView in, const GroupInfo* info, const GroupCount* count,
                   PageTarget t, int which) {
  constexpr int kVec = kVecOf<kVpl, kDtype>;
  // A group's codes span at most 8 bits x 32 kVpl values plus a partial word
  // at each end.
  constexpr int kWords = 8 * kVpl + 2;
  __shared__ uint32_t words[kGroupsPerBlock][kWords];
  const Geo& geo = p.geo;
  const int lane = threadIdx.x & 31;
  uint32_t* sm = words[threadIdx.x >> 5];
  const int64_t g = int64_t{blockIdx.x} * kGroupsPerBlock + (threadIdx.x >> 5);
  if (g >= geo.groups) return;
  const SectionLayout layout = DeviceLayout(t, which);
  uint8_t* page = t.page;
  const GroupInfo gi = info[g];
  const GroupCount own = count[g], upto = t.scanned[which][g];
  const uint64_t exact_before = upto.exact - own.exact;
  if (lane == 0) PutWidths(p, info, g, layout, page);
  float x[kVpl];
  LoadGroup<kVpl, kDtype>(in.data, GroupBase(geo, in.layout, g), lane, x);
  if (gi.bits == internal::kExactWidth) {
    if (lane == 0) PutU32(page + layout.exact_list + 4 * exact_before, static_cast<uint32_t>(g));
    const uint64_t at = layout.exact_values + 2 * (upto.exact_values - own.exact_values);
#pragma unroll
    for (int j = 0; j < kVpl; ++j) {
      PutU16(page + at + 2 * ElemIndex<kVec>(j, lane), FloatToHalf(x[j]));
    }
    return;
  }
  const uint64_t q = g - exact_before;
  if (lane == 0) PutOffsetAndStep(layout, page, q, gi);
  const float lo = HalfToFloat(gi.lo), inv = internal::InverseStep(HalfToFloat(gi.step));
  const int k = p.outliers, bits = gi.bits;
  const Key small{gi.small_v, gi.small_i}, large{gi.large_v, gi.large_i};
  // The group's codes in page bits [p0, p0 + own.code_bits), assembled in
  // shared memory from the word holding p0.
  const CodeSink sink = MakeCodeSink(t, which, layout);
  const uint64_t p0 = sink.c0 + (upto.code_bits - own.code_bits);
  const int local0 = static_cast<int>(p0 & 31);
  const int nwords = own.code_bits == 0 ? 0 : static_cast<int>((local0 + own.code_bits + 31) / 32);
  for (int w = lane; w < nwords; w += 32) sm[w] = 0;
  __syncwarp();
  int seen = 0;  // outliers in earlier chunks
#pragma unroll
  for (int c = 0; c < kVpl / kVec; ++c) {
    bool outlier[kVec];
    int mine = 0;
#pragma unroll
    for (int u = 0; u < kVec; ++u) {
      const int j = c * kVec + u;
      outlier[u] = IsOutlier(k, small, large, Key{x[j], ElemIndex<kVec>(j, lane)});
      mine += outlier[u] ? 1 : 0;
    }
    // Outliers before this lane's first element of the chunk: a warp scan.
    int upto_lane = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(kFullMask, upto_lane, o);
      if (lane >= o) upto_lane += y;
    }
    const int chunk_total = __shfl_sync(kFullMask, upto_lane, 31);
    int r = seen + upto_lane - mine;
#pragma unroll
    for (int u = 0; u < kVec; ++u) {
      const int j = c * kVec + u, i = ElemIndex<kVec>(j, lane);
      if (outlier[u]) {
        PutOutlier(p, layout, page, q * 2 * k + r, x[j], i);
        ++r;
      } else if (bits > 0) {
        const uint32_t code = internal::QuantizeValue(x[j], lo, inv, bits);
        const int bit = local0 + (i - r) * bits;
        atomicOr(&sm[bit >> 5], code << (bit & 31));
        if ((bit & 31) + bits > 32) atomicOr(&sm[(bit >> 5) + 1], code >> (32 - (bit & 31)));
      }
    }
    seen += chunk_total;
  }
  __syncwarp();
  // Words wholly inside the group are its alone; the first and last may
  // hold a neighbour's bits too (ZeroCodesKernel cleared them).
  const int64_t w0 = static_cast<int64_t>(p0 >> 5);
  for (int w = lane; w < nwords; w += 32) {
    const uint32_t v = sm[w];
    if (w == 0 || w == nwords - 1) {
      if (v != 0) atomicOr(SinkWord(sink, w0 + w), v);
    } else {
      *SinkWord(sink, w0 + w) = v;
    }
  }
}

template <int kVpl, int kDtype>
__global__ void __launch_bounds__(kBlockThreads)
    DecodeWarpKernel(TensorParams p, const uint8_t* page, SectionLayout layout,
                     const GroupCount* count, const GroupCount* scanned, OutView out) {
  constexpr int kVec = kVecOf<kVpl, kDtype>;
  // A group's code bytes (at most 8 bits per value, a partial byte at the
  // start) and a zero byte after them.
  constexpr int kBytes = 32 * kVpl + 2;
  __shared__ uint8_t bytes[kGroupsPerBlock][kBytes];
  const Geo& geo = p.geo;
  const int lane = threadIdx.x & 31;
  uint8_t* sm = bytes[threadIdx.x >> 5];
  const int64_t g = int64_t{blockIdx.x} * kGroupsPerBlock + (threadIdx.x >> 5);
  if (g >= geo.groups) return;
  const GroupCount own = count[g], upto = scanned[g];
  float r[kVpl];
  if (own.exact) {
    const uint8_t* at = page + layout.exact_values + 2 * (upto.exact_values - own.exact_values);
#pragma unroll
    for (int j = 0; j < kVpl; ++j) r[j] = HalfToFloat(GetU16(at + 2 * ElemIndex<kVec>(j, lane)));
  } else {
    const uint64_t q = g - (upto.exact - own.exact);
    const int w = WidthOf(p, page, layout, g);
    const float lo = HalfToFloat(GetU16(page + layout.lo + 2 * q));
    const float step = HalfToFloat(GetU16(page + layout.step + 2 * q));
    const int per_group = 2 * p.outliers;
    const uint8_t* oi = page + layout.outlier_index + p.index_bytes * q * per_group;
    const uint8_t* ov = page + layout.outlier_values + 2 * q * per_group;
    auto index_at = [&](int a) { return p.index_bytes == 1 ? int{oi[a]} : int{GetU16(oi + 2 * a)}; };
    const uint64_t bit0 = upto.code_bits - own.code_bits;
    const int s0 = static_cast<int>(bit0 & 7);
    const int nbytes = static_cast<int>((s0 + own.code_bits + 7) / 8);
    const uint8_t* codes = page + layout.codes + (bit0 >> 3);
    for (int b = lane; b <= nbytes; b += 32) sm[b] = b < nbytes ? codes[b] : 0;
    __syncwarp();
#pragma unroll
    for (int c = 0; c < kVpl / kVec; ++c) {
      // Outliers are sorted by index: a = outliers before element i.
      const int i0 = ElemIndex<kVec>(c * kVec, lane);
      int a = 0, b = per_group;
      while (a < b) {
        const int m = (a + b) / 2;
        if (index_at(m) < i0) a = m + 1; else b = m;
      }
#pragma unroll
      for (int u = 0; u < kVec; ++u) {
        const int i = i0 + u;
        if (a < per_group && index_at(a) == i) {
          r[c * kVec + u] = HalfToFloat(GetU16(ov + 2 * a));
          ++a;
          continue;
        }
        uint32_t code = 0;
        if (w > 0) {
          const int bit = s0 + (i - a) * w;
          const uint32_t v = sm[bit >> 3] | (uint32_t{sm[(bit >> 3) + 1]} << 8);
          code = (v >> (bit & 7)) & ((1u << w) - 1u);
        }
        r[c * kVec + u] = internal::DequantizeValue(code, lo, step);
      }
    }
  }
  const int64_t base =
      out.block_table != nullptr ? PagedBase(geo, out, g) : GroupBase(geo, out.layout, g);
  StoreGroup<kVpl, kDtype>(out.data, base, lane, r);
}

// Calls f(std::integral_constant<int, vpl>) for the supported widths.
template <typename F>
cudaError_t ForVpl(int vpl, F&& f) {
  switch (vpl) {
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
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

unsigned GroupBlocks(int64_t groups) {
  return static_cast<unsigned>((groups + kGroupsPerBlock - 1) / kGroupsPerBlock);
}

}  // namespace

cudaError_t LaunchAnalyzeWarp(int vpl, const TensorParams& p, InView in, GroupInfo* info,
                              GroupCount* count, unsigned long long* bad_index,
                              cudaStream_t stream) {
  return ForVpl(vpl, [&](auto v) {
    return ForDtype(in.dtype, [&](auto d) {
      AnalyzeWarpKernel<decltype(v)::value, decltype(d)::value>
          <<<GroupBlocks(p.geo.groups), kBlockThreads, 0, stream>>>(p, in, info, count, bad_index);
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchPackWarp(int vpl, const TensorParams& p, InView in, const GroupInfo* info,
                           const GroupCount* count, const PageTarget& t, int which,
                           cudaStream_t stream) {
  return ForVpl(vpl, [&](auto v) {
    return ForDtype(in.dtype, [&](auto d) {
      PackWarpKernel<decltype(v)::value, decltype(d)::value>
          <<<GroupBlocks(p.geo.groups), kBlockThreads, 0, stream>>>(p, in, info, count, t, which);
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchDecodeWarp(int vpl, const TensorParams& p, const uint8_t* page,
                             const SectionLayout& layout, const GroupCount* count,
                             const GroupCount* scanned, OutView out, cudaStream_t stream) {
  return ForVpl(vpl, [&](auto v) {
    return ForDtype(out.dtype, [&](auto d) {
      DecodeWarpKernel<decltype(v)::value, decltype(d)::value>
          <<<GroupBlocks(p.geo.groups), kBlockThreads, 0, stream>>>(p, page, layout, count,
                                                                    scanned, out);
      return cudaGetLastError();
    });
  });
}

}  // namespace qaqkv::cuda_internal
