// CUDA encode/decode of page sections. One thread block per group; the
// per-group math (fp16 rounding, widths, quantizer) is the CPU's, from
// kernels/internal/group_math.h, so the bytes match the reference exactly.
// The library is compiled with --fmad=false as the CPU code is with
// -ffp-contract=off: a fused multiply-add where the reference rounds twice
// would change codes.
#include <cub/device/device_scan.cuh>

#include "kernels/cuda/internal/device_common.cuh"

namespace qaqkv::cuda_internal {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// Groups up to this many values are read from global memory once and kept in
// shared memory while outliers are selected (every head-level group, and
// layer-level groups of up to 32 heads x 128).
constexpr int kCacheValues = 4096;
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
    } else if (fabsf(x) > ::qaqkv::kHalfMax) {
      atomicMin(bad_index, static_cast<unsigned long long>(CanonicalIndex(geo, c)));
    }
    if (cached) cache[i] = x;
  }
  finite = __syncthreads_and(finite);
  auto value = [&](int i) { return cached ? cache[i] : Load(in, geo, ElementCoord(geo, g, i)); };
  if (!finite) {
    if (threadIdx.x == 0) WriteExactGroup(g, n, info, count);
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
    if (k > 0 && (!AscBefore(small, c) || !DescBefore(large, c))) continue;
    lo = Better<false>(lo, c);
    hi = Better<true>(hi, c);
  }
  lo = BlockBest<false>(lo, scratch);
  hi = BlockBest<true>(hi, scratch);
  if (threadIdx.x == 0) {
    WriteGroup(p, g, n, k > 0 ? AscKey(small.v, small.i) : kNoSmall,
               k > 0 ? DescKey(large.v, large.i) : kNoLarge, lo.v, hi.v, info, count);
  }
}

__global__ void __launch_bounds__(kThreads)
    PackKernel(TensorParams p, InView in, const GroupInfo* info, const GroupCount* count,
               PageTarget t, int which) {
  __shared__ int warp_counts[kWarps];
  const Geo& geo = p.geo;
  const int64_t g = blockIdx.x;
  const GroupCount* scanned = t.scanned[which];
  const SectionLayout layout = BlockLayout(t, which);
  uint8_t* page = t.page;
  const GroupInfo gi = info[g];
  const GroupCount own = count[g], upto = scanned[g];
  const uint64_t exact_before = upto.exact - own.exact;
  const int n = GroupSize(geo, g);
  if (threadIdx.x == 0) PutWidths(p, info, g, layout, page);
  if (gi.bits == internal::kExactWidth) {
    if (threadIdx.x == 0) PutU32(page + layout.exact_list + 4 * exact_before, static_cast<uint32_t>(g));
    const uint64_t at = layout.exact_values + 2 * (upto.exact_values - own.exact_values);
    for (int i = threadIdx.x; i < n; i += kThreads) {
      PutU16(page + at + 2 * i, FloatToHalf(Load(in, geo, ElementCoord(geo, g, i))));
    }
    return;
  }
  const uint64_t q = g - exact_before;
  if (threadIdx.x == 0) PutOffsetAndStep(layout, page, q, gi);
  const float lo = HalfToFloat(gi.lo), inv = internal::InverseStep(HalfToFloat(gi.step));
  const int k = p.outliers, bits = gi.bits;
  const uint64_t bit0 = upto.code_bits - own.code_bits;
  const CodeSink sink = MakeCodeSink(t, which, layout);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int seen = 0;  // outliers in earlier tiles
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + threadIdx.x;
    float x = 0.0f;
    bool outlier = false;
    if (i < n) {
      x = Load(in, geo, ElementCoord(geo, g, i));
      outlier = IsOutlier(k, gi.small_key, gi.large_key, x, i);
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
        PutOutlier(p, layout, page, q * 2 * k + r, x, i);
      } else if (bits > 0) {
        // Neighbouring codes (and neighbouring groups) share words: OR them in.
        OrCode(sink, bit0 + static_cast<uint64_t>(i - r) * bits,
               internal::QuantizeValue(x, lo, inv, bits), bits);
      }
    }
    seen += tile;
  }
}

__global__ void StoreFp16Kernel(Geo geo, int32_t t0, InView in, uint8_t* page, uint64_t offset,
                                unsigned long long* bad_index, PageTarget t, int which) {
  if (t.page != nullptr) {
    page = t.page;
    offset = DeviceLayout(t, which).residual;
  }
  const int64_t rt = geo.tokens - t0, D = geo.head_dim;
  const int64_t total = int64_t{geo.kv_heads} * rt * D;
  for (int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const Coord c{idx / D / rt, t0 + (idx / D) % rt, idx % D};
    const float x = Load(in, geo, c);
    if (bad_index != nullptr && isfinite(x) && fabsf(x) > ::qaqkv::kHalfMax) {
      atomicMin(bad_index, static_cast<unsigned long long>(CanonicalIndex(geo, c)));
    }
    if (page != nullptr) PutU16(page + offset + 2 * idx, FloatToHalf(x));
  }
}

