// Micro-benchmarks of page encode/decode per backend (Google Benchmark).
// The headline comparison against memcpy and zstd is `qaqkv bench codec`;
// this binary isolates one codec and backend at a time for profiling:
//   build/release/bench/codec_bench --benchmark_filter='Encode/qaq'
#include <malloc.h>

#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/codec.h"
#include "kernels/half.h"

namespace qaqkv {
namespace {

struct Page {
  PageShape shape{256, 8, 128};  // llama3-8b, 256-token block
  std::vector<uint16_t> k, v;
  std::vector<float> attention;
  Page() {
    std::mt19937 rng(7);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::uniform_real_distribution<float> u(0.0f, 0.05f);
    k.resize(shape.values());
    v.resize(shape.values());
    for (auto& x : k) x = ::qaqkv::FloatToHalf(n(rng));
    for (auto& x : v) x = ::qaqkv::FloatToHalf(n(rng));
    attention.resize(size_t(shape.tokens) * shape.kv_heads);
    for (auto& a : attention) a = u(rng);
  }
};

const Page& TestPage() {
  static const Page page;
  return page;
}

void BM_Encode(benchmark::State& state, const char* codec, Backend backend) {
  const Page& p = TestPage();
  const CodecConfig cfg = *ParseCodecConfig(codec);
  const QaqSideInputs side{p.attention, {}, 0};
  for (auto _ : state) {
    auto page = EncodePage(cfg, p.shape, {p.k.data()}, {p.v.data()}, side, backend);
    benchmark::DoNotOptimize(page->data());
  }
  state.SetBytesProcessed(state.iterations() * p.shape.values() * 4);
}

void BM_Decode(benchmark::State& state, const char* codec, Backend backend) {
  const Page& p = TestPage();
  const CodecConfig cfg = *ParseCodecConfig(codec);
  const auto page = *EncodePage(cfg, p.shape, {p.k.data()}, {p.v.data()},
                                {p.attention, {}, 0});
  std::vector<uint16_t> k(p.shape.values()), v(p.shape.values());
  for (auto _ : state) {
    benchmark::DoNotOptimize(DecodePage(page, {k.data()}, {v.data()}, nullptr, backend).ok());
  }
  state.SetBytesProcessed(state.iterations() * p.shape.values() * 4);
}

// What the server checks of each page before it stores it: the header and
// checksum alone (InspectPage), or the whole page against the block's codec
// without decoding it (VerifyPage, what PutPages runs). Bytes are the page's
// fp16 size, as for encode and decode, so the three compare directly.
void BM_Inspect(benchmark::State& state, const char* codec) {
  const Page& p = TestPage();
  const CodecConfig cfg = *ParseCodecConfig(codec);
  const auto page = *EncodePage(cfg, p.shape, {p.k.data()}, {p.v.data()}, {p.attention, {}, 0});
  for (auto _ : state) benchmark::DoNotOptimize(InspectPage(page).ok());
  state.SetBytesProcessed(state.iterations() * p.shape.values() * 4);
}

void BM_Verify(benchmark::State& state, const char* codec) {
  const Page& p = TestPage();
  const CodecConfig cfg = *ParseCodecConfig(codec);
  const auto page = *EncodePage(cfg, p.shape, {p.k.data()}, {p.v.data()}, {p.attention, {}, 0});
  for (auto _ : state) benchmark::DoNotOptimize(VerifyPage(page, &cfg, &p.shape).ok());
  state.SetBytesProcessed(state.iterations() * p.shape.values() * 4);
}

#define QAQKV_CODEC_BENCH(name, codec)                                              \
  BENCHMARK_CAPTURE(BM_Encode, name##_fast, codec, Backend::kFast);              \
  BENCHMARK_CAPTURE(BM_Encode, name##_reference, codec, Backend::kReference);    \
  BENCHMARK_CAPTURE(BM_Decode, name##_fast, codec, Backend::kFast);              \
  BENCHMARK_CAPTURE(BM_Decode, name##_reference, codec, Backend::kReference); \
  BENCHMARK_CAPTURE(BM_Inspect, name, codec);                                  \
  BENCHMARK_CAPTURE(BM_Verify, name, codec)

QAQKV_CODEC_BENCH(int8, "int8");
QAQKV_CODEC_BENCH(int4, "int4");
QAQKV_CODEC_BENCH(qaq, "qaq:s=1e-3,x=1e-3,o=0.01");
QAQKV_CODEC_BENCH(qaq_no_outliers, "qaq:s=1e-3,x=1e-3,o=0");
QAQKV_CODEC_BENCH(qaq_cc, "qaq-cc:s=3e-4,x=2e-2,o=0");
QAQKV_CODEC_BENCH(fp16, "fp16");

}  // namespace
}  // namespace qaqkv

int main(int argc, char** argv) {
  // As in qaqkv: keep freed page buffers in the allocator instead of
  // returning them to the kernel, or page faults dominate the timings.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
