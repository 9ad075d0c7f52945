// `qaqkv bench codec`: one-thread encode and decode throughput of each codec
// on pages of a geometry, against memcpy of the same fp16 bytes and zstd
// level 1, all measured in this run. Bandwidths count fp16 bytes (K and V).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_split.h"
#include "kernels/codec.h"
#include "kernels/half.h"
#include "tools/commands.h"
#include "tools/internal/flag_check.h"
#include "tools/eval/kv_source.h"
#include "tools/internal/report.h"
#include "zstd.h"

namespace qaqkv::tools {
namespace {

using Clock = std::chrono::steady_clock;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "qaqkv bench codec: %s\n", msg.c_str());
  return 2;
}

// Median seconds of one call of `fn`, over `repeats` calls after a warm-up.
template <typename F>
double MedianSeconds(int repeats, F&& fn) {
  fn();
  std::vector<double> t(repeats);
  for (int i = 0; i < repeats; ++i) {
    const auto a = Clock::now();
    fn();
    t[i] = std::chrono::duration<double>(Clock::now() - a).count();
  }
  std::nth_element(t.begin(), t.begin() + repeats / 2, t.end());
  return t[repeats / 2];
}

int RepeatsFor(int requested, double one_call_seconds) {
  if (requested > 0) return requested;
  return std::clamp(static_cast<int>(0.5 / std::max(one_call_seconds, 1e-7)), 11, 2001);
}

}  // namespace