__global__ void ZeroCodesKernel(PageTarget t, int which) {
  const SectionLayout l = BlockLayout(t, which);
  if (l.residual <= l.codes) return;  // no codes; the word may be other regions'
  const CodeSink sink = MakeCodeSink(t, which, l);
  const int64_t first = static_cast<int64_t>(l.codes / 4), end = static_cast<int64_t>((l.residual + 3) / 4);
  for (int64_t w = first + int64_t{blockIdx.x} * blockDim.x + threadIdx.x; w < end;
       w += int64_t{gridDim.x} * blockDim.x) {
    if (w != sink.first_edge && w != sink.last_edge) sink.words[w] = 0;
  }
}

// One warp: per section, the edge words' code bytes, the exact count; the
// header's section sizes; the totals and range checks for the host.
__global__ void FinishPageKernel(PageTarget t, const unsigned long long* bad,
                                 EncodeResult* result) {
  const int lane = threadIdx.x;
  for (int which = 0; which < 2; ++which) {
    const SectionLayout l = DeviceLayout(t, which);
    const CodeSink sink = MakeCodeSink(t, which, l);
    if (lane < 8) {  // lanes 0-3: first edge word's bytes, 4-7: the last's
      const int64_t w = lane < 4 ? sink.first_edge : sink.last_edge;
      const uint64_t at = static_cast<uint64_t>(w) * 4 + (lane & 3);
      const bool same = lane >= 4 && sink.last_edge == sink.first_edge;
      if (w >= 0 && !same && at >= l.codes && at < l.residual) {
        t.page[at] = static_cast<uint8_t>(sink.edges[lane < 4 ? 0 : 1] >> (8 * (lane & 3)));
      }
    }
    const int64_t G = t.shape[which].groups;
    const GroupCount total = G > 0 ? t.scanned[which][G - 1] : GroupCount{0, 0, 0};
    if (lane == 0) {
      PutU32(t.page + l.exact_list - 4, static_cast<uint32_t>(total.exact));
      const uint64_t start = which == 0 ? t.base : DeviceLayout(t, 0).end;
      PutU32(t.page + (which == 0 ? t.k_bytes_at : t.v_bytes_at),
             static_cast<uint32_t>(l.end - start));
      result->totals[which] = total;
      result->bad[which] = bad[which];
    }
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
  const int n = GroupSize(geo, g);
  GroupCount own, upto;
  DecodeCounts(p, count, scanned, g, n, own, upto);
  const uint64_t exact_before = upto.exact - own.exact;
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
  if (const int n = WarpGroupSize(p.geo, in.layout, in.data); n > 0) {
    return LaunchAnalyzeWarp(n, p, in, info, count, bad_index, stream);
  }
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

cudaError_t LaunchZeroCodes(const PageTarget& t, int which, cudaStream_t stream) {
  ZeroCodesKernel<<<1024, 256, 0, stream>>>(t, which);
  return cudaGetLastError();
}

cudaError_t LaunchPack(const TensorParams& p, InView in, const GroupInfo* info,
                       const GroupCount* count, const PageTarget& t, int which,
                       cudaStream_t stream) {
  if (p.geo.groups == 0) return cudaSuccess;
  if (const int n = WarpGroupSize(p.geo, in.layout, in.data); n > 0) {
    return LaunchPackWarp(n, p, in, info, count, t, which, stream);
  }
  PackKernel<<<static_cast<unsigned>(p.geo.groups), kThreads, 0, stream>>>(p, in, info, count, t,
                                                                           which);
  return cudaGetLastError();
}

cudaError_t LaunchFinishPage(const PageTarget& t, const unsigned long long* bad,
                             EncodeResult* result, cudaStream_t stream) {
  FinishPageKernel<<<1, 32, 0, stream>>>(t, bad, result);
  return cudaGetLastError();
}

cudaError_t LaunchStoreFp16(const Geo& geo, int32_t t0, InView in, uint8_t* page, uint64_t offset,
                            unsigned long long* bad_index, cudaStream_t stream) {
  if (t0 >= geo.tokens) return cudaSuccess;
  StoreFp16Kernel<<<ElementwiseBlocks(geo, t0), 256, 0, stream>>>(geo, t0, in, page, offset,
                                                                   bad_index, PageTarget{}, 0);
  return cudaGetLastError();
}

cudaError_t LaunchStoreResidual(const Geo& geo, InView in, const PageTarget& t, int which,
                                cudaStream_t stream) {
  const int32_t t0 = geo.quant_tokens;
  if (t0 >= geo.tokens) return cudaSuccess;
  StoreFp16Kernel<<<ElementwiseBlocks(geo, t0), 256, 0, stream>>>(geo, t0, in, nullptr, 0,
                                                                   nullptr, t, which);
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
  // Paged caches are NHD within a block; per-channel tables need the
  // block-per-group kernel.
  const int layout_of_out = out.block_table != nullptr ? 0 : out.layout;
  if (const int n = WarpGroupSize(p.geo, layout_of_out, out.data);
      n > 0 && !layout.has_channel_scale && !layout.has_channel_offset) {
    return LaunchDecodeWarp(n, p, page, layout, count, scanned, out, stream);
  }
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