int RunBenchCodec(const BenchCodecArgs& args) {
  Format format;
  if (!ParseFormat(args.format, &format)) return Fail("--format: expected table, csv or json");
  std::vector<std::string> names = args.codecs.empty() ? DefaultCodecs() : std::vector<std::string>{};
  for (const std::string& arg : args.codecs)
    for (absl::string_view n : absl::StrSplit(arg, absl::ByAnyChar("; "), absl::SkipEmpty()))
      names.emplace_back(n);
  // Upper bounds keep a typo from allocating the machine away: the
  // streaming run holds 2x --stream-mib, a page of --tokens is held several
  // times over.
  if (absl::Status st = FirstError({CheckRange("--tokens", args.tokens, 8, 65536),
                                    CheckRange("--repeats", args.repeats, 0, 1000000),
                                    CheckRange("--stream-mib", args.stream_mib, 1, 65536)});
      !st.ok()) {
    return Fail(std::string(st.message()));
  }

  // A middle layer of a synthetic sequence: the window queries sit just
  // before the page, as in a worker that offloads a finished block.
  eval::SyntheticOptions so;
  so.geometry = args.geometry;
  so.tokens = args.tokens;
  so.max_layers = 2;
  auto sample = eval::GenerateSynthetic(so);
  if (!sample.ok()) return Fail(std::string(sample.status().message()));
  const eval::LayerKv& L = sample->layers[1];
  const int T = sample->tokens, H = sample->kv_heads, Q = sample->q_heads, D = sample->head_dim;
  const PageShape shape{T, H, D};
  // fp16 NHD, the layout of vLLM's paged KV buffers.
  std::vector<uint16_t> k16(shape.values()), v16(shape.values());
  std::vector<float> k_nhd(shape.values());
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < D; ++d) {
        const size_t src = (size_t(h) * T + t) * D + d, dst = (size_t(t) * H + h) * D + d;
        k16[dst] = ::qaqkv::FloatToHalf(L.k[src]);
        v16[dst] = ::qaqkv::FloatToHalf(L.v[src]);
        k_nhd[dst] = L.k[src];
      }
  const int n = 5;
  std::vector<int> wpos(n);
  std::vector<float> qw(size_t(n) * Q * D);
  for (int i = 0; i < n; ++i) {
    wpos[i] = T - n + i;
    for (int qh = 0; qh < Q; ++qh)
      std::copy_n(L.q.data() + (size_t(qh) * T + wpos[i]) * D, D, qw.data() + (size_t(i) * Q + qh) * D);
  }
  auto ws = ComputeWindowStats({T, H, Q, D, k_nhd, qw, wpos});
  if (!ws.ok()) return Fail(std::string(ws.status().message()));
  QaqSideInputs side{ws->attention, ws->q2, 0};

  const size_t fp16_bytes = shape.values() * 2 * 2;
  std::vector<uint8_t> src(fp16_bytes), dst(fp16_bytes);
  std::memcpy(src.data(), k16.data(), fp16_bytes / 2);
  std::memcpy(src.data() + fp16_bytes / 2, v16.data(), fp16_bytes / 2);
  // Hot: one page, again and again, so it stays in cache. Stream: a run
  // over `pages` distinct pages whose total far exceeds the last-level
  // cache, as when a worker offloads a whole context from DRAM.
  const int pages = std::max(1, static_cast<int>((int64_t{args.stream_mib} << 20) / fp16_bytes));
  std::vector<uint8_t> stream_src(fp16_bytes * pages), stream_dst(fp16_bytes * pages);
  for (int p = 0; p < pages; ++p) std::memcpy(stream_src.data() + p * fp16_bytes, src.data(), fp16_bytes);
  std::memset(stream_dst.data(), 0, stream_dst.size());
  const int stream_repeats = args.repeats > 0 ? args.repeats : 5;
  const double t_memcpy = MedianSeconds(RepeatsFor(args.repeats, 1e-4), [&] {
    std::memcpy(dst.data(), src.data(), fp16_bytes);
    asm volatile("" : : "r"(dst.data()) : "memory");
  });
  const double t_memcpy_stream = MedianSeconds(stream_repeats, [&] {
    std::memcpy(stream_dst.data(), stream_src.data(), stream_src.size());
    asm volatile("" : : "r"(stream_dst.data()) : "memory");
  });
  const double memcpy_gbps = fp16_bytes / t_memcpy / 1e9;
  const double memcpy_stream_gbps = double(stream_src.size()) / t_memcpy_stream / 1e9;

  Report report({"codec", "config", "ratio", "encode_gbps", "decode_gbps", "memcpy_gbps",
                 "encode_vs_memcpy", "decode_vs_memcpy", "encode_stream_gbps",
                 "decode_stream_gbps", "memcpy_stream_gbps", "encode_vs_memcpy_stream",
                 "decode_vs_memcpy_stream"});
  auto add = [&](const std::string& codec, const std::string& config, double ratio, double eg,
                 double dg, double egs, double dgs) {
    report.Add({{codec}, {config}, {ratio, 3}, {eg, 2}, {dg, 2}, {memcpy_gbps, 2},
                {eg / memcpy_gbps, 3}, {dg / memcpy_gbps, 3}, {egs, 2}, {dgs, 2},
                {memcpy_stream_gbps, 2}, {egs / memcpy_stream_gbps, 3},
                {dgs / memcpy_stream_gbps, 3}});
  };
  // zstd level 1 on the same fp16 bytes: the general-purpose alternative.
  {
    std::vector<uint8_t> z(ZSTD_compressBound(fp16_bytes));
    size_t zn = 0;
    const double te = MedianSeconds(RepeatsFor(args.repeats, 2e-3), [&] {
      zn = ZSTD_compress(z.data(), z.size(), src.data(), fp16_bytes, 1);
    });
    if (ZSTD_isError(zn)) return Fail("zstd failed");
    const double td = MedianSeconds(RepeatsFor(args.repeats, 1e-3), [&] {
      ZSTD_decompress(dst.data(), fp16_bytes, z.data(), zn);
    });
    add("zstd-1", "zstd level 1", double(fp16_bytes) / zn, fp16_bytes / te / 1e9,
        fp16_bytes / td / 1e9, std::nan(""), std::nan(""));
  }
  std::vector<uint16_t> kout(shape.values()), vout(shape.values());
  std::vector<std::vector<uint8_t>> encoded(pages);
  for (const std::string& name : names) {
    auto cfg = ParseCodecConfig(name);
    if (!cfg.ok()) return Fail(std::string(cfg.status().message()));
    const TensorView kin{k16.data(), DType::kF16, Layout::kNHD};
    const TensorView vin{v16.data(), DType::kF16, Layout::kNHD};
    auto page = EncodePage(*cfg, shape, kin, vin, side);
    if (!page.ok()) return Fail(std::string(page.status().message()));
    const auto a = Clock::now();
    (void)EncodePage(*cfg, shape, kin, vin, side);
    const double once = std::chrono::duration<double>(Clock::now() - a).count();
    // Encoders write into a buffer kept from the last page, as a worker
    // offloading page after page does, and as memcpy writes into its
    // destination: no codec pays for allocating and clearing page memory.
    std::vector<uint8_t> reused;
    absl::Status st;
    const double te = MedianSeconds(RepeatsFor(args.repeats, once), [&] {
      st.Update(EncodePageInto(*cfg, shape, kin, vin, side, Backend::kAuto, reused));
      asm volatile("" : : "r"(reused.data()) : "memory");
    });
    const MutableTensorView ko{kout.data(), DType::kF16, Layout::kNHD};
    const MutableTensorView vo{vout.data(), DType::kF16, Layout::kNHD};
    const double td = MedianSeconds(RepeatsFor(args.repeats, once / 2), [&] {
      st.Update(DecodePage(*page, ko, vo));
    });
    // Streaming: every page read from (or decoded into) its own DRAM region.
    const double tes = MedianSeconds(stream_repeats, [&] {
      for (int p = 0; p < pages; ++p) {
        const uint8_t* base = stream_src.data() + size_t(p) * fp16_bytes;
        st.Update(EncodePageInto(*cfg, shape, {base, DType::kF16, Layout::kNHD},
                                 {base + fp16_bytes / 2, DType::kF16, Layout::kNHD}, side,
                                 Backend::kAuto, encoded[p]));
      }
    });
    const double tds = MedianSeconds(stream_repeats, [&] {
      for (int p = 0; p < pages; ++p) {
        uint8_t* base = stream_dst.data() + size_t(p) * fp16_bytes;
        st.Update(DecodePage(encoded[p], {base, DType::kF16, Layout::kNHD},
                             {base + fp16_bytes / 2, DType::kF16, Layout::kNHD}));
      }
    });
    if (!st.ok()) return Fail(std::string(st.message()));
    const double stream_bytes = double(fp16_bytes) * pages;
    add(std::string(CodecKindName(cfg->kind)), cfg->Name(), double(fp16_bytes) / page->size(),
        fp16_bytes / te / 1e9, fp16_bytes / td / 1e9, stream_bytes / tes / 1e9,
        stream_bytes / tds / 1e9);
  }
  if (format == Format::kTable) {
    std::printf("# %s page: %d tokens x %d kv heads x %d dims, K+V fp16 %zu bytes, one thread, "
                "median of repeats; stream: %d distinct pages (%zu MiB); fast path: avx2=%d "
                "avx512=%d\n",
                args.geometry.c_str(), T, H, D, fp16_bytes, pages, (fp16_bytes * pages) >> 20,
                CpuHasAvx2(), CpuHasAvx512());
  }
  report.Print(format);
  return 0;
}

}  // namespace qaqkv::tools
